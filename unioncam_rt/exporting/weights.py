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
# Operators whose constant operands ONNX Runtime's optimisers never rewrite in place. An
# initializer handed to a session as a shared initializer overrides the graph's copy by
# name; the transpose optimiser rewrites a broadcast operand of an elementwise op in place
# (same name, new shape: ConvNeXt's layer-scale Mul, [1, C, 1, 1] -> [1, 1, 1, C]), so the
# shared original then broke the rewritten graph. Only weights of these ops are shared.
SHAREABLE_CONSUMERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


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
        self.index: dict[str, dict] = {}  # name -> offset, length, dtype, shape (the manifest's weights index)
        self.path.touch()  # written even if every initializer stays inline: each export has one
        self.size = self.path.stat().st_size

    def _used_by(self, name: str, graph: str | None, shareable: set[str]) -> None:
        """Record that ``graph`` takes tensor ``name`` as a shared initializer (if it may)."""
        if graph is not None and name in shareable and name in self.index and graph not in self.index[name]["graphs"]:
            self.index[name]["graphs"].append(graph)

    def _append(self, data: bytes) -> int:
        offset = -(-self.size // ALIGNMENT) * ALIGNMENT
        with open(self.path, "ab") as handle:
            handle.write(b"\0" * (offset - self.size))
            handle.write(data)
        self.size = offset + len(data)
        return offset

    def externalize(self, model, graph: str | None = None, threshold: int = EXTERNAL_THRESHOLD) -> None:
        """Move ``model``'s large inline initializers into the file (in place); ``graph``
        names the graph file in the index's ``graphs`` lists: the graphs whose sessions receive
        the tensor as a shared initializer, which only weights of `SHAREABLE_CONSUMERS` are
        (a graph reads its other external tensors from the file itself)."""
        shareable = shareable_initializers(model)
        for tensor in model.graph.initializer:
            if tensor.data_location == EXTERNAL:
                location = _external_location(tensor).get("location")
                if location != WEIGHTS_FILE:
                    raise UnionCamError(f"initializer {tensor.name} is stored in {location}, not {WEIGHTS_FILE}")
                self._used_by(tensor.name, graph, shareable)
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
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
                self.index[tensor.name] = {"offset": offset, "length": length, "dtype": np.dtype(dtype).name,
                                           "shape": [int(d) for d in tensor.dims], "graphs": []}
            self._used_by(tensor.name, graph, shareable)
            tensor.ClearField("raw_data")
            tensor.data_location = EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value


def shareable_initializers(model) -> set[str]:
    """Initializers every consumer of which is a `SHAREABLE_CONSUMERS` operator."""
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    return {t.name for t in model.graph.initializer if consumers.get(t.name) and consumers[t.name] <= SHAREABLE_CONSUMERS}


def scoring_bytes_per_image(model, directory: Path) -> int:
    """Peak bytes of live activations per masked image in the scoring graph.

    The graph runs once in ONNX Runtime at one image and one mask with every intermediate
    tensor as an output (their true sizes); a tensor is then live from the node that makes
    it to its last consumer, and the largest total over the node order is the estimate the
    memory budget (``--max-memory``) scales by the batch size.
    """
    from .onnx_graph import GraphReader, run_onnx

    reader = GraphReader(model.graph)
    names = [o for node in model.graph.node for o in node.output if o and not reader.is_constant(o)]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
    feeds = {name: np.zeros([d or 1 for d in dims], np.int64 if name.endswith("index") else np.float32)
             for name, dims in shapes.items()}
    feeds["masks"] = np.ones_like(feeds["masks"])
    sizes = {name: value.nbytes for name, value in run_onnx(model, feeds, names, directory).items()}
    last_use = {}
    for step, node in enumerate(model.graph.node):
        for name in node.input:
            last_use[name] = step
    live, peak = {}, 0
    for step, node in enumerate(model.graph.node):
        for name in node.output:
            if name in sizes:
                live[name] = sizes[name]
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= step]:
            del live[name]
    return int(peak)

