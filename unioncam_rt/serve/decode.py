"""Request bytes to a `LoadedImage`, under the rules of `unioncam_rt.images` plus size limits.

The same rules as reading a file, through the same code (`unioncam_rt.images.decode_upright_rgb`:
Pillow's decompression-bomb guard on, EXIF orientation applied, every mode to RGB; then the
straight bilinear resize of `to_model_array`). On top, a service refuses, before decoding
any pixel, bodies over ``max_bytes`` and images over ``max_pixels`` (413), whatever Pillow's
own limit.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from ..errors import ImageError
from ..images import LoadedImage, decode_upright_rgb, to_model_array
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
    rgb = decode_upright_rgb(io.BytesIO(data), f"body ({len(data)} bytes)", limits.check_pixels, PayloadTooLarge)
    return LoadedImage(path=None, rgb=rgb, array=to_model_array(rgb, input_size))
