"""Request bytes to a `LoadedImage`, under the rules of `unioncam_rt.images` plus size limits.

The same rules as reading a file (`unioncam_rt.images`): Pillow's decompression-bomb guard
on (its warning is an error), EXIF orientation applied, every mode to RGB with `to_rgb`,
straight bilinear resize with `to_model_array`. On top, a service refuses, before decoding
any pixel, bodies over ``max_bytes`` and images over ``max_pixels`` (413), whatever Pillow's
own limit.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from ..images import LoadedImage, to_model_array, to_rgb
from .errors import PayloadTooLarge

DEFAULT_MAX_BYTES = 20 * 2**20
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class ImageLimits:
    """What one request may carry.

    Attributes:
        max_bytes: largest encoded image (default 20 MiB).
        max_pixels: largest width x height (default 40 million; Pillow's decompression-bomb
            guard, about 89 million by default, applies as well).
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    def check_bytes(self, size: int) -> None:
        """Refuse ``size`` bytes when over ``max_bytes`` (413)."""
        if size > self.max_bytes:
            raise PayloadTooLarge(f"body of {size} bytes is over this service's limit of {self.max_bytes} bytes")

    def check_pixels(self, width: int, height: int) -> None:
        """Refuse an image of ``width`` x ``height`` when over ``max_pixels`` (413)."""
        if width * height > self.max_pixels:
            raise PayloadTooLarge(f"image of {width}x{height} = {width * height} pixels is over this service's "
                                  f"limit of {self.max_pixels} pixels")


def decode_image(data: bytes, input_size: tuple[int, int], limits: ImageLimits = ImageLimits()) -> LoadedImage:
    """Decode an encoded image (JPEG, PNG, WebP... anything Pillow reads) for the model.

    Args:
        data: the encoded bytes.
        input_size: (H, W) of the model.
        limits: size limits (default `ImageLimits()`).

    Returns:
        A `LoadedImage` without a path.

    Raises:
        ImageError: empty, not an image, truncated or corrupt (400).
        PayloadTooLarge: over a limit, or refused by the decompression-bomb guard (413).
    """
    if not data:
        raise ImageError("empty body (0 bytes); send the image's bytes")
    limits.check_bytes(len(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                limits.check_pixels(*opened.size)
                opened.load()
                rgb = to_rgb(ImageOps.exif_transpose(opened))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image too large ({exc}); Pillow's decompression-bomb guard refused it") from None
    except UnidentifiedImageError:
        raise ImageError(f"body ({len(data)} bytes) is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt or truncated image ({exc})") from None
    return LoadedImage(path=None, rgb=rgb, array=to_model_array(rgb, input_size))
