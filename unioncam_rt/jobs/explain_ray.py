"""``unioncam-rt explain DIR --ray``: a folder explained by an actor pool on Ray Data.

The driver checks every option by building the `Explainer` once, names the outputs and
keeps an earlier run's finished ones as the serial run does (`unioncam_rt.jobs.explain`,
`unioncam_rt.jobs.resume`), and starts the pool. Each
actor holds one engine and one `Explainer` and explains a few images per call (their masks
share engine calls); it renders the files with `render_explanation` itself, so they are the
serial run's files byte for byte, and returns their bytes. The driver writes them under
``out`` (atomically, JSON last) as they arrive, so only the driver needs to see the output
folder, and an interrupted run resumes where it stopped. The input images must be readable
at the same paths on every node.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ..distributed.cluster import ray_session
from ..distributed.pool import actor_pool_rows
from ..errors import UnionCamError, require
from .engine_spec import EngineSpec, prepare_engine
from .explain import ExplainConfig, images_still_to_explain, report_failures
from .settings import MethodSettings


@dataclass(frozen=True)
class ExplainTask:
    """What every worker of an explain job does with its images."""

    settings: MethodSettings
    target: str | None
    save_npy: bool
    out: str  # the driver's output folder, named in the line printed per image


class ExplainWorker:
    """A Ray Data actor: one engine, one `Explainer`; a batch of image paths in, their files out."""

    def __init__(self, spec: EngineSpec, task: ExplainTask):
        self.explainer = task.settings.explainer(spec.open())
        self.task = task

    def __call__(self, batch: dict) -> dict:
        from ..outputs import explanation_line, render_explanation

        stems = dict(zip(map(str, batch["path"]), map(str, batch["stem"])))
        rows: dict[str, list] = {"path": [], "stem": [], "error": [], "note": [], "suffixes": [], "contents": []}
        for path, outcome in self.explainer.iter_files(list(stems), self.task.target):
            stem = stems[str(path)]
            suffixes, contents, error, note = [], [], "", ""
            if isinstance(outcome, UnionCamError):
                error = str(outcome)
            else:
                for name, content in render_explanation(outcome, stem, self.task.save_npy):
                    suffixes.append(name[len(stem):])
                    contents.append(content)
                note = explanation_line(Path(path).name, outcome, Path(self.task.out) / stem)
            for key, value in (("path", str(path)), ("stem", stem), ("error", error), ("note", note),
                               ("suffixes", suffixes), ("contents", contents)):
                rows[key].append(value)
        return rows


def images_per_call(images: int, workers: int, images_per_step: int) -> int:
    """Images per actor call: up to ``images_per_step``, fewer so that every worker gets work."""
    return max(1, min(images_per_step, math.ceil(images / workers)))


def explain_on_ray(config: ExplainConfig, paths: list[Path], progress: bool = True) -> int:
    """Explain ``paths`` into ``config.out`` on Ray (``config.ray``: the cluster and the
    pool); returns the exit code, like `unioncam_rt.jobs.explain.explain_images`, which
    lists the images and calls this."""
    from tqdm.auto import tqdm

    from ..fileio import atomic_write_bytes

    require("ray", "serve")
    out = Path(config.out)
    say = (lambda line: tqdm.write(line, file=sys.stderr)) if progress else (lambda line: None)
    spec = prepare_engine(config.source, config.engine, progress)
    images_per_step = _check_options(spec, config.settings, config.target)
    todo = images_still_to_explain(config, paths, say)
    failures: list[str] = []
    if todo:
        target, pool = config.ray.target, config.ray.pool
        with ray_session(target) as ray:
            workers = min(pool.size(ray), len(todo))
            step = images_per_call(len(todo), workers, images_per_step)
            task = ExplainTask(config.settings, config.target, config.save_npy, str(out))
            items = [{"path": str(p), "stem": s} for p, s in todo]
            with actor_pool_rows(ray, ExplainWorker, (spec.with_threads(pool.cpus_per_worker), task), items, workers,
                                 pool.cpus_per_worker, step) as rows, \
                    tqdm(total=len(todo), desc="images", unit="img", disable=None if progress else True) as bar:
                for row in rows:
                    if row["error"]:
                        failures.append(row["error"])
                        say(f"error: {row['error']}")
                    else:
                        for suffix, content in zip(row["suffixes"], row["contents"]):
                            atomic_write_bytes(out / f"{row['stem']}{suffix}", bytes(content))
                        if progress:
                            tqdm.write(row["note"])  # stdout, as the serial run
                    bar.update(1)
    return report_failures(failures, len(paths), say)


def _check_options(spec: EngineSpec, settings: MethodSettings, target) -> int:
    """Refuse a bad method, theta, budget, memory budget or class before any work, with the
    serial run's messages (builds the explainer once here); returns its images per step."""
    explainer = settings.explainer(spec.open())
    explainer.class_index(target)
    return explainer.images_per_step

