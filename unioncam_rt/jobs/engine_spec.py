"""Which engine a job's workers open: resolved once in the driver, opened in every worker
(Ray actors, serve replicas).

The driver exports a model named by zoo name, factory or ONNX file into the cache once
(`unioncam_rt.cache`) and hands the workers the engine directory, so N workers never export
N times. A worker on another machine of a Ray cluster, where that cache directory does not
exist, exports into its own cache instead; a directory given with ``--engine`` must exist
at the same path on every node.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..runtime.factory import EngineOptions


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to open the engine.

    Attributes:
        source: the model (a `unioncam_rt.sources.ModelSource`), or None for an engine
            directory given by the user.
        options: backend, engine directory, precision, threads...
        from_cache: True when ``options.engine_dir`` is the driver's cache entry (a worker
            that cannot see it exports into its own cache).
    """

    source: object
    options: EngineOptions
    from_cache: bool = False

    def with_threads(self, threads: int | None) -> "EngineSpec":
        """The same engine with ``threads`` intra-op threads (None: keep the options' own)."""
        return self if threads is None else replace(self, options=replace(self.options, threads=threads))

    def open(self):
        """Open the engine in this process (a worker)."""
        from ..cache import open_cached_engine
        from ..manifest import MANIFEST_NAME
        from ..runtime.factory import open_engine

        if not self.from_cache:
            return open_cached_engine(self.source, self.options)
        if (Path(self.options.engine_dir) / MANIFEST_NAME).is_file():
            return open_engine(self.options, self.source)
        return open_cached_engine(self.source, replace(self.options, engine_dir=None))

    def describe(self) -> dict:
        """Model name and class names without opening the engine where a manifest says them."""
        from ..manifest import load_manifest

        if self.options.engine_dir is not None:
            manifest = load_manifest(self.options.engine_dir)
            return {"model": manifest.model, "class_names": list(manifest.class_names)}
        engine = self.open()
        return {"model": engine.model_name, "class_names": list(engine.class_names)}


def prepare_engine(source, options: EngineOptions, progress: bool = True) -> EngineSpec:
    """Check the options and export the model into the cache now if it is not there yet.

    Args:
        source: a `ModelSource`, or None (the ``--engine`` directory's model, else the
            default zoo model).
        options: how to run it; an ``engine_dir`` is checked (manifest) and used as is.
        progress: print the export's progress.
    """
    from ..cache import cached_engine_dir, needs_cache_entry, prebuilt_precision
    from ..manifest import load_manifest
    from ..sources import ModelSource
    from ..zoo.spec import DEFAULT_MODEL

    if options.engine_dir is not None:
        load_manifest(options.engine_dir)
        return EngineSpec(source, replace(options, engine_dir=Path(options.engine_dir).resolve()))
    source = source if source is not None else ModelSource(DEFAULT_MODEL)
    if not needs_cache_entry(options):  # the torch reference: the model itself
        return EngineSpec(source, options)
    directory = cached_engine_dir(source, prebuilt_precision(options), progress)
    return EngineSpec(source, replace(options, engine_dir=directory), from_cache=True)
