"""What an explanation is: the result type every entry point returns and every writer reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .images import LoadedImage
from .method import UnionParts


@dataclass
class Explanation:
    """One image's explanation.

    Attributes:
        image: the image as read (original size, upright RGB).
        model: zoo model name.
        method: CAM method name.
        cam: float32 ``[H, W]`` map in [0, 1] at the model input size.
        class_index: the explained class.
        class_name: its name.
        probability: ``p_c(I)``.
        top5: ``[(index, name, probability), ...]`` for the plain image.
        masked_passes: masked forward passes run for this image.
        constant_map: True if the map was constant (returned as zeros).
        union: UnionCAM's parts (betas, branch, intermediate maps); ``None`` for other methods.
        timings: seconds; batch-shared stages are split evenly over the batch.
        budget: the region-map budget that ran (None: exact, or a method without masked
            channel scoring).
        backend: the engine's backend and precision, e.g. ``"onnxruntime fp32"``.
    """

    image: LoadedImage
    model: str
    method: str
    cam: np.ndarray
    class_index: int
    class_name: str
    probability: float
    top5: list[tuple[int, str, float]]
    masked_passes: int
    constant_map: bool
    union: UnionParts | None
    theta: float
    timings: dict[str, float] = field(default_factory=dict)
    budget: dict | None = None
    backend: str | None = None

    @property
    def branch(self) -> str | None:
        return self.union.branch if self.union else None

    def summary(self) -> dict:
        """The JSON record written next to the maps."""
        union = self.union
        return {
            "image": str(self.image.path) if self.image.path else None,
            "model": self.model,
            "method": self.method,
            "class_index": self.class_index,
            "class_name": self.class_name,
            "probability": self.probability,
            "top5": [{"class_index": i, "class_name": n, "probability": p} for i, n, p in self.top5],
            "theta": self.theta if self.method == "unioncam" else None,
            "beta_denoise": union.beta_denoise if union else None,
            "beta_region": union.beta_region if union else None,
            "beta_fused": union.beta_fused if union else None,
            "branch": union.branch if union else None,
            "masked_passes": self.masked_passes,
            "budget": self.budget,
            "backend": self.backend,
            "constant_map": self.constant_map,
            "input_size": list(self.cam.shape),
            "original_size": [self.image.original_size[1], self.image.original_size[0]],
            "timings": self.timings,
        }
