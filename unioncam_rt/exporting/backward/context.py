"""What backward rules share: the rule context, errors, and small shape helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import UnionCamError
from ..onnx_graph import Emitter, GraphReader

FLOAT_MIN = float(np.finfo(np.float32).min)


class UnsupportedOpError(UnionCamError):
    """A head operator has no backward rule (or an unsupported form of one)."""


@dataclass
class Context:
    """What a rule may use: the emitter, the forward graph and static head shapes."""

    emit: Emitter
    reader: GraphReader
    shapes: dict[str, tuple]
    dependent: set[str]
    constants: dict[str, np.ndarray]

    def shape(self, name: str) -> tuple:
        if name not in self.shapes:
            if name in self.reader.initializers:
                return tuple(int(d) for d in self.reader.initializers[name].dims)
            value = self.reader.constant(name)
            if value is not None:
                return tuple(value.shape)
            raise UnsupportedOpError(f"no static shape known for tensor {name!r}")
        return self.shapes[name]

    def needs(self, name: str) -> bool:
        return bool(name) and name in self.dependent

    def const_input(self, node, index: int, what: str) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        value = self.constants.get(name)
        if value is None:
            value = self.reader.constant(name)
        if value is None:
            fail(node, f"its {what} must be a constant")
        return value

    def backward_weight(self, node, index: int) -> str:
        """The weight input ``index`` of ``node`` for use in a backward operator.

        A constant whose first two axes are equal (a Conv kernel with as many output as input
        channels per group) is given to the backward operator (ConvTranspose) as a private copy
        under a new name: OpenVINO's CPU plugin evidently packs a constant once per address and
        shape, so the forward and the backward use of one such constant shared the first one's
        packing and the gradient came out wrong (a test head showed it). Other weights are
        shared as they are (their packed shapes differ). Gemm avoids the copy differently
        (see ``gemm_rule``).
        """
        name = node.input[index]
        shape = self.shape(name)
        if len(shape) >= 2 and shape[0] == shape[1] and (name in self.reader.initializers
                                                          or self.reader.constant(name) is not None):
            value = self.const_input(node, index, "weight")
            return self.emit.const(np.array(value, copy=True), dtype=value.dtype, hint=f"{name}_backward_copy")
        return name

    def unbroadcast(self, grad: str, grad_shape: tuple, target: str) -> str:
        """Sum ``grad`` over the axes along which ``target`` was broadcast."""
        return reduce_to(self, grad, grad_shape, self.shape(target))


def fail(node, why: str):
    raise UnsupportedOpError(f"head op {node.op_type} (node {node.name or node.output[0]!r}): {why}")


def rank_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def reduce_to(ctx: Context, grad: str, grad_shape: tuple, shape: tuple) -> str:
    """Sum a broadcast gradient down to ``shape`` (leading axes and unit axes)."""
    if tuple(grad_shape) == tuple(shape):
        return grad
    lead = len(grad_shape) - len(shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(shape) if d == 1 and grad_shape[lead + i] != 1]
    if axes:
        grad = ctx.emit.reduce("ReduceSum", grad, axes, keepdims=True)
    if lead:
        grad = ctx.emit.op("Reshape", [grad, ctx.emit.ints([-1 if d is None else d for d in shape])])
    return grad
