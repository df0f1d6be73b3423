"""Resuming a job in its output folder: which outputs of an earlier run are kept.

A job writes its settings (model, engine, backend, precision, method, theta, class,
budget...) to ``.unioncam-run`` (JSON) in the output folder before any work. Run again into
the same folder with the same settings, it keeps what that run finished; with other
settings (or where no settings file is found) nothing earlier is trusted, so an explain
job explains every image again, and an evaluation refuses to mix records. The settings
name files by path: a weights file changed in place at the same path is not noticed.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from pathlib import Path

from ..errors import UnionCamError
from ..fileio import atomic_write_bytes
from ..outputs import output_suffixes

RUN_FILE = ".unioncam-run"  # JSON; no .json suffix, so that globbing the explanations never finds it


def _plain(value):
    """A JSON-able form of an option (paths and objects by their text, dataclasses by field)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return str(value)


def run_settings(job: str, source, engine, **options) -> dict:
    """What must match for a later run to keep this run's outputs.

    Args:
        job: ``"explain"`` or ``"evaluate"``.
        source: the `ModelSource` (or None: the engine directory's / default model).
        engine: the `EngineOptions` (threads and providers do not change results and are left out).
        **options: the method options that change the outputs.
    """
    engine_dir = None if engine.engine_dir is None else str(Path(engine.engine_dir).resolve())
    return _plain({"job": job, "model": source, "engine_dir": engine_dir, "backend": engine.backend,
                   "precision": engine.precision, "device": engine.device, **options})


def previous_settings(out: Path) -> dict | None:
    """The settings of the run that last wrote ``out``, or None (none, or unreadable)."""
    try:
        return json.loads((Path(out) / RUN_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def record_settings(out: Path, settings: dict) -> None:
    """Write ``settings`` as the folder's run settings (before any work)."""
    atomic_write_bytes(Path(out) / RUN_FILE, (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode())


def changed_settings(previous: dict | None, settings: dict) -> list[str]:
    """The names of the settings that differ (all of them when there is no earlier run)."""
    if previous is None:
        return list(settings)
    return sorted(key for key in set(previous) | set(settings) if previous.get(key) != settings.get(key))


def finished_image(out: Path, stem: str, path: Path, save_npy: bool) -> bool:
    """True when every output file of ``stem`` is in ``out`` and its JSON (written last)
    names ``path`` as its image."""
    if not all((out / f"{stem}{suffix}").is_file() for suffix in output_suffixes(save_npy)):
        return False
    try:
        return json.loads((out / f"{stem}.json").read_text("utf-8")).get("image") == str(path)
    except (OSError, ValueError, AttributeError):
        return False


def images_to_explain(out: Path, settings: dict, paths: list[Path], stems: list[str],
                      save_npy: bool) -> tuple[list[tuple[Path, str]], str | None]:
    """The (image, stem) pairs an explain job still has to do, and a line saying what was
    kept or why nothing was (None when there is nothing to say). Records ``settings``."""
    out = Path(out)
    previous = previous_settings(out)
    pairs = list(zip(paths, stems))
    note = None
    if previous is not None and not changed_settings(previous, settings):
        todo = [(p, s) for p, s in pairs if not finished_image(out, s, p, save_npy)]
        if len(todo) < len(pairs):
            note = (f"{len(pairs) - len(todo)} of {len(pairs)} images already have their outputs in {out} "
                    "(same settings); skipping them")
    else:
        todo = pairs
        if previous is not None and any(finished_image(out, s, p, save_npy) for p, s in pairs):
            note = (f"{out} holds outputs of a run with other settings ({', '.join(changed_settings(previous, settings))}"
                    "); explaining every image again")
    if previous != settings:
        record_settings(out, settings)
    return todo, note


def check_evaluation_folder(out: Path, settings: dict, has_records: bool) -> None:
    """Refuse to add records to an evaluation folder made with other settings; record them."""
    previous = previous_settings(out)
    if has_records:
        changed = changed_settings(previous, settings)
        if changed:
            why = "no record of its settings" if previous is None else f"other settings: {', '.join(changed)}"
            raise UnionCamError(f"{out} holds an evaluation made with {why}; its records cannot be mixed with "
                                "this run's: choose another --out, or remove that folder")
    if previous != settings:
        record_settings(out, settings)
