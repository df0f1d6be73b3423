"""Choosing and opening an engine: an exported directory, the export cache, or torch.

Backends:

* ``onnxruntime`` (default) - the exported graphs in ONNX Runtime; torch-free.
* ``tensorrt`` - the exported TensorRT engines (``--precision fp32|fp16``).
* ``torch`` - the PyTorch reference (autograd), CPU or CUDA.

Without ``--engine DIR``, the model is exported once into the cache
(``$UNIONCAM_RT_CACHE`` or ``~/.cache/unioncam-rt``), keyed by model, weights and
unioncam-rt version, and reused; a cache entry that fails validation is exported again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import DependencyError, UnionCamError
from ..manifest import EngineDirError, load_manifest
from ..zoo.spec import get_spec
from .base import CamEngine

BACKENDS = ("onnxruntime", "tensorrt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class EngineOptions:
    """How to run the model.

    Attributes:
        model: zoo model name (ignored when ``engine_dir`` is given: the manifest says).
        weights: weights to export / build with (default: the real ones).
        backend: ``onnxruntime`` (default), ``tensorrt`` or ``torch``.
        engine_dir: an exported directory to use instead of the cache.
        providers: ONNX Runtime execution providers (default: TensorRT, CUDA, CPU as available).
        precision: ``fp32`` (default, exact); ``fp16`` (tensorrt, torch on CUDA); ``int8``
            (onnxruntime, static QDQ scoring graph made by ``unioncam-rt quantize``).
        device: torch device for the torch backend (default ``cpu``).
        threads: ONNX Runtime intra-op threads (default: its own choice).
    """

    model: str | None = None
    weights: str | None = None
    backend: str = "onnxruntime"
    engine_dir: Path | None = None
    providers: list[str] | None = None
    precision: str = "fp32"
    device: str = "cpu"
    threads: int | None = None


def cache_root() -> Path:
    return Path(os.environ.get("UNIONCAM_RT_CACHE") or Path.home() / ".cache" / "unioncam-rt")


def weights_key(weights: str | None) -> str:
    """A cache-key fragment naming the weights: real, a seeded random init, or a file's hash."""
    if weights is None:
        return "pretrained"
    if str(weights).startswith("random"):
        return str(weights).replace(":", "-")
    path = Path(weights)
    if not path.is_file():
        raise UnionCamError(f"weights file {path} does not exist")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"file-{digest}"


def cached_engine_dir(model: str, weights: str | None, tensorrt: bool = False, progress: bool = True) -> Path:
    """The cache directory for (model, weights), exported now if missing or invalid."""
    get_spec(model)
    directory = cache_root() / f"{model}-{weights_key(weights)}-v{__version__}"
    try:
        manifest = load_manifest(directory, model)
        if not tensorrt or manifest.engines:
            return directory
    except EngineDirError:
        pass
    try:
        from ..export.pipeline import ExportConfig, export_model
    except DependencyError as exc:
        raise UnionCamError(
            f"no exported engine for {model} in {directory} and torch is not installed to make one: "
            f"pass --engine DIR (from unioncam-rt export), or pip install 'unioncam-rt[export]'"
        ) from exc
    if progress:
        import sys

        print(f"exporting {model} once into {directory} ...", file=sys.stderr)
    export_model(ExportConfig(model, directory, weights=weights, tensorrt=tensorrt), progress=progress)
    return directory


def open_engine(options: EngineOptions, progress: bool = False) -> CamEngine:
    """Open the engine the options describe."""
    if options.backend not in BACKENDS:
        raise UnionCamError(f"backend {options.backend!r} unknown; available: {', '.join(BACKENDS)}")
    if options.precision not in PRECISIONS:
        raise UnionCamError(f"precision {options.precision!r} unknown; available: {', '.join(PRECISIONS)}")
    if options.backend == "torch":
        if options.engine_dir is not None:
            raise UnionCamError("--engine is for the onnxruntime and tensorrt backends, not torch")
        if options.precision == "int8":
            raise UnionCamError("int8 is an onnxruntime mode; use --backend onnxruntime")
        from ..zoo.spec import DEFAULT_MODEL, imagenet_classes
        from ..zoo.torch_models import build_model
        from .torch_engine import TorchEngine

        model = build_model(options.model or DEFAULT_MODEL, options.weights)
        return TorchEngine(model, imagenet_classes(), options.device, options.precision)
    if options.backend == "onnxruntime" and options.precision == "fp16":
        raise UnionCamError("fp16 runs on the tensorrt or torch (CUDA) backends; onnxruntime runs fp32 or int8")
    if options.backend == "tensorrt" and options.precision == "int8":
        raise UnionCamError("int8 is an onnxruntime (CPU) mode; TensorRT runs fp32 or fp16")
    directory = options.engine_dir
    if directory is None:
        from ..zoo.spec import DEFAULT_MODEL

        directory = cached_engine_dir(options.model or DEFAULT_MODEL, options.weights,
                                      tensorrt=options.backend == "tensorrt", progress=progress)
    from .exported import ExportedEngine

    return ExportedEngine(directory, options.backend, options.providers, options.precision,
                          model=options.model, threads=options.threads)
