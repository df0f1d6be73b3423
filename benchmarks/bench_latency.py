"""Latency a user sees: ``unioncam-rt explain IMG [--fast]`` on one photo, from process start
to the files on disk, and where that time goes.

Two measurements, in one run on the same machine, on an export made into a temporary
export cache first (so every run below is on a *warm export cache*):

* **stages**, each in a fresh process that does what ``explain`` does, timed stage by
  stage: process start (interpreter, until the worker's first line), imports, opening the
  engine (manifest checks, sessions: OpenVINO compiles or imports its compiled models),
  features pass, method, the same image a second time (the steady state: the first
  image's extra is the backends' first-call set-up), writing the files. ``cold``: the
  compiled-model cache removed first (OpenVINO compiles); ``warm``: kept from a previous
  run. ONNX Runtime keeps nothing, so exact runs once per repetition.
* **CLI**: the real command, ``--fast`` and exact alternately, wall time from launch to
  exit; the ratio fast / exact is taken within each pair (the machine may be shared; the
  load average is recorded with every run).

Usage::

    python benchmarks/bench_latency.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, print_table, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
IMAGE = HERE.parent / "examples" / "zebra.jpg"
STAGES = ("start_s", "imports_s", "open_s", "load_s", "features_s", "method_s", "write_s", "total_s")


def worker(fast: bool, image: Path, out: Path, launched: float) -> dict:
    """One ``explain`` of ``image`` in this fresh process, timed stage by stage."""
    start_s = time.time() - launched
    clock = time.perf_counter()
    import unioncam_rt.cli  # noqa: F401  (what the command loads before it runs: typer, the package)
    from unioncam_rt.cache import open_cached_engine
    from unioncam_rt.explainer import Explainer
    from unioncam_rt.outputs import write_explanation
    from unioncam_rt.presets import resolve_mode
    from unioncam_rt.runtime.factory import EngineOptions

    imports_s = time.perf_counter() - clock
    clock = time.perf_counter()
    mode = resolve_mode(None, None, None, fast)
    engine = open_cached_engine(None, EngineOptions(mode.backend, None, None, mode.precision))
    explainer = Explainer(engine=engine, budget=mode.budget)
    open_s = time.perf_counter() - clock
    result = explainer.explain(image)
    clock = time.perf_counter()
    write_explanation(result, out, image.stem)
    write_s = time.perf_counter() - clock
    again = explainer.explain(image)  # the steady state of the same work
    timings = result.timings
    sessions = [getattr(engine, name, None) for name in ("features_session", "scores_session", "decision_session")]
    return {"mode": mode.describe(), "start_s": start_s, "imports_s": imports_s, "open_s": open_s,
            "load_s": timings["load_s"], "features_s": timings["features_s"], "method_s": timings["method_s"],
            "write_s": write_s, "total_s": start_s + imports_s + open_s + timings["total_s"] + write_s,
            "second_image_s": again.timings["features_s"] + again.timings["method_s"],
            "masked_passes": result.masked_passes, "branch": result.branch,
            "compiled": [{"imported": s.imported, "open_s": s.open_s} for s in sessions if hasattr(s, "imported")],
            "python_modules": {name: name in sys.modules for name in ("torch", "onnxruntime", "openvino", "tqdm")}}


def run_stages(fast: bool, image: Path, env: dict, out: Path) -> dict:
    launched = time.time()
    load = os.getloadavg()
    result = subprocess.run([sys.executable, __file__, "--worker", "fast" if fast else "exact", "--image", str(image),
                             "--out", str(out), "--launched", repr(launched)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record["process_wall_s"] = time.time() - launched
    record["loadavg"] = load
    return record


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("unioncam-rt")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "unioncam_rt"]


def run_cli(fast: bool, image: Path, env: dict, out: Path) -> dict:
    load = os.getloadavg()
    started = time.perf_counter()
    result = subprocess.run([*cli_command(), "explain", str(image), "--out", str(out), *(["--fast"] if fast else [])],
                            capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return {"wall_s": wall, "loadavg": load}


def remove_compiled(cache: Path) -> None:
    for folder in cache.glob("*/compiled"):
        shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=IMAGE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--worker", choices=("fast", "exact"), help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker == "fast", args.image, args.out, args.launched)))
        return

    from unioncam_rt.cache import cached_engine_dir
    from unioncam_rt.sources import ModelSource

    with tempfile.TemporaryDirectory(prefix="unioncam-latency-") as tmp:
        cache = Path(tmp) / "cache"
        env = {**os.environ, "UNIONCAM_RT_CACHE": str(cache)}
        os.environ["UNIONCAM_RT_CACHE"] = str(cache)
        started = time.perf_counter()
        cached_engine_dir(ModelSource("efficientnet-lite0"), progress=False)
        export_s = time.perf_counter() - started
        outputs = Path(tmp) / "out"
        stages: dict[str, list[dict]] = {"fast, cold": [], "fast, warm": [], "exact": []}
        cli: dict[str, list[dict]] = {"fast": [], "exact": []}
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats} ...", file=sys.stderr)
            remove_compiled(cache)
            stages["fast, cold"].append(run_stages(True, args.image, env, outputs))
            stages["fast, warm"].append(run_stages(True, args.image, env, outputs))
            stages["exact"].append(run_stages(False, args.image, env, outputs))
            cli["fast"].append(run_cli(True, args.image, env, outputs))
            cli["exact"].append(run_cli(False, args.image, env, outputs))

    rows = []
    for name, records in stages.items():
        rows.append([name, *[median([r[k] for r in records]) for k in STAGES],
                     median([r["second_image_s"] for r in records]), median([r["process_wall_s"] for r in records]),
                     records[0]["masked_passes"]])
    print(f"\nexplain {args.image.name}, efficientnet-lite0, warm export cache; median of {args.repeats} "
          f"(export once: {export_s:.1f}s); load average {os.getloadavg()}")
    print_table(["stages", "start", "imports", "open", "load", "features", "method", "write", "total",
                 "2nd image", "process wall", "passes"], rows)
    ratios = [f["wall_s"] / e["wall_s"] for f, e in zip(cli["fast"], cli["exact"])]
    print(f"\nCLI wall time, launch to exit ({' '.join(cli_command())} explain IMG [--fast]):")
    print_table(["command", "median s", "min s", "max s", "load avg (1 min) at start"], [
        [name, median([r["wall_s"] for r in runs]), min(r["wall_s"] for r in runs), max(r["wall_s"] for r in runs),
         " ".join(f"{r['loadavg'][0]:.2f}" for r in runs)] for name, runs in cli.items()])
    print(f"fast / exact, within each pair: median {median(ratios):.3f} (each: {', '.join(f'{r:.3f}' for r in ratios)})")
    write_json(args.out / "latency-efficientnet-lite0.json", {
        "image": args.image.name, "repeats": args.repeats, "export_s": export_s, "machine": machine(),
        "stages": stages, "cli": cli, "fast_over_exact": ratios})


if __name__ == "__main__":
    main()
