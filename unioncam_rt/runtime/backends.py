"""The backends, in one table: what each runs, in which precisions, how it is opened.

Every check of a backend or precision (`check_mode`), the CLI's and serve's help
(`backends_help`, `precisions_help`), the export cache (whether a backend reads an engine
directory, whether it builds engines into it) and the opening of an engine directory
(`open_sessions`) read this table. A new backend is one session module with an
``open_sessions(directory, manifest, precision, providers, threads)`` function and one row.
Torch-free: importing this module imports no backend.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnionCamError


@dataclass(frozen=True)
class Backend:
    """One backend.

    Attributes:
        name: as given to ``--backend``.
        precisions: what it runs; the first, ``fp32``, is exact, the others approximate
            (their fidelity is in the README).
        summary: one line for the help.
        session_module: the module of this package whose ``open_sessions`` opens an engine
            directory on it; None for the torch reference, which runs a torch model.
        builds_engines: True when an engine directory holds engines built for this backend,
            one per precision (TensorRT), which the export cache adds when they are missing.
        package: the Python package it needs (to tell whether it is installed).
        extra: the pip extra that installs it (None: the base install).
    """

    name: str
    precisions: tuple[str, ...]
    summary: str
    session_module: str | None
    package: str
    builds_engines: bool = False
    extra: str | None = None

    @property
    def reads_engine_dir(self) -> bool:
        """True when it runs an exported engine directory (every backend but torch)."""
        return self.session_module is not None

    @property
    def approximate(self) -> tuple[str, ...]:
        return self.precisions[1:]


BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (
    Backend("onnxruntime", ("fp32", "int8"), "the exported graphs in ONNX Runtime (torch-free; int8 after "
            "unioncam-rt quantize)", "onnxruntime_session", "onnxruntime"),
    Backend("openvino", ("fp32", "bf16"), "the exported graphs in OpenVINO on the CPU (torch-free)",
            "openvino_session", "openvino", extra="openvino"),
    Backend("tensorrt", ("fp32", "fp16"), "TensorRT engines built into the engine directory (NVIDIA GPU)",
            "tensorrt_session", "tensorrt", builds_engines=True, extra="tensorrt"),
    Backend("torch", ("fp32", "fp16"), "the PyTorch reference (autograd; fp16 on CUDA); needs a torch model",
            None, "torch", extra="export"),
)}
DEFAULT_BACKEND = "onnxruntime"
PRECISIONS = tuple(dict.fromkeys(p for backend in BACKENDS.values() for p in backend.precisions))


def get_backend(name: str) -> Backend:
    """The backend called ``name``, or a one-line error naming the available ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnionCamError(f"backend {name!r} unknown; available: {', '.join(BACKENDS)}") from None


def check_mode(backend: str, precision: str) -> Backend:
    """The backend, once ``precision`` is known to be one of its modes (the one check)."""
    chosen = get_backend(backend)
    if precision not in PRECISIONS:
        raise UnionCamError(f"precision {precision!r} unknown; available: {', '.join(PRECISIONS)}")
    if precision not in chosen.precisions:
        where = ", ".join(b.name for b in BACKENDS.values() if precision in b.precisions)
        raise UnionCamError(f"--precision {precision} is not one of {backend}'s modes ({backend} runs "
                            f"{' or '.join(chosen.precisions)}); {precision} runs on: {where}")
    return chosen


def installed(name: str) -> bool:
    """True when the backend's Python package is installed (it is not imported)."""
    from importlib.util import find_spec

    return find_spec(get_backend(name).package) is not None


def native_precisions(name: str) -> tuple[str, ...]:
    """The precisions of an installed backend this machine runs natively (the backend's
    session module may say, with a ``native_precisions()``; else all of them)."""
    backend = get_backend(name)
    if backend.session_module is None:
        return backend.precisions
    module = importlib.import_module(f"{__package__}.{backend.session_module}")
    return getattr(module, "native_precisions", lambda: backend.precisions)()


def backends_help() -> str:
    """``name (summary)`` for every backend, for ``--backend``'s help."""
    return "; ".join(f"{b.name}: {b.summary}" + (f" [pip extra {b.extra}]" if b.extra else "")
                     for b in BACKENDS.values())


def precisions_help() -> str:
    """Which backend runs which precision, for ``--precision``'s help."""
    approximate = [f"{p} ({', '.join(b.name for b in BACKENDS.values() if p in b.approximate)})"
                   for p in PRECISIONS if p != "fp32"]
    return f"fp32 (default, exact on every backend); {'; '.join(approximate)}"


def open_sessions(directory: Path, manifest, backend: str, providers: list[str] | None, precision: str = "fp32",
                  threads: int | None = None):
    """The features, scores and decision sessions of an engine directory on ``backend``;
    imports only that backend.

    The decision session scores UnionCAM's three maps (the betas, hence the branch); in the
    CPU's reduced-precision modes (``int8`` on onnxruntime, ``bf16`` on openvino) it and the
    features pass stay fp32, so only the per-channel masked passes, nearly all the cost,
    run in reduced precision. None means: the scores session decides too.
    """
    chosen = check_mode(backend, precision)
    if not chosen.reads_engine_dir:
        raise UnionCamError(f"the {backend} backend runs a model, not an engine directory")
    module = importlib.import_module(f"{__package__}.{chosen.session_module}")
    return module.open_sessions(directory, manifest, precision, providers, threads)
