"""Reference data for the C++ unit tests, produced by numpy, Pillow and unioncam_rt itself.

Usage: ``python cpp/tests/make_reference.py OUT_DIR``. Writes ``OUT_DIR/index.json`` and the
binary files it names (little-endian raw arrays); ``unioncam_unit_tests --reference OUT_DIR``
checks the C++ pieces against them:

* ``resize``: Pillow ``Image.resize((W, H), Image.BILINEAR)`` on random RGB images of many
  sizes, up and down, odd and extreme aspect ratios (expected: byte-equal);
* ``decode``: PNG files of every colour type and bit depth (palette with and without
  transparency, 16-bit, alpha, an exhaustive value x alpha table, every 16-bit grey value),
  JPEG files (4:2:0, greyscale, CMYK, every EXIF orientation) and PNG with an eXIf chunk,
  expected as `unioncam_rt.images.open_image` reads them (byte-equal);
* ``percentile``: ``np.percentile`` (exact), ``minmax``, ``minmax_f32``, ``upsample``
  (`unioncam_rt.method.ops`), ``denoise`` and ``gradcam`` (`unioncam_rt.method.gradient`),
  ``fuse`` (`unioncam_rt.method.union`);
* ``budget``: `unioncam_rt.method.budget` (channel statistics, selection, fills, peak
  groups and their masks) on feature maps with constant and tied channels;
  ``budget_spec``: `Budget.parse` on specification strings (budget, spec, describe, or
  the error message).
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from unioncam_rt.images import open_image  # noqa: E402
from unioncam_rt.method import gradient, ops, union  # noqa: E402

DEV_IMAGES = ROOT.parent / "shared" / "data" / "imagenet-sample-dev"


class Writer:
    def __init__(self, out: Path):
        self.out = out
        self.count = 0
        out.mkdir(parents=True, exist_ok=True)

    def array(self, values: np.ndarray, dtype: str) -> str:
        name = f"a{self.count:04d}.bin"
        self.count += 1
        np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tofile(self.out / name)
        return name


# ----------------------------------------------------------------------------- resize

def resize_cases(w: Writer, rng: np.random.Generator) -> list[dict]:
    sizes = [
        ((500, 375), (224, 224)), ((375, 500), (224, 224)), ((640, 480), (224, 224)),
        ((224, 224), (224, 224)), ((1, 1), (224, 224)), ((2, 3), (224, 224)), ((5, 3), (17, 11)),
        ((1000, 10), (224, 224)), ((10, 1000), (224, 224)), ((448, 448), (224, 224)),
        ((672, 224), (224, 224)), ((223, 225), (224, 224)), ((225, 223), (224, 224)),
        ((37, 501), (13, 7)), ((300, 200), (224, 224)), ((224, 100), (224, 224)),
        ((100, 224), (224, 224)), ((3, 3), (1, 1)), ((999, 777), (224, 224)), ((7, 7), (224, 224)),
        # around Pillow 13's pass-order switch: height shrinks by more than 2x the width's pixels
        ((100, 300), (50, 199)), ((100, 300), (50, 200)), ((100, 300), (50, 201)), ((300, 500), (224, 224)),
        ((200, 500), (224, 224)), ((224, 500), (224, 224)), ((60, 40), (100, 30)),
    ]
    for _ in range(40):
        sizes.append(((int(rng.integers(1, 400)), int(rng.integers(1, 400))),
                      (int(rng.integers(1, 300)), int(rng.integers(1, 300)))))
    cases = []
    for n, ((width, height), (out_w, out_h)) in enumerate(sizes):
        if n % 3 == 0:  # noise with saturated pixels
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            pixels[rng.random((height, width)) < 0.1] = 255
            pixels[rng.random((height, width)) < 0.1] = 0
        else:  # smooth content plus noise, like photos
            yy, xx = np.mgrid[0:height, 0:width]
            base = 127.5 + 120 * np.sin(xx[..., None] / (3 + n % 7) + yy[..., None] / (5 + n % 5) + np.arange(3))
            pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        expected = np.asarray(Image.fromarray(pixels, "RGB").resize((out_w, out_h), Image.BILINEAR))
        cases.append({"width": width, "height": height, "out_width": out_w, "out_height": out_h,
                      "input": w.array(pixels, "u1"), "expected": w.array(expected, "u1")})
    return cases


# ----------------------------------------------------------------------------- decode

def png_bytes(width: int, height: int, depth: int, colour: int, rows: list[bytes],
              palette: bytes | None = None, trns: bytes | None = None, exif: bytes | None = None) -> bytes:
    """A PNG written chunk by chunk (any colour type and bit depth; no interlace)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    if palette is not None:
        out += chunk(b"PLTE", palette)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    if exif is not None:
        out += chunk(b"eXIf", exif)
    out += chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + row for row in rows)))
    return out + chunk(b"IEND", b"")


