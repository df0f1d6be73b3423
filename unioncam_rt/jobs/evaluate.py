"""``unioncam-rt evaluate``, in this process (on Ray: `evaluate_ray`): every method's maps scored with the paper's metrics.

Per image and method it records Average Drop / Increase terms, the insertion and deletion
curves and AUCs, appending one JSON line to ``records.jsonl`` as soon as that pair is
done, so an interrupted run resumes where it stopped. At the end it writes
``results.json``, ``results.csv``, ``table.md`` (shaped like the paper's Tables 1 and 3),
``curves.png`` (mean insertion / deletion curves) and ``report.html`` (tables, curves and a
gallery of overlays per method for the first ``gallery`` images).
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..cache import open_cached_engine
from ..errors import UnionCamError, require
from ..fileio import atomic_write_bytes, check_writable_dir, npy_bytes, png_bytes
from ..images import list_images, load_image
from ..method import METHODS
from ..method.ops import gaussian_blur
from ..metrics import (
    AverageDropIncrease,
    InsertionDeletion,
    causal_curves,
    drop_and_increase,
    masked_probability,
    trapezoid_auc,
)
from ..outputs import overlay
from ..runtime.factory import EngineOptions
from ..sources import ModelSource
from .resume import check_evaluation_folder, run_settings
from .settings import MethodSettings, RayRun

RECORDS = "records.jsonl"
METRIC_KEYS = ("avg_drop", "avg_increase", "insertion", "deletion", "overall")


@dataclass
class EvaluateConfig:
    """Options of an evaluation run.

    Attributes:
        inputs: image files or folders (ignored when ``labels`` is given).
        labels: a CSV with ``file`` and ``class_index`` columns (files relative to it).
        methods: methods to evaluate (default: all six).
        limit: evaluate at most this many images (default: all).
        out: output folder (default ``unioncam-eval``); an existing run there is resumed.
        save_maps: keep every map as ``maps/<method>/<stem>.npy`` (default False).
        gallery: images shown in the HTML gallery (default 8).
        batch_size: engine batch size (default 16, or what ``max_memory`` allows).
        max_memory: peak-memory budget for the masked batch size (default: none).
        budget: region-map channel budget (default: exact); see `unioncam_rt.method.budget`.
        theta: UnionCAM's percentile (default 10).
        engine: how to run the model (backend, engine dir, precision...).
        source: the model (default: the engine directory's, or efficientnet-lite0).
        ray: run on Ray Data (default None: in this process).
    """

    inputs: list[Path] = field(default_factory=list)
    labels: Path | None = None
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    limit: int | None = None
    out: Path = Path("unioncam-eval")
    save_maps: bool = False
    gallery: int = 8
    batch_size: int | None = None
    theta: float = 10.0
    engine: EngineOptions = field(default_factory=EngineOptions)
    source: ModelSource | None = None
    max_memory: int | str | None = None
    budget: object = None
    ray: RayRun | None = None

    @property
    def settings(self) -> MethodSettings:
        return MethodSettings("unioncam", self.theta, self.batch_size, self.max_memory, self.budget)

    def run_settings(self) -> dict:
        """What a resumed evaluation must share with the run whose records it adds to."""
        return run_settings("evaluate", self.source, self.engine, theta=self.theta, budget=self.budget)


def read_label_rows(path: Path) -> list[tuple[Path, int]]:
    """(image path, class index) rows of a labels CSV."""
    if not path.is_file():
        raise UnionCamError(f"labels file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"file", "class_index"} <= set(reader.fieldnames):
            raise UnionCamError(f"{path}: needs 'file' and 'class_index' columns; has {reader.fieldnames}")
        rows = []
        for n, row in enumerate(reader, start=2):
            try:
                rows.append((path.parent / row["file"], int(row["class_index"])))
            except ValueError:
                raise UnionCamError(f"{path}:{n}: class_index {row['class_index']!r} is not an integer") from None
    return rows


def load_records(path: Path) -> list[dict]:
    """Finished records; a line cut by an interruption (and anything after it) is dropped
    from the file, so that work is redone."""
    if not path.is_file():
        return []
    records, good = [], []
    for line in path.read_text("utf-8").splitlines():
        try:
            records.append(json.loads(line))
            good.append(line)
        except json.JSONDecodeError:
            atomic_write_bytes(path, "".join(f"{g}\n" for g in good).encode())
            break
    return records


def append_record(path: Path, record: dict) -> None:
    """Append one finished record to ``records.jsonl`` (flushed to disk at once)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def evaluation_items(config: EvaluateConfig) -> list[tuple[Path, int | None]]:
    """(image, label) pairs to evaluate, checked before any work."""
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise UnionCamError(f"unknown methods {unknown}; available: {', '.join(METHODS)}")
    if config.labels is not None:
        items = read_label_rows(Path(config.labels))
    else:
        items = [(p, None) for p in list_images(list(config.inputs))]
    items = items[: config.limit] if config.limit else items
    if not items:
        raise UnionCamError("no images to evaluate")
    return items


def evaluate_image(engine, explainers: dict, path: Path, label, methods: list[str], gallery: bool, save_maps: bool,
                   batch_size: int) -> Iterator[tuple[dict, list[tuple[str, bytes]]]]:
    """Evaluate one image with each of ``methods``: yields, per method as soon as it is done,
    its record and the files that go with it (relative names: ``maps/<method>/<stem>.npy``,
    ``gallery/...``). The serial run and the Ray workers both use it.

    Raises:
        UnionCamError: the image cannot be read (before anything is yielded).
    """
    loaded = load_image(path, engine.input_size)
    blurred = gaussian_blur(loaded.array[None])[0]
    for method in methods:
        result = explainers[method].explain_loaded([loaded], [-1])[0]
        explain_s = result.timings["features_s"] + result.timings["method_s"]  # this image's own work
        c = result.class_index
        o = masked_probability(engine, loaded.array, result.cam, c)
        drop, inc = drop_and_increase(result.probability, o)
        ins_curve, del_curve = causal_curves(engine, loaded.array, result.cam, c, batch_size=batch_size,
                                             blurred=blurred)
        ins, dele = trapezoid_auc(ins_curve), trapezoid_auc(del_curve)
        record = {
            "image": path.name, "method": method, "label": label, "class_index": c,
            "class_name": result.class_name, "probability": result.probability, "masked_probability": o,
            "avg_drop": drop, "avg_increase": inc, "insertion": ins, "deletion": dele,
            "overall": ins - dele, "branch": result.branch, "masked_passes": result.masked_passes,
            "budget": result.budget,
            "explain_s": explain_s, "group_images": result.timings["group_images"], "insertion_curve": ins_curve.tolist(), "deletion_curve": del_curve.tolist(),
        }
        files = []
        if save_maps:
            files.append((f"maps/{method}/{path.stem}.npy", npy_bytes(result.cam)))
        if gallery:
            files.append((f"gallery/{method}/{path.stem}.png", png_bytes(_thumbnail(overlay(loaded.rgb, result.cam)))))
            files.append((f"gallery/input/{path.stem}.png", png_bytes(_thumbnail(loaded.rgb))))
        yield record, files


def evaluate(config: EvaluateConfig, progress: bool = True) -> dict:
    """Run (or resume) an evaluation, here or on Ray (``config.ray``); returns the aggregate
    per method.

    Raises:
        UnionCamError: bad options (before any work), or, after the reports are written,
            images that could not be read.
    """
    check_writable_dir(Path(config.out))
    require("matplotlib", "eval")
    items = evaluation_items(config)
    if config.ray is not None:
        from .evaluate_ray import evaluate_on_ray

        return evaluate_on_ray(config, items, progress)
    return _evaluate_here(config, items, progress)


def open_records(config: EvaluateConfig) -> tuple[Path, list[dict]]:
    """The records file of ``config.out`` and its finished records, once the folder is known
    to hold an evaluation with the same settings (or none)."""
    out = Path(config.out)
    records_path = out / RECORDS
    records = load_records(records_path)
    check_evaluation_folder(out, config.run_settings(), bool(records))
    return records_path, records


def still_to_evaluate(config: EvaluateConfig, items: list[tuple[Path, int | None]],
                      records: list[dict]) -> list[tuple[int, Path, int | None, list[str]]]:
    """``(index, image, label, methods)`` for every image some of whose methods have no
    record yet (``index``: its place among ``items``, which decides the gallery)."""
    done = {(r["image"], r["method"]) for r in records}
    left = []
    for index, (path, label) in enumerate(items):
        missing = [m for m in config.methods if (path.name, m) not in done]
        if missing:
            left.append((index, path, label, missing))
    return left


def _evaluate_here(config: EvaluateConfig, items: list[tuple[Path, int | None]], progress: bool) -> dict:
    from tqdm.auto import tqdm

    engine = open_cached_engine(config.source, config.engine, progress=progress)
    explainers = {m: config.settings.explainer(engine, m) for m in config.methods}
    batch_size = next(iter(explainers.values())).options.batch_size
    out = Path(config.out)
    records_path, records = open_records(config)
    failures: list[str] = []
    todo = still_to_evaluate(config, items, records)
    with tqdm(total=sum(len(missing) for *_, missing in todo), desc="evaluate", unit="map",
              disable=None if progress else True) as bar:
        for index, path, label, missing in todo:
            try:
                for record, files in evaluate_image(engine, explainers, path, label, missing, index < config.gallery,
                                                    config.save_maps, batch_size):
                    for name, content in files:
                        atomic_write_bytes(out / name, content)
                    append_record(records_path, record)
                    records.append(record)
                    bar.update(1)
            except UnionCamError as exc:
                failures.append(str(exc))
                bar.update(len(missing))
    aggregate = write_reports(out, records, config, failures, engine.model_name)
    if failures:
        raise UnionCamError(f"{len(failures)} images could not be read: " + "; ".join(failures))
    return aggregate


def _thumbnail(image, height: int = 160):
    from PIL import Image

    return image.resize((max(1, round(image.width * height / image.height)), height), Image.BILINEAR)


def aggregate_records(records: list[dict], methods: list[str]) -> dict[str, dict]:
    """Mean metrics per method (with the metric classes)."""
    out = {}
    for method in methods:
        adi, idel = AverageDropIncrease(), InsertionDeletion()
        rows = [r for r in records if r["method"] == method]
        for r in rows:
            adi.drops.append(r["avg_drop"])
            adi.increases.append(r["avg_increase"])
            idel.insertion.append(r["insertion"])
            idel.deletion.append(r["deletion"])
        summary = {**adi.summary(), **idel.summary()}
        if method == "unioncam" and rows:
            summary["fused_branch_share"] = float(np.mean([r["branch"] == "fused" for r in rows]))
        summary["median_explain_s"] = float(np.median([r["explain_s"] for r in rows])) if rows else float("nan")
        out[method] = summary
    return out


def markdown_table(aggregate: dict[str, dict]) -> str:
    lines = ["Table 1 - Average Drop (lower is better) and Average Increase (higher is better), %", "",
             "| Method | Average Drop | Average Increase | images |", "| --- | --- | --- | --- |"]
    lines += [f"| {m} | {a['avg_drop']:.2f} | {a['avg_increase']:.2f} | {a['images']} |" for m, a in aggregate.items()]
    lines += ["", "Table 3 - Insertion (higher is better), Deletion (lower is better), Overall = Insertion - Deletion",
              "", "| Method | Insertion | Deletion | Overall |", "| --- | --- | --- | --- |"]
    lines += [f"| {m} | {a['insertion']:.4f} | {a['deletion']:.4f} | {a['overall']:.4f} |" for m, a in aggregate.items()]
    return "\n".join(lines) + "\n"


def plot_curves(records: list[dict], methods: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in ((axes[0], "insertion_curve", "Insertion (higher is better)"),
                           (axes[1], "deletion_curve", "Deletion (lower is better)")):
        for method in methods:
            curves = [r[key] for r in records if r["method"] == method]
            if not curves:
                continue
            mean = np.mean(np.asarray(curves), axis=0)
            x = np.linspace(0, 1, len(mean))
            ax.plot(x, mean, label=f"{method} (AUC {trapezoid_auc(mean):.3f})")
        ax.set_title(title)
        ax.set_xlabel("fraction of pixels inserted" if key.startswith("ins") else "fraction of pixels deleted")
        ax.set_ylabel("class probability")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def html_report(aggregate: dict[str, dict], records: list[dict], config: EvaluateConfig, out: Path, model: str) -> str:
    methods = list(aggregate)
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td>" + "".join(f"<td>{a[k]:.4g}</td>" for k in METRIC_KEYS)
        + f"<td>{a['images']}</td><td>{a['median_explain_s']:.3g}</td></tr>" for m, a in aggregate.items())
    stems = sorted({p.stem for p in (out / "gallery" / "input").glob("*.png")}) if (out / "gallery" / "input").is_dir() else []
    by_key = {(Path(r["image"]).stem, r["method"]): r for r in records}
    gallery = ""
    for stem in stems:
        cells = f"<td><img src='gallery/input/{html.escape(stem)}.png'><br>input</td>"
        for m in methods:
            r = by_key.get((stem, m))
            caption = "" if r is None else f"{html.escape(r['class_name'])} {r['probability']:.2f}" + (
                f"<br>{r['branch']}" if r.get("branch") else "")
            cells += f"<td><img src='gallery/{html.escape(m)}/{html.escape(stem)}.png'><br>{html.escape(m)}<br>{caption}</td>"
        gallery += f"<tr>{cells}</tr>"
    heads = "".join(f"<th>{k}</th>" for k in METRIC_KEYS)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>unioncam-rt evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:center}}
