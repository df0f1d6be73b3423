"""The export cache: explain a model by name, exporting it once on first use.

Without ``--engine DIR``, a model (zoo name, Python factory or ONNX file, with its
weights, labels and reading options) is exported into
``$UNIONCAM_RT_CACHE`` (default ``~/.cache/unioncam-rt``) under a key that covers all
of them (files by content) and the unioncam-rt version, and reused; an entry that fails
validation is exported again. For ``--backend tensorrt`` the engines of the requested
precision are built into the entry when missing, or rebuilt when they were built for
another GPU or TensorRT version.

This module sits above both the runtime and the export pipeline (they never import it).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from ._version import __version__
from .errors import DependencyError, UnionCamError
from .manifest import EngineDirError, load_manifest, trt_engine_name
from .method.engine import CamEngine
from .runtime.compiled_cache import user_cache_root
from .runtime.factory import EngineOptions, open_engine
from .sources import ModelSource
from .zoo.spec import DEFAULT_MODEL


def cache_root() -> Path:
    """``$UNIONCAM_RT_CACHE``, default ``~/.cache/unioncam-rt``."""
    return user_cache_root()


def cache_dir(source: ModelSource) -> Path:
    """The cache entry of a model source (not created)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in source.name)[:40]
    return cache_root() / f"{safe}-{source.cache_key()[:16]}-v{__version__}"


def _stale_tensorrt(directory: Path, precision: str) -> str | None:
    """Why the directory's TensorRT engines of ``precision`` cannot be used here, or None."""
    from .runtime.tensorrt_env import engine_mismatch

    manifest = load_manifest(directory)
    for graph in ("features", "scores"):
        name = trt_engine_name(graph, precision)
        if name not in manifest.engines:
            return f"no {precision} engine {name}"
        reason = engine_mismatch(manifest.engines[name])
        if reason:
            return reason
    return None


def _export_pipeline(why: str):
    """The export pipeline module, or a `UnionCamError` saying ``why`` it was needed."""
    try:
        from .exporting import pipeline
    except DependencyError as exc:
        raise UnionCamError(f"{why} and torch/onnx are not installed to make one: pass --engine DIR "
                            f"(from unioncam-rt export), or pip install 'unioncam-rt[export]'") from exc
    return pipeline


def _is_valid_entry(directory: Path) -> bool:
    try:
        load_manifest(directory)
    except EngineDirError:
        return False
    return True


def cached_engine_dir(source: ModelSource, tensorrt_precision: str | None = None, progress: bool = True) -> Path:
    """The cache directory for ``source``, exported now if missing or invalid. The export
    pipeline (torch, onnx) is imported only when something has to be built."""
    directory = cache_dir(source)
    if not _is_valid_entry(directory):
        pipeline = _export_pipeline(f"no exported engine for {source.name} in {directory}")
        if progress:
            print(f"exporting {source.name} once into {directory} ...", file=sys.stderr)
        pipeline.export_model(pipeline.ExportConfig(
            source.model, directory, source.weights, source.labels, source.target_layer, source.input_size,
            source.mean, source.std, source.layout, source.target_layout), progress=progress)
    if tensorrt_precision is not None:
        reason = _stale_tensorrt(directory, tensorrt_precision)
        if reason:
            pipeline = _export_pipeline(f"no usable {tensorrt_precision} TensorRT engine in {directory} ({reason})")
            if progress:
                print(f"building {tensorrt_precision} TensorRT engines into {directory} ({reason}) ...", file=sys.stderr)
            pipeline.add_tensorrt_engines(directory, tensorrt_precision)
    return directory


def prebuilt_precision(options: EngineOptions) -> str | None:
    """The precision whose engines the cache entry must hold for ``options`` (a backend that
    builds engines into the directory, TensorRT), else None."""
    return options.precision if options.spec.builds_engines else None


def needs_cache_entry(options: EngineOptions) -> bool:
    """True when ``options`` run a cache entry: a backend that reads an engine directory,
    and no ``--engine`` directory given."""
    return options.spec.reads_engine_dir and options.engine_dir is None


def open_cached_engine(source: ModelSource | None, options: EngineOptions, progress: bool = False) -> CamEngine:
    """Open an engine for ``source``: ``options.engine_dir`` if given, else the cache entry
    (exported on first use); the torch backend builds the torch model instead."""
    if source is None and options.engine_dir is None:
        source = ModelSource(DEFAULT_MODEL)
    if not needs_cache_entry(options):
        model = source.name if source is not None and options.engine_dir is not None else None
        return open_engine(options, source, model)
    precision = prebuilt_precision(options)
    if precision is None:
        try:  # opening checks the entry (manifest, hashes) once; only a bad or missing one is exported
            return open_engine(replace(options, engine_dir=cache_dir(source)), source)
        except EngineDirError:
            pass
    directory = cached_engine_dir(source, precision, progress)
    return open_engine(replace(options, engine_dir=directory), source)
