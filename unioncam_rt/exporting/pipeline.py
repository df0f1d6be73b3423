"""``unioncam-rt export``: a classifier (zoo, Python factory, nn.Module or ONNX file) ->
forward graph -> ``features.onnx`` + ``scores.onnx`` sharing ``weights.bin`` -> parity
check -> (TensorRT engines) -> ``manifest.json``, written into a temporary sibling folder
and renamed into place at the end."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._version import __version__
from ..compare import Comparison
from ..errors import UnionCamError, require
from ..fileio import UMASK, atomic_write_bytes
from ..manifest import (
    FEATURES_FILE,
    MANIFEST_NAME,
    SCORES_FILE,
    WEIGHTS_FILE,
    Manifest,
    describe_target_map,
    load_manifest,
    sha256_file,
    trt_engine_name,
)
from ..progress import StepProgress
from ..sources import ModelSource, check_labels


@dataclass
class ExportConfig:
    """Options of an export.

    Attributes:
        model: zoo name, ``PATH.py:FUNCTION``, ``package.module:FUNCTION``, ``*.onnx`` file,
            or an ``nn.Module`` instance.
        out: the engine directory to create (replaced if it holds an earlier export).
        weights, labels, target_layer, input_size, mean, std, layout, target_layout: how to
            read the model; see `unioncam_rt.sources.ModelSource`.
        opset: ONNX opset of torch exports (default 17).
        max_batch: largest batch the TensorRT profiles admit (default 64).
        tensorrt: also build TensorRT engines (default False).
        fp16: build FP16 TensorRT engines too (default False).
        check: run the parity check against the reference (default True).
    """

    model: Any
    out: Path
    weights: str | None = None
    labels: str | Path | Sequence[str] | None = None
    target_layer: str | None = None
    input_size: Any = None
    mean: Any = None
    std: Any = None
    layout: str | None = None
    target_layout: str | None = None
    opset: int = 17
    max_batch: int = 64
    tensorrt: bool = False
    fp16: bool = False
    check: bool = True

    def source(self) -> ModelSource:
        return ModelSource(self.model, self.weights, self.labels, self.target_layer, self.input_size, self.mean,
                           self.std, self.layout, self.target_layout)


@dataclass
class ExportReport:
    """What an export wrote and how it compared with the reference."""

    directory: Path
    files: dict[str, int] = field(default_factory=dict)
    parity: list[Comparison] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    manifest: Manifest | None = None
    bypass: str | None = None

    def summary(self) -> str:
        m = self.manifest
        lines = [f"exported {m.model} ({m.source.get('kind')}) to {self.directory}",
                 f"  input {m.input_size[0]}x{m.input_size[1]} {m.layout}, target {m.target_layer} "
                 f"{'x'.join(map(str, m.feature_shape))}{describe_target_map(m.target_map)}, {m.num_classes} classes"]
        if self.bypass:
            lines.append(f"  a path around the target joins the head at {self.bypass}: gradients are the partial "
                         "derivative with it held at its forward value (as autograd at the target's output)")
        lines += [f"  {name:28s} {_size(size):>10s}" for name, size in self.files.items()]
        if self.parity:
            lines.append("  parity of the engine as the runtime opens it (CPU, fp32) vs the reference:")
            lines += [f"    {c}" for c in self.parity]
        lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "\n".join(lines)


def _target_map_entry(forward) -> dict:
    """The manifest's ``target_map``: the torch target's reading, or an ONNX target's layout."""
    if forward.target_map is not None:
        return forward.target_map.manifest_entry()
    return {"layout": forward.target_layout, "shape": [int(d) for d in forward.shapes[forward.target][1:]]}


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"


def _versions() -> dict[str, str]:
    import onnxruntime

    onnx = require("onnx", "export")
    versions = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "python": sys.version.split()[0]}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - an ONNX export without torch
        pass
    return versions


def _prepare_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_NAME).is_file())):
        raise UnionCamError(f"{out} exists and is not an engine directory; choose another --out")


