"""``unioncam-rt export``: zoo model -> ONNX graphs -> parity check -> (TensorRT engines)
-> manifest, written into a temporary sibling folder and renamed into place at the end."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..compare import Comparison, compare
from ..errors import UnionCamError, require
from ..manifest import MANIFEST_NAME, Manifest, sha256_file
from ..runtime.exported import FEATURES_FILE, SCORES_FILE, trt_engine_name
from ..zoo.spec import get_spec, imagenet_classes

GRAPH_TOLERANCE = 1e-4  # max abs error relative to the reference tensor's max abs value


@dataclass
class ExportConfig:
    """Options of an export.

    Attributes:
        model: zoo model name.
        out: the engine directory to create (replaced if it holds an earlier export).
        weights: weights for the model (default: the real ones).
        opset: ONNX opset (default 17).
        max_batch: largest batch the TensorRT profiles admit (default 64).
        tensorrt: also build TensorRT engines (default False).
        fp16: build FP16 TensorRT engines too (default False).
        check: run the ONNX Runtime vs torch parity check (default True).
    """

    model: str
    out: Path
    weights: str | None = None
    opset: int = 17
    max_batch: int = 64
    tensorrt: bool = False
    fp16: bool = False
    check: bool = True


@dataclass
class ExportReport:
    """What an export wrote and how it compared with the torch reference."""

    directory: Path
    files: dict[str, int] = field(default_factory=dict)
    parity: list[Comparison] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    manifest: Manifest | None = None

    def summary(self) -> str:
        lines = [f"exported {self.manifest.model} to {self.directory}"]
        lines += [f"  {name:28s} {_size(size):>10s}" for name, size in self.files.items()]
        if self.parity:
            lines.append("  parity, ONNX Runtime (CPU, fp32) vs torch autograd:")
            lines += [f"    {c}" for c in self.parity]
        lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "\n".join(lines)


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"


def sample_inputs(input_size, feature_shape, seed: int = 0):
    """Deterministic smooth images, classes and masks for the parity check."""
    from ..method.ops import resize_bilinear

    rng = np.random.default_rng(seed)
    height, width = input_size
    images = np.clip(resize_bilinear(rng.random((2, 3, 8, 8)), (height, width)), 0, 1).astype(np.float32)
    masks = rng.random((5, 1, *feature_shape[1:])).astype(np.float32)
    return images, np.array([-1, 7], dtype=np.int64), masks, np.array([0, 1, 1, 0, 1]), np.array([1, 2, 3, 4, 5])


def parity(engine_dir: Path, torch_engine, images, classes, masks, image_index, mask_classes,
           tolerance: float = GRAPH_TOLERANCE) -> list[Comparison]:
    """ONNX Runtime (CPU, fp32) on the exported graphs vs the torch autograd reference."""
    from ..runtime.onnxruntime_session import OnnxRuntimeSession

    ref = torch_engine.features(images, classes)
    with OnnxRuntimeSession(engine_dir / FEATURES_FILE, ["CPUExecutionProvider"]) as session:
        got = session.infer({"image": images, "class_index": classes})
    with OnnxRuntimeSession(engine_dir / SCORES_FILE, ["CPUExecutionProvider"]) as session:
        probs = session.infer({"image": images, "masks": masks, "image_index": image_index,
                               "class_index": mask_classes})["probs"]
    want_probs = torch_engine.masked_probs(images, masks, image_index, mask_classes)
    return [
        compare("logits", got["logits"], ref.logits, tolerance),
        compare("activations", got["activations"], ref.activations, tolerance),
        compare("gradients", got["gradients"], ref.gradients, tolerance),
        compare("class_index", got["resolved_class_index"], ref.class_index, 0.0),
        compare("probs", probs, want_probs, tolerance),
    ]


def _versions() -> dict[str, str]:
    import onnxruntime

    torch, onnx = require("torch", "export"), require("onnx", "export")
    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": sys.version.split()[0]}


def _prepare_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).is_file())):
        raise UnionCamError(f"{out} exists and is not an engine directory; choose another --out")


def _replace_dir(staging: Path, out: Path) -> None:
    """Put ``staging`` at ``out``; an earlier export there is removed only after the move."""
    from ..outputs import UMASK

    os.chmod(staging, 0o777 & ~UMASK)  # mkdtemp makes 0700 folders
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(config: ExportConfig, progress: bool = False) -> ExportReport:
    """Export a zoo model into an engine directory (see `ExportConfig`).

    Raises:
        UnionCamError: bad options, unsupported head layer, parity failure, TensorRT errors.
            Nothing is left at ``config.out`` (or an earlier export there stays as it was).
    """
    from tqdm.auto import tqdm

    from ..runtime.torch_engine import TorchEngine
    from ..zoo.torch_models import build_model
    from .onnx_export import features_onnx_from_model, scores_onnx_from_model

    spec = get_spec(config.model)
    if config.max_batch < 1:
        raise UnionCamError(f"--max-batch {config.max_batch} must be at least 1")
    if config.fp16 and not config.tensorrt:
        raise UnionCamError("--fp16 builds TensorRT engines; add --tensorrt")
    if config.tensorrt:
        from .tensorrt_build import tensorrt_available

        reason = tensorrt_available()
        if reason:
            raise UnionCamError(f"--tensorrt: {reason}")
    out = Path(config.out)
    _prepare_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    report = ExportReport(directory=out)
    steps = ["build model", "features.onnx", "scores.onnx", "black image", "parity"]
    steps += ["tensorrt"] if config.tensorrt else []
    bar = tqdm(total=len(steps), desc=f"export {config.model}", unit="step", disable=None if progress else True)

    def step(name, started):
        report.seconds[name] = time.perf_counter() - started
        bar.update(1)
        return time.perf_counter()

    try:
        t = time.perf_counter()
        model = build_model(config.model, config.weights)
        classes = list(imagenet_classes())
        reference = TorchEngine(model, classes)
        height, width = spec.input_size
        feature_shape = tuple(int(d) for d in reference.features(
            np.zeros((1, 3, height, width), np.float32), np.array([0])).activations.shape[1:])
        t = step("build model", t)
        features_onnx_from_model(model, staging / FEATURES_FILE, config.opset)
        t = step("features.onnx", t)
        scores_onnx_from_model(model, staging / SCORES_FILE, feature_shape[1:], config.opset)
        t = step("scores.onnx", t)
        black = reference.black_probs()
        t = step("black image", t)
        if config.check:
            report.parity = parity(staging, reference, *sample_inputs(spec.input_size, feature_shape))
            failed = [c for c in report.parity if not c.ok]
            if failed:
                raise UnionCamError("exported graphs disagree with torch: " + "; ".join(map(str, failed)))
        t = step("parity", t)
        engines = {}
        if config.tensorrt:
            from .tensorrt_build import TIMING_CACHE, engine_from_onnx, profile_shapes

            for precision in ["fp32"] + (["fp16"] if config.fp16 else []):
                for graph, onnx_file in (("features", FEATURES_FILE), ("scores", SCORES_FILE)):
                    name = trt_engine_name(graph, precision)
                    shapes = profile_shapes(graph, spec.input_size, feature_shape, config.max_batch)
                    engines[name] = engine_from_onnx(staging / onnx_file, staging / name, shapes,
                                                     precision == "fp16", staging / TIMING_CACHE)
            t = step("tensorrt", t)
        files = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest = Manifest(
            model=config.model, weights_sha256=model.weights_sha256, input_size=tuple(spec.input_size),
            mean=tuple(spec.mean), std=tuple(spec.std), target_layer=spec.target_layer,
            feature_shape=feature_shape, class_names=classes, black_probs=[float(p) for p in black],
            opset=config.opset, versions=_versions(), files={name: sha256_file(staging / name) for name in files},
            unioncam_rt=__version__, engines=engines,
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), "utf-8")
        report.files = {name: (staging / name).stat().st_size for name in [*files, MANIFEST_NAME]}
        report.manifest = manifest
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        bar.close()
    return report
