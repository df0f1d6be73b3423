"""OpenVINO backend (CPU): the same exported ``features.onnx`` / ``scores.onnx``, torch-free.

OpenVINO picks bf16 by itself on CPUs that have it (AVX-512 BF16, AMX); ``fp32`` forces
``INFERENCE_PRECISION_HINT=f32`` (exact, checked against ONNX Runtime), ``bf16`` asks for
bf16 (an approximate fast mode; its fidelity is published in the README). The precision
the compiled model actually uses is read back into `OpenVinoSession.precision`.
Compiled models of an engine directory are kept (see `compiled_cache`), so a process that
opens the same engine again imports them instead of compiling (Lite0's three graphs: 0.27 s
instead of 0.64 s, ``benchmarks/bench_latency.py``).
Needs the ``openvino`` extra.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import UnionCamError, require
from ..manifest import SCORES_FILE
from . import compiled_cache
from .session import Session

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
# inputs of the masked scoring graph with one row per masked image (``image`` is shared)
ROW_INPUTS = ("masks", "image_index", "class_index")
_CORE = None
_CORE_LOCK = threading.Lock()


_CONVERTER = "openvino.tools.ovc"


def import_openvino():
    """``import openvino`` without importing its model converter (``openvino.tools.ovc`` and
    its telemetry), which ``openvino/__init__.py`` imports eagerly: over half of the import's
    time (about 40 of 75 ms on a quiet 2-core VM, README: Latency), and this package only
    compiles and runs ONNX files. ``openvino.convert_model`` stays available: it imports the
    converter when first called. Raises `DependencyError` where openvino is not installed.
    """
    if "openvino" in sys.modules:
        return require("openvino", "openvino")
    with _CORE_LOCK:
        if "openvino" in sys.modules:
            return require("openvino", "openvino")
        blocked = _CONVERTER not in sys.modules
        if blocked:
            sys.modules[_CONVERTER] = None  # the package's own try/except ImportError skips it
        try:
            ov = require("openvino", "openvino")
        finally:
            if blocked and sys.modules.get(_CONVERTER, 0) is None:
                del sys.modules[_CONVERTER]
        if not hasattr(ov, "convert_model"):
            ov.convert_model = _convert_model
        return ov


def _convert_model(*args, **kwargs):
    """``openvino.convert_model``, its converter imported on first use (see `import_openvino`)."""
    from openvino.tools.ovc import convert_model

    return convert_model(*args, **kwargs)


def shared_core():
    """One ``ov.Core`` per process (it owns the CPU plugin and its thread pool)."""
    global _CORE
    ov = import_openvino()
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = ov.Core()
        return _CORE


def native_precisions() -> tuple[str, ...]:
    """The precisions the CPU computes natively: fp32, and bf16 where OpenVINO reports it
    (AVX-512 BF16 or AMX)."""
    try:
        capabilities = shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return ("fp32",)
    return ("fp32", "bf16") if "BF16" in capabilities else ("fp32",)


def compiled_folder(path: Path, config: dict[str, str]) -> Path | None:
    """Where the compiled form of ``path`` under ``config`` is kept (None: not kept).

    Besides the engine's manifest and the file's path, the key holds OpenVINO's version and
    the CPU's name and capabilities, so a shared engine directory serves different hosts.
    """
    ov = import_openvino()
    core = shared_core()
    cpu = [str(core.get_property("CPU", name)) for name in ("FULL_DEVICE_NAME", "OPTIMIZATION_CAPABILITIES")]
    options = ",".join(f"{key}={value}" for key, value in sorted(config.items()))
    return compiled_cache.compiled_folder(path, "openvino", ov.get_version(), *cpu, options)


def compile_cached(path: Path, config: dict[str, str], folder: Path | None):
    """``path`` compiled for the CPU: imported from ``folder`` when it holds it, else
    compiled (and, with a ``folder``, exported into a staging folder published whole)."""
    core = shared_core()
    if folder is None:
        return core.compile_model(str(path), "CPU", config)
    if folder.is_dir():
        return core.compile_model(str(path), "CPU", {**config, "CACHE_DIR": str(folder)})
    try:
        staging = compiled_cache.staging_folder(folder)
    except OSError:
        return core.compile_model(str(path), "CPU", config)
    try:
        compiled = core.compile_model(str(path), "CPU", {**config, "CACHE_DIR": str(staging)})
    except Exception:
        compiled_cache.discard(staging)
        raise
    compiled_cache.publish(staging, folder, path)
    return compiled


def open_in_parallel(specs: list[tuple[Path, str, int | None]]) -> list[OpenVinoSession]:
    """An `OpenVinoSession` for each ``(path, precision, threads)``, compiled or imported in
    parallel threads (OpenVINO releases the GIL while it compiles or imports; ``--fast``
    opens three: features, fp32 and bf16 scoring). Each session is built exactly as alone,
    so nothing it computes changes. If any fails, the others are closed and the first
    failure (in ``specs`` order) is raised.
    """
    if len(specs) < 2:
        return [OpenVinoSession(*spec) for spec in specs]
    shared_core()  # create the Core once, before the threads
    results: list = [None] * len(specs)

    def build(i: int) -> None:
        try:
            results[i] = OpenVinoSession(*specs[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            results[i] = exc

    threads = [threading.Thread(target=build, args=(i,), name=f"unioncam-openvino-open-{i}") for i in range(len(specs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        for r in results:
            if isinstance(r, OpenVinoSession):
                r.close()
        raise failure
    return results


# The names the engine graphs declare. OpenVINO gives a port every name its tensor had: an
# output that is an Identity of an inner tensor (``activations`` of a user's ONNX target)
# carries both, and ``get_any_name`` may return the inner one.
ENGINE_TENSORS = ("image", "class_index", "masks", "image_index", "logits", "activations", "gradients",
                  "resolved_class_index", "probs")


def port_name(port) -> str:
    """The engine's name for a compiled model's port (else any of its names)."""
    names = port.get_names()
    return next((name for name in ENGINE_TENSORS if name in names), port.get_any_name())


class OpenVinoSession(Session):
    """A model compiled by OpenVINO's CPU plugin behind the `Session` protocol.

    Args:
        path: the ``.onnx`` file (external weights are read beside it).
        precision: ``"fp32"`` (default, exact) or ``"bf16"``.
        threads: inference threads (default: OpenVINO's choice, the physical cores).
        streams: requests run at once; a batch of masked images is split over them (default:
            2 for the masked scoring graph unless ``threads`` is 1, else 1). Each masked image
            is scored alone, so the split changes no result (checked bit for bit); two
            streams of one thread each waste less time waiting on each other than one
            stream of two threads, most of all on a busy machine (README: Speed).

    Attributes:
        precision: the precision the compiled model runs.
        cache_folder: where its compiled form is kept (None: not kept; see `compiled_cache`).
        imported: True if it was read from ``cache_folder`` rather than compiled.
        open_s: seconds to compile or import it.
    """

    backend = "openvino"

    def __init__(self, path: Path, precision: str = "fp32", threads: int | None = None, streams: int | None = None):
        if precision not in PRECISION_HINTS:
            raise UnionCamError(f"the openvino backend runs fp32 or bf16, not {precision}")
        if streams is None:
            streams = 2 if Path(path).name == SCORES_FILE and threads != 1 else 1
        config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "NUM_STREAMS": str(int(streams))}
        if streams == 1:
            config["PERFORMANCE_HINT"] = "LATENCY"
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(int(threads))
        self.cache_folder = compiled_folder(Path(path), config)
        self.imported = self.cache_folder is not None and self.cache_folder.is_dir()  # else compiled here
        started = time.perf_counter()
        try:
            self.compiled = compile_cached(Path(path), config, self.cache_folder)
            self.open_s = time.perf_counter() - started
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long messages
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnionCamError(f"{path}: OpenVINO cannot compile it ({first[:300]})") from None
        used = str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self.precision = "bf16" if "bf16" in used or "bfloat16" in used else "fp32" if "32" in used else used
        self.requests = [self.compiled.create_infer_request() for _ in range(int(streams))]
        self._lock = threading.Lock()
        inputs = [port_name(port) for port in self.compiled.inputs]
        outputs = [port_name(port) for port in self.compiled.outputs]
        super().__init__(path, inputs, outputs)

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:  # results are copied out before a request is reused
            parts = self._split(feeds)
            for request, part in zip(self.requests, parts):
                request.start_async(part)
            outputs = []
            for request in self.requests[:len(parts)]:
                request.wait()
                outputs.append({name: np.array(request.get_tensor(self.compiled.output(name)).data, copy=True)
                                for name in self.output_names})
            if len(outputs) == 1:
                return outputs[0]
            return {name: np.concatenate([out[name] for out in outputs]) for name in self.output_names}

    def _split(self, feeds: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """One part per stream: masked-image rows split in order (shared inputs whole)."""
        rows = len(feeds["masks"]) if "masks" in feeds else 0
        count = min(len(self.requests), rows)
        if count < 2:
            return [feeds]
        bounds = np.linspace(0, rows, count + 1).astype(int)
        return [{name: value[start:stop] if name in ROW_INPUTS else value for name, value in feeds.items()}
                for start, stop in zip(bounds[:-1], bounds[1:])]

    def close(self) -> None:
        self.requests = []
        self.compiled = None


def open_sessions(directory: Path, manifest, precision: str, providers: list[str] | None, threads: int | None):
    """(features, scores, decision) sessions of an engine directory; in ``bf16`` only the
    masked scoring runs in bf16, the features pass and the decision stay fp32
    (``providers`` is ONNX Runtime's and ignored here)."""
    from ..manifest import FEATURES_FILE

    specs = [(directory / FEATURES_FILE, "fp32", threads), (directory / SCORES_FILE, "fp32", threads)]
    if precision != "fp32":
        specs.append((directory / SCORES_FILE, precision, threads))
    features, exact, *reduced = open_in_parallel(specs)  # compiled or imported in parallel
    if not reduced:
        return features, exact, None
    return features, reduced[0], exact
