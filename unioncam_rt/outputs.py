"""Writing explanations to disk: overlay PNG, 8-bit map PNG, JSON, optional .npy
(each file written atomically, see `unioncam_rt.fileio`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .fileio import atomic_write_bytes, npy_bytes, png_bytes
from .results import Explanation


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


def output_suffixes(save_npy: bool = False) -> tuple[str, ...]:
    """The files `render_explanation` makes for a stem, in the order written (the JSON last)."""
    return (".overlay.png", ".cam.png", *((".cam.npy",) if save_npy else ()), ".json")


def render_explanation(result: Explanation, stem: str, save_npy: bool = False) -> list[tuple[str, bytes]]:
    """The files of one explanation, in memory: ``(file name, contents)`` for
    ``<stem>.overlay.png``, ``<stem>.cam.png`` (and ``.cam.npy``), the JSON last."""
    contents = {  # zlib level 1: the zebra overlay encodes about 2x faster than at 6, 0.6% larger
        ".overlay.png": lambda: png_bytes(overlay(result.image.rgb, result.cam), compress_level=1),
        ".cam.png": lambda: png_bytes(Image.fromarray(np.round(result.cam * 255).astype(np.uint8), "L")),
        ".cam.npy": lambda: npy_bytes(result.cam.astype(np.float32)),
        ".json": lambda: (json.dumps(result.summary(), indent=2) + "\n").encode(),
    }
    return [(f"{stem}{suffix}", contents[suffix]()) for suffix in output_suffixes(save_npy)]


def explanation_line(name: str, result: Explanation, destination: Path) -> str:
    """The line a run prints for one explained image: ``name: class (p) [branch] -> dest.*``."""
    branch = f" [{result.union.branch}]" if result.union else ""
    flag = " (constant map: written as zeros)" if result.constant_map else ""
    return f"{name}: {result.class_name} ({result.probability:.3f}){branch} -> {destination}.*{flag}"


def write_explanation(result: Explanation, out_dir: Path, stem: str, save_npy: bool = False) -> list[Path]:
    """Write ``<stem>.overlay.png``, ``<stem>.cam.png``, ``<stem>.json`` (and ``.cam.npy``).

    All contents are rendered in memory first; files are then renamed into place, the
    JSON last, so a JSON on disk means the maps beside it are complete.
    """
    written = []
    for name, data in render_explanation(result, stem, save_npy):
        atomic_write_bytes(out_dir / name, data)
        written.append(out_dir / name)
    return written


def unique_stems(paths: list[Path]) -> list[str]:
    """Output stems for input paths; a repeated stem gets ``-2``, ``-3``... appended."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen.get(path.stem, 0) + 1
        seen[path.stem] = count
        stems.append(path.stem if count == 1 else f"{path.stem}-{count}")
    return stems
