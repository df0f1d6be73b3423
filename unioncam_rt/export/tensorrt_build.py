"""``EngineFromOnnx``: TensorRT engines from the exported ONNX graphs (TensorRT 10 API).

Each engine gets one optimisation profile over its dynamic axis (``batch`` for
``features``, ``masks`` for ``scores``) with min/opt/max from ``--max-batch``, an optional
FP16 flag, a shared timing cache file, and metadata (TensorRT version, GPU name and
compute capability, precision, profiles) recorded in the manifest, so that the runtime
refuses an engine built for another TensorRT or GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import UnionCamError, require

TIMING_CACHE = "timing.cache"


class TensorRTBuildError(UnionCamError):
    """TensorRT could not parse or build a graph."""


def gpu_identity() -> dict:
    """Name and compute capability of GPU 0, from cuda-python, torch or nvidia-smi."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6

        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return {"gpu": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}
    except Exception:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    except Exception:
        pass
    if shutil.which("nvidia-smi"):
        line = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader", "-i", "0"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()
        if line:
            name, _, capability = line.rpartition(",")
            return {"gpu": name.strip(), "compute_capability": capability.strip()}
    raise TensorRTBuildError("no CUDA GPU found; TensorRT engines need one")


def profile_shapes(kind: str, input_size, feature_shape, max_batch: int) -> dict[str, tuple]:
    """``{input: (min, opt, max)}`` shapes for one engine."""
    height, width = input_size
    _, h, w = feature_shape
    opt = max(1, max_batch // 2)
    if kind == "features":
        return {"image": ((1, 3, height, width), (opt, 3, height, width), (max_batch, 3, height, width)),
                "class_index": ((1,), (opt,), (max_batch,))}
    images = max(1, min(max_batch, 8))
    return {"image": ((1, 3, height, width), (1, 3, height, width), (images, 3, height, width)),
            "masks": ((1, 1, h, w), (max_batch, 1, h, w), (max_batch, 1, h, w)),
            "image_index": ((1,), (max_batch,), (max_batch,)),
            "class_index": ((1,), (max_batch,), (max_batch,))}


def engine_from_onnx(onnx_path: Path, engine_path: Path, shapes: dict[str, tuple], fp16: bool,
                     timing_cache: Path, workspace_gib: float = 4.0) -> dict:
    """Build and serialise one engine; returns its metadata for the manifest."""
    trt = require("tensorrt", "tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        if not builder.platform_has_fast_fp16:
            raise TensorRTBuildError("--fp16 asked for, but this GPU has no fast FP16")
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(f"TensorRT failed to build an engine from {onnx_path.name}")
    engine_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"tensorrt": trt.__version__, **gpu_identity(), "precision": "fp16" if fp16 else "fp32",
            "onnx": onnx_path.name, "profiles": {k: [list(s) for s in v] for k, v in shapes.items()}}


def tensorrt_available() -> str | None:
    """None if TensorRT and a GPU are usable here, else the reason they are not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (pip install 'unioncam-rt[tensorrt]')"
    try:
        gpu_identity()
    except TensorRTBuildError as exc:
        return str(exc)
    return None
