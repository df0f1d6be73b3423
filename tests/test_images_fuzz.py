"""Untrusted image bytes: a seeded, bounded fuzz of `decode_upright_rgb` over every format
Pillow can both write and read here (PNG, JPEG, GIF, BMP, TIFF, WebP, ICO, PPM, TGA, IM, PCX,
SGI, DDS, BLP, QOI, SPIDER, AVIF... as this Pillow build has them) and the magic bytes of
formats it only reads. Every case must end in an RGB image or our `ImageError`: a decoder's
``NotImplementedError``, ``TypeError``, ``RuntimeError``... escaping would be a 500 in the
service and a traceback in the CLI."""

from __future__ import annotations

import io
import random
import time

import numpy as np
import pytest
from PIL import Image, ImageFile

from unioncam_rt.errors import ImageError, UnionCamError
from unioncam_rt.images import decode_upright_rgb

SEED = 8  # with Pillow 13, reaches a BLPFormatError and a NotImplementedError (DDS) the old code let escape
MUTATIONS_PER_FORMAT = 20
MAX_PIXELS = 1_000_000
TIME_LIMIT_S = 60  # the whole fuzz takes about a second; a hang in a decoder fails here
# formats Pillow opens but cannot write: a magic prefix and random bytes
READ_ONLY_MAGIC = {
    "PSD": b"8BPS\x00\x01", "FLI": b"\x00\x00\x00\x00\x11\xaf", "SUN": b"\x59\xa6\x6a\x95", "XPM": b"/* XPM */",
    "CUR": b"\x00\x00\x02\x00", "DCX": b"\xb1\x68\xde\x3a", "FITS": b"SIMPLE  =                    T",
    "GBR": b"\x00\x00\x00\x1c\x00\x00\x00\x02", "FTEX": b"FTEX", "PIXAR": b"\x80\xe8\x00\x00",
    "MCIDAS": b"\x00\x00\x00\x00\x00\x00\x00\x04", "XVTHUMB": b"P7 332", "IMT": b"\x0cwidth 8\n", "PCD": b"PCD_IPI",
}


class TooLarge(UnionCamError):
    """The size check's refusal (stands for the service's 413)."""


def refuse_large(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise TooLarge(f"{width}x{height}")


def sample_image() -> Image.Image:
    """A small RGB gradient with some structure for every encoder to chew on."""
    y, x = np.mgrid[0:20, 0:28]
    pixels = np.stack([x * 9, y * 12, (x * y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def encodings() -> dict[str, bytes]:
    """Valid bytes of every format this Pillow writes and reads back (first mode that works)."""
    Image.init()
    image, found = sample_image(), {}
    for fmt in sorted(Image.SAVE):
        for mode in ("RGB", "L", "P", "1", "RGBA"):
            buffer = io.BytesIO()
            try:
                image.convert(mode).save(buffer, format=fmt)
                Image.open(io.BytesIO(buffer.getvalue())).load()
            except Exception:  # noqa: BLE001 - this format/mode is not available here
                continue
            found[fmt] = buffer.getvalue()
            break
    return found


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One seeded mutation: flipped bytes, a truncation, header fields set to 0 or 0xFF,
    inserted garbage, or a flipped header byte."""
    out = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == 1:
        out = out[: rng.randrange(1, len(out))]
    elif kind == 2:
        start, count = rng.randrange(min(len(out), 64)), rng.randint(1, 4)
        out[start:start + count] = bytes([rng.choice((0, 0xFF))]) * count
    elif kind == 3:
        at = rng.randrange(len(out))
        out[at:at] = rng.randbytes(rng.randint(1, 32))
    else:
        out[rng.randrange(min(len(out), 128))] = rng.randrange(256)
    return bytes(out)


def cases() -> list[tuple[str, bytes]]:
    rng = random.Random(SEED)
    found = [(fmt, data) for fmt, data in encodings().items()]
    found += [(fmt, magic + rng.randbytes(200)) for fmt, magic in READ_ONLY_MAGIC.items()]
    return [(fmt, mutate(data, rng)) for fmt, data in found for _ in range(MUTATIONS_PER_FORMAT)]


def decode_outcome(data: bytes) -> str:
    """``"image"`` or ``"refused"``; anything else escapes (the failure this test looks for)."""
    try:
        image = decode_upright_rgb(io.BytesIO(data), "fuzz", refuse_large)
    except (ImageError, TooLarge) as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        return "refused"
    assert image.mode == "RGB" and image.width * image.height <= MAX_PIXELS
    return "image"


def test_the_fuzz_covers_the_common_formats():
    found = encodings()
    assert {"PNG", "JPEG", "GIF", "BMP", "TIFF", "ICO", "PPM", "TGA", "IM", "PCX", "SGI", "DDS"} <= set(found)
    assert len(cases()) >= 300


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")  # "Truncated File Read", NaN pixels
def test_mutated_images_decode_or_raise_our_error():
    started = time.monotonic()
    escaped, outcomes = [], {"image": 0, "refused": 0}
    for fmt, data in cases():
        try:
            outcomes[decode_outcome(data)] += 1
        except Exception as exc:  # noqa: BLE001 - collected, so the report lists every escape at once
            escaped.append(f"{fmt}: {type(exc).__name__}: {exc}"[:200])
        assert time.monotonic() - started < TIME_LIMIT_S, "decoding the fuzz cases took too long"
    assert not escaped, escaped
    assert outcomes["image"] > 0 and outcomes["refused"] > 0, outcomes  # both paths ran


def test_decoder_errors_other_than_oserror_are_one_line_image_errors(monkeypatch):
    def unimplemented(self):
        raise NotImplementedError("Unimplemented pixel format\nsecond line")

    monkeypatch.setattr(ImageFile.ImageFile, "load", unimplemented)
    data = io.BytesIO()
    sample_image().save(data, format="PNG")
    with pytest.raises(ImageError, match=r"^fuzz: corrupt or truncated image \(NotImplementedError: Unimplemented "
                                         r"pixel format second line\)$"):
        decode_upright_rgb(io.BytesIO(data.getvalue()), "fuzz")
