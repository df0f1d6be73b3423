"""Per-image UnionCAM latency on the CPU: every backend, precision and budget against exact
ONNX Runtime fp32, its forward-pass floor and other tools.

Every mode runs in its own process (so its peak memory is its own) on the same model,
images and machine, in one run:

* ``onnxruntime`` - exact fp32, ONNX Runtime. Its floor is measured in the same process:
  (masked passes run) x (per-image time of one batched pass of the same scoring session).
* ``openvino`` - exact fp32 (``INFERENCE_PRECISION_HINT=f32``), OpenVINO; ``openvino-bf16``.
* ``budget`` - ONNX Runtime fp32 with ``--budget`` (default 128 channels).
* ``fast`` - the ``--fast`` preset (its backend, precision and budget are printed);
  ``fast-without-ties`` - the same without its tie rule (near ties not explained again);
  ``fast-exact-ties`` - the same with 0.3.0's tie rule (every near tie explained exactly);
  ``fast-one-stream`` - ``fast-without-ties`` with OpenVINO's masked scoring on one stream of
  two threads (the configuration before 0.2.2) instead of two streams of one thread.
* ``int8`` - the static INT8 scoring graph (calibrated on other photos).
* ``torch`` - the PyTorch reference backend (autograd).
* ``gradcam-scorecam`` - pytorch-grad-cam's ScoreCAM on the same torch model (not UnionCAM:
  the per-channel masked scoring alone, the bulk of UnionCAM's cost).

Fidelity of every mode: Pearson of its maps with the ``onnxruntime`` maps (median and
min) and branch agreement. GPU modes: ``benchmarks/bench_gpu.py``.

Usage::

    python benchmarks/bench_runtime.py --model efficientnet-lite0 --images 10 --modes onnxruntime,openvino,openvino-bf16,budget,fast
    python benchmarks/bench_runtime.py --model vgg16 --weights random:0 --images 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dev_images, machine, median, peak_rss_mib, print_table, run_worker, write_json  # noqa: E402

MODES = ("onnxruntime", "openvino", "openvino-bf16", "budget", "fast", "fast-without-ties", "fast-exact-ties",
         "fast-one-stream", "int8",
         "torch", "gradcam-scorecam")
DEFAULT_MODES = "onnxruntime,openvino,openvino-bf16,budget,fast,gradcam-scorecam"


def time_pass(engine, batch_size: int, repeats: int = 3) -> float:
    """Per-image seconds of one batched masked pass of ``engine`` (median of ``repeats``)."""
    height, width = engine.input_size
    _, h, w = engine.feature_shape
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, height, width)).astype(np.float32)
    masks = rng.random((batch_size, 1, h, w)).astype(np.float32)
    zeros = np.zeros(batch_size, dtype=np.int64)
    engine.masked_probs(image, masks, zeros, zeros)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        engine.masked_probs(image, masks, zeros, zeros)
        times.append((time.perf_counter() - started) / batch_size)
    return median(times)


def one_stream_scoring(engine) -> None:
    """Swap an OpenVINO engine's masked-scoring sessions for one-stream ones (latency hint)."""
    from unioncam_rt.runtime.openvino_session import OpenVinoSession

    path = engine.scores_session.path
    engine.scores_session = OpenVinoSession(path, engine.scores_session.precision, streams=1)
    if engine.decision_session is not None:
        engine.decision_session = OpenVinoSession(path, "fp32", streams=1)


