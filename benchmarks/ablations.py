"""UnionCAM ablations (paper Fig. 8 and Table 4): theta, beta-weighted union vs plain sum,
and the two denoising-weight (alpha) variants, scored with Average Drop / Increase and
Insertion / Deletion on development photos.

The features pass and the region map (the expensive part) are computed once per image and
shared by every variant; only the denoised map, the three scores and the metrics are
redone per variant.

Usage::

    python benchmarks/ablations.py --model efficientnet-lite0 --images 30
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

THETAS = (0, 5, 10, 15, 20, 30, 50)


def variants() -> list[tuple[str, dict]]:
    out = [(f"theta={t}", {"theta": float(t)}) for t in THETAS]
    out.append(("theta=10, plain sum (no betas)", {"theta": 10.0, "weighting": "sum"}))
    out.append(("theta=10, alpha=gradient-sum", {"theta": 10.0, "alpha": "gradient-sum"}))
    return out


def main() -> None:
    from tqdm.auto import tqdm

    from unioncam_rt.images import load_image
    from unioncam_rt.method import MethodContext, MethodOptions, finalize
    from unioncam_rt.method.cams import region_map, union_of
    from unioncam_rt.method.gradient import denoised_map
    from unioncam_rt.method.ops import gaussian_blur, softmax
    from unioncam_rt.method.scoring import ScoreCounter
    from unioncam_rt.metrics import AverageDropIncrease, InsertionDeletion, causal_curves, masked_probability
    from unioncam_rt.runtime.exported import ExportedEngine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()

    images = dev_images(args.start, args.images)
    with tempfile.TemporaryDirectory(prefix="unioncam-ablation-") as tmp:
        from unioncam_rt.exporting.pipeline import ExportConfig, export_model

        export_model(ExportConfig(args.model, Path(tmp) / "engine", weights=args.weights))
        engine = ExportedEngine(Path(tmp) / "engine")
        named = variants()
        scores = {name: (AverageDropIncrease(), InsertionDeletion()) for name, _ in named}
        fused_share = {name: [] for name, _ in named}
        started = time.perf_counter()
        for path in tqdm(images, desc="ablations", unit="img"):
            loaded = load_image(path, engine.input_size)
            batch = loaded.array[None]
            feats = engine.features(batch, np.array([-1]))
            c = int(feats.class_index[0])
            y = float(softmax(feats.logits[0].astype(np.float64))[c])
            base = MethodContext(engine, batch, feats, MethodOptions(batch_size=args.batch_size), ScoreCounter.for_batch(1))
            region = region_map(base)
            blurred = gaussian_blur(batch)[0]
            for name, change in named:
                options = MethodOptions(batch_size=args.batch_size, **change)
                ctx = MethodContext(engine, batch, feats, options, ScoreCounter.for_batch(1))
                denoise = denoised_map(feats.activations, feats.gradients, options.theta, options.alpha)
                result = union_of(ctx, denoise, region)
                cam = finalize(result.maps, engine.input_size)[0][0]
                adi, idel = scores[name]
                adi.update(y, masked_probability(engine, loaded.array, cam, c))
                idel.update(*causal_curves(engine, loaded.array, cam, c, batch_size=args.batch_size, blurred=blurred))
                fused_share[name].append(result.union[0].branch == "fused")
        seconds = time.perf_counter() - started

    rows, results = [], {}
    for name, _ in named:
        adi, idel = scores[name]
        summary = {**adi.summary(), **idel.summary(), "fused_branch_share": float(np.mean(fused_share[name]))}
        results[name] = summary
        rows.append([name, summary["avg_drop"], summary["avg_increase"], summary["insertion"], summary["deletion"],
                     summary["overall"], summary["fused_branch_share"]])
    print(f"\nUnionCAM ablations, {args.model}, {len(images)} development photos ({seconds:.0f}s)")
    print_table(["variant", "Avg Drop %", "Avg Increase %", "Insertion", "Deletion", "Overall", "fused share"], rows)
    write_json(args.out / f"ablations-{args.model}.json", {"model": args.model, "images": [p.name for p in images],
                                                           "machine": machine(), "variants": results})


if __name__ == "__main__":
    main()
