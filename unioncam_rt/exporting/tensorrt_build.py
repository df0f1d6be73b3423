"""``EngineFromOnnx``: TensorRT engines from the exported ONNX graphs (TensorRT 10 API).

Each engine gets one optimisation profile over its dynamic axes (``batch`` for
``features``; ``masks`` and ``images`` for ``scores``) with min/opt/max from
``--max-batch``, a shared timing cache file, and metadata (TensorRT version, GPU name and
compute capability, precision, profiles) recorded in the manifest, so that the runtime
refuses an engine built for another TensorRT or GPU (and the export cache rebuilds it).

Precision: TensorRT enables TF32 by default; it is cleared here, so an ``fp32`` engine
computes in IEEE fp32. An ``fp16`` engine sets ``BuilderFlag.FP16`` (TF32 still cleared):
TensorRT may then run any layer in fp16 where it is faster, the rest in fp32. Written
for TensorRT 10 (``BuilderFlag.FP16`` is deprecated there and removed in TensorRT 11,
hence the ``tensorrt>=10,<11`` bound of the extra). Never run by this project so far.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import require
from ..runtime.tensorrt_env import TensorRTBuildError, engine_mismatch, gpu_identity, tensorrt_available

__all__ = ["MAX_SCORE_IMAGES", "TIMING_CACHE", "TensorRTBuildError", "engine_from_onnx", "engine_mismatch",
           "gpu_identity", "profile_shapes", "tensorrt_available"]

TIMING_CACHE = "timing.cache"
MAX_SCORE_IMAGES = 8  # images one scores-engine call may reference; callers are chunked to fit


def profile_shapes(kind: str, input_size, feature_shape, max_batch: int) -> dict[str, tuple]:
    """``{input: (min, opt, max)}`` shapes for one engine."""
    height, width = input_size
    _, h, w = feature_shape
    opt = max(1, max_batch // 2)
    if kind == "features":
        return {"image": ((1, 3, height, width), (opt, 3, height, width), (max_batch, 3, height, width)),
                "class_index": ((1,), (opt,), (max_batch,))}
    images = max(1, min(max_batch, MAX_SCORE_IMAGES))
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
    config.clear_flag(trt.BuilderFlag.TF32)  # on by default in TensorRT: fp32 engines stay IEEE fp32
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
