"""The seam between the CAM methods and whatever runs the network: the methods own this
protocol, and every runtime (`unioncam_rt.runtime`) implements it; nothing in
`unioncam_rt.method` imports a runtime.

A `CamEngine` answers the four questions every method in this package asks of a model.
The torch reference (`runtime.torch_engine`) and the exported engine on ONNX Runtime,
OpenVINO (fp32 or bf16) or TensorRT (`runtime.exported`) all implement it, so the UnionCAM math in `unioncam_rt.method` is written once.

All arrays are numpy: images are float32 ``[B, 3, H, W]`` RGB in [0, 1] (normalisation is
inside the model), masks are float32 ``[N, 1, h, w]`` at the target layer's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class FeatureBatch:
    """What one forward+backward pass returns for a batch of images.

    Attributes:
        logits: float32 ``[B, classes]``.
        activations: float32 ``[B, K, h, w]``, the target layer's output ``A``.
        gradients: float32 ``[B, K, h, w]``, ``d logit[class] / d A``.
        class_index: int64 ``[B]``, the explained class (``-1`` requests resolved to top-1).
    """

    logits: np.ndarray
    activations: np.ndarray
    gradients: np.ndarray
    class_index: np.ndarray


@runtime_checkable
class CamEngine(Protocol):
    """A classifier split at its target layer, runnable in batches.

    Attributes:
        model_name: zoo name of the model.
        input_size: (H, W) the model takes.
        class_names: one name per class index.
        feature_shape: (K, h, w) of the target layer's activations.
    """

    model_name: str
    input_size: tuple[int, int]
    class_names: list[str]
    feature_shape: tuple[int, int, int]

    def features(self, images: np.ndarray, class_index: np.ndarray) -> FeatureBatch:
        """Logits, activations and their gradients for the given (or top-1, ``-1``) classes."""

    def masked_probs(
        self, images: np.ndarray, masks: np.ndarray, image_index: np.ndarray, class_index: np.ndarray
    ) -> np.ndarray:
        """``softmax(f(images[image_index] * up(masks)))[class_index]``, float ``[N]``.

        ``up`` is bilinear upsampling (align_corners=False) from ``h x w`` to ``H x W``.
        """

    def probs(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``[B, classes]`` of plain images."""

    def black_probs(self) -> np.ndarray:
        """Softmax probabilities ``[classes]`` of the all-black image ``I_b`` (cached)."""
