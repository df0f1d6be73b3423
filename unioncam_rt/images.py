"""Reading images into the model's pixel space.

Every consumer (reference, exported graphs, runtime) feeds RGB floats in [0, 1] of shape
``[3, H, W]``; mean/std normalisation belongs to the model.

Rules, in order:

1. The file is opened with Pillow, with Pillow's decompression-bomb guard on (images over
   ``PIL.Image.MAX_IMAGE_PIXELS`` are refused with a clear error rather than a warning).
2. EXIF orientation is applied (``ImageOps.exif_transpose``), so a portrait phone photo is
   explained upright.
3. Mode to RGB:

   * 16-bit and 32-bit integer greyscale (``I;16``, ``I;16B``, ``I;16L``, ``I``) are scaled
     by 1/65535 (values clipped to [0, 65535]) and repeated on three channels;
   * float greyscale (``F``) is taken as 0..255 and clipped;
   * modes with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparency key,
     ``La``/``RGBa``) are composited onto **white**, the way viewers show them;
   * everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) goes
     through Pillow's own ``convert("RGB")``.
4. The RGB image is resized straight to the model input size (224 x 224 for every zoo
   model), bilinear with Pillow's antialiasing, no crop, as in the paper. The aspect ratio
   is not kept; the overlay is drawn back at the original size.
"""

from __future__ import annotations

import errno
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, UnionCamError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_INT_GREY_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


@dataclass
class LoadedImage:
    """An image read from disk.

    Attributes:
        path: where it came from (``None`` for in-memory images).
        rgb: the upright RGB image at its original size.
        array: float32 ``[3, H, W]`` in [0, 1] at the model input size.
    """

    path: Path | None
    rgb: Image.Image
    array: np.ndarray

    @property
    def original_size(self) -> tuple[int, int]:
        """(width, height) of the upright original."""
        return self.rgb.size


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB following the module's documented rule."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _INT_GREY_MODES:
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(values, 0, 65535) / 65535.0
        return Image.fromarray(np.round(grey * 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        values = np.clip(np.asarray(image, dtype=np.float64), 0, 255)
        return Image.fromarray(np.round(values).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: str | Path) -> Image.Image:
    """Open an image file, upright and in RGB, or raise `ImageError` in one line."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    return decode_upright_rgb(path, str(path))


def decode_upright_rgb(source, label: str, check_size=None, too_large: type[Exception] = ImageError) -> Image.Image:
    """Decode ``source`` (a path or a binary file object) upright and in RGB, with Pillow's
    decompression-bomb guard on (its warning is an error).

    Args:
        source: what `PIL.Image.open` reads.
        label: names the image in the one-line errors (``"{label}: ..."``).
        check_size: called with (width, height) from the header, before any pixel is decoded.
        too_large: the error raised when the decompression-bomb guard refuses the image.

    Raises:
        ImageError: not an image, truncated or corrupt (whatever Pillow's decoders raise on
            untrusted bytes: ``OSError``, ``NotImplementedError``, ``TypeError``...);
        ``too_large``: a decompression bomb; ``check_size``'s own `UnionCamError`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                if check_size is not None:
                    check_size(*opened.size)
                opened.load()
                return to_rgb(ImageOps.exif_transpose(opened))
    except UnionCamError:
        raise  # check_size's refusal, as it is
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_large(f"{label}: image too large ({exc}); Pillow's decompression-bomb guard refused it") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image Pillow can read") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes is a bad image, not a bug
        detail = " ".join(str(exc).split())[:300]
        kind = "" if isinstance(exc, (OSError, SyntaxError, ValueError)) else f"{type(exc).__name__}: "
        raise ImageError(f"{label}: corrupt or truncated image ({kind}{detail or type(exc).__name__})") from None


def to_model_array(rgb: Image.Image, input_size: tuple[int, int]) -> np.ndarray:
    """Resize straight to ``input_size`` = (H, W) and return float32 ``[3, H, W]`` in [0, 1]."""
    height, width = input_size
    resized = rgb.resize((width, height), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0)


def load_image(source: str | Path | Image.Image | np.ndarray, input_size: tuple[int, int]) -> LoadedImage:
    """Read a file, a Pillow image or an ``HxWx3`` uint8 array into a `LoadedImage`."""
    if isinstance(source, (str, Path)):
        rgb = open_image(source)
        path = Path(source)
    elif isinstance(source, Image.Image):
        rgb, path = to_rgb(ImageOps.exif_transpose(source)), None
    elif isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise ImageError(
                f"array images must be HxWx3 uint8 RGB; got shape {source.shape} dtype {source.dtype}"
            )
        rgb, path = Image.fromarray(source, "RGB"), None
    else:
        raise ImageError(f"unsupported image type {type(source).__name__}; give a path, PIL image or array")
    return LoadedImage(path=path, rgb=rgb, array=to_model_array(rgb, input_size))


def unreadable_link(path: Path) -> str | None:
    """Why ``path``, a symbolic link, leads to no file (a loop, a missing target), or None."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop; nothing to read"
        return f"symbolic link to {os.readlink(path)!r}, which does not exist ({exc.strerror})"
    return None


def _directory_images(directory: Path) -> list[Path]:
    """Files of ``directory`` with an image suffix, and links there that lead nowhere (a
    loop, a missing target: kept, so the run reports them instead of skipping them)."""
    try:
        entries = list(directory.iterdir())
    except OSError as exc:
        raise ImageError(f"{directory}: cannot list the directory ({exc.strerror or exc})") from None
    named = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(p for p in named if p.is_file() or unreadable_link(p))


def list_images(inputs: list[str | Path]) -> list[Path]:
    """Expand files and directories (not recursive) into a sorted list of image paths.

    Files named explicitly are kept whatever their suffix (so a bad file is reported, not
    skipped silently); directories contribute files with a known image suffix, and links
    with such a name that lead to no file (loops, missing targets), so that these too are
    reported with the run's other failures.
    """
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = _directory_images(item)
            if not found:
                raise ImageError(f"{item}: directory holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        else:
            paths.append(item)
    return paths
