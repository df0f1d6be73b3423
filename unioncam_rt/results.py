"""What an explanation is: the result type every entry point returns and every writer reads,
and how the time of work shared by a group of images is told per image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

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
        timings: seconds, this image's own share of the work, so that the images of a run
            add up to the run (see `group_timings`): ``load_s`` (reading the file),
            ``features_s`` and ``method_s`` (its share of the group's engine work),
            ``total_s`` (their sum), and how it was grouped: ``group_images`` (images
            explained together) and ``group_s`` (the group's features and method time).
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


def group_timings(features_s: float, method_s: float, masked_passes: Sequence[int]) -> list[dict]:
    """Each image's share of the work of a group of images explained together.

    The features pass is one batched call, split evenly. The method's time is split in
    proportion to each image's masked passes, which are nearly all of it (evenly when
    the group ran none), so an image that needed more passes carries more of the time.
    Per image, ``features_s + method_s`` add up to the group's ``group_s``.

    Args:
        features_s: seconds of the group's features pass.
        method_s: seconds of the group's method (masked scoring, maps).
        masked_passes: masked passes run for each image of the group.
    """
    count = len(masked_passes)
    passes = np.asarray(masked_passes, dtype=np.float64)
    weights = passes / passes.sum() if passes.sum() > 0 else np.full(count, 1.0 / max(count, 1))
    group_s = features_s + method_s
    return [{"features_s": features_s / count, "method_s": method_s * float(w), "group_images": count,
             "group_s": group_s} for w in weights]


OWN_STAGES = ("load_s", "decode_s")  # work done for one image alone (reading a file, decoding a request)


def with_own_time(timings: dict, **own_s: float) -> dict:
    """``timings`` with this image's own stages added in front (``load_s=...``, ``decode_s=...``)
    and ``total_s`` recomputed: its own stages plus its shares of the group's work, never
    the group's whole time; waiting (a queue) is not work and stays out of it."""
    merged = {**own_s, **{key: value for key, value in timings.items() if key != "total_s" and key not in own_s}}
    work = sum(merged.get(key, 0.0) for key in (*OWN_STAGES, "features_s", "method_s"))
    return {**merged, "total_s": work}


def request_timings(timings: dict, decode_s: float, queue_s: float, latency_s: float) -> dict:
    """A served request's timings: ``decode_s`` (its own), ``queue_s`` (waiting for its
    group to start), its shares of the group's work, ``latency_s`` (arrival to answer, the
    wait and the whole group's work included: what the client saw) and ``total_s`` (its own
    work: decoding plus its shares; these add up over requests to the replica's work)."""
    return with_own_time({"queue_s": queue_s, **timings, "latency_s": latency_s}, decode_s=decode_s)
