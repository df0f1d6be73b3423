"""Static INT8 quantisation of the scoring graph for CPU (ONNX Runtime QDQ).

An opt-in fast mode that changes results: only ``scores.onnx`` (the masked passes, almost
all of the cost) is quantised; ``features.onnx`` stays fp32, so the class, activations
and gradients are exact. Calibration feeds the graph what it sees at run time: real
photos multiplied by upsampled channel masks of their own activations. Static (not
dynamic) quantisation: dynamic quantisation leaves convolutions' activations in float
and is slow for CNNs.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UnionCamError, require
from ..fileio import UMASK, atomic_write_bytes
from ..images import list_images, load_image
from ..manifest import FEATURES_FILE, MANIFEST_NAME, SCORES_FILE, SCORES_INT8_FILE, load_manifest, sha256_file
from ..method.ops import is_constant, minmax


@dataclass
class QuantizeReport:
    directory: Path
    calibration_images: int
    calibration_batches: int
    seconds: float
    size_fp32: int
    size_int8: int

    def summary(self) -> str:
        return (f"wrote {self.directory / SCORES_INT8_FILE} ({self.size_int8 / 2**20:.1f} MiB, fp32 "
                f"{self.size_fp32 / 2**20:.1f} MiB) from {self.calibration_images} calibration images "
                f"({self.calibration_batches} masked batches) in {self.seconds:.1f}s")


def calibration_feeds(directory: Path, images: list[Path], masks_per_image: int = 32, seed: int = 0):
    """Scoring-graph feeds built from real photos and masks of their own channels."""
    from ..runtime.onnxruntime_session import OnnxRuntimeSession

    manifest = load_manifest(directory)
    rng = np.random.default_rng(seed)
    with OnnxRuntimeSession(directory / FEATURES_FILE, ["CPUExecutionProvider"]) as features:
        for path in images:
            image = load_image(path, tuple(manifest.input_size)).array[None]
            out = features.infer({"image": image, "class_index": np.array([-1], dtype=np.int64)})
            acts = out["activations"][0]
            live = np.flatnonzero(~is_constant(acts))
            if len(live) == 0:
                continue
            chosen = rng.choice(live, size=min(masks_per_image, len(live)), replace=False)
            masks = minmax(acts[chosen])[:, None].astype(np.float32)
            yield {"image": image, "masks": masks, "image_index": np.zeros(len(chosen), np.int64),
                   "class_index": np.repeat(out["resolved_class_index"].astype(np.int64), len(chosen))}


def quantize_scores(directory: str | Path, calibration: list[str | Path], limit: int = 32,
                    masks_per_image: int = 32) -> QuantizeReport:
    """Write ``scores.int8.onnx`` into an engine directory and list it in the manifest."""
    quantization = require("onnxruntime.quantization", "export")
    directory = Path(directory)
    manifest = load_manifest(directory)
    images = list_images(list(calibration))[:limit]
    if not images:
        raise UnionCamError("no calibration images given")
    started = time.perf_counter()
    feeds = list(calibration_feeds(directory, images, masks_per_image))

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    fd, tmp = tempfile.mkstemp(prefix=".scores.int8.", suffix=".onnx", dir=directory)
    os.close(fd)
    try:
        quantization.quantize_static(
            str(directory / SCORES_FILE), tmp, Reader(),
            quant_format=quantization.QuantFormat.QDQ, per_channel=True,
            activation_type=quantization.QuantType.QInt8, weight_type=quantization.QuantType.QInt8,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, directory / SCORES_INT8_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    manifest.files[SCORES_INT8_FILE] = sha256_file(directory / SCORES_INT8_FILE)
    manifest.engines[SCORES_INT8_FILE] = {"precision": "int8", "format": "QDQ", "calibration_images": len(images),
                                          "masks_per_image": masks_per_image}
    atomic_write_bytes(directory / MANIFEST_NAME, manifest.to_json().encode("utf-8"))
    return QuantizeReport(directory, len(images), len(feeds), time.perf_counter() - started,
                          (directory / SCORES_FILE).stat().st_size, (directory / SCORES_INT8_FILE).stat().st_size)
