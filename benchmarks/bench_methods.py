"""Per-image latency and peak memory of every method on every CPU backend, next to
pytorch-grad-cam (GradCAM, ScoreCAM) and torch-cam (ScoreCAM), on the same model, photos
and machine, in one run. Each (tool, method, backend) runs in its own process.

Usage::

    python benchmarks/bench_methods.py --model efficientnet-lite0 --images 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dev_images, machine, median, peak_rss_mib, print_table, run_worker, write_json  # noqa: E402

OURS = ("unioncam", "gradcam", "gradcampp", "scorecam", "groupcam", "layercam")
OTHERS = ("pytorch-grad-cam:gradcam", "pytorch-grad-cam:scorecam", "torch-cam:scorecam")


def worker(args) -> dict:
    images = [Path(p) for p in args.image]
    times = []
    if args.tool == "unioncam-rt":
        from unioncam_rt.explainer import Explainer

        if args.backend == "torch":
            explainer = Explainer(args.model, weights=args.weights, backend="torch", method=args.method,
                                  batch_size=args.batch_size)
        else:
            explainer = Explainer(engine_dir=args.engine, method=args.method, batch_size=args.batch_size)
        explainer.explain(images[0])
        for path in images:
            started = time.perf_counter()
            explainer.explain(path)
            times.append(time.perf_counter() - started)
    else:
        import torch

        from unioncam_rt.images import load_image
        from unioncam_rt.sources.torch_source import build_classifier

        model = build_classifier(args.model, args.weights)
        tool, method = args.tool, args.method
        if tool == "pytorch-grad-cam":
            from pytorch_grad_cam import GradCAM, ScoreCAM
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            cam = (GradCAM if method == "gradcam" else ScoreCAM)(model=model, target_layers=[model.target_module()])
            cam.batch_size = args.batch_size

            def run(x):
                with torch.no_grad():
                    target = int(model(x).argmax())
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
        else:
            from torchcam.methods import ScoreCAM

            extractor = ScoreCAM(model, target_layer=model.target_module(), batch_size=args.batch_size,
                                 input_shape=(3, *model.input_size))

            def run(x):
                with torch.no_grad():
                    scores = model(x)
                    return extractor(int(scores.argmax()), scores)

        arrays = [torch.from_numpy(load_image(p, model.input_size).array[None]) for p in images]
        run(arrays[0])
        for x in arrays:
            started = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - started)
    return {"per_image_s": times, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tool", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--image", action="append", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    images = dev_images(args.start, args.images)
    runs = [("unioncam-rt", m, b) for m in OURS for b in ("onnxruntime", "torch")]
    runs += [(o.split(":")[0], o.split(":")[1], "torch") for o in OTHERS]
    from unioncam_rt.exporting.pipeline import ExportConfig, export_model

    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="unioncam-methods-") as tmp:
        engine = Path(tmp) / "engine"
        export_model(ExportConfig(args.model, engine, weights=args.weights))
        for tool, method, backend in runs:
            print(f"running {tool} {method} on {backend} ...", file=sys.stderr)
            argv = ["--worker", "--tool", tool, "--method", method, "--backend", backend, "--model", args.model,
                    "--engine", str(engine), "--batch-size", str(args.batch_size)]
            argv += ["--weights", args.weights] if args.weights else []
            argv += [a for p in images for a in ("--image", str(p))]
            rec = run_worker(Path(__file__), argv)
            key = f"{tool}:{method}:{backend}"
            results[key] = {"median_s_per_image": median(rec["per_image_s"]), **rec}
    base = {m: results[f"unioncam-rt:{m}:onnxruntime"]["median_s_per_image"] for m in OURS}
    for key, rec in results.items():
        tool, method, backend = key.split(":")
        ratio = rec["median_s_per_image"] / base[method]
        rec["time_vs_unioncam_rt_onnxruntime"] = ratio
        rows.append([tool, method, backend, rec["median_s_per_image"], ratio, rec["peak_rss_mib"]])
    print(f"\nPer-image latency, {args.model} (weights {args.weights or 'pretrained'}), {len(images)} photos, "
          f"batch {args.batch_size}")
    print_table(["tool", "method", "backend", "median s/img", "x vs unioncam-rt ORT", "peak RSS MiB"], rows)
    write_json(args.out / f"methods-{args.model}.json", {"model": args.model, "images": [p.name for p in images],
                                                         "batch_size": args.batch_size, "machine": machine(),
                                                         "runs": results})


if __name__ == "__main__":
    main()
