"""Engines that run a classifier for the CAM methods: the protocol in `base`, backends
beside it. Nothing here imports torch at import time; the torch reference engine is
loaded only when asked for."""

from .base import CamEngine, FeatureBatch

__all__ = ["CamEngine", "FeatureBatch"]
