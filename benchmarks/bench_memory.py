"""Engine directory size, peak resident memory and seconds per image of ``explain``,
this version against an earlier one (default: 0.1.0, commit 4a331e8), in one run.

Every ``explain`` runs in its own process (its peak memory is its own: Linux's VmHWM read
at exit) on the same photos; the earlier version runs from a ``git worktree`` of that
commit with its own export. Modes: ``before`` (the earlier version, its default batch 32),
``default`` (this version, default batch), ``batch32``, ``max-memory`` (this version
under ``--max-memory``, default 2GB), ``openvino`` (exact, OpenVINO fp32: it maps
``weights.bin`` itself and repacks weights for its kernels) and ``fast`` (``--fast``).

Usage::

    python benchmarks/bench_memory.py --models vgg16,efficientnet-lite0 --images 2
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dev_images, machine, median, print_table, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER_GB = 2.22
MEASURE = """
import json, sys, time
started = time.perf_counter()
from unioncam_rt.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"code": code, "peak": peak, "wall": time.perf_counter() - started}))
"""


def run(python_path: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    # run outside the checkout: "python -c" puts the working directory first on sys.path
    result = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, env=env,
                            cwd=tempfile.gettempdir())
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{args} failed:\n{result.stderr[-3000:]}")
    record = json.loads(lines[-1])
    record["version"] = subprocess.run([sys.executable, "-c", "import unioncam_rt; print(unioncam_rt.__version__)"],
                                       capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()).stdout.strip()
    if record["code"] != 0:
        raise RuntimeError(f"{args} exited {record['code']}:\n{result.stderr[-3000:]}")
    return record


def export(python_path: Path, model: str, weights: str | None, out: Path) -> float:
    code = ("import sys; from pathlib import Path; from unioncam_rt.exporting.pipeline import ExportConfig, export_model; "
            f"export_model(ExportConfig({model!r}, Path({str(out)!r}), weights={weights!r}, check=False))")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(python_path)},
                   capture_output=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - started


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def per_image_seconds(out: Path) -> list[float]:
    return [json.loads(p.read_text())["timings"]["total_s"] for p in sorted(out.glob("*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg16,efficientnet-lite0")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--baseline", default="4a331e8", help="git revision to compare with")
    parser.add_argument("--max-memory", default="2GB")
    parser.add_argument("--modes", default="default,batch32,max-memory,openvino,fast",
                        help="besides 'before' (the baseline): default, batch32, max-memory, openvino (exact fp32), "
                             "fast (--fast: OpenVINO bf16 + budget)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    wanted = set(args.modes.split(","))
    images = [str(p) for p in dev_images(args.start, args.images)]
    results, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="unioncam-bench-memory-") as tmp:
        tmp = Path(tmp)
        old = tmp / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.baseline], check=True,
                       capture_output=True)
        try:
            for model in args.models.split(","):
                weights = None if model == "efficientnet-lite0" else "random:0"
                engines = {"before": tmp / f"{model}-before", "after": tmp / f"{model}-after"}
                export(old, model, weights, engines["before"])
                export(REPO, model, weights, engines["after"])
                modes = {
                    "before": (old, engines["before"], ["--batch-size", "32"]),
                    "default": (REPO, engines["after"], []),
                    "batch32": (REPO, engines["after"], ["--batch-size", "32"]),
                    "max-memory": (REPO, engines["after"], ["--max-memory", args.max_memory]),
                    "openvino": (REPO, engines["after"], ["--backend", "openvino"]),
                    "fast": (REPO, engines["after"], ["--fast"]),
                }
                modes = {name: mode for name, mode in modes.items() if name in wanted or name == "before"}
                for mode, (code, engine, options) in modes.items():
                    print(f"{model} {mode} ...", file=sys.stderr)
                    out = tmp / f"{model}-{mode}-out"
                    record = run(code, ["explain", *images, "--engine", str(engine), "--out", str(out), *options])
                    seconds = per_image_seconds(out)
                    entry = {"engine_dir_bytes": dir_size(engine), "peak_rss_bytes": record["peak"],
                             "per_image_s": seconds, "median_s": median(seconds), "options": options,
                             "version": record["version"], "weights": weights or "pretrained"}
                    results.setdefault(model, {})[mode] = entry
                base = results[model]["before"]
                for mode, entry in results[model].items():
                    entry["time_vs_before"] = entry["median_s"] / base["median_s"]
                    rows.append([model, mode, entry["version"], f"{entry['engine_dir_bytes'] / 2**30:.3f}", f"{entry['peak_rss_bytes'] / 1e9:.2f}",
                                 entry["median_s"], entry["time_vs_before"], f"{entry['peak_rss_bytes'] / 1e9 / PAPER_GB:.2f}"])
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], capture_output=True)
    print(f"\nexplain peak memory and time, {len(images)} photos (rows {args.start}-{args.start + len(images) - 1}); "
          f"paper: {PAPER_GB} GB (VGG16, RTX A6000)")
    print_table(["model", "mode", "version", "engine dir GiB", "peak RSS GB", "median s/img", "time vs before",
                 "peak vs paper"], rows)
    write_json(args.out / "memory.json", {"images": [Path(i).name for i in images], "baseline": args.baseline,
                                          "max_memory": args.max_memory, "machine": machine(), "models": results})


if __name__ == "__main__":
    main()
