"""The engine's weights, mapped once per process and shared by both graphs' sessions.

``weights.bin`` is memory-mapped read-only; each tensor of the manifest's index is a numpy
view into the mapping, handed to ONNX Runtime as a shared initializer of every session
that uses it. The kernel keeps one copy of each page, which both sessions read.

The index is untrusted (it comes with the engine directory): `read_index` checks every
entry (dtype, offset, length, shape, graphs) against the file before anything is mapped.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..manifest import FEATURES_FILE, SCORES_FILE, SCORES_INT8_FILE, EngineDirError, Manifest, inside_directory

_MAPS: dict[tuple[str, str], np.memmap] = {}
_LOCK = threading.Lock()

# the tensor types an export writes (numpy names); anything else is refused before mapping
WEIGHT_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32",
                 "uint64", "bool")
GRAPH_FILES = (FEATURES_FILE, SCORES_FILE, SCORES_INT8_FILE)
INDEX_KEYS = ("offset", "length", "dtype", "shape", "graphs")


@dataclass(frozen=True)
class TensorEntry:
    """One checked entry of the weights index: where a tensor lies in the file and who uses it."""

    name: str
    offset: int
    length: int
    dtype: np.dtype
    shape: tuple[int, ...]
    graphs: tuple[str, ...]


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry_problem(entry, file_size: int) -> str | None:
    """What is wrong with one index entry (None: nothing)."""
    if not isinstance(entry, dict):
        return f"entry is {type(entry).__name__}, not an object"
    missing = [key for key in INDEX_KEYS if key not in entry]
    if missing:
        return f"has no {missing[0]!r}"
    dtype, offset, length, shape, graphs = (entry[k] for k in ("dtype", "offset", "length", "shape", "graphs"))
    if dtype not in WEIGHT_DTYPES:
        return f"dtype {dtype!r} is not one of {', '.join(WEIGHT_DTYPES)}"
    if not _is_count(offset):
        return f"offset {offset!r} is not a non-negative integer"
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        return f"shape {shape!r} is not a list of non-negative integers"
    itemsize = np.dtype(dtype).itemsize
    if not _is_count(length) or length != math.prod(shape) * itemsize:
        return f"length {length!r} is not {math.prod(shape) * itemsize} (shape {shape} of {dtype})"
    if offset % itemsize:
        return f"offset {offset} is not a multiple of {itemsize} ({dtype})"
    if offset + length > file_size:
        return f"bytes {offset}..{offset + length} lie past the end of the file ({file_size} bytes)"
    if not isinstance(graphs, list) or not all(g in GRAPH_FILES for g in graphs):
        return f"graphs {graphs!r} is not a list of {', '.join(GRAPH_FILES)}"
    return None


def read_index(directory: Path, manifest: Manifest) -> tuple[Path, list[TensorEntry]]:
    """The weights file and its checked index entries, or a one-line `EngineDirError`
    naming the first bad tensor. Reads nothing but the file's size."""
    index = manifest.weights or {}
    name = index.get("file")
    if not name or name not in manifest.files:
        raise EngineDirError(f"{directory}: the manifest has no weights index; re-export")
    path = inside_directory(Path(directory), name)
    if path is None or not path.is_file():
        raise EngineDirError(f"{directory}: weights file {name!r} is not a file inside the directory; re-export")
    tensors = index.get("tensors")
    if not isinstance(tensors, dict):  # empty where every weight is small enough to stay in the graphs
        raise EngineDirError(f"{path}: the manifest's weights index has no tensors object; re-export")
    size = path.stat().st_size
    entries = []
    for tensor, entry in tensors.items():
        problem = _entry_problem(entry, size)
        if problem:
            raise EngineDirError(f"{path}: tensor {tensor!r} of the weights index: {problem}; the directory is "
                                 "refused (re-export it)")
        entries.append(TensorEntry(tensor, entry["offset"], entry["length"], np.dtype(entry["dtype"]),
                                   tuple(entry["shape"]), tuple(entry["graphs"])))
    return path, entries


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
        manifest: its (validated) manifest; the weights index is checked here (`read_index`).
    """

    def __init__(self, directory: Path, manifest: Manifest):
        self.path, entries = read_index(Path(directory), manifest)
        self.nbytes = self.path.stat().st_size
        data = mapped_file(self.path, manifest.files[manifest.weights["file"]]) if self.nbytes else b""
        self.tensors: dict[str, np.ndarray] = {}
        self.graphs: dict[str, list[str]] = {}
        for entry in entries:
            count = entry.length // entry.dtype.itemsize
            view = np.frombuffer(data, dtype=entry.dtype, count=count, offset=entry.offset)
            self.tensors[entry.name] = view.reshape(entry.shape)
            for graph in entry.graphs:
                self.graphs.setdefault(graph, []).append(entry.name)

    def for_graph(self, graph: str) -> dict[str, np.ndarray]:
        """The tensors one graph file uses."""
        return {name: self.tensors[name] for name in self.graphs.get(graph, [])}
