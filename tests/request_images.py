"""Encoded images for request tests: good, corrupt and oversized bodies, made in memory."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo_like(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A smooth seeded RGB image."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), "RGB")
    return small.resize((width, height), Image.BILINEAR)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels (8-bit greyscale) and holds no pixel
    data: a decompression bomb's header, a few dozen bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = encoded(photo_like(256, 256), "JPEG", quality=90)
    return data[: len(data) // 2]
