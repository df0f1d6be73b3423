"""Writing explanations to disk: overlay PNG, 8-bit map PNG, JSON, optional .npy.

Every file is written to a temporary name in the same folder and renamed into place, so
an interrupted run never leaves a half-written file under a final name.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .explainer import Explanation


def jet(values: np.ndarray) -> np.ndarray:
    """The JET colour map: ``[...]`` floats in [0, 1] to ``[..., 3]`` uint8 RGB."""
    v = np.clip(values, 0, 1)[..., None]
    centres = np.array([3.0, 2.0, 1.0])  # red, green, blue peaks at 3/4, 1/2, 1/4
    rgb = np.clip(1.5 - np.abs(4 * v - centres), 0, 1)
    return np.round(rgb * 255).astype(np.uint8)


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """JET map resized to the image's own size, blended over it (``alpha`` = map weight)."""
    heat = Image.fromarray(cam.astype(np.float32), "F").resize(image.size, Image.BILINEAR)
    colours = jet(np.asarray(heat))
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    mixed = (1 - alpha) * base + alpha * colours.astype(np.float32)
    return Image.fromarray(np.round(mixed).astype(np.uint8), "RGB")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def png_bytes(image: Image.Image) -> bytes:
    """A Pillow image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """An array in ``.npy`` format."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_explanation(result: Explanation, out_dir: Path, stem: str, save_npy: bool = False) -> list[Path]:
    """Write ``<stem>.overlay.png``, ``<stem>.cam.png``, ``<stem>.json`` (and ``.cam.npy``).

    All contents are rendered in memory first; files are then renamed into place, the
    JSON last, so a JSON on disk means the maps beside it are complete.
    """
    payloads: list[tuple[Path, bytes]] = [
        (out_dir / f"{stem}.overlay.png", png_bytes(overlay(result.image.rgb, result.cam))),
        (out_dir / f"{stem}.cam.png", png_bytes(Image.fromarray(np.round(result.cam * 255).astype(np.uint8), "L"))),
    ]
    if save_npy:
        payloads.append((out_dir / f"{stem}.cam.npy", npy_bytes(result.cam.astype(np.float32))))
    payloads.append((out_dir / f"{stem}.json", (json.dumps(result.summary(), indent=2) + "\n").encode()))
    for path, data in payloads:
        atomic_write_bytes(path, data)
    return [path for path, _ in payloads]


def unique_stems(paths: list[Path]) -> list[str]:
    """Output stems for input paths; a repeated stem gets ``-2``, ``-3``... appended."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        stems.append(path.stem if count == 1 else f"{path.stem}-{count}")
    return stems
