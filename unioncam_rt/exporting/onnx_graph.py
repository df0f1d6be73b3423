"""Small tools for building and reading ONNX graphs: an emitter of uniquely named nodes
and constants (opset-aware where operators changed form), a reader of constant tensors,
graph reachability, and running a graph in ONNX Runtime to read intermediate tensors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import UnionCamError, require

onnx = require("onnx", "export")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto

MIN_OPSET = 13


def model_opset(model) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise UnionCamError("the ONNX model imports no default-domain opset")


def attributes(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Emitter:
    """Appends nodes and initializers under a name prefix that user graphs do not use.

    Args:
        opset: the graph's default-domain opset (decides ReduceSum/ReduceMean/Squeeze forms).
        prefix: prefix of every emitted tensor and node name.
    """

    def __init__(self, opset: int, prefix: str = "uc/"):
        self.opset = opset
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0
        self._constants: dict[tuple, str] = {}

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def op(self, op_type: str, inputs: Iterable[str], hint: str | None = None, outputs: int = 1, **attrs):
        """Append one node; returns its output name (or names when ``outputs > 1``)."""
        names = [self.fresh(hint or op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh(op_type + "_node"), **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value, dtype=np.float32, hint: str = "const") -> str:
        """A constant initializer (small scalars and vectors are shared)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 16 else None
        if key is not None and key in self._constants:
            return self._constants[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._constants[key] = name
        return name

    def ints(self, values) -> str:
        return self.const(list(values), np.int64, "ints")

    # -- operators whose inputs/attributes changed across opsets --------------------------

    def reduce(self, op_type: str, x: str, axes, keepdims: bool = True) -> str:
        axes = [int(a) for a in axes]
        axes_as_input = self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13)
        if axes_as_input:
            return self.op(op_type, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op(op_type, [x], axes=axes, keepdims=int(keepdims))

    def unsqueeze(self, x: str, axes) -> str:
        return self.op("Unsqueeze", [x, self.ints(axes)])

    def squeeze(self, x: str, axes) -> str:
        return self.op("Squeeze", [x, self.ints(axes)])

    def slice(self, x: str, starts, ends, axes, steps=None) -> str:
        inputs = [x, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            inputs.append(self.ints(steps))
        return self.op("Slice", inputs)

    def pad(self, x: str, pads, value: float = 0.0) -> str:
        return self.op("Pad", [x, self.ints(pads), self.const(value)], mode="constant")

    def scale(self, x: str, factor: float) -> str:
        return self.op("Mul", [x, self.const(factor)])

    def shape_of(self, x: str) -> str:
        return self.op("Shape", [x])

    def mask(self, condition: str) -> str:
        """A boolean tensor as float 0/1."""
        return self.op("Cast", [condition], to=TensorProto.FLOAT)


# Operators whose outputs depend on their inputs' shapes (or on nothing), never on values.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "EyeLike"})


class GraphReader:
    """Look-ups over one graph: producers, consumers and constant values.

    Args:
        graph: the graph.
        directory: where its external data lies (for reading large constants).
    """

    def __init__(self, graph, directory: Path | None = None):
        self.graph = graph
        self.directory = directory
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.initializers = {init.name: init for init in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]

    def is_constant(self, name: str) -> bool:
        """True for an initializer or a ``Constant`` node's output."""
        node = self.producer.get(name)
        return name in self.initializers or (node is not None and node.op_type == "Constant")

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a ``Constant`` node's output, else None."""
        if not name:
            return None
        if name in self.initializers:
            base = str(self.directory) if self.directory is not None else ""
            return numpy_helper.to_array(self.initializers[name], base_dir=base)
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            attrs = attributes(node)
            if "value" in attrs:
                return numpy_helper.to_array(attrs["value"])
            for key in ("value_float", "value_int"):
                if key in attrs:
                    return np.asarray(attrs[key])
            for key in ("value_floats", "value_ints"):
                if key in attrs:
                    return np.asarray(attrs[key])
        return None

    def reachable_from(self, sources: Iterable[str], blocked: Iterable[str] = (), values_only: bool = False) -> set[str]:
        """Tensors computed (transitively) from ``sources``, not propagating through ``blocked``.

        With ``values_only``, operators whose outputs depend on their input's shape alone
        (`SHAPE_ONLY_OPS`: ``Shape(x) -> Gather -> Reshape`` is shape arithmetic, not a data
        path) do not propagate either."""
        reached, blocked = set(sources), set(blocked)
        for node in self.graph.node:  # ONNX graphs are topologically sorted
            if values_only and node.op_type in SHAPE_ONLY_OPS:
                continue
            if any(name in reached and name not in blocked for name in node.input):
                reached.update(o for o in node.output if o)
        return reached

    def ancestors(self, target: str) -> set[str]:
        """Tensors ``target`` is computed from (itself included)."""
        needed, stack = {target}, [target]
        while stack:
            node = self.producer.get(stack.pop())
            if node is None:
                continue
            for name in node.input:
                if name and name not in needed:
                    needed.add(name)
                    stack.append(name)
        return needed


def rename_tensor(graph, old: str, new: str) -> None:
    """Rename a tensor everywhere in ``graph`` (inputs, outputs, nodes, initializers, value_info)."""
    for collection in (graph.input, graph.output, graph.value_info):
        for value in collection:
            if value.name == old:
                value.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def tensor_info(name: str, elem_type, dims) -> "onnx.ValueInfoProto":
    """A value_info with a declared shape (str dims are symbolic)."""
    return helper.make_tensor_value_info(name, elem_type, list(dims))


def run_onnx(model, feeds: dict[str, np.ndarray], outputs: list[str], directory: Path | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` in ONNX Runtime (CPU) and return the named tensors, intermediate ones too.

    The model is saved into ``directory`` (where its external weights lie) for the run.
    """
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for name in outputs:
        value = onnx.ValueInfoProto()
        value.name = name
        probe.graph.output.append(value)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    fd, path = tempfile.mkstemp(prefix=".probe-", suffix=".onnx", dir=directory)
    os.close(fd)
    try:
        onnx.save_model(probe, path)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return dict(zip(outputs, session.run(outputs, feeds)))
    finally:
        Path(path).unlink(missing_ok=True)
