"""Opening an engine: an exported directory on ONNX Runtime, OpenVINO or TensorRT, or the torch reference.

The backends and their precisions are the table in `unioncam_rt.runtime.backends`;
`EngineOptions` are checked against it once, when they are made. Exporting on demand (the
cache) happens above this module, in `unioncam_rt.cache`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UnionCamError
from ..method.engine import CamEngine
from .backends import BACKENDS, DEFAULT_BACKEND, Backend, check_mode, get_backend


@dataclass
class EngineOptions:
    """How to run the model.

    Attributes:
        backend: ``onnxruntime`` (default), ``openvino``, ``tensorrt`` or ``torch``.
        engine_dir: an exported engine directory (default: the export cache, see
            `unioncam_rt.cache`).
        providers: ONNX Runtime execution providers (default: TensorRT, CUDA, CPU as available).
        precision: ``fp32`` (default, exact); ``bf16`` (openvino); ``fp16`` (tensorrt, torch on
            CUDA); ``int8`` (onnxruntime, static QDQ scoring graph made by ``unioncam-rt quantize``).
        device: torch device for the torch backend (default ``cpu``).
        threads: ONNX Runtime intra-op threads (default: its own choice).
    """

    backend: str = DEFAULT_BACKEND
    engine_dir: Path | None = None
    providers: list[str] | None = None
    precision: str = "fp32"
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        """Refuse unknown or contradictory options when they are made, before any work."""
        check_mode(self.backend, self.precision)
        if not self.spec.reads_engine_dir and self.engine_dir is not None:
            raise UnionCamError(f"--engine is for the backends that run an engine directory, not {self.backend}")

    @property
    def spec(self) -> Backend:
        """This backend's row of the table."""
        return get_backend(self.backend)


def open_engine(options: EngineOptions, source=None, model: str | None = None) -> CamEngine:
    """Open the engine the options describe.

    Args:
        options: backend, engine directory, precision...
        source: the `unioncam_rt.sources.ModelSource` for the torch backend.
        model: if given with an engine directory, the model name it must hold.
    """
    if not options.spec.reads_engine_dir:
        if source is None:
            raise UnionCamError("the torch backend needs a torch model (--model)")
        if source.kind == "onnx":
            raise UnionCamError("the torch backend runs torch models; an ONNX model runs on "
                                + ", ".join(name for name, b in BACKENDS.items() if b.reads_engine_dir))
        from ..sources.torch_source import load_torch_classifier
        from .torch_engine import TorchEngine

        return TorchEngine(load_torch_classifier(source), options.device, options.precision)
    if options.engine_dir is None:
        raise UnionCamError("no engine directory given; export one with unioncam-rt export")
    from .exported import ExportedEngine

    return ExportedEngine(options.engine_dir, options.backend, options.providers, options.precision,
                          model=model, threads=options.threads)
