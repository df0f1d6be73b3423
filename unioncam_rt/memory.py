"""``--max-memory``: choosing the masked batch size so that peak memory stays under a budget.

Peak resident memory of ``explain`` on an exported engine is about

    (what the process holds now) + (weights not yet read from the mapped file)
    + batch x SLOP x (scoring activations per masked image) + RESERVE,

where the per-image term is the manifest's liveness estimate of the scoring graph
(``scoring_bytes_per_image``, measured at export) and ``SLOP`` covers what ONNX Runtime
adds to it (arena rounding, NCHWc reorder buffers): measured 1.39x on VGG16, 1.38x on
ResNet-50, 1.13x on EfficientNet-Lite0 (README, Memory). The largest batch that fits is
used, never more than the default; a budget too small for one masked image is refused.
What it trades: nothing on this CPU down to batch 8 (a masked pass costs the same per
image from batch 8 to 32, measured); below that, more engine calls per image.
"""

from __future__ import annotations

import re

from .errors import UnionCamError

SLOP = 1.5
RESERVE = 64 * 2**20  # images, maps and Python objects of one step
DEFAULT_BATCH = 16
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30}


def parse_size(text) -> int:
    """``"2GB"`` -> 2e9 bytes; also ``2GiB``, ``1500MB``, ``512M`` (binary), or a number of bytes."""
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise UnionCamError(f"--max-memory {text!r}: give a size such as 2GB, 1500MB or 2GiB")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UnionCamError(f"--max-memory {text!r} must be positive")
    return value


def show(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def resident_bytes() -> int:
    """This process's resident memory now."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def batch_for_memory(budget: int, per_image: int, unread_weights: int, default: int = DEFAULT_BATCH) -> int:
    """The largest masked batch (at most ``default``) whose estimated peak fits ``budget``."""
    if per_image <= 0:
        raise UnionCamError("--max-memory needs an engine exported by unioncam-rt 0.2 or later (re-export)")
    base = resident_bytes() + unread_weights + RESERVE
    fits = int((budget - base) // (SLOP * per_image))
    if fits < 1:
        raise UnionCamError(f"--max-memory {show(budget)} is too small for this engine: it needs about "
                            f"{show(base + SLOP * per_image)} for one masked image at a time")
    return min(fits, default)
