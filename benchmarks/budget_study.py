"""Budgeted region scoring against exact UnionCAM: which channels to score, how to weight
the others, and how many, measured on the development photos.

Every channel score of every photo is computed once (exact); each budget variant then
re-weights those scores (selected channels keep theirs, the others get the variant's
fill), and only UnionCAM's three map scores are re-run. Reported per variant: masked
passes per image, Pearson of the final map with the exact one (mean, min), branch
agreement, Average Drop / Increase, and (for ``--curves`` variants) Insertion / Deletion.

Usage::

    python benchmarks/budget_study.py --model efficientnet-lite0 --images 200
    python benchmarks/budget_study.py --model vgg16 --weights random:0 --images 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dev_images, machine, print_table, write_json  # noqa: E402

DEFAULT_VARIANTS = (
    [f"{k}:{rule}:{fill}" for k in (32, 64, 128) for rule in ("variance", "energy", "gradcam")
     for fill in ("zero", "mean", "estimate")]
    + [f"cover{c}:{cap}:variance:{fill}" for c in (0.8, 0.9, 0.95) for cap in (0, 128) for fill in ("zero", "mean")]
)


def parse_variant(text: str):
    from unioncam_rt.method.budget import Budget

    parts = text.split(":")
    if parts[0].startswith("cover"):
        cover, cap, rule, fill = float(parts[0][5:]), int(parts[1]), parts[2], parts[3]
        return Budget(channels=cap, cover=cover, rule=rule, fill=fill)
    return Budget(channels=int(parts[0]), rule=parts[1], fill=parts[2])


def label(budget) -> str:
    size = f"cover {budget.cover}" + (f" max {budget.channels}" if budget.channels else "") if budget.cover else f"K={budget.channels}"
    return f"{size}, {budget.rule}, fill {budget.fill}"


class Photo:
    """One photo's exact pass: features, every channel's score, the exact UnionCAM
    (cached in ``cache`` as an .npz when given: the exact pass is most of the cost)."""

    def __init__(self, engine, options, path: Path, cache: Path | None = None):
        from unioncam_rt.images import load_image
        from unioncam_rt.method import gradient
        from unioncam_rt.method.cams import MethodContext, finalize, union_of
        from unioncam_rt.method.engine import FeatureBatch
        from unioncam_rt.method.ops import is_constant, minmax, relu
        from unioncam_rt.method.scoring import MaskBatch, ScoreCounter

        self._union_of, self._finalize, self._relu = union_of, finalize, relu
        self.image = load_image(path, engine.input_size).array[None]
        self.counter = ScoreCounter.for_batch(1)
        stored = cache / f"{path.stem}.npz" if cache is not None else None
        if stored is not None and stored.is_file():
            data = np.load(stored)
            self.features = FeatureBatch(data["logits"], data["activations"], data["gradients"], data["class_index"])
            self.scores, self.exact_cam = data["scores"], data["exact_cam"]
            self.exact_branch, self.exact_passes = str(data["exact_branch"]), int(data["exact_passes"])
        else:
            self.features = engine.features(self.image, np.array([-1]))
        self.ctx = MethodContext(engine, self.image, self.features, options, self.counter)
        acts = self.features.activations
        self.live = ~is_constant(acts)
        self.denoise = gradient.denoised_map(acts, self.features.gradients, options.theta, options.alpha)
        if stored is not None and stored.is_file():
            return
        b, k = np.nonzero(self.live)
        probs = self.ctx.score(MaskBatch(minmax(acts[b, k].astype(np.float32)), b, self.features.class_index[b]))
        self.scores = np.zeros(acts.shape[:2])
        self.scores[b, k] = probs
        region = relu(np.einsum("bk,bkhw->bhw", self.scores, acts.astype(np.float64)))
        exact = union_of(self.ctx, self.denoise, region)
        self.exact_cam = finalize(exact.maps, engine.input_size)[0][0]
        self.exact_branch, self.exact_passes = exact.union[0].branch, int(self.counter.per_image[0])
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            np.savez(stored, logits=self.features.logits, activations=acts, gradients=self.features.gradients,
                     class_index=self.features.class_index, scores=self.scores, exact_cam=self.exact_cam,
                     exact_branch=self.exact_branch, exact_passes=self.exact_passes)

    def with_budget(self, budget):
        """(final map, branch, masked passes) under ``budget``, reusing the exact scores."""
        from unioncam_rt.method.budget import select_channels
        from unioncam_rt.method.cams import region_weights

        acts = self.features.activations
        before = int(self.counter.per_image[0])
        weights = region_weights(self.ctx, budget, known=self.scores)
        region = self._relu(np.einsum("bk,bkhw->bhw", weights, acts.astype(np.float64)))
        out = self._union_of(self.ctx, self.denoise, region)
        cam = self._finalize(out.maps, self.image.shape[-2:])[0][0]
        extra = int(self.counter.per_image[0]) - before  # group passes and the three map scores
        return cam, out.union[0].branch, int(select_channels(budget, self.live, acts, self.features.gradients).sum()) + extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--curves", default="", help="variants (same syntax) that also get insertion/deletion")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--cache", type=Path, default=None, help="keep each photo's exact pass here (.npz) and reuse it")
    args = parser.parse_args()
    from tqdm import tqdm

    from unioncam_rt.exporting.pipeline import ExportConfig, export_model
    from unioncam_rt.method.cams import MethodOptions
    from unioncam_rt.metrics import causal_curves, drop_and_increase, masked_probability, trapezoid_auc
    from unioncam_rt.runtime.exported import ExportedEngine

    paths = dev_images(args.start, args.images)
    variants = [parse_variant(v) for v in args.variants.split(",") if v]
    curve_variants = [parse_variant(v) for v in args.curves.split(",") if v]
    with tempfile.TemporaryDirectory(prefix="unioncam-budget-") as tmp:
        export_model(ExportConfig(args.model, Path(tmp) / "engine", weights=args.weights))
        engine = ExportedEngine(Path(tmp) / "engine", providers=["CPUExecutionProvider"])
        options = MethodOptions(batch_size=args.batch_size)
        started = time.perf_counter()
        cache = args.cache / f"{args.model}-{args.weights or 'pretrained'}" if args.cache else None
        photos = [Photo(engine, options, p, cache) for p in tqdm(paths, desc="exact scores", unit="photo")]
        exact_s = time.perf_counter() - started

        def metrics(photo, cam, curves: bool):
            c = int(photo.features.class_index[0])
            y = float(np.exp(photo.features.logits[0] - photo.features.logits[0].max())[c]
                      / np.exp(photo.features.logits[0] - photo.features.logits[0].max()).sum())
            o = masked_probability(engine, photo.image[0], cam, c)
            drop, inc = drop_and_increase(y, o)
            row = {"avg_drop": drop, "avg_increase": inc}
            if curves:
                ins, dele = causal_curves(engine, photo.image[0], cam, c, batch_size=args.batch_size)
                row.update(insertion=trapezoid_auc(ins), deletion=trapezoid_auc(dele))
            return row

        def summarise(name, budget, rows, pearsons, branches, passes):
            entry = {"variant": name, "budget": None if budget is None else budget.describe(),
                     "passes_mean": float(np.mean(passes)), "pearson_mean": float(np.mean(pearsons)),
                     "pearson_min": float(np.min(pearsons)), "branch_agreement": float(np.mean(branches))}
            for key in ("avg_drop", "avg_increase", "insertion", "deletion"):
                if key in rows[0]:
                    entry[key] = float(np.mean([r[key] for r in rows]))
            return entry

        exact_rows = [metrics(p, p.exact_cam, bool(curve_variants)) for p in tqdm(photos, desc="exact metrics")]
        table = [summarise("exact", None, exact_rows, [1.0] * len(photos), [True] * len(photos),
                           [p.exact_passes for p in photos])]
        for budget in tqdm(variants + [v for v in curve_variants if v not in variants], desc="variants"):
            rows, pearsons, branches, passes = [], [], [], []
            for photo in photos:
                cam, branch, count = photo.with_budget(budget)
                pearsons.append(float(np.corrcoef(cam.ravel(), photo.exact_cam.ravel())[0, 1])
                                if cam.std() > 0 and photo.exact_cam.std() > 0 else float(np.allclose(cam, photo.exact_cam)))
                branches.append(branch == photo.exact_branch)
                passes.append(count)
                rows.append(metrics(photo, cam, budget in curve_variants))
            table.append(summarise(label(budget), budget, rows, pearsons, branches, passes))
    exact = table[0]
    headers = ["variant", "passes", "Pearson mean", "Pearson min", "same branch", "AD", "AI"]
    has_curves = "insertion" in exact
    if has_curves:
        headers += ["Insertion", "Deletion"]
    out_rows = []
    for entry in table:
        row = [entry["variant"], f"{entry['passes_mean']:.0f}", f"{entry['pearson_mean']:.4f}",
               f"{entry['pearson_min']:.4f}", f"{entry['branch_agreement'] * len(photos):.0f}/{len(photos)}",
               f"{entry['avg_drop']:.2f}", f"{entry['avg_increase']:.1f}"]
        if has_curves:
            row += [f"{entry['insertion']:.4f}" if "insertion" in entry else "-",
                    f"{entry['deletion']:.4f}" if "deletion" in entry else "-"]
        out_rows.append(row)
    print(f"\nbudgeted UnionCAM vs exact, {args.model} ({args.weights or 'pretrained'}), {len(photos)} photos; "
          f"exact scoring pass {exact_s:.0f}s")
    print_table(headers, out_rows)
    name = f"budget-{args.model}" + ("" if args.weights is None else f"-{args.weights.replace(':', '')}")
    write_json(args.out / f"{name}.json", {"model": args.model, "weights": args.weights or "pretrained",
                                           "images": [p.name for p in paths], "machine": machine(), "variants": table})


if __name__ == "__main__":
    main()
