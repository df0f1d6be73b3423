"""Where a backend keeps what it compiled from an engine directory, so that the next process
starts without compiling again (OpenVINO's compiled models; README: Latency).

A folder holds the compiled form of one graph file for one backend configuration. Its name
is a digest of everything that decides that compiled form: the engine's manifest (which
lists the sha256 of every file, so a re-export gives new folders), the graph's absolute
path (OpenVINO's own cache key includes it), and what the caller adds (backend version,
CPU, compile options). Compiled models are read only from places this user wrote:

* an entry of the export cache (`unioncam_rt.cache`) keeps them beside the export, in
  ``<entry>/compiled/`` (a new export replaces the whole entry, so they go with it);
* any other engine directory (``--engine DIR``: maybe read-only, shared, or someone
  else's, whose manifest checks would not cover a compiled file) gets a folder in
  ``$UNIONCAM_RT_CACHE/compiled/`` (default ``~/.cache/unioncam-rt``), keyed as above.

A folder is filled in a private staging folder and renamed into place in one step, so a
process never reads a half-written one (serve replicas and Ray workers start together).
``UNIONCAM_RT_COMPILED_CACHE=0`` turns the cache off. In the user cache, each folder records
the graph it was compiled from (``source.json``: its path and its manifest's digest); whenever
a new folder is published there, folders whose engine directory is gone or was exported again
are removed, so the cache does not grow with every temporary or replaced engine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..manifest import MANIFEST_NAME

SUBFOLDER = "compiled"
SWITCH = "UNIONCAM_RT_COMPILED_CACHE"
SOURCE_FILE = "source.json"


def user_cache_root() -> Path:
    """``$UNIONCAM_RT_CACHE``, default ``~/.cache/unioncam-rt`` (the export cache's root too)."""
    return Path(os.environ.get("UNIONCAM_RT_CACHE") or Path.home() / ".cache" / "unioncam-rt")


def cache_enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def folder_key(graph: Path, *parts: str) -> str | None:
    """Digest naming the compiled form of ``graph`` (a file of an engine directory) under
    the caller's ``parts``; None when ``graph`` is not in an engine directory."""
    manifest = graph.parent / MANIFEST_NAME
    try:
        listed = manifest.read_bytes()
    except OSError:
        return None
    digest = hashlib.sha256(listed)
    for part in (str(graph.resolve()), *parts):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:24]


def compiled_folder(graph: Path, backend: str, *parts: str) -> Path | None:
    """The folder for ``graph``'s compiled form (it may not exist yet), or None when the
    cache is off or ``graph`` is not in an engine directory.

    Args:
        graph: a graph file inside an engine directory (beside ``manifest.json``).
        backend: a folder name for the backend, e.g. ``"openvino"``.
        *parts: what else decides the compiled form (backend version, CPU, options).
    """
    if not cache_enabled():
        return None
    key = folder_key(graph, backend, *parts)
    if key is None:
        return None
    return compiled_root(graph.parent) / backend / key


def compiled_root(engine_dir: Path) -> Path:
    """``<engine_dir>/compiled`` for an entry of the export cache, else the user cache's."""
    root = user_cache_root()
    try:
        inside = engine_dir.resolve().is_relative_to(root.resolve())
    except OSError:
        inside = False
    return (engine_dir if inside else root) / SUBFOLDER


def staging_folder(final: Path) -> Path:
    """A new private folder beside ``final`` to fill before `publish`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))


def _manifest_digest(graph: Path) -> str | None:
    try:
        return hashlib.sha256((graph.parent / MANIFEST_NAME).read_bytes()).hexdigest()
    except OSError:
        return None


def publish(staging: Path, final: Path, graph: Path | None = None) -> None:
    """Rename the filled ``staging`` folder to ``final`` in one step; if another process
    published ``final`` first, keep theirs and drop ours. With ``graph`` (the file compiled),
    the folder records its source, and in the user cache the folders of engines that are
    gone or were exported again are removed (`prune_orphans`)."""
    if graph is not None:
        source = {"graph": str(graph.resolve()), "manifest_sha256": _manifest_digest(graph)}
        try:
            (staging / SOURCE_FILE).write_text(json.dumps(source), "utf-8")
        except OSError:
            pass
    try:
        os.rename(staging, final)
    except OSError:
        discard(staging)
        return
    if graph is not None and final.parent.parent.resolve() == (user_cache_root() / SUBFOLDER).resolve():
        prune_orphans(final.parent)


def prune_orphans(backend_folder: Path) -> list[Path]:
    """Remove the folders in ``backend_folder`` whose recorded graph no longer exists or whose
    engine's manifest changed since (a folder without a record is kept); returns them."""
    removed = []
    try:
        folders = [f for f in backend_folder.iterdir() if f.is_dir() and not f.name.startswith(".")]
    except OSError:
        return removed
    for folder in folders:
        try:
            source = json.loads((folder / SOURCE_FILE).read_text("utf-8"))
            graph = Path(source["graph"])
            recorded = source["manifest_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not graph.is_file() or _manifest_digest(graph) != recorded:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def discard(staging: Path) -> None:
    """Remove a staging folder that will not be published."""
    shutil.rmtree(staging, ignore_errors=True)
