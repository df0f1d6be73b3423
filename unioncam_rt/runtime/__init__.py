"""Engines that run a classifier for the CAM methods: each backend implements the protocol
the methods own (`unioncam_rt.method.engine.CamEngine`). Nothing here imports torch at
import time; the torch reference engine is loaded only when asked for."""
