"""``unioncam-rt evaluate --ray``: an evaluation spread over an actor pool on Ray Data.

Same inputs, records and reports as the serial run (`unioncam_rt.jobs.evaluate`): the driver reads the
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

from ..distributed.cluster import ray_session
from ..distributed.pool import actor_pool_rows
from ..errors import UnionCamError
from .engine_spec import EngineSpec, prepare_engine
from .evaluate import EvaluateConfig, evaluate_image
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


def evaluate_on_ray(config: EvaluateConfig, items: list, progress: bool = True) -> dict:
    """Run (or resume) an evaluation of ``items`` on Ray (``config.ray``: the cluster and the
    pool); returns the aggregate per method. `unioncam_rt.jobs.evaluate.evaluate` checks the
    options and lists the items, then calls this.
    """
    from tqdm.auto import tqdm

    from ..errors import require
    from ..fileio import atomic_write_bytes
    from .evaluate import append_record, open_records, still_to_evaluate, write_reports

    require("ray", "serve")
    settings = config.settings
    spec = prepare_engine(config.source, config.engine, progress)
    engine = spec.open()
    for method in config.methods:  # refuse bad options before any work
        settings.explainer(engine, method)
    model_name = engine.model_name
    del engine
    out = Path(config.out)
    records_path, records = open_records(config)
    todo = [{"path": str(path), "label": json.dumps(label), "index": index, "methods": json.dumps(missing)}
            for index, path, label, missing in still_to_evaluate(config, items, records)]
    failures: list[str] = []
    if todo:
        task = EvaluateTask(settings, tuple(config.methods), config.gallery, config.save_maps)
        target, pool = config.ray.target, config.ray.pool
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
