"""Export time and artifact sizes per zoo model.

Usage::

    python benchmarks/bench_export.py                 # every zoo model
    python benchmarks/bench_export.py --models vgg16,efficientnet-lite0

torchvision models use seeded random weights (``random:0``) unless ``--pretrained`` is
given (which needs torchvision's weights download); efficientnet-lite0 always uses its
real weights. Sizes do not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402


def main() -> None:
    from unioncam_rt.exporting.pipeline import ExportConfig, export_model
    from unioncam_rt.zoo import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--pretrained", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    rows, results = [], {}
    for name in [m for m in args.models.split(",") if m]:
        weights = None if (args.pretrained or name == "efficientnet-lite0") else "random:0"
        with tempfile.TemporaryDirectory(prefix="unioncam-export-") as tmp:
            report = export_model(ExportConfig(name, Path(tmp) / name, weights=weights))
        total = sum(report.seconds.values())
        worst = max((c.rel_to_max for c in report.parity if c.name != "class_index"), default=0.0)
        results[name] = {"seconds": report.seconds, "total_s": total, "files": report.files,
                         "parity_max_rel": worst, "feature_shape": list(report.manifest.feature_shape)}
        rows.append([name, "x".join(map(str, report.manifest.feature_shape)), total, report.seconds["model"],
                     report.seconds["graphs"], report.files["features.onnx"] / 2**10, report.files["scores.onnx"] / 2**10,
                     report.files["weights.bin"] / 2**20, sum(report.files.values()) / 2**20, worst])
    print_table(["model", "K x h x w", "export s", "model + tracing s", "graphs s", "features.onnx KiB",
                 "scores.onnx KiB", "weights.bin MiB", "directory MiB", "parity max rel err"], rows)
    write_json(args.out / "export.json", {"machine": machine(), "models": results})


if __name__ == "__main__":
    main()
