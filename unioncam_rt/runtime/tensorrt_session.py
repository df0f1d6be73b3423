"""TensorRT backend (TensorRT 10 tensor API, cuda-python for device memory).

Not run in this project's CI (no GPU there); see the README for what has been run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DependencyError, UnionCamError, require
from .session import Session
from .tensorrt_env import engine_mismatch


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise DependencyError("the TensorRT backend needs cuda-python: pip install cuda-python") from None
    return cudart


def _stream_handle(stream) -> int:
    """The raw ``cudaStream_t`` address TensorRT's ``execute_async_v3`` takes.

    cuda-bindings >= 12.9.1 deprecates ``int(cuda_obj)`` in favour of
    ``cuda.bindings.utils.get_cuda_native_handle``; older releases only have ``int()``.
    """
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(stream)
    return int(get_cuda_native_handle(stream))


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise UnionCamError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class _DeviceBuffer:
    def __init__(self, cudart):
        self.cudart, self.ptr, self.nbytes = cudart, 0, 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr = _check(self.cudart.cudaMalloc(nbytes))
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            _check(self.cudart.cudaFree(self.ptr))
            self.ptr, self.nbytes = 0, 0


def check_engine_metadata(path: Path, metadata: dict) -> None:
    """Refuse an engine built by another TensorRT version or for another GPU."""
    from ..manifest import EngineDirError

    reason = engine_mismatch(metadata)
    if reason:
        raise EngineDirError(f"{path.name} was {reason}; rebuild it (unioncam-rt export --tensorrt, or let the "
                             "export cache rebuild it by omitting --engine)")


class TensorRTSession(Session):
    """A deserialised TensorRT engine behind the `Session` protocol.

    Args:
        path: the ``.engine`` file.
        metadata: its manifest entry (TensorRT version, GPU); checked before loading.
    """

    backend = "tensorrt"

    def __init__(self, path: Path, metadata: dict):
        trt = require("tensorrt", "tensorrt")
        check_engine_metadata(Path(path), metadata)
        self.trt, self.cudart = trt, _cudart()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise UnionCamError(f"{path}: TensorRT could not deserialise the engine; rebuild it")
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.buffers = {n: _DeviceBuffer(self.cudart) for n in names}
        # (min, opt, max) shapes of optimisation profile 0, the only one export builds
        self.profile = {n: [tuple(s) for s in self.engine.get_tensor_profile_shape(n, 0)] for n in inputs}
        super().__init__(path, inputs, outputs)

    def max_rows(self, name: str) -> int | None:
        """Largest first dimension profile 0 admits for input ``name``."""
        return int(self.profile[name][2][0]) if name in self.profile else None

    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hosts = {}
        for name in self.input_names:
            array = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            hosts[name] = array
            if not self.context.set_input_shape(name, array.shape):
                low, _, high = self.profile[name]
                raise UnionCamError(f"{self.path.name}: input {name} of shape {list(array.shape)} is outside the "
                                    f"engine's optimisation profile ({list(low)} to {list(high)})")
            ptr = self.buffers[name].ensure(max(array.nbytes, 1))
            _check(cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, h2d, self.stream))
            self.context.set_tensor_address(name, ptr)
        results = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            results[name] = np.empty(shape, dtype=self.dtypes[name])
            self.context.set_tensor_address(name, self.buffers[name].ensure(max(results[name].nbytes, 1)))
        if not self.context.execute_async_v3(_stream_handle(self.stream)):
            raise UnionCamError(f"{self.path.name}: TensorRT execution failed")
        for name, array in results.items():
            _check(cudart.cudaMemcpyAsync(array.ctypes.data, self.buffers[name].ptr, array.nbytes, d2h, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return results

    def close(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()
        if self.stream is not None:
            _check(self.cudart.cudaStreamDestroy(self.stream))
            self.stream = None


def open_sessions(directory: Path, manifest, precision: str, providers: list[str] | None, threads: int | None):
    """(features, scores, None): the directory's TensorRT engines of ``precision``
    (``providers`` and ``threads`` do not apply)."""
    from ..manifest import EngineDirError, trt_engine_name

    sessions = []
    for graph in ("features", "scores"):
        name = trt_engine_name(graph, precision)
        if name not in manifest.engines:
            raise EngineDirError(f"{directory} has no {precision} TensorRT engine {name}; "
                                 f"export with --tensorrt{' --fp16' if precision == 'fp16' else ''}")
        sessions.append(TensorRTSession(directory / name, manifest.engines[name]))
    return sessions[0], sessions[1], None
