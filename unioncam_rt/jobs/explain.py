"""Explain images into a folder: ``<stem>.overlay.png``, ``<stem>.cam.png``, ``<stem>.json``
(and ``<stem>.cam.npy``) per image, in this process or on Ray Data (`explain_ray`).

Both runs list the images and name their outputs the same way (`unique_stems`), refuse a
bad option before any work, keep the outputs an earlier run with the same settings
finished in that folder (`unioncam_rt.jobs.resume`), write each image's files atomically
with the JSON last, go on past an image that fails and exit 1 when any did.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnionCamError
from ..runtime.factory import EngineOptions
from .settings import MethodSettings, RayRun


@dataclass
class ExplainConfig:
    """An explain job.

    Attributes:
        inputs: image files and/or folders (not recursive).
        out: the output folder (created; an earlier run there with the same settings is resumed).
        source: the model (`unioncam_rt.sources.ModelSource`; default: the ``engine``
            directory's model, else efficientnet-lite0).
        engine: backend, engine directory, precision... (default: ONNX Runtime fp32 on the
            export cache).
        target: class index or name to explain (default: top-1).
        method: CAM method (default ``"unioncam"``).
        theta: UnionCAM's percentile (default 10).
        batch_size: masked images per engine call (default 16, or what ``max_memory`` allows).
        save_npy: also write ``<stem>.cam.npy`` (default False).
        max_memory: peak-memory budget, e.g. ``"2GB"`` (default: none).
        budget: region-map channel budget (`unioncam_rt.method.budget.Budget`; default: exact).
        ray: run on Ray Data (default None: in this process).
    """

    inputs: list[Path]
    out: Path = Path("unioncam-out")
    source: object = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    target: str | None = None
    method: str = "unioncam"
    theta: float = 10.0
    batch_size: int | None = None
    save_npy: bool = False
    max_memory: str | int | None = None
    budget: object = None
    ray: RayRun | None = None

    @property
    def settings(self) -> MethodSettings:
        return MethodSettings(self.method, self.theta, self.batch_size, self.max_memory, self.budget)

    def run_settings(self) -> dict:
        """What a later run must share to keep this run's outputs (`unioncam_rt.jobs.resume`)."""
        from .resume import run_settings

        return run_settings("explain", self.source, self.engine, method=self.method, theta=self.theta,
                            target=self.target, budget=self.budget, save_npy=self.save_npy)


def images_still_to_explain(config: ExplainConfig, paths: list[Path], say) -> list[tuple[Path, str]]:
    """The (image, stem) pairs still to explain (an earlier run's finished ones kept); called
    once every option has been checked, as it records the run's settings in the folder."""
    from ..outputs import unique_stems
    from .resume import images_to_explain

    todo, note = images_to_explain(Path(config.out), config.run_settings(), paths, unique_stems(paths),
                                   config.save_npy)
    if note:
        say(note)
    return todo


def report_failures(failures: list[str], images: int, say) -> int:
    """The exit code of a run (0, or 1 when some images failed, each listed)."""
    if not failures:
        return 0
    say(f"{len(failures)} of {images} images failed:")
    for line in failures:
        say(f"  {line}")
    return 1


def explain_images(config: ExplainConfig, progress: bool = True) -> int:
    """Explain ``config.inputs`` into ``config.out``; returns the exit code (0, or 1 when some
    images failed: each is listed, the others are written).

    Raises:
        UnionCamError: a bad option, model or output folder, before any work.
    """
    from ..fileio import check_writable_dir
    from ..images import list_images

    check_writable_dir(Path(config.out))
    paths = list_images(config.inputs)
    if config.ray is not None:
        from .explain_ray import explain_on_ray

        return explain_on_ray(config, paths, progress)
    return _explain_here(config, paths, progress)


def _explain_here(config: ExplainConfig, paths: list[Path], progress: bool) -> int:
    from tqdm.auto import tqdm

    from ..cache import open_cached_engine
    from ..outputs import explanation_line, write_explanation

    out = Path(config.out)
    say = (lambda line: tqdm.write(line, file=sys.stderr)) if progress else (lambda line: None)
    engine = open_cached_engine(config.source, config.engine, progress=progress)
    explainer = config.settings.explainer(engine, progress=progress)
    if config.max_memory is not None:
        say(f"--max-memory {config.max_memory}: {explainer.options.batch_size} masked images per engine call")
    explainer.class_index(config.target)  # refuse a bad --class before any work
    todo = images_still_to_explain(config, paths, say)
    stems = dict(todo)
    failures: list[str] = []
    with tqdm(total=len(todo), desc="images", unit="img", disable=None if progress else True) as bar:
        for path, outcome in explainer.iter_files([p for p, _ in todo], config.target):
            if not isinstance(outcome, UnionCamError):
                try:
                    write_explanation(outcome, out, stems[path], config.save_npy)
                    outcome = explanation_line(path.name, outcome, out / stems[path])
                except OSError as exc:
                    outcome = UnionCamError(f"{path}: cannot write {out / stems[path]}.* ({exc.strerror or exc})")
            if isinstance(outcome, UnionCamError):
                failures.append(str(outcome))
                say(f"error: {outcome}")
            elif progress:
                tqdm.write(outcome)
            bar.update(1)
    return report_failures(failures, len(paths), say)