def pack_bits(values: np.ndarray, depth: int) -> list[bytes]:
    """Rows of integer samples packed at ``depth`` bits (1, 2, 4, 8 or 16, big-endian)."""
    rows = []
    for row in values:
        if depth == 16:
            rows.append(row.astype(">u2").tobytes())
        elif depth == 8:
            rows.append(row.astype(np.uint8).tobytes())
        else:
            per_byte = 8 // depth
            padded = np.zeros(-(-len(row) // per_byte) * per_byte, dtype=np.uint8)
            padded[: len(row)] = row
            groups = padded.reshape(-1, per_byte)
            shifts = np.arange(per_byte - 1, -1, -1) * depth
            rows.append((groups << shifts).sum(axis=1).astype(np.uint8).tobytes())
    return rows


def decode_files(out: Path, rng: np.random.Generator) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = []

    def png(name: str, *args, **kwargs) -> None:
        path = out / name
        path.write_bytes(png_bytes(*args, **kwargs))
        files.append(path)

    h, w = 13, 21
    for depth in (1, 2, 4, 8, 16):
        grey = rng.integers(0, 2 ** depth, (h, w))
        png(f"grey{depth}.png", w, h, depth, 0, pack_bits(grey, depth))
    png("grey8_trns.png", w, h, 8, 0, pack_bits(rng.integers(0, 256, (h, w)), 8), trns=b"\x00\x07")
    all16 = np.arange(65536).reshape(256, 256)
    png("grey16_all.png", 256, 256, 16, 0, pack_bits(all16, 16))
    for depth in (8, 16):
        rgb = rng.integers(0, 2 ** depth, (h, w * 3))
        png(f"rgb{depth}.png", w, h, depth, 2, pack_bits(rgb, depth))
        la = rng.integers(0, 2 ** depth, (h, w * 2))
        png(f"grey_alpha{depth}.png", w, h, depth, 4, pack_bits(la, depth))
        rgba = rng.integers(0, 2 ** depth, (h, w * 4))
        png(f"rgba{depth}.png", w, h, depth, 6, pack_bits(rgba, depth))
    png("rgb8_trns.png", w, h, 8, 2, pack_bits(rng.integers(0, 256, (h, w * 3)), 8), trns=b"\x00\x01\x00\x02\x00\x03")
    # every (value, alpha) pair: value = x, alpha = y, on all three channels
    value, alpha = np.meshgrid(np.arange(256), np.arange(256))
    table = np.stack([value, 255 - value, value // 2, alpha], axis=-1).reshape(256, 256 * 4)
    png("rgba_all_alphas.png", 256, 256, 8, 6, pack_bits(table, 8))
    for depth in (1, 2, 4, 8):
        colours = 2 ** depth
        palette = rng.integers(0, 256, colours * 3).astype(np.uint8).tobytes()
        index = rng.integers(0, colours, (h, w))
        png(f"palette{depth}.png", w, h, depth, 3, pack_bits(index, depth), palette=palette)
        simple = bytearray(b"\xff" * colours)
        simple[colours // 2] = 0
        png(f"palette{depth}_key.png", w, h, depth, 3, pack_bits(index, depth), palette=palette, trns=bytes(simple))
        alphas = rng.integers(0, 256, max(colours // 2, 1)).astype(np.uint8).tobytes()
        png(f"palette{depth}_alphas.png", w, h, depth, 3, pack_bits(index, depth), palette=palette, trns=alphas)

    photo = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), "RGB").resize((90, 60), Image.BILINEAR)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = out / f"orient{orientation}.jpg"
        photo.save(path, quality=90, exif=exif)
        files.append(path)
    path = out / "orient6.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(path, exif=exif)
    files.append(path)
    for name, image, options in [
        ("q75_420.jpg", photo, {"quality": 75}),
        ("q95_444.jpg", photo, {"quality": 95, "subsampling": 0}),
        ("grey.jpg", photo.convert("L"), {"quality": 85}),
        ("cmyk.jpg", photo.convert("CMYK"), {"quality": 90}),
        ("odd_size.jpg", photo.crop((0, 0, 37, 23)), {"quality": 80}),
        ("progressive.jpg", photo, {"quality": 80, "progressive": True}),
    ]:
        image.save(out / name, **options)
        files.append(out / name)
    if DEV_IMAGES.is_dir():
        dev = sorted(DEV_IMAGES.glob("*.JPEG"))[:2]
        files.extend(dev)
    return files


def decode_cases(w: Writer, rng: np.random.Generator) -> list[dict]:
    cases = []
    for path in decode_files(w.out / "images", rng):
        rgb = np.asarray(open_image(path))
        cases.append({"file": str(path), "width": rgb.shape[1], "height": rgb.shape[0],
                      "expected": w.array(rgb, "u1")})
    return cases


# ----------------------------------------------------------------------------- maths

def percentile_cases(w: Writer, rng: np.random.Generator) -> list[dict]:
    cases = []
    for n in [1, 2, 3, 7, 49, 49, 49, 196, 60]:
        for q in (0.0, 10.0, 33.3, 50.0, 75.0, 90.0, 100.0, float(rng.uniform(0, 100))):
            values = rng.normal(size=n)
            if n > 3 and rng.random() < 0.5:
                values = np.round(values * 2) / 2  # ties
            cases.append({"values": w.array(values, "f8"), "n": n, "q": q,
                          "expected": float(np.percentile(values, q))})
    return cases


def map_cases(w: Writer, rng: np.random.Generator) -> dict:
    upsample = []
    for (h, wd), (oh, ow) in [((7, 7), (224, 224)), ((14, 14), (224, 224)), ((5, 3), (17, 11)),
                              ((7, 7), (3, 3)), ((1, 1), (4, 4)), ((6, 9), (6, 9))]:
        m = rng.random((h, wd))
        upsample.append({"height": h, "width": wd, "out_height": oh, "out_width": ow, "map": w.array(m, "f8"),
                         "expected": w.array(ops.resize_bilinear(m, (oh, ow)), "f8")})
    minmax = []
    for m in [rng.random((7, 7)) * 5 - 2, np.full((7, 7), 3.0), rng.random((3, 5))]:
        minmax.append({"n": m.size, "map": w.array(m, "f8"), "expected": w.array(ops.minmax(m), "f8")})
    minmax_f32 = []
    for m in [rng.random((7, 7)).astype(np.float32) * 6, np.full((7, 7), 0.5, np.float32),
              (rng.random((14, 14)) ** 3).astype(np.float32)]:
        minmax_f32.append({"n": m.size, "map": w.array(m, "f4"), "expected": w.array(ops.minmax(m), "f4")})
    return {"upsample": upsample, "minmax": minmax, "minmax_f32": minmax_f32}


def feature_cases(w: Writer, rng: np.random.Generator) -> list[dict]:
    cases = []
    for k, h, wd, theta, quantised in [(6, 7, 7, 10.0, False), (9, 7, 7, 10.0, True), (5, 14, 14, 30.0, True),
                                       (4, 3, 5, 0.0, False), (4, 7, 7, 100.0, True)]:
        acts = np.maximum(rng.normal(size=(1, k, h, wd)), 0).astype(np.float32)
        acts[0, 0] = 0  # a constant channel
        grads = rng.normal(size=(1, k, h, wd)).astype(np.float32)
        if quantised:
            grads = (np.round(grads * 3) / 3).astype(np.float32)
        grads[0, 1] = 0.25  # constant gradient, as under global average pooling
        cases.append({"channels": k, "height": h, "width": wd, "theta": theta,
                      "activations": w.array(acts, "f4"), "gradients": w.array(grads, "f4"),
                      "denoise": w.array(gradient.denoised_map(acts, grads, theta)[0], "f8"),
                      "gradcam": w.array(gradient.gradcam(acts, grads)[0], "f8")})
    return cases


def fuse_cases(w: Writer, rng: np.random.Generator) -> list[dict]:
    cases = []
    for beta_d, beta_r in [(0.2, 0.5), (-0.1, 0.3), (0.4, -0.2), (-0.3, -0.1), (0.0, 0.0), (0.7, 0.7)]:
        d, r = rng.random((1, 7, 7)), rng.random((1, 7, 7)) ** 2
        fused = union.fuse(d, r, np.array([beta_d]), np.array([beta_r]))[0]
        cases.append({"n": 49, "denoise": w.array(d, "f8"), "region": w.array(r, "f8"), "beta_denoise": beta_d,
                      "beta_region": beta_r, "expected": w.array(fused, "f8")})
    return cases


def budget_feature_maps(rng: np.random.Generator, k: int, h: int, wd: int) -> tuple[np.ndarray, np.ndarray]:
    """Activations with constant channels, exact ties and negative values, and gradients."""
    acts = (rng.random((k, h, wd)) * rng.uniform(0.1, 3, (k, 1, 1))).astype(np.float32)
    acts[1] -= 0.8  # negative values: energy and mass rank differently
    acts[2] = 1.5  # constant
    acts[5] = 0.0  # constant
    acts[3] *= 5  # the largest variance...
    acts[7] = acts[3]  # ...tied: the lower index (3) wins
    acts[9] = acts[4]
    grads = rng.normal(size=(k, h, wd)).astype(np.float32)
    return acts, grads


BUDGET_SPECS = ["exact", "1", "5/energy", "8/mass", "6/gradcam", "cover0.5", "cover0.9:6/energy", "cover1/mass",
                "cover0.3/gradcam", "cover0.7:100", "50", "2/variance/estimate", "1/energy/estimate",
                "6/mass/estimate", "cover0.6/gradcam/estimate", "4/variance/mean", "cover0.5:3/energy/mean",
                "5/variance/group", "cover0.4/energy/group", "3/mass/group", "0/energy/group"]


def budget_cases(w: Writer, rng: np.random.Generator) -> list[dict]:
    """`unioncam_rt.method.budget` on one image: statistics, selection, fills, peak groups."""
    from unioncam_rt.method.budget import (
        Budget,
        channel_statistic,
        fill_weights,
        group_masks,
        peak_groups,
        select_channels,
    )

    cases = []
    for k, h, wd in [(24, 7, 7), (16, 5, 9), (12, 14, 14)]:
        acts, grads = budget_feature_maps(rng, k, h, wd)
        live = ~ops.is_constant(acts[None])
        statistic = {rule: w.array(channel_statistic(rule, acts[None], grads[None])[0], "f8")
                     for rule in ("variance", "energy", "mass", "gradcam")}
        for spec in BUDGET_SPECS:
            budget = Budget.parse(spec)
            scored = select_channels(budget, live, acts[None], grads[None])
            case = {"channels": k, "height": h, "width": wd, "activations": w.array(acts, "f4"),
                    "gradients": w.array(grads, "f4"), "spec": spec, "statistic": statistic,
                    "scored": np.flatnonzero(scored[0]).tolist()}
            scores = np.where(scored[0], rng.random(k), 0.0)[None]
            case["scores"] = w.array(scores[0], "f8")
            rule_statistic = channel_statistic(budget.rule, acts[None], grads[None])
            case["filled"] = w.array(fill_weights(budget, scores, scored, live, rule_statistic)[0], "f8")
            groups = peak_groups(acts[None], live & ~scored)
            _, ids, masks = group_masks(acts[None], groups, ops.minmax)
            case["groups"] = groups[0].tolist()
            case["group_ids"] = [int(g) for g in ids]
            case["group_masks"] = w.array(masks, "f4")
            cases.append(case)
    return cases


def budget_spec_cases() -> list[dict]:
    """`Budget.parse` on specification strings: the budget, its spec() and describe(), or the error."""
    from unioncam_rt.errors import UnionCamError
    from unioncam_rt.method.budget import Budget

    texts = [("0", None, None), ("exact", None, None), ("none", None, None), ("", None, None), (" 128 ", None, None),
             ("128/variance/zero", None, None), ("cover0.85:320/energy/zero", None, None), ("64/mass/mean", None, None),
             ("96/energy/estimate", None, None), ("64/variance/group", None, None), ("cover0.95", None, None),
             ("COVER.5:7", None, None), ("cover1", None, None), ("cover0.85/energy", None, None),
             ("0/energy", None, None), ("exact/mass/group", None, None), ("128", "energy", None),
             ("128/mass", "energy", "mean"), ("cover0.5/mass/zero", None, "estimate"), ("128/", None, None),
             ("128//mean", None, None), ("128/energy/zero/x", None, None), ("-1", None, None), ("12a", None, None),
             ("cover", None, None), ("cover1.", None, None), ("cover0.5:", None, None), ("cover1.5", None, None),
             ("cover0", None, None), ("cover0.5:x", None, None), ("128/Energy", None, None),
             ("128/energy/none", None, None), ("64", "sideways", None), ("64", None, "nearest"),
             ("abc/energy", None, None), ("007", None, None), ("cover0.25:0/gradcam/group", None, None)]
    cases = []
    for text, rule, fill in texts:
        case = {"text": text, "rule": rule, "fill": fill}
        try:
            budget = Budget.parse(text, rule, fill)
            case.update(spec=budget.spec(), describe=budget.describe(), channels=budget.channels,
                        cover=budget.cover, budget_rule=budget.rule, budget_fill=budget.fill)
        except UnionCamError as exc:
            case["error"] = str(exc)
        cases.append(case)
    return cases


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: make_reference.py OUT_DIR")
    out = Path(sys.argv[1])
    w = Writer(out)
    rng = np.random.default_rng(20240611)
    index = {
        "resize": resize_cases(w, rng),
        "decode": decode_cases(w, rng),
        "percentile": percentile_cases(w, rng),
        **map_cases(w, rng),
        "features": feature_cases(w, rng),
        "fuse": fuse_cases(w, rng),
        "budget": budget_cases(w, rng),
        "budget_spec": budget_spec_cases(),
    }
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"wrote {sum(len(v) for v in index.values())} reference cases to {out}")


if __name__ == "__main__":
    main()
