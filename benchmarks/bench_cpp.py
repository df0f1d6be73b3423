"""Per-image latency of the C++ embedding (cpp/, OpenVINO's CPU runtime) next to the Python
runtime (ONNX Runtime) on the same engine directory, photos and machine, in one run.

Modes, each in its own process:

* ``python-ort``: `unioncam_rt.explainer.Explainer` on ONNX Runtime, one image per call
  after a warm-up image (the reference);
* ``python-openvino``: the same on the Python runtime's OpenVINO backend, fp32, where it
  has one (same runtime as C++: separates the language from the inference runtime);
* ``cpp-library``: `unioncam::Engine::explain`, one image per call after a warm-up image
  (``cpp/benchmarks/latency.cpp``), fp32 and, with ``--bf16``, bf16;
* ``cpp-cli``: ``unioncam-cpp explain`` on all the photos, wall time of the whole process
  (engine open and sha256 check included) divided by the number of photos.

Usage::

    python benchmarks/bench_cpp.py --images 3 [--methods unioncam,gradcam] [--bf16] [--rounds 2] \
        [--batch-size 16] [--budget SPEC]

``--budget`` (a channel-budget specification such as ``cover0.85:320/energy``, default
exact) applies to every mode, Python and C++ alike.

The C++ project is built (Release, -j2, incrementally) into ``--build`` (default
``cpp/build``) first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import dev_images, machine, median, peak_rss_mib, print_table, run_worker, write_json  # noqa: E402

CPP = HERE.parent / "cpp"


def worker(args) -> dict:
    """The Python runtime on ONNX Runtime, one image per call."""
    from unioncam_rt.explainer import Explainer

    images = [Path(p) for p in args.image]
    explainer = Explainer(engine_dir=args.engine, method=args.method, batch_size=args.batch_size,
                          backend=args.backend, budget=args.budget)
    explainer.explain(images[0])
    times = []
    for path in images:
        started = time.perf_counter()
        explainer.explain(path)
        times.append(time.perf_counter() - started)
    return {"per_image_s": times, "peak_rss_mib": peak_rss_mib()}


def ensure_build(build: Path) -> None:
    """Configure (once) and build cpp/ into ``build`` (Release, -j2); incremental, so that the
    binaries always match the sources (a no-op when they do)."""
    if not (build / "CMakeCache.txt").is_file():
        import openvino

        print(f"configuring cpp/ into {build} ...", file=sys.stderr)
        openvino_dir = Path(openvino.__file__).parent / "cmake"
        subprocess.run(["cmake", "-S", str(CPP), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        f"-DOpenVINO_DIR={openvino_dir}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True)


def python_has_openvino() -> bool:
    from unioncam_rt.runtime.backends import installed

    return installed("openvino")


def run_library(build: Path, engine: Path, method: str, batch_size: int, precision: str, budget: str,
                images: list[Path]) -> dict:
    result = subprocess.run([str(build / "unioncam_latency"), str(engine), method, str(batch_size), precision,
                             "--budget", budget, *map(str, images)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"unioncam_latency failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_cli(build: Path, engine: Path, method: str, batch_size: int, precision: str, budget: str,
            images: list[Path], out: Path) -> dict:
    started = time.perf_counter()
    result = subprocess.run([str(build / "unioncam-cpp"), "explain", "--engine", str(engine), "--method", method,
                             "--batch-size", str(batch_size), "--precision", precision, "--budget", budget,
                             "--save-npy",
                             "--out", str(out), *map(str, images)], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"unioncam-cpp failed:\n{result.stderr[-3000:]}")
    records = [json.loads((out / f"{p.stem}.json").read_text()) for p in images]
    return {"per_image_s": [wall / len(images)] * len(images), "wall_s": wall,
            "in_process_s": [r["timings"]["total_s"] for r in records],
            "branch": [r["branch"] for r in records], "class_index": [r["class_index"] for r in records]}


def fidelity(reference: Path, other: Path, images: list[Path]) -> dict:
    """Pearson of each map with the reference run's, and how many branches/classes agree."""
    import numpy as np

    pearson, same_branch, same_class = [], 0, 0
    for path in images:
        a, b = np.load(reference / f"{path.stem}.cam.npy"), np.load(other / f"{path.stem}.cam.npy")
        pearson.append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
        ra = json.loads((reference / f"{path.stem}.json").read_text())
        rb = json.loads((other / f"{path.stem}.json").read_text())
        same_branch += ra["branch"] == rb["branch"]
        same_class += ra["class_index"] == rb["class_index"]
    return {"pearson_vs_fp32": pearson, "same_branch": same_branch, "same_class": same_class}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16, help="masked images per scoring call (default 16, "
                        "both runtimes' default)")
    parser.add_argument("--budget", default="exact", help="channel budget of every mode, e.g. cover0.85:320/energy")
    parser.add_argument("--methods", default="unioncam", help="comma-separated: unioncam, gradcam, scorecam")
    parser.add_argument("--bf16", action="store_true", help="also time the C++ library with bf16 inference")
    parser.add_argument("--build", type=Path, default=CPP / "build", help="cpp/ build folder")
    parser.add_argument("--engine", type=Path, default=None, help="an exported engine directory (default: export one)")
    parser.add_argument("--rounds", type=int, default=1, help="run every mode this many times, order rotated")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="onnxruntime", help=argparse.SUPPRESS)
    parser.add_argument("--image", action="append", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    load_before = os.getloadavg()
    images = dev_images(args.start, args.images)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    ensure_build(args.build)
    results, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="unioncam-bench-cpp-") as tmp:
        engine = args.engine
        if engine is None:
            engine = Path(tmp) / "engine"
            subprocess.run([sys.executable, "-m", "unioncam_rt", "export", "--model", args.model, "--out", str(engine)],
                           check=True, capture_output=True)
        for method in methods:
            argv = ["--worker", "--engine", str(engine), "--method", method, "--batch-size", str(args.batch_size),
                    "--budget", args.budget]
            argv += [a for p in images for a in ("--image", str(p))]
            precisions = ["fp32"] + (["bf16"] if args.bf16 else [])
            modes = {"python-ort": lambda: run_worker(Path(__file__), argv)}
            if python_has_openvino():
                modes["python-openvino"] = lambda: run_worker(Path(__file__), argv + ["--backend", "openvino"])
            for precision in precisions:
                modes[f"cpp-library-{precision}"] = (lambda p=precision: run_library(
                    args.build, engine, method, args.batch_size, p, args.budget, images))
            for precision in precisions:
                modes[f"cpp-cli-{precision}"] = (lambda p=precision: run_cli(
                    args.build, engine, method, args.batch_size, p, args.budget, images,
                    Path(tmp) / f"out-{method}-{p}"))
            # Rounds rotate the order of the modes, so that load from other processes on a
            # shared machine falls on every mode alike; per-image times are pooled.
            runs: dict[str, dict] = {}
            names = list(modes)
            for round_index in range(args.rounds):
                for name in names[round_index % len(names):] + names[:round_index % len(names)]:
                    print(f"{method}: {name} (round {round_index + 1}) ...", file=sys.stderr)
                    rec = modes[name]()
                    if name not in runs:
                        runs[name] = rec
                    else:
                        runs[name]["per_image_s"] += rec["per_image_s"]
                        if "peak_rss_mib" in rec:
                            runs[name]["peak_rss_mib"] = max(runs[name]["peak_rss_mib"], rec["peak_rss_mib"])
            if args.bf16:
                runs["cpp-cli-bf16"].update(fidelity(Path(tmp) / f"out-{method}-fp32",
                                                     Path(tmp) / f"out-{method}-bf16", images))
            base = median(runs["python-ort"]["per_image_s"])
            for mode, rec in runs.items():
                rec["median_s_per_image"] = median(rec["per_image_s"])
                rec["time_vs_python_ort"] = rec["median_s_per_image"] / base
                results[f"{method}:{mode}"] = rec
                agree = "-"
                if "pearson_vs_fp32" in rec:
                    agree = (f"Pearson {median(rec['pearson_vs_fp32']):.4f}, branch {rec['same_branch']}/"
                             f"{len(images)}, class {rec['same_class']}/{len(images)}")
                rows.append([method, mode, rec["median_s_per_image"], rec["time_vs_python_ort"],
                             rec.get("peak_rss_mib", "-"), agree])
    print(f"\nPer-image latency, {args.model}, {len(images)} photos (rows {args.start}-{args.start + len(images) - 1}), "
          f"batch {args.batch_size}, budget {args.budget}, {args.rounds} round(s); cpp-cli includes process start, "
          f"engine open and hash checks; 1-min load average before/after: {load_before[0]:.2f}/{os.getloadavg()[0]:.2f}")
    print_table(["method", "mode", "median s/img", "x vs python-ort", "peak RSS MiB", "bf16 vs fp32 (median)"], rows)
    write_json(args.out / f"cpp-{args.model}.json", {"model": args.model, "images": [p.name for p in images],
                                                     "batch_size": args.batch_size, "budget": args.budget,
                                                     "rounds": args.rounds,
                                                     "load_average_before_after": [load_before, os.getloadavg()],
                                                     "machine": machine(), "runs": results})


if __name__ == "__main__":
    main()
