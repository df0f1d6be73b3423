"""The model matrix at full size: every torchvision classification family and the main timm
CNN families (seeded random weights, 7 classes), each as an ``nn.Module`` and as ONNX files
from torch's TorchScript and dynamo exporters, exported with the default target, gradients
compared with torch autograd, one photo explained on ONNX Runtime, OpenVINO and (for a few)
the C++ library. Prints a table and writes JSON (``benchmarks/results/model_matrix.json``).

Each case runs in its own process (its memory, a crash or a time-out stay its own).
The cases and the per-case run are in ``tests/model_matrix.py`` (the CI tests run them at
64-96 px). Usage::

    python benchmarks/model_matrix.py [--size 224] [--forms module,onnx-ts,onnx-dynamo]
        [--cases resnet18,densenet121] [--cpp resnet18,densenet121,convnext_atto,efficientnet_b0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import dev_images, machine, print_table, write_json  # noqa: E402

DEFAULT_CPP = ("resnet18", "densenet121", "convnext_atto", "efficientnet_b0")
PHOTO_BUDGET = "cover0.85:320"  # the photo's explain time: ONNX Runtime fp32 at --fast's channel budget


def cpp_map(engine: Path, photo: Path, out: Path):
    """The C++ CLI's map of ``photo`` (budget 16), built from cpp/ first."""
    import numpy as np
    from bench_cpp import ensure_build

    build = HERE.parent / "cpp" / "build"
    ensure_build(build)
    result = subprocess.run([str(build / "unioncam-cpp"), "explain", "--engine", str(engine), "--budget", "16",
                             "--save-npy", "--out", str(out), str(photo)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "unioncam-cpp failed")
    return np.load(out / f"{photo.stem}.cam.npy")


def worker(case_id: str, form: str, size: int, cpp: bool) -> dict:
    import numpy as np

    from tests.model_matrix import BY_ID, run
    from unioncam_rt import Explainer

    with tempfile.TemporaryDirectory() as scratch:
        result = run(BY_ID[case_id], form, Path(scratch), size=size)
        row = result.row()
        if result.ok:
            photo = dev_images(0, 1)[0]
            engine_dir = Path(scratch) / f"{case_id}.{form}"
            started = time.perf_counter()
            explained = Explainer(str(engine_dir), budget=PHOTO_BUDGET).explain(photo)
            row["seconds"]["explain (photo)"] = time.perf_counter() - started
            if cpp:
                try:
                    budgeted = Explainer(str(engine_dir), budget=16).explain(photo).cam
                    other = cpp_map(engine_dir, photo, Path(scratch) / "cpp")
                    row["pearson_cpp"] = float(np.corrcoef(budgeted.ravel(), other.ravel())[0, 1])
                except Exception as exc:  # recorded in the table
                    row["cpp_error"] = str(exc)[:300]
            row["branch"] = explained.branch
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--forms", default="module,onnx-ts,onnx-dynamo")
    parser.add_argument("--cases", default="", help="builder names or case ids (default: all)")
    parser.add_argument("--cpp", default=",".join(DEFAULT_CPP), help="builders also run on the C++ library")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per case and form")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "model_matrix.json")
    parser.add_argument("--worker", nargs=4, metavar=("CASE", "FORM", "SIZE", "CPP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case_id, form, size, cpp = args.worker
        print(json.dumps(worker(case_id, form, int(size), cpp == "1")))
        return
    from tests.model_matrix import CASES

    wanted = {c for c in args.cases.split(",") if c}
    cases = [c for c in CASES if not wanted or c.builder in wanted or c.id in wanted]
    cpp = {c for c in args.cpp.split(",") if c}
    rows = []
    for case in cases:
        for form in args.forms.split(","):
            started = time.perf_counter()
            command = [sys.executable, str(Path(__file__).resolve()), "--worker", case.id, form, str(args.size),
                       "1" if case.builder in cpp and form == "module" else "0"]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                lines = done.stdout.strip().splitlines()
                row = json.loads(lines[-1]) if done.returncode == 0 and lines else {
                    "case": case.id, "form": form, "ok": False,
                    "error": f"worker crashed: {(done.stderr.strip().splitlines() or ['?'])[-1][:300]}"}
            except subprocess.TimeoutExpired:
                row = {"case": case.id, "form": form, "ok": False, "error": f"over {args.timeout:.0f} s"}
            row.update(family=case.family, wall_s=time.perf_counter() - started)
            rows.append(row)
            status = "ok" if row.get("ok") else f"FAIL {row.get('error')}"
            print(f"{case.family:22s} {form:12s} {status[:150]}", file=sys.stderr, flush=True)
            partial = args.out.with_name(args.out.stem + ".partial.json")
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"size": args.size, "rows": rows}, indent=1))  # a long run keeps its rows
    table = []
    for r in rows:
        seconds = r.get("seconds", {})
        grad = r.get("gradient_error")
        table.append([r["family"], r["form"], "ok" if r.get("ok") else "FAIL",
                      "x".join(map(str, r.get("feature_shape") or [])) or "-",
                      "-" if grad is None else f"{grad:.1e}",
                      "-" if r.get("pearson_openvino") is None else f"{r['pearson_openvino']:.5f}",
                      r.get("cpp_error", "-")[:40] if "pearson_cpp" not in r else f"{r['pearson_cpp']:.5f}",
                      f"{seconds.get('export', float('nan')):.1f}",
                      f"{seconds.get('explain (photo)', float('nan')):.1f}",
                      (r.get("error") or "")[:80]])
    headers = ["family", "form", "export", "target K x h x w", "grad err vs autograd", "ORT~OV map r",
               "ORT~C++ map r", "export s", f"explain s (ORT, {PHOTO_BUDGET})", "error"]
    print_table(headers, table)
    write_json(args.out, {"machine": machine(), "size": args.size, "rows": rows})
    markdown = args.out.with_suffix(".md")
    markdown.write_text("\n".join(["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
                                  + ["| " + " | ".join(str(c) for c in row) + " |" for row in table]) + "\n")
    print(f"wrote {markdown}")


if __name__ == "__main__":
    main()
