"""``unioncam-rt explain DIR --ray``: a folder explained by an actor pool on Ray Data.

The driver lists the images, names their outputs (`unique_stems`, as the serial run),
skips images whose outputs are all there (the JSON is written last, so it marks a finished
image), checks every option by building the `Explainer` once, and starts the pool. Each
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

from ..errors import UnionCamError, require
from .cluster import RayTarget, WorkerPool, ray_session
from .engines import EngineSpec, prepare_engine
from .pool import actor_pool_rows
from .settings import MethodSettings

OUTPUT_SUFFIXES = (".overlay.png", ".cam.png", ".json")


def finished(out: Path, stem: str, save_npy: bool) -> bool:
    """True when every output file of ``stem`` is in ``out``."""
    suffixes = OUTPUT_SUFFIXES + ((".cam.npy",) if save_npy else ())
    return all((out / f"{stem}{suffix}").is_file() for suffix in suffixes)


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


def explain_on_ray(config, target: RayTarget = RayTarget(), pool: WorkerPool = WorkerPool(),
                   progress: bool = True) -> int:
    """Explain ``config.inputs`` into ``config.out`` on Ray; returns the exit code (0, or 1
    when some images could not be read), like ``run_explain``.

    Args:
        config: a `unioncam_rt.cli.ExplainConfig` (inputs, out, source, engine, target,
            method, theta, batch_size, save_npy, max_memory and, where present, budget).
        target: the Ray cluster (default: a local Ray in this process).
        pool: actors and CPUs per actor.
        progress: show a progress bar and one line per image on stderr.
    """
    from tqdm.auto import tqdm

    from ..fileio import atomic_write_bytes
    from ..images import list_images
    from ..outputs import unique_stems

    require("ray", "serve")
    out = Path(config.out)
    paths = list_images(config.inputs)
    stems = unique_stems(paths)
    settings = MethodSettings(config.method, config.theta, config.batch_size, config.max_memory,
                              getattr(config, "budget", None))
    spec = prepare_engine(config.source, config.engine, progress)
    images_per_step = _check_options(spec, settings, config.target)
    todo = [(path, stem) for path, stem in zip(paths, stems) if not finished(out, stem, config.save_npy)]
    say = (lambda line: tqdm.write(line, file=sys.stderr)) if progress else (lambda line: None)
    if len(todo) < len(paths):
        say(f"{len(paths) - len(todo)} of {len(paths)} images already have their outputs in {out}; skipping them")
    failures: list[str] = []
    if todo:
        with ray_session(target) as ray:
            workers = min(pool.size(ray), len(todo))
            step = images_per_call(len(todo), workers, images_per_step)
            task = ExplainTask(settings, config.target, config.save_npy, str(out))
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
                        say(row["note"])
                    bar.update(1)
    if failures:
        say(f"{len(failures)} of {len(paths)} images failed:")
        for line in failures:
            say(f"  {line}")
        return 1
    return 0


def _check_options(spec: EngineSpec, settings: MethodSettings, target) -> int:
    """Refuse a bad method, theta, budget, memory budget or class before any work, with the
    serial run's messages (builds the explainer once here); returns its images per step."""
    explainer = settings.explainer(spec.open())
    explainer.class_index(target)
    return explainer.images_per_step

