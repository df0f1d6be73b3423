"""Helpers shared by the benchmark scripts: images, workers in subprocesses, tables, JSON."""

from __future__ import annotations

import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# beside the checkout (developers, CI) or inside it (a copy carried to another machine)
DEV_IMAGES = next((p for p in (HERE.parent.parent / "shared" / "data" / "imagenet-sample-dev",
                               HERE.parent / "shared" / "data" / "imagenet-sample-dev") if p.is_dir()),
                  HERE.parent.parent / "shared" / "data" / "imagenet-sample-dev")


def dev_images(start: int, count: int) -> list[Path]:
    """``count`` development photos from row ``start`` of labels.csv (exit if absent)."""
    labels = DEV_IMAGES / "labels.csv"
    if not labels.is_file():
        sys.exit(f"development images not found at {DEV_IMAGES}")
    with labels.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [DEV_IMAGES / r["file"] for r in rows[start:start + count]]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    Linux's VmHWM (reset at exec, unlike ru_maxrss, which a child inherits from its parent).
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(script: Path, args: list[str]) -> dict:
    """Run ``script --worker ...`` in a fresh process (its own peak memory); parse its JSON line."""
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


def machine() -> dict:
    import numpy
    import onnxruntime

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        with open("/proc/cpuinfo") as handle:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def print_table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(h) for h in headers]] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * width for width in widths))


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"\nwrote {path}")
