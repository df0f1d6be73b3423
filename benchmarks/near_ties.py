"""How far a budgeted bf16 region map moves UnionCAM's branch decision: the study behind
``--fast``'s near-tie rule (`unioncam_rt.method.budget.TieRule`, its margin in
`unioncam_rt.presets.FAST_TIES`).

UnionCAM keeps the fused map when ``d = beta_fused - beta_region > 0``, else the region
map. ``--fast`` computes ``d`` from a budgeted region map whose channels were scored in
bf16, so its ``d`` is off by some error; where exact ``d`` is smaller than that error the
branch can flip. For every development photo this script computes, once:

* the exact reference: every live channel scored by ONNX Runtime fp32, exact UnionCAM
  (``d``, branch, final map);
* every live channel scored by OpenVINO bf16 (the ``--fast`` scoring session);

then, for each *level* of approximation (a channel cover of the bf16 scores, up to every
channel, and every channel in fp32 scored on OpenVINO), re-runs only UnionCAM's three map
scores (OpenVINO fp32, as ``--fast`` does) and reports the error ``|d_level - d_exact|``
(max, 99th percentile), the photos whose branch flips and at which budgeted ``|d|``, and
how many photos fall within a margin (the share a near-tie rule would explain again).

Levels ``fp32-coverC`` are what a tie rule with a cover re-checks: fp32 scores (the exact
reference's) of the channels covering share C of the image's activation energy, every
other channel 0. The second table composes *tie rules* from the levels, photo by photo:
the budget first; a photo whose budgeted ``|d|`` is under the margin is decided again on
the rule's level; with a cover, one whose ``|d|`` there is under the exact margin is then
explained exactly. Per rule: branch flips and Pearson min of the final maps against exact,
photos re-checked and explained exactly, and the masked channel passes per photo, bf16
and fp32 (mean, median; the three map scores of each decision, fp32, not counted).

Each photo's scores are kept in ``--cache`` (.npz) and reused.

Usage::

    python benchmarks/near_ties.py --images 200 --cache /tmp/near-ties
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dev_images, machine, print_table, write_json  # noqa: E402

COVERS = (0.85, 0.9, 0.95)
FP32_COVERS = (0.9, 0.95, 0.98)
MARGINS = (0.005, 0.01, 0.02, 0.03, 0.05)
# (margin, cover or None for exact at once, exact margin): 0.3.0's rule, then rules with an fp32 cover
RULES = ((0.02, None, 0.0), (0.02, 0.9, 0.01), (0.02, 0.95, 0.0), (0.02, 0.95, 0.001), (0.02, 0.95, 0.002),
         (0.02, 0.95, 0.005), (0.02, 0.98, 0.0), (0.02, 0.98, 0.003))


def all_channel_scores(engine, image: np.ndarray, options, decision: bool = False):
    """(features, live channels, score of every live channel ``[1, K]``) on ``engine``."""
    from unioncam_rt.method.cams import MethodContext
    from unioncam_rt.method.ops import is_constant, minmax
    from unioncam_rt.method.scoring import MaskBatch, ScoreCounter

    feats = engine.features(image, np.array([-1]))
    ctx = MethodContext(engine, image, feats, options, ScoreCounter.for_batch(1))
    live = ~is_constant(feats.activations)
    b, k = np.nonzero(live)
    scores = np.zeros(live.shape)
    scores[b, k] = ctx.score(MaskBatch(minmax(feats.activations[b, k].astype(np.float32)), b, feats.class_index[b]),
                             decision=decision)
    return feats, live, scores


def union_from_scores(engine, image, feats, weights, options):
    """(d = beta_fused - beta_region, branch, final map at input size) for channel ``weights``."""
    from unioncam_rt.method import gradient
    from unioncam_rt.method.cams import MethodContext, finalize, union_of
    from unioncam_rt.method.ops import relu
    from unioncam_rt.method.scoring import ScoreCounter

    ctx = MethodContext(engine, image, feats, options, ScoreCounter.for_batch(1))
    denoise = gradient.denoised_map(feats.activations, feats.gradients, options.theta, options.alpha)
    region = relu(np.einsum("bk,bkhw->bhw", weights, feats.activations.astype(np.float64)))
    out = union_of(ctx, denoise, region)
    parts = out.union[0]
    return parts.beta_fused - parts.beta_region, parts.branch, finalize(out.maps, image.shape[-2:])[0][0]


def photo_record(path: Path, exact, fast, options, cache: Path | None) -> dict:
    """Exact and bf16 all-channel scores of one photo (from ``cache`` when there)."""
    from unioncam_rt.images import load_image

    stored = cache / f"{path.stem}.npz" if cache else None
    image = load_image(path, exact.input_size).array[None]
    if stored is not None and stored.is_file():
        data = dict(np.load(stored))
    else:
        feats_e, _, scores_e = all_channel_scores(exact, image, options)
        d_e, branch_e, cam_e = union_from_scores(exact, image, feats_e, scores_e, options)
        _, live_f, scores_b = all_channel_scores(fast, image, options)
        data = {"scores_exact": scores_e, "scores_bf16": scores_b, "live": live_f, "d_exact": d_e,
                "branch_exact": branch_e, "cam_exact": cam_e}
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            np.savez(stored, **data)
    data["image"] = image
    return data


def energy_cover(record: dict, feats, cover: float, cap: int = 0) -> np.ndarray:
    """Boolean ``[1, K]``: the live channels covering ``cover`` of the activation energy (at most ``cap``)."""
    from unioncam_rt.method.budget import Budget, select_channels

    budget = Budget(channels=cap, cover=cover, rule="energy", fill="zero")
    return select_channels(budget, record["live"], feats.activations, feats.gradients)


def level_weights(level: str, record: dict, feats) -> np.ndarray:
    """Channel weights of an approximation level: ``coverC`` (bf16 scores of the energy
    cover C, at most 320 channels when C is --fast's), ``fp32-coverC`` (fp32 scores of the
    energy cover C), ``bf16-all`` or ``fp32-all``."""
    if level == "fp32-all":
        return record["scores_exact"]
    if level == "bf16-all":
        return record["scores_bf16"]
    if level.startswith("fp32-cover"):
        return np.where(energy_cover(record, feats, float(level[10:])), record["scores_exact"], 0.0)
    cover = float(level[5:])
    chosen = energy_cover(record, feats, cover, 320 if cover == 0.85 else 0)
    return np.where(chosen, record["scores_bf16"], 0.0)


def level_channels(level: str, record: dict, feats) -> int:
    """Masked channel passes of a level (its channels; every live one for ``*-all``)."""
    if level.endswith("-all"):
        return int(record["live"].sum())
    if level.startswith("fp32-cover"):
        return int(energy_cover(record, feats, float(level[10:])).sum())
    cover = float(level[5:])
    return int(energy_cover(record, feats, cover, 320 if cover == 0.85 else 0).sum())


def compose_rule(entries: dict, rule) -> dict:
    """Final branch, Pearson and channel passes of every photo under a tie rule (see the docstring)."""
    margin, cover, exact_margin = rule
    out = {"flips": 0, "pearson": [], "bf16": [], "fp32": [], "rechecked": 0, "exact": 0}
    for photo in entries["cover0.85"]:
        name = photo["photo"]
        final, bf16, fp32 = photo, photo["channels"], 0
        if abs(photo["d"]) < margin:
            out["rechecked"] += 1
            final = entries["fp32-all" if cover is None else f"fp32-cover{cover}"][name]
            fp32 = final["channels"]
            if cover is not None and abs(final["d"]) < exact_margin:
                out["exact"] += 1
                final = entries["fp32-all"][name]
                fp32 = final["channels"]  # the cover's channels are not scored twice
        out["flips"] += final["flip"]
        out["pearson"].append(final["pearson"])
        out["bf16"].append(bf16)
        out["fp32"].append(fp32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--engine", type=Path, default=None, help="Lite0 engine directory (default: the export cache)")
    parser.add_argument("--cache", type=Path, default=None, help="keep each photo's channel scores here (.npz)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    from tqdm import tqdm

    from unioncam_rt.cache import cached_engine_dir
    from unioncam_rt.method.cams import MethodOptions
    from unioncam_rt.runtime.exported import ExportedEngine
    from unioncam_rt.sources import ModelSource

    directory = args.engine or cached_engine_dir(ModelSource("efficientnet-lite0"))
    exact = ExportedEngine(directory, "onnxruntime", ["CPUExecutionProvider"])
    fast = ExportedEngine(directory, "openvino", precision="bf16")
    options = MethodOptions()
    levels = [f"cover{c}" for c in COVERS] + ["bf16-all", "fp32-all"] + [f"fp32-cover{c}" for c in FP32_COVERS]
    rows = {level: [] for level in levels}
    for path in tqdm(dev_images(args.start, args.images), desc="photos", unit="photo"):
        record = photo_record(path, exact, fast, options, args.cache)
        feats = fast.features(record["image"], np.array([-1]))
        for level in levels:
            weights = level_weights(level, record, feats)
            d, branch, cam = union_from_scores(fast, record["image"], feats, weights, options)
            exact_cam = record["cam_exact"]
            pearson = float(np.corrcoef(cam.ravel(), exact_cam.ravel())[0, 1]) if cam.std() and exact_cam.std() else 1.0
            rows[level].append({"photo": path.name, "d": float(d), "d_exact": float(record["d_exact"]),
                                "flip": branch != str(record["branch_exact"]), "pearson": pearson,
                                "channels": level_channels(level, record, feats)})
    table, summary = [], {}
    for level, entries in rows.items():
        error = np.abs([e["d"] - e["d_exact"] for e in entries])
        within = {m: int(sum(abs(e["d"]) < m for e in entries)) for m in MARGINS}
        flips = [e["photo"] for e in entries if e["flip"]]
        flipped_at = max((abs(e["d"]) for e in entries if e["flip"]), default=0.0)
        summary[level] = {"error_max": float(error.max()), "error_p99": float(np.percentile(error, 99)),
                          "flips": flips, "largest_flipped_abs_d": flipped_at,
                          "pearson_min": float(min(e["pearson"] for e in entries)),
                          "photos_within_margin": within, "photos": entries}
        table.append([level, f"{error.max():.4f}", f"{np.percentile(error, 99):.4f}", len(flips), f"{flipped_at:.4f}",
                      f"{summary[level]['pearson_min']:.4f}", *[within[m] for m in MARGINS]])
    by_photo = {level: {e["photo"]: e for e in entries} for level, entries in rows.items()}
    rule_rows = []
    for rule in RULES:
        got = compose_rule({**by_photo, "cover0.85": rows["cover0.85"]}, rule)
        passes = {k: np.asarray(got[k]) for k in ("bf16", "fp32")}
        summary[f"rule {rule}"] = {"flips": got["flips"], "pearson_min": float(min(got["pearson"])),
                                   "pearson_mean": float(np.mean(got["pearson"])), "rechecked": got["rechecked"],
                                   "exact": got["exact"], "bf16_mean": float(passes["bf16"].mean()),
                                   "fp32_mean": float(passes["fp32"].mean())}
        total = passes["bf16"] + passes["fp32"]
        rule_rows.append([f"margin {rule[0]:g}, " + ("exact" if rule[1] is None else f"fp32 cover{rule[1]:g}, exact under {rule[2]:g}"),
                          got["flips"], f"{min(got['pearson']):.4f}", f"{np.mean(got['pearson']):.4f}", got["rechecked"],
                          got["exact"] if rule[1] is not None else got["rechecked"],
                          f"{passes['bf16'].mean():.0f}", f"{passes['fp32'].mean():.0f} / {np.median(passes['fp32']):.0f}",
                          f"{total.mean():.0f} / {np.median(total):.0f}"])
    print(f"\n|d_level - d_exact| over {args.images} photos (d = beta_fused - beta_region); load {os.getloadavg()}")
    print_table(["level", "error max", "error p99", "flips", "largest flipped |d|", "Pearson min",
                 *[f"|d|<{m}" for m in MARGINS]], table)
    print("\ntie rules (the budget cover0.85:320 energy bf16 first):")
    print_table(["rule", "flips", "Pearson min", "Pearson mean", "re-checked", "exact", "bf16 passes mean",
                 "fp32 passes mean / median", "all passes mean / median"], rule_rows)
    write_json(args.out / "near-ties-efficientnet-lite0.json", {"machine": machine(), "levels": summary})


if __name__ == "__main__":
    main()