.gallery td{{border:none;font-size:12px}}</style></head><body>
<h1>unioncam-rt evaluation</h1>
<p>model {html.escape(model)}, {len({r['image'] for r in records})} images, backend {html.escape(config.engine.backend)}.
Average Drop and Deletion: lower is better; Average Increase, Insertion and Overall: higher is better.</p>
<table><tr><th>method</th>{heads}<th>images</th><th>median explain s</th></tr>{rows}</table>
<h2>Mean insertion and deletion curves</h2><img src="curves.png" alt="curves">
<h2>Gallery</h2><table class="gallery">{gallery}</table></body></html>
"""


def write_reports(out: Path, records: list[dict], config: EvaluateConfig, failures: list[str], model: str) -> dict:
    methods = [m for m in config.methods if any(r["method"] == m for r in records)]
    aggregate = aggregate_records(records, methods)
    per_image: dict[str, dict] = {}
    for r in records:
        per_image.setdefault(r["image"], {})[r["method"]] = {k: r[k] for k in (*METRIC_KEYS, "class_index", "probability",
                                                                              "masked_probability", "branch", "label")}
    engine = asdict(config.engine)
    engine["engine_dir"] = str(engine["engine_dir"]) if engine["engine_dir"] else None
    results = {"aggregate": aggregate, "per_image": per_image, "failures": failures,
               "config": {"model": model, "methods": config.methods, "theta": config.theta,
                          "budget": next((r.get("budget") for r in records if r.get("budget")), None),
                          "batch_size": config.batch_size, "engine": engine, "limit": config.limit}}
    atomic_write_bytes(out / "results.json", (json.dumps(results, indent=1) + "\n").encode())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "method", "class_index", "probability", *METRIC_KEYS, "branch"])
    for r in records:
        writer.writerow([r["image"], r["method"], r["class_index"], f"{r['probability']:.6f}",
                         *(f"{r[k]:.6f}" for k in METRIC_KEYS), r["branch"] or ""])
    atomic_write_bytes(out / "results.csv", buffer.getvalue().encode())
    atomic_write_bytes(out / "table.md", markdown_table(aggregate).encode())
    atomic_write_bytes(out / "curves.png", plot_curves(records, methods))
    atomic_write_bytes(out / "report.html", html_report(aggregate, records, config, out, model).encode())
    return aggregate
