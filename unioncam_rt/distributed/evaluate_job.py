"""``unioncam-rt evaluate --ray``: an evaluation spread over an actor pool on Ray Data.

Same inputs, records and reports as `unioncam_rt.evaluate.evaluate`: the driver reads the
finished (image, method) pairs from ``records.jsonl``, sends every image with a missing
method to the pool (one image per actor call), and, as each image comes back, writes its
maps and gallery thumbnails and then appends its records, so an interrupted run resumes
where it stopped, serial or on Ray. Each actor holds one engine and one `Explainer` per
method and computes a record exactly as the serial loop does (`evaluate_image`). At the end
the driver writes ``results.json``, the tables, curves and report with the serial code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnionCamError
from ..evaluate import evaluate_image
from .cluster import RayTarget, WorkerPool, ray_session
from .engines import EngineSpec, prepare_engine
from .pool import actor_pool_rows
from .settings import MethodSettings


@dataclass(frozen=True)
class EvaluateTask:
    """What every worker of an evaluation does with its images."""

    settings: MethodSettings
    methods: tuple[str, ...]
    gallery: int
    save_maps: bool


class EvaluateWorker:
    """A Ray Data actor: one engine, one `Explainer` per method; one image per row."""

    def __init__(self, spec: EngineSpec, task: EvaluateTask):
        self.engine = spec.open()
        self.explainers = {m: task.settings.explainer(self.engine, m) for m in task.methods}
        self.batch_size = next(iter(self.explainers.values())).options.batch_size
        self.task = task

    def __call__(self, batch: dict) -> dict:
        rows: dict[str, list] = {"path": [], "error": [], "records": [], "names": [], "contents": []}
        for path, label, index, methods in zip(batch["path"], batch["label"], batch["index"], batch["methods"]):
            records, files, error = [], [], ""
            try:
                for record, produced in evaluate_image(self.engine, self.explainers, Path(str(path)),
                                                       json.loads(str(label)), json.loads(str(methods)),
                                                       int(index) < self.task.gallery, self.task.save_maps,
                                                       self.batch_size):
                    records.append(record)
                    files += produced
            except UnionCamError as exc:
                error = str(exc)
            rows["path"].append(str(path))
            rows["error"].append(error)
            rows["records"].append(json.dumps(records))
            rows["names"].append([name for name, _ in files])
            rows["contents"].append([content for _, content in files])
        return rows


def evaluate_on_ray(config, target: RayTarget = RayTarget(), pool: WorkerPool = WorkerPool(),
                    progress: bool = True) -> dict:
    """Run (or resume) an evaluation on Ray; returns the aggregate per method, like
    `unioncam_rt.evaluate.evaluate`.

    Args:
        config: an `unioncam_rt.evaluate.EvaluateConfig`.
        target: the Ray cluster (default: a local Ray in this process).
        pool: actors and CPUs per actor.
        progress: show a progress bar.

    Raises:
        UnionCamError: bad options (before any work), or, after the reports are written,
            images that could not be read.
    """
    from tqdm.auto import tqdm

    from ..errors import require
    from ..evaluate import RECORDS, append_record, evaluation_items, load_records, write_reports
    from ..fileio import atomic_write_bytes

    require("ray", "serve")
    require("matplotlib", "eval")
    items = evaluation_items(config)
    settings = MethodSettings("unioncam", config.theta, config.batch_size, config.max_memory,
                              getattr(config, "budget", None))
    spec = prepare_engine(config.source, config.engine, progress)
    engine = spec.open()
    for method in config.methods:  # refuse bad options before any work
        settings.explainer(engine, method)
    model_name = engine.model_name
    del engine
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / RECORDS
    records = load_records(records_path)
    done = {(r["image"], r["method"]) for r in records}
    todo = []
    for index, (path, label) in enumerate(items):
        missing = [m for m in config.methods if (path.name, m) not in done]
        if missing:
            todo.append({"path": str(path), "label": json.dumps(label), "index": index, "methods": json.dumps(missing)})
    failures: list[str] = []
    if todo:
        task = EvaluateTask(settings, tuple(config.methods), config.gallery, config.save_maps)
        with ray_session(target) as ray:
            workers = min(pool.size(ray), len(todo))
            maps = sum(len(json.loads(item["methods"])) for item in todo)
            with actor_pool_rows(ray, EvaluateWorker, (spec.with_threads(pool.cpus_per_worker), task), todo, workers,
                                 pool.cpus_per_worker, 1) as rows, \
                    tqdm(total=maps, desc="evaluate", unit="map", disable=None if progress else True) as bar:
                for row, item in zip(rows, todo):
                    if row["error"]:
                        failures.append(row["error"])
                    for name, content in zip(row["names"], row["contents"]):
                        atomic_write_bytes(out / name, bytes(content))
                    for record in json.loads(row["records"]):
                        append_record(records_path, record)
                        records.append(record)
                    bar.update(len(json.loads(item["methods"])))
    aggregate = write_reports(out, records, config, failures, model_name)
    if failures:
        raise UnionCamError(f"{len(failures)} images could not be read: " + "; ".join(failures))
    return aggregate