def _replace_dir(staging: Path, out: Path) -> None:
    """Put ``staging`` at ``out``; an earlier export there is removed only after the move."""
    os.chmod(staging, 0o777 & ~UMASK)  # mkdtemp makes 0700 folders
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build_forward(source: ModelSource, opset: int):
    """The classifier, its forward graph, and its torch reference engine (None for ONNX)."""
    if source.kind == "onnx":
        from .onnx_classifier import load_onnx_classifier

        classifier = load_onnx_classifier(source)
        return classifier, classifier.forward, None
    from ..runtime.torch_engine import TorchEngine
    from ..sources.torch_source import load_torch_classifier
    from .torch_to_onnx import forward_graph_from_torch

    classifier = load_torch_classifier(source)
    return classifier, forward_graph_from_torch(classifier, opset), TorchEngine(classifier)


def _write_graphs(forward, staging: Path) -> tuple[dict, int]:
    """Write both graphs and weights.bin; returns the weights index and the scoring graph's
    per-image memory estimate."""
    from .graphs import features_graph, scores_graph
    from .onnx_graph import onnx
    from .weights import WeightsFile, scoring_bytes_per_image

    weights = WeightsFile(staging)
    weights.externalize(forward.model)
    forward.directory = staging
    forward.measure()
    per_image = 0
    for graph, name in ((features_graph(forward), FEATURES_FILE), (scores_graph(forward), SCORES_FILE)):
        weights.externalize(graph, name)
        onnx.save_model(graph, str(staging / name))
        onnx.checker.check_model(str(staging / name))
        if name == SCORES_FILE:
            per_image = scoring_bytes_per_image(graph, staging)
    return {"file": WEIGHTS_FILE, "tensors": weights.index}, per_image


def build_tensorrt_engines(directory: Path, precisions: Sequence[str], input_size, feature_shape,
                           max_batch: int) -> dict[str, dict]:
    """Build TensorRT engines for ``precisions`` from the directory's ONNX graphs."""
    from .tensorrt_build import TIMING_CACHE, engine_from_onnx, profile_shapes

    engines = {}
    for precision in precisions:
        for graph, onnx_file in (("features", FEATURES_FILE), ("scores", SCORES_FILE)):
            name = trt_engine_name(graph, precision)
            shapes = profile_shapes(graph, input_size, feature_shape, max_batch)
            engines[name] = engine_from_onnx(directory / onnx_file, directory / name, shapes,
                                             precision == "fp16", directory / TIMING_CACHE)
    return engines


def add_tensorrt_engines(directory: str | Path, precision: str, max_batch: int = 64) -> None:
    """(Re)build the TensorRT engines of one precision inside an existing engine directory
    (the export cache does this when asked for them, or when they were built for another
    GPU or TensorRT version). The manifest is rewritten last, atomically."""
    from .tensorrt_build import tensorrt_available

    reason = tensorrt_available()
    if reason:
        raise UnionCamError(f"--backend tensorrt: {reason}")
    directory = Path(directory)
    manifest = load_manifest(directory)
    engines = build_tensorrt_engines(directory, [precision], manifest.input_size, manifest.feature_shape, max_batch)
    manifest.engines.update(engines)
    for name in engines:
        manifest.files[name] = sha256_file(directory / name)
    atomic_write_bytes(directory / MANIFEST_NAME, manifest.to_json().encode("utf-8"))


