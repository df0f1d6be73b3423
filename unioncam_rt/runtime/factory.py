"""Opening an engine: an exported directory on ONNX Runtime, OpenVINO or TensorRT, or the torch reference.

Backends:

* ``onnxruntime`` (default) - the exported graphs in ONNX Runtime; torch-free.
* ``openvino`` - the exported graphs in OpenVINO (CPU; ``--precision fp32|bf16``); torch-free.
* ``tensorrt`` - the exported TensorRT engines (``--precision fp32|fp16``).
* ``torch`` - the PyTorch reference (autograd), CPU or CUDA; needs a torch model.

Exporting on demand (the cache) happens above this module, in `unioncam_rt.cache`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UnionCamError
from ..method.engine import CamEngine

BACKENDS = ("onnxruntime", "openvino", "tensorrt", "torch")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# what each backend runs besides fp32 (the exact mode every backend has)
APPROXIMATE = {"onnxruntime": ("int8",), "openvino": ("bf16",), "tensorrt": ("fp16",), "torch": ("fp16",)}


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

    backend: str = "onnxruntime"
    engine_dir: Path | None = None
    providers: list[str] | None = None
    precision: str = "fp32"
    device: str = "cpu"
    threads: int | None = None

    def check(self) -> None:
        """Refuse unknown or contradictory options before any work."""
        if self.backend not in BACKENDS:
            raise UnionCamError(f"backend {self.backend!r} unknown; available: {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise UnionCamError(f"precision {self.precision!r} unknown; available: {', '.join(PRECISIONS)}")
        if self.backend == "torch" and self.engine_dir is not None:
            raise UnionCamError("--engine is for the onnxruntime, openvino and tensorrt backends, not torch")
        allowed = ("fp32", *APPROXIMATE[self.backend])
        if self.precision not in allowed:
            where = ", ".join(f"{p} ({b})" for b, ps in APPROXIMATE.items() for p in ps if p == self.precision)
            raise UnionCamError(f"--precision {self.precision} is not one of {self.backend}'s modes ({self.backend} runs "
                                f"{' or '.join(allowed)}); {self.precision} runs on: {where}")


def open_engine(options: EngineOptions, source=None, model: str | None = None) -> CamEngine:
    """Open the engine the options describe.

    Args:
        options: backend, engine directory, precision...
        source: the `unioncam_rt.sources.ModelSource` for the torch backend.
        model: if given with an engine directory, the model name it must hold.
    """
    options.check()
    if options.backend == "torch":
        if source is None:
            raise UnionCamError("the torch backend needs a torch model (--model)")
        if source.kind == "onnx":
            raise UnionCamError("the torch backend runs torch models; an ONNX model runs on onnxruntime or tensorrt")
        from ..sources.torch_source import load_torch_classifier
        from .torch_engine import TorchEngine

        return TorchEngine(load_torch_classifier(source), options.device, options.precision)
    if options.engine_dir is None:
        raise UnionCamError("no engine directory given; export one with unioncam-rt export")
    from .exported import ExportedEngine

    return ExportedEngine(options.engine_dir, options.backend, options.providers, options.precision,
                          model=model, threads=options.threads)
