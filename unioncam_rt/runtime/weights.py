"""The engine's weights, mapped once per process and shared by both graphs' sessions.

``weights.bin`` is memory-mapped read-only; each tensor of the manifest's index is a numpy
view into the mapping, handed to ONNX Runtime as a shared initializer of every session
that uses it. The kernel keeps one copy of each page, which both sessions read.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..manifest import EngineDirError, Manifest

_MAPS: dict[tuple[str, str], np.memmap] = {}
_LOCK = threading.Lock()


def mapped_file(path: Path, sha256: str) -> np.memmap:
    """One read-only mapping per (file, content) in this process."""
    key = (str(Path(path).resolve()), sha256)
    with _LOCK:
        if key not in _MAPS:
            _MAPS[key] = np.memmap(path, dtype=np.uint8, mode="r")
        return _MAPS[key]


class SharedWeights:
    """Tensors of an engine directory's ``weights.bin``, views into one mapping.

    Args:
        directory: the engine directory.
        manifest: its (validated) manifest.
    """

    def __init__(self, directory: Path, manifest: Manifest):
        index = manifest.weights or {}
        name = index.get("file")
        if not name or name not in manifest.files:
            raise EngineDirError(f"{directory}: the manifest has no weights index; re-export")
        self.path = Path(directory) / name
        self.nbytes = self.path.stat().st_size
        data = mapped_file(self.path, manifest.files[name])
        self.tensors: dict[str, np.ndarray] = {}
        self.graphs: dict[str, list[str]] = {}
        for tensor, entry in index.get("tensors", {}).items():
            dtype = np.dtype(entry["dtype"])
            offset, length = int(entry["offset"]), int(entry["length"])
            if offset + length > len(data):
                raise EngineDirError(f"{self.path}: tensor {tensor} lies past the end of the file; re-export")
            view = np.frombuffer(data, dtype=dtype, count=length // dtype.itemsize, offset=offset)
            self.tensors[tensor] = view.reshape(entry["shape"])
            for graph in entry.get("graphs", []):
                self.graphs.setdefault(graph, []).append(tensor)

    def for_graph(self, graph: str) -> dict[str, np.ndarray]:
        """The tensors one graph file uses."""
        return {name: self.tensors[name] for name in self.graphs.get(graph, [])}