def worker(args) -> dict:
    images = [Path(p) for p in args.image]
    maps_dir = Path(args.maps)
    maps_dir.mkdir(parents=True, exist_ok=True)
    record = {"mode": args.worker, "per_image_s": [], "passes": [], "branches": []}
    if args.worker == "gradcam-scorecam":
        import torch
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        from unioncam_rt.images import load_image
        from unioncam_rt.sources.torch_source import build_classifier

        model = build_classifier(args.model, args.weights)
        cam = ScoreCAM(model=model, target_layers=[model.target_module()])
        cam.batch_size = args.batch_size or 16  # the runtime's default masked batch
        for path in images:
            x = torch.from_numpy(load_image(path, model.input_size).array[None])
            started = time.perf_counter()
            with torch.no_grad():
                target = int(model(x).argmax())
            grey = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
            record["per_image_s"].append(time.perf_counter() - started)
            record["passes"].append(int(model.logits_and_activations(x)[1].shape[1]))
            np.save(maps_dir / f"{path.stem}.npy", grey[0].astype(np.float32))
    else:
        from unioncam_rt.explainer import Explainer
        from unioncam_rt.presets import resolve_mode

        backend, precision, budget = {
            "onnxruntime": ("onnxruntime", "fp32", None), "openvino": ("openvino", "fp32", None),
            "openvino-bf16": ("openvino", "bf16", None), "budget": ("onnxruntime", "fp32", args.budget),
            "int8": ("onnxruntime", "int8", None), "torch": ("torch", "fp32", None),
        }.get(args.worker, (None, None, None))
        if args.worker in ("fast", "fast-without-ties", "fast-exact-ties", "fast-one-stream"):
            from unioncam_rt.method.budget import TieRule

            mode = resolve_mode(None, None, None, fast=True)
            if args.worker == "fast-exact-ties":
                mode = replace(mode, budget=replace(mode.budget, ties=TieRule(mode.budget.ties.margin)))
            elif args.worker != "fast":
                mode = replace(mode, budget=replace(mode.budget, ties=None))
            backend, precision, budget = mode.backend, mode.precision, mode.budget
            record["fast"] = mode.describe()
        if backend == "torch":
            explainer = Explainer(args.model, weights=args.weights, backend="torch", batch_size=args.batch_size)
        else:
            explainer = Explainer(engine_dir=args.engine, backend=backend, precision=precision,
                                  batch_size=args.batch_size, budget=budget)
            if args.worker == "fast-one-stream":
                one_stream_scoring(explainer.engine)
            record["pass_s"] = time_pass(explainer.engine, args.batch_size or 16)
        explainer.explain(images[0])  # warm-up (not timed)
        for path in images:
            started = time.perf_counter()
            result = explainer.explain(path)
            record["per_image_s"].append(time.perf_counter() - started)
            record["passes"].append(result.masked_passes)
            record["branches"].append(result.branch)
            np.save(maps_dir / f"{path.stem}.npy", result.cam)
    record["peak_rss_mib"] = peak_rss_mib()
    record["loadavg_end"] = os.getloadavg()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--weights", default=None, help="e.g. random:0 (VGG16's real weights need a download)")
    parser.add_argument("--images", type=int, default=2, help="development photos to time")
    parser.add_argument("--start", type=int, default=100, help="first row of labels.csv to use")
    parser.add_argument("--batch-size", type=int, default=None, help="masked batch (default: the runtime's, 16)")
    parser.add_argument("--budget", default="128", help="the budget mode's --budget")
    parser.add_argument("--modes", default=DEFAULT_MODES)
    parser.add_argument("--calibration", type=int, default=8, help="INT8 calibration photos (rows before --start)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--maps", help=argparse.SUPPRESS)
    parser.add_argument("--image", action="append", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"unknown modes {sorted(unknown)}; available: {', '.join(MODES)}")
    images = dev_images(args.start, args.images)
    from unioncam_rt.exporting.pipeline import ExportConfig, export_model

    with tempfile.TemporaryDirectory(prefix="unioncam-bench-") as tmp:
        engine = Path(tmp) / "engine"
        started = time.perf_counter()
        export_model(ExportConfig(args.model, engine, weights=args.weights))
        export_s = time.perf_counter() - started
        quantize_s = None
        if "int8" in modes:
            from unioncam_rt.exporting.quantize import quantize_scores

            started = time.perf_counter()
            quantize_scores(engine, dev_images(max(0, args.start - args.calibration), args.calibration))
            quantize_s = time.perf_counter() - started
        records = {}
        for mode in modes:
            print(f"running {mode} ...", file=sys.stderr)
            common = ["--worker", mode, "--model", args.model, "--engine", str(engine), "--budget", args.budget,
                      "--maps", str(Path(tmp) / mode)]
            if args.batch_size:
                common += ["--batch-size", str(args.batch_size)]
            if args.weights:
                common += ["--weights", args.weights]
            try:
                load = os.getloadavg()
                records[mode] = run_worker(Path(__file__), common + [a for p in images for a in ("--image", str(p))])
                records[mode]["loadavg_start"] = load
            except RuntimeError as error:  # one mode failing (e.g. a missing optional tool) keeps the others
                print(f"mode {mode} failed, left out of the table:\n{error}", file=sys.stderr)
                continue
            records[mode]["maps"] = {p.stem: np.load(Path(tmp) / mode / f"{p.stem}.npy") for p in images}

    base = records.get("onnxruntime")
    rows, summary = [], {}
    for mode, rec in records.items():
        per_image = median(rec["per_image_s"])
        entry = {"median_s_per_image": per_image, "per_image_s": rec["per_image_s"], "masked_passes": rec["passes"],
                 "peak_rss_mib": rec["peak_rss_mib"], "branches": rec["branches"], "fast": rec.get("fast"),
                 "loadavg_start": rec["loadavg_start"], "loadavg_end": rec["loadavg_end"]}
        floor = ratio = None
        if "pass_s" in rec:
            floors = [n * rec["pass_s"] for n in rec["passes"]]
            floor = median(floors)
            ratio = median([t / f for t, f in zip(rec["per_image_s"], floors)])
            entry.update({"pass_s": rec["pass_s"], "floor_s": floor, "ratio_to_floor": ratio})
        vs_fp32 = per_image / median(base["per_image_s"]) if base else None
        pearson = lowest = agree = None
        if base and mode != "onnxruntime":
            values = [float(np.corrcoef(rec["maps"][k].ravel(), base["maps"][k].ravel())[0, 1]) for k in base["maps"]]
            pearson, lowest = median(values), min(values)
            if rec["branches"]:
                agree = float(np.mean([a == b for a, b in zip(rec["branches"], base["branches"])]))
        entry.update({"time_vs_onnxruntime_fp32": vs_fp32, "pearson_vs_fp32_median": pearson,
                      "pearson_vs_fp32_min": lowest, "branch_agreement": agree})
        summary[mode] = entry
        rows.append([mode + (f" ({rec['fast']})" if rec.get("fast") else ""), per_image, median(rec["passes"]),
                     floor if floor else "-", ratio if ratio else "-", vs_fp32 if vs_fp32 else "-",
                     rec["peak_rss_mib"], pearson if pearson is not None else "-",
                     lowest if lowest is not None else "-", agree if agree is not None else "-"])
    print(f"\nUnionCAM per image, {args.model} (weights {args.weights or 'pretrained'}), {len(images)} photos, "
          f"batch {args.batch_size or 'default'}, budget mode {args.budget}; export {export_s:.1f}s"
          + (f", int8 calibration {quantize_s:.1f}s" if quantize_s else ""))
    loads = ", ".join(f"{mode} {rec['loadavg_start'][0]:.2f}" for mode, rec in records.items())
    print(f"load average (1 min) at each mode's start: {loads}")
    print_table(["mode", "median s/img", "passes", "floor s/img", "ratio to floor", "x vs ORT fp32",
                 "peak RSS MiB", "Pearson vs exact (median)", "Pearson min", "branch agree"], rows)
    write_json(args.out / f"runtime-{args.model}.json", {
        "model": args.model, "weights": args.weights or "pretrained", "images": [p.name for p in images],
        "batch_size": args.batch_size, "export_s": export_s, "quantize_s": quantize_s, "machine": machine(),
        "modes": summary,
    })


if __name__ == "__main__":
    main()
