"""One weights file per engine directory, shared by both graphs.

Every initializer of at least `EXTERNAL_THRESHOLD` bytes is stored once in
``weights.bin`` (ONNX external data: each graph's tensor records the file, offset and
length), so ``features.onnx`` and ``scores.onnx`` hold structure only and the network's
weights are on disk once. Offsets are aligned to `ALIGNMENT` bytes so a loader can map
tensors straight from the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import UnionCamError
from ..manifest import WEIGHTS_FILE
from .onnx_graph import numpy_helper, onnx

EXTERNAL_THRESHOLD = 1024
ALIGNMENT = 4096
EXTERNAL = onnx.TensorProto.EXTERNAL


def _external_location(tensor) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


class WeightsFile:
    """Appends tensors to ``DIR/weights.bin`` and points graph initializers at them.

    A tensor name is written once; a second tensor of the same name must hold the same
    bytes (the two graphs come from one forward graph).
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / WEIGHTS_FILE
        self.entries: dict[str, tuple[int, int, str]] = {}  # name -> (offset, length, sha256)
        self.size = self.path.stat().st_size if self.path.exists() else 0

    def _append(self, data: bytes) -> int:
        offset = -(-self.size // ALIGNMENT) * ALIGNMENT
        with open(self.path, "ab") as handle:
            handle.write(b"\0" * (offset - self.size))
            handle.write(data)
        self.size = offset + len(data)
        return offset

    def externalize(self, model, threshold: int = EXTERNAL_THRESHOLD) -> None:
        """Move ``model``'s large inline initializers into the file (in place)."""
        for tensor in model.graph.initializer:
            if tensor.data_location == EXTERNAL:
                location = _external_location(tensor).get("location")
                if location != WEIGHTS_FILE:
                    raise UnionCamError(f"initializer {tensor.name} is stored in {location}, not {WEIGHTS_FILE}")
                continue
            if not tensor.HasField("raw_data"):
                array = numpy_helper.to_array(tensor)
                tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), tensor.name))
            data = tensor.raw_data
            if len(data) < threshold:
                continue
            digest = hashlib.sha256(data).hexdigest()
            if tensor.name in self.entries:
                offset, length, known = self.entries[tensor.name]
                if known != digest:
                    raise UnionCamError(f"two different initializers are named {tensor.name}")
            else:
                offset, length = self._append(data), len(data)
                self.entries[tensor.name] = (offset, length, digest)
            tensor.ClearField("raw_data")
            tensor.data_location = EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value


def external_tensors(model) -> list[tuple[str, int, int, int, tuple[int, ...]]]:
    """``(name, offset, length, onnx data type, shape)`` of every initializer a graph keeps
    in ``weights.bin`` (read from the graph alone, without loading the data)."""
    found = []
    for tensor in model.graph.initializer:
        if tensor.data_location != EXTERNAL:
            continue
        where = _external_location(tensor)
        if where.get("location") != WEIGHTS_FILE:
            continue
        found.append((tensor.name, int(where.get("offset", 0)), int(where["length"]), tensor.data_type,
                      tuple(int(d) for d in tensor.dims)))
    return found