def export_model(config: ExportConfig, progress: bool = False) -> ExportReport:
    """Export a classifier into an engine directory (see `ExportConfig`).

    Raises:
        UnionCamError: bad options, an unusable model (see `unioncam_rt.sources`), an
            unsupported head operator, a parity failure, TensorRT errors. Nothing is left at
            ``config.out`` (an earlier export there stays as it was).
    """
    from .parity import black_probs, open_engine

    source = config.source()
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
    steps = ["model", "graphs", "black image", "parity"] + (["tensorrt"] if config.tensorrt else [])
    bar = StepProgress(len(steps), f"export {source.name}", enabled=progress)

    def step(name, started):
        report.seconds[name] = time.perf_counter() - started
        bar.step(name, report.seconds[name])
        return time.perf_counter()

    try:
        t = time.perf_counter()
        classifier, forward, reference = _build_forward(source, config.opset)
        t = step("model", t)
        weights_index, per_image = _write_graphs(forward, staging)
        classes = check_labels(source.label_names(), forward.num_classes) if reference is None \
            else classifier.class_names
        files = {name: sha256_file(staging / name) for name in sorted(p.name for p in staging.iterdir() if p.is_file())}
        layout = getattr(classifier, "layout", "nchw")
        weights_sha = classifier.weights_sha256 if reference is not None else classifier.sha256
        manifest = Manifest(
            model=source.name, source=classifier.source_info, weights_sha256=weights_sha,
            input_size=tuple(forward.input_size), mean=tuple(classifier.mean), std=tuple(classifier.std),
            layout=layout, target_layer=classifier.target_layer, feature_shape=forward.feature_shape,
            class_names=list(classes), black_probs=[1.0 / len(classes)] * len(classes), opset=_opset(forward),
            versions=_versions(), files=files, unioncam_rt=__version__, engines={}, weights=weights_index,
            scoring_bytes_per_image=per_image, target_map=_target_map_entry(forward),
        )
        # the directory is opened from here on exactly as the runtime will open it
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), "utf-8")
        t = step("graphs", t)
        with open_engine(staging) as engine:
            manifest.black_probs = [float(p) for p in black_probs(engine, forward.input_size)]
            t = step("black image", t)
            if config.check:
                report.parity = _check_engine(engine, staging, classifier, forward, reference)
        t = step("parity", t)
        if config.tensorrt:
            manifest.engines = build_tensorrt_engines(staging, ["fp32"] + (["fp16"] if config.fp16 else []),
                                                      forward.input_size, forward.feature_shape, config.max_batch)
            manifest.files = {name: sha256_file(staging / name)
                              for name in sorted(p.name for p in staging.iterdir() if p.is_file() and p.name != MANIFEST_NAME)}
            t = step("tensorrt", t)
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), "utf-8")
        report.files = {name: (staging / name).stat().st_size for name in [*manifest.files, MANIFEST_NAME]}
        report.manifest = manifest
        report.bypass = forward.bypass
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        bar.close()
    return report


def _check_engine(engine, staging: Path, classifier, forward, reference) -> list[Comparison]:
    """The parity check on the staged directory: ONNX Runtime against the reference (torch
    autograd, or the user's ONNX graph and central differences), then every other installed
    CPU backend against ONNX Runtime. Raises a one-line error on the first failure."""
    from .parity import (
        compare_outputs,
        engine_outputs,
        onnx_parity,
        open_engine,
        other_backends,
        sample_inputs,
        torch_parity,
    )

    images, chosen, masks, index, mask_classes = sample_inputs(forward.input_size, forward.feature_shape,
                                                               forward.num_classes)
    if reference is not None:
        parity = torch_parity(engine, reference, images, chosen, masks, index, mask_classes)
    else:
        parity = onnx_parity(staging, engine, classifier, images, chosen)
    _refuse_failures(parity, "the reference")
    want = engine_outputs(engine, images, chosen, masks, index, mask_classes)
    for backend in other_backends():
        with open_engine(staging, backend) as other:
            found = compare_outputs(engine_outputs(other, images, chosen, masks, index, mask_classes), want,
                                    prefix=f"{backend} vs onnxruntime: ")
        _refuse_failures(found, "ONNX Runtime", backend)
        parity += found
    return parity


def _refuse_failures(parity: list[Comparison], reference: str, backend: str = "ONNX Runtime") -> None:
    failed = [c for c in parity if not c.ok]
    if failed:
        raise UnionCamError(f"the exported graphs on {backend} disagree with {reference}: "
                            + "; ".join(map(str, failed)))


def _opset(forward) -> int:
    from .onnx_graph import model_opset

    return model_opset(forward.model)
