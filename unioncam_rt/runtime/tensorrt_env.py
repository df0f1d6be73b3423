"""Is TensorRT usable here, on which GPU, and can a built engine run on it (no TensorRT
import at module load; shared by the engine builder and the session)."""

from __future__ import annotations

import shutil
import subprocess

from ..errors import UnionCamError, require


class TensorRTBuildError(UnionCamError):
    """TensorRT could not parse or build a graph, or has no GPU to build for."""


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


def engine_mismatch(metadata: dict) -> str | None:
    """Why an engine with this manifest entry cannot run here (another TensorRT version or
    another GPU), or None when it can."""
    trt = require("tensorrt", "tensorrt")
    if metadata.get("tensorrt") != trt.__version__:
        return f"built with TensorRT {metadata.get('tensorrt')}, this is {trt.__version__}"
    here = gpu_identity()
    if metadata.get("compute_capability") != here["compute_capability"] or metadata.get("gpu") != here["gpu"]:
        return (f"built for {metadata.get('gpu')} (sm {metadata.get('compute_capability')}), this GPU is "
                f"{here['gpu']} (sm {here['compute_capability']})")
    return None


def tensorrt_available() -> str | None:
    """None if TensorRT, cuda-python and a GPU are usable here, else the reason they are not."""
    try:
        import tensorrt
    except ImportError:
        return "tensorrt is not installed (pip install 'unioncam-rt[tensorrt]')"
    major = str(getattr(tensorrt, "__version__", "0")).split(".")[0]
    if major != "10":
        return f"tensorrt {tensorrt.__version__} is installed; unioncam-rt's TensorRT code is written for TensorRT 10"
    try:
        from cuda.bindings import runtime  # noqa: F401  cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # noqa: F401  cuda-python < 12.6
        except ImportError:
            return "cuda-python is not installed (pip install 'unioncam-rt[tensorrt]')"
    try:
        gpu_identity()
    except TensorRTBuildError as exc:
        return str(exc)
    return None
