"""Fidelity of every approximate mode against exact UnionCAM (ONNX Runtime fp32), on the
development photos: Pearson of the maps (mean, min), branch agreement, and the paper's
metrics (Average Drop / Increase, Insertion / Deletion) with their deltas from exact.

A mode is ``backend:precision:budget``, e.g. ``openvino:bf16:0`` (bf16, exact channels),
``onnxruntime:fp32:cover0.85/energy``, ``fast`` (the ``--fast`` preset, near ties decided
again), ``fast-without-ties`` (the preset's backend and budget without its tie rule),
``fast-exact-ties`` (the preset with 0.3.0's tie rule: every near tie explained exactly) or
``onnxruntime:int8:0`` (after ``unioncam-rt quantize`` on photos outside the evaluated
range). Metrics are computed with the exact fp32 engine for every mode, so only the maps
differ. Per mode: seconds per photo (median, mean), masked passes, and how many photos were
decided again as near ties (``ties``).

``--exact-from DIR`` takes the exact maps and branches from ``benchmarks/near_ties.py``'s
``--cache`` (ONNX Runtime fp32, every live channel) instead of explaining every photo
exactly again (the exact row's seconds and passes are then not measured).

Usage::

    python benchmarks/fidelity.py --model efficientnet-lite0 --images 200 --modes fast,openvino:bf16:0,onnxruntime:fp32:128
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dev_images, machine, median, print_table, write_json  # noqa: E402


def mode_settings(mode: str):
    from dataclasses import replace

    from unioncam_rt.presets import resolve_mode

    if mode in ("fast", "fast-without-ties", "fast-exact-ties"):
        from unioncam_rt.method.budget import TieRule

        chosen = resolve_mode(None, None, None, fast=True)
        if mode == "fast-without-ties":
            chosen = replace(chosen, budget=replace(chosen.budget, ties=None))
        if mode == "fast-exact-ties":
            chosen = replace(chosen, budget=replace(chosen.budget, ties=TieRule(chosen.budget.ties.margin)))
        return chosen.backend, chosen.precision, chosen.budget, chosen.describe()
    backend, precision, budget = mode.split(":", 2)
    return backend, precision, budget, mode


def explain_all(explainer, loaded) -> dict:
    out = {"cams": [], "branches": [], "classes": [], "passes": [], "seconds": [], "rechecked": []}
    for image in loaded:
        started = time.perf_counter()
        result = explainer.explain_loaded([image], [-1])[0]
        out["seconds"].append(time.perf_counter() - started)
        out["cams"].append(result.cam)
        out["branches"].append(result.branch)
        out["classes"].append(result.class_index)
        out["passes"].append(result.masked_passes)
        out["rechecked"].append(result.union.rechecked if result.union else None)
    return out


def exact_from_cache(cache: Path, paths, loaded, engine) -> dict:
    """The exact run's maps and branches from ``near_ties.py``'s per-photo cache (top-1 class
    from ``engine``'s features pass; seconds and passes not measured)."""
    out = {"cams": [], "branches": [], "classes": [], "passes": [], "seconds": [], "rechecked": []}
    for path, image in zip(paths, loaded):
        stored = np.load(cache / f"{path.stem}.npz")
        out["cams"].append(stored["cam_exact"])
        out["branches"].append(str(stored["branch_exact"]))
        out["classes"].append(int(engine.features(image.array[None], np.array([-1])).class_index[0]))
        out["passes"].append(float("nan"))
        out["seconds"].append(float("nan"))
        out["rechecked"].append(None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--modes", default="fast")
    parser.add_argument("--curves", action="store_true", help="also Insertion / Deletion (226 passes per map)")
    parser.add_argument("--calibration", type=int, default=8,
                        help="INT8 calibration photos (after the range, else the range's last ones)")
    parser.add_argument("--exact-from", type=Path, default=None,
                        help="exact maps and branches from near_ties.py's --cache instead of an exact run")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    from tqdm import tqdm

    from unioncam_rt.explainer import Explainer
    from unioncam_rt.exporting.pipeline import ExportConfig, export_model
    from unioncam_rt.images import load_image
    from unioncam_rt.method.ops import gaussian_blur
    from unioncam_rt.metrics import causal_curves, drop_and_increase, masked_probability, trapezoid_auc

    paths = dev_images(args.start, args.images)
    results = {}
    with tempfile.TemporaryDirectory(prefix="unioncam-fidelity-") as tmp:
        engine_dir = Path(tmp) / "engine"
        export_model(ExportConfig(args.model, engine_dir, weights=args.weights))
        modes = [m for m in args.modes.split(",") if m]
        if any(":int8:" in m for m in modes):
            from unioncam_rt.exporting.quantize import quantize_scores

            # calibration photos after the evaluated range where the set has them, else its last ones
            after = dev_images(args.start + args.images, args.calibration)
            calibration = after or paths[-args.calibration:]
            print(f"INT8 calibration on {', '.join(p.name for p in calibration)}", file=sys.stderr)
            quantize_scores(engine_dir, calibration)
        exact = Explainer(engine_dir)
        loaded = [load_image(p, exact.engine.input_size) for p in paths]
        if args.exact_from is not None:
            runs = {"exact": exact_from_cache(args.exact_from, paths, loaded, exact.engine)}
        else:
            runs = {"exact": explain_all(exact, tqdm(loaded, desc="exact", unit="img"))}
        labels = {"exact": "onnxruntime fp32, exact"}
        for mode in modes:
            backend, precision, budget, label = mode_settings(mode)
            explainer = Explainer(engine_dir, backend=backend, precision=precision, budget=budget)
            runs[mode] = explain_all(explainer, tqdm(loaded, desc=mode, unit="img"))
            labels[mode] = label
        reference = exact.engine  # metrics always through exact fp32
        for name, run in runs.items():
            rows = []
            for image, cam, c in tqdm(list(zip(loaded, run["cams"], runs["exact"]["classes"])), desc=f"metrics {name}"):
                logits = reference.features(image.array[None], np.array([c])).logits[0].astype(np.float64)
                y = float(np.exp(logits[c] - logits.max()) / np.exp(logits - logits.max()).sum())
                drop, inc = drop_and_increase(y, masked_probability(reference, image.array, cam, c))
                row = {"avg_drop": drop, "avg_increase": inc}
                if args.curves:
                    blurred = gaussian_blur(image.array[None])[0]
                    ins, dele = causal_curves(reference, image.array, cam, c, blurred=blurred)
                    row.update(insertion=trapezoid_auc(ins), deletion=trapezoid_auc(dele))
                rows.append(row)
            pearsons = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.std() > 0 and b.std() > 0 else 1.0
                        for a, b in zip(run["cams"], runs["exact"]["cams"])]
            entry = {"label": labels[name], "pearson_mean": float(np.mean(pearsons)), "pearson_min": float(np.min(pearsons)),
                     "photos_below_0.99": int(sum(p < 0.99 for p in pearsons)),
                     "branch_agreement": float(np.mean([a == b for a, b in zip(run["branches"], runs["exact"]["branches"])])),
                     "class_agreement": float(np.mean([a == b for a, b in zip(run["classes"], runs["exact"]["classes"])])),
                     "median_s": median(run["seconds"]), "mean_s": float(np.mean(run["seconds"])),
                     "mean_passes": float(np.mean(run["passes"])),
                     "rechecked": sum(r is not None for r in run["rechecked"]),
                     "rechecked_exact": sum(r == "exact" for r in run["rechecked"]),
                     "photos": [{"image": p.name, "pearson": c, "branch": b, "exact_branch": e, "passes": n,
                                 "seconds": t, "rechecked": r}
                                for p, c, b, e, n, t, r in zip(paths, pearsons, run["branches"], runs["exact"]["branches"],
                                                               run["passes"], run["seconds"], run["rechecked"])]}
            for key in rows[0]:
                entry[key] = float(np.mean([r[key] for r in rows]))
            results[name] = entry
    base = results["exact"]
    keys = ["avg_drop", "avg_increase"] + (["insertion", "deletion"] if args.curves else [])
    table = []
    for entry in results.values():
        table.append([entry["label"], f"{entry['median_s']:.3f}", f"{entry['mean_s']:.3f}", f"{entry['mean_passes']:.0f}",
                      f"{entry['rechecked']} ({entry['rechecked_exact']})",
                      f"{entry['pearson_mean']:.4f}", f"{entry['pearson_min']:.4f}", entry["photos_below_0.99"],
                      f"{entry['branch_agreement'] * 100:.1f}%"]
                     + [f"{entry[k]:.4g} ({entry[k] - base[k]:+.3g})" for k in keys])
    print(f"\nfidelity vs exact ONNX Runtime fp32, {args.model} ({args.weights or 'pretrained'}), {len(paths)} photos "
          f"(rows {args.start}-{args.start + len(paths) - 1}); metrics through the exact engine")
    print(f"load average at the end: {os.getloadavg()}")
    print_table(["mode", "median s/img", "mean s/img", "passes", "ties (exact)", "Pearson mean", "Pearson min", "< 0.99", "same branch",
                 *["AD", "AI", "Insertion", "Deletion"][:len(keys)]], table)
    name = f"fidelity-{args.model}" + ("" if args.weights is None else f"-{args.weights.replace(':', '')}")
    write_json(args.out / f"{name}.json", {"model": args.model, "weights": args.weights or "pretrained",
                                           "images": [p.name for p in paths], "machine": machine(),
                                           "loadavg_end": os.getloadavg(), "modes": results})


if __name__ == "__main__":
    main()
