"""The head's backward pass as ONNX nodes, built over the forward graph itself.

Given a forward graph with a ``logits`` output and a target tensor ``A`` (the
activations), `head_backward` appends nodes computing ``d (seed . logits) / d A`` for a
seed tensor (the one-hot of the explained class). Only the *head* is differentiated: the
nodes on a path from ``A`` to the logits. Each ONNX operator there needs a rule in
`RULES`; a head operator without one stops the export with an error naming the operator
and the node.

Every rule emits standard ONNX operators that ONNX Runtime, OpenVINO and TensorRT's ONNX
parser read (MatMul/Gemm, ConvTranspose, Mul/Add/Sub/Div, Where, comparisons, Cast,
Reshape, Transpose, Slice, Pad, Concat, ReduceSum/ReduceMean, Exp, Sqrt...): no
framework-specific ops, no ScatterND, no MaxPool ``Indices``.

Rules follow torch autograd's conventions where a derivative is not unique: ReLU and
ReLU6/Clip pass the gradient strictly inside their linear range; max pooling sends each
window's gradient to the *first* maximum in row-major order (even for ties), summed over
overlapping windows.

Shapes: rules read static shapes of head tensors (``None`` for the batch axis), measured by
running the forward graph (see `unioncam_rt.export.graphs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UnionCamError
from .onnx_graph import Emitter, GraphReader, TensorProto, attributes, helper, numpy_helper, onnx

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

    def unbroadcast(self, grad: str, grad_shape: tuple, target: str) -> str:
        """Sum ``grad`` over the axes along which ``target`` was broadcast."""
        return _reduce_to(self, grad, grad_shape, self.shape(target))


def fail(node, why: str):
    raise UnsupportedOpError(f"head op {node.op_type} (node {node.name or node.output[0]!r}): {why}")


def _rank_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --- element-wise, one input ---------------------------------------------------------------


def _unary(derivative):
    """Rule for ``y = f(x)`` with ``dx = derivative(ctx, x, y, g, attrs)``."""

    def rule(ctx: Context, node, grads):
        x, y = node.input[0], node.output[0]
        if not ctx.needs(x):
            return {}
        return {x: derivative(ctx, x, y, grads[0], attributes(node))}

    return rule


def _passthrough(ctx, node, grads):
    return {node.input[0]: grads[0]} if ctx.needs(node.input[0]) else {}


def _zero(ctx, node, grads):
    return {}


def _d_relu(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Mul", [g, e.mask(e.op("Greater", [x, e.const(0.0)]))])


def _d_leaky_relu(ctx, x, y, g, attrs):
    e = ctx.emit
    alpha = attrs.get("alpha", 0.01)
    return e.op("Where", [e.op("Greater", [x, e.const(0.0)]), g, e.scale(g, alpha)])


def _d_elu(ctx, x, y, g, attrs):
    e = ctx.emit
    alpha = attrs.get("alpha", 1.0)
    return e.op("Where", [e.op("Greater", [x, e.const(0.0)]), g, e.op("Mul", [g, e.op("Add", [y, e.const(alpha)])])])


def _d_sigmoid(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Mul", [g, e.op("Mul", [y, e.op("Sub", [e.const(1.0), y])])])


def _d_tanh(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Mul", [g, e.op("Sub", [e.const(1.0), e.op("Mul", [y, y])])])


def _d_softplus(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Mul", [g, e.op("Sigmoid", [x])])


def _d_hard_sigmoid(ctx, x, y, g, attrs):
    # torch's hardsigmoid_backward: alpha * g strictly inside the linear part
    e = ctx.emit
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    t = e.op("Add", [e.scale(x, alpha), e.const(beta)])
    inside = e.op("And", [e.op("Greater", [t, e.const(0.0)]), e.op("Less", [t, e.const(1.0)])])
    return e.op("Mul", [e.scale(g, alpha), e.mask(inside)])


def _d_hard_swish(ctx, x, y, g, attrs):
    # torch's hardswish_backward: 0 for x < -3; g * (x / 3 + 0.5) for x <= 3; g above
    e = ctx.emit
    middle = e.op("Mul", [g, e.op("Add", [e.scale(x, 1.0 / 3.0), e.const(0.5)])])
    upper = e.op("Where", [e.op("LessOrEqual", [x, e.const(3.0)]), middle, g])
    return e.op("Where", [e.op("Less", [x, e.const(-3.0)]), e.const(0.0), upper])


def _d_exp(ctx, x, y, g, attrs):
    return ctx.emit.op("Mul", [g, y])


def _d_log(ctx, x, y, g, attrs):
    return ctx.emit.op("Div", [g, x])


def _d_sqrt(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Div", [e.scale(g, 0.5), y])


def _d_reciprocal(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Neg", [e.op("Mul", [g, e.op("Mul", [y, y])])])


def _d_neg(ctx, x, y, g, attrs):
    return ctx.emit.op("Neg", [g])


def _d_abs(ctx, x, y, g, attrs):
    return ctx.emit.op("Mul", [g, ctx.emit.op("Sign", [x])])


def _d_erf(ctx, x, y, g, attrs):
    e = ctx.emit
    gauss = e.op("Exp", [e.op("Neg", [e.op("Mul", [x, x])])])
    return e.op("Mul", [g, e.scale(gauss, 2.0 / math.sqrt(math.pi))])


def _d_gelu(ctx, x, y, g, attrs):
    e = ctx.emit
    if attrs.get("approximate", b"none") not in (b"none", "none"):
        # tanh form: 0.5 x (1 + tanh(u)), u = c (x + 0.044715 x^3)
        c = math.sqrt(2.0 / math.pi)
        x2 = e.op("Mul", [x, x])
        u = e.scale(e.op("Add", [x, e.scale(e.op("Mul", [x2, x]), 0.044715)]), c)
        t = e.op("Tanh", [u])
        du = e.scale(e.op("Add", [e.const(1.0), e.scale(x2, 3 * 0.044715)]), c)
        sech2 = e.op("Sub", [e.const(1.0), e.op("Mul", [t, t])])
        d = e.op("Add", [e.scale(e.op("Add", [e.const(1.0), t]), 0.5),
                         e.op("Mul", [e.scale(x, 0.5), e.op("Mul", [sech2, du])])])
        return e.op("Mul", [g, d])
    cdf = e.scale(e.op("Add", [e.const(1.0), e.op("Erf", [e.scale(x, 1.0 / math.sqrt(2.0))])]), 0.5)
    pdf = e.scale(e.op("Exp", [e.scale(e.op("Mul", [x, x]), -0.5)]), 1.0 / math.sqrt(2.0 * math.pi))
    return e.op("Mul", [g, e.op("Add", [cdf, e.op("Mul", [x, pdf])])])


def _clip(ctx, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    e, attrs = ctx.emit, attributes(node)
    low = ctx.const_input(node, 1, "min") if len(node.input) > 1 else attrs.get("min")
    high = ctx.const_input(node, 2, "max") if len(node.input) > 2 else attrs.get("max")
    inside = None
    for bound, op in ((low, "Greater"), (high, "Less")):
        if bound is None:
            continue
        test = e.op(op, [x, e.const(float(np.asarray(bound)))])
        inside = test if inside is None else e.op("And", [inside, test])
    return {x: grads[0] if inside is None else e.op("Mul", [grads[0], e.mask(inside)])}


def _cast(ctx, node, grads):
    if attributes(node).get("to") not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
        return {}
    return _passthrough(ctx, node, grads)


# --- element-wise, broadcasting --------------------------------------------------------------


def _binary(ctx: Context, node, grads):
    a, b = node.input[0], node.input[1]
    g, y = grads[0], node.output[0]
    e, op = ctx.emit, node.op_type
    out_shape = ctx.shape(y)
    result = {}
    if ctx.needs(a):
        if op in ("Add", "Sub"):
            ga = g
        elif op == "Mul":
            ga = e.op("Mul", [g, b])
        elif op == "Div":
            ga = e.op("Div", [g, b])
        else:  # Pow
            if ctx.needs(b):
                fail(node, "only a constant exponent is supported")
            exponent = e.op("Sub", [b, e.const(1.0)])
            ga = e.op("Mul", [g, e.op("Mul", [b, e.op("Pow", [a, exponent])])])
        result[a] = ctx.unbroadcast(ga, out_shape, a)
    if ctx.needs(b):
        if op == "Add":
            gb = g
        elif op == "Sub":
            gb = e.op("Neg", [g])
        elif op == "Mul":
            gb = e.op("Mul", [g, a])
        elif op == "Div":
            gb = e.op("Neg", [e.op("Div", [e.op("Mul", [g, y]), b])])
        else:
            fail(node, "only a constant exponent is supported")
        grad = ctx.unbroadcast(gb, out_shape, b)
        result[b] = e.op("Add", [result[b], grad]) if b in result else grad
    return result


def _variadic_sum(ctx: Context, node, grads):
    e, out_shape = ctx.emit, ctx.shape(node.output[0])
    g = grads[0] if node.op_type == "Sum" else e.scale(grads[0], 1.0 / len(node.input))
    result: dict[str, str] = {}
    for name in node.input:
        if ctx.needs(name):
            grad = ctx.unbroadcast(g, out_shape, name)
            result[name] = e.op("Add", [result[name], grad]) if name in result else grad
    return result


def _where(ctx: Context, node, grads):
    cond, a, b = node.input
    e, out_shape, zero = ctx.emit, ctx.shape(node.output[0]), ctx.emit.const(0.0)
    result = {}
    if ctx.needs(a):
        result[a] = ctx.unbroadcast(e.op("Where", [cond, grads[0], zero]), out_shape, a)
    if ctx.needs(b):
        grad = ctx.unbroadcast(e.op("Where", [cond, zero, grads[0]]), out_shape, b)
        result[b] = e.op("Add", [result[b], grad]) if b in result else grad
    return result


def _expand(ctx: Context, node, grads):
    x = node.input[0]
    return {x: ctx.unbroadcast(grads[0], ctx.shape(node.output[0]), x)} if ctx.needs(x) else {}


# --- shape operators -------------------------------------------------------------------------


def _reshape_back(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    return {x: ctx.emit.op("Reshape", [grads[0], ctx.emit.shape_of(x)])}


def _transpose(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    perm = attributes(node).get("perm") or list(reversed(range(len(ctx.shape(x)))))
    inverse = [int(i) for i in np.argsort(perm)]
    return {x: ctx.emit.op("Transpose", [grads[0]], perm=inverse)}


def _concat(ctx: Context, node, grads):
    e = ctx.emit
    rank = len(ctx.shape(node.output[0]))
    axis = _rank_axis(attributes(node)["axis"], rank)
    result, offset = {}, 0
    for name in node.input:
        size = ctx.shape(name)[axis]
        if size is None:
            fail(node, "concatenation along the batch axis is not supported")
        if ctx.needs(name):
            grad = e.slice(grads[0], [offset], [offset + size], [axis])
            result[name] = e.op("Add", [result[name], grad]) if name in result else grad
        offset += size
    return result


def _split(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    e = ctx.emit
    rank = len(ctx.shape(x))
    axis = _rank_axis(attributes(node).get("axis", 0), rank)
    parts = []
    for out, grad in zip(node.output, grads):
        if grad is None:
            grad = e.op("ConstantOfShape", [e.shape_of(out)], value=numpy_helper.from_array(np.zeros(1, np.float32)))
        parts.append(grad)
    return {x: e.op("Concat", parts, axis=axis)}


def _slice(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    shape = ctx.shape(x)
    starts = ctx.const_input(node, 1, "starts")
    ends = ctx.const_input(node, 2, "ends")
    axes = ctx.const_input(node, 3, "axes")
    steps = ctx.const_input(node, 4, "steps")
    axes = list(range(len(starts))) if axes is None else [_rank_axis(int(a), len(shape)) for a in axes]
    if steps is not None and any(int(s) != 1 for s in steps):
        fail(node, "only slices with step 1 have a backward rule")
    pads = [0] * (2 * len(shape))
    for axis, start, end in zip(axes, starts, ends):
        dim = shape[axis]
        if dim is None:
            fail(node, "slicing the batch axis is not supported")
        start = int(np.clip(start + dim if start < 0 else start, 0, dim))
        end = int(np.clip(end + dim if end < 0 else end, 0, dim))
        pads[axis], pads[axis + len(shape)] = start, dim - max(end, start)
    return {x: ctx.emit.pad(grads[0], pads)}


def _pad(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    attrs = attributes(node)
    if attrs.get("mode", b"constant") not in (b"constant", "constant"):
        fail(node, "only constant padding has a backward rule")
    pads = ctx.const_input(node, 1, "pads") if len(node.input) > 1 else np.asarray(attrs["pads"])
    shape = ctx.shape(x)
    axes = ctx.const_input(node, 3, "axes") if len(node.input) > 3 and node.input[3] else None
    axes = list(range(len(shape))) if axes is None else [_rank_axis(int(a), len(shape)) for a in axes]
    n = len(axes)
    starts, ends, sliced = [], [], []
    for i, axis in enumerate(axes):
        before, after = int(pads[i]), int(pads[i + n])
        if before < 0 or after < 0:
            fail(node, "negative (cropping) pads are not supported")
        if before or after:
            if shape[axis] is None:
                fail(node, "padding the batch axis is not supported")
            starts.append(before)
            ends.append(before + shape[axis])
            sliced.append(axis)
    return {x: ctx.emit.slice(grads[0], starts, ends, sliced) if sliced else grads[0]}


# --- linear algebra ----------------------------------------------------------------------------


def _gemm(ctx: Context, node, grads):
    e, attrs = ctx.emit, attributes(node)
    a, b = node.input[0], node.input[1]
    c = node.input[2] if len(node.input) > 2 else ""
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
    g = grads[0]
    result = {}
    if ctx.needs(a):
        if trans_a:
            result[a] = e.op("Gemm", [b, g], alpha=alpha, transA=trans_b, transB=1)
        else:
            result[a] = e.op("Gemm", [g, b], alpha=alpha, transB=1 - trans_b)
    if ctx.needs(b):
        if trans_b:
            grad = e.op("Gemm", [g, a], alpha=alpha, transA=1, transB=trans_a)
        else:
            grad = e.op("Gemm", [a, g], alpha=alpha, transA=1 - trans_a)
        result[b] = e.op("Add", [result[b], grad]) if b in result else grad
    if c and ctx.needs(c):
        grad = ctx.unbroadcast(e.scale(g, beta), ctx.shape(node.output[0]), c)
        result[c] = e.op("Add", [result[c], grad]) if c in result else grad
    return result


def _swap_last(ctx: Context, name: str, rank: int) -> str:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return ctx.emit.op("Transpose", [name], perm=perm)


def _matmul(ctx: Context, node, grads):
    """``Y = A @ B`` with numpy's broadcasting; a 1-D operand is treated as a matrix with
    a unit axis (``[1, k]`` for A, ``[k, 1]`` for B) and its gradient reshaped back."""
    e = ctx.emit
    a, b = node.input
    a_shape, b_shape = ctx.shape(a), ctx.shape(b)
    g = grads[0]
    a2, b2, a2_shape, b2_shape = a, b, a_shape, b_shape
    out_shape = ctx.shape(node.output[0])
    if len(a_shape) == 1:
        a2, a2_shape = e.unsqueeze(a, [0]), (1,) + a_shape
        g, out_shape = e.unsqueeze(g, [len(out_shape) - 1]), out_shape[:-1] + (1,) + out_shape[-1:]
    if len(b_shape) == 1:
        b2, b2_shape = e.unsqueeze(b, [1]), b_shape + (1,)
        g, out_shape = e.unsqueeze(g, [len(out_shape)]), out_shape + (1,)
    two_d = len(out_shape) == 2 and len(a2_shape) == 2 and len(b2_shape) == 2
    result = {}
    if ctx.needs(a):
        if two_d:
            grad = e.op("Gemm", [g, b2], transB=1)
        else:
            grad = e.op("MatMul", [g, _swap_last(ctx, b2, len(b2_shape))])
            grad = _reduce_to(ctx, grad, out_shape[:-1] + (b2_shape[-2],), a2_shape)
        result[a] = e.op("Reshape", [grad, e.ints(a_shape)]) if len(a_shape) == 1 else grad
    if ctx.needs(b):
        if two_d:
            grad = e.op("Gemm", [a2, g], transA=1)
        else:
            grad = e.op("MatMul", [_swap_last(ctx, a2, len(a2_shape)), g])
            grad = _reduce_to(ctx, grad, out_shape[:-2] + (a2_shape[-1], out_shape[-1]), b2_shape)
        grad = e.op("Reshape", [grad, e.ints(b_shape)]) if len(b_shape) == 1 else grad
        result[b] = e.op("Add", [result[b], grad]) if b in result else grad
    return result


def _reduce_to(ctx: Context, grad: str, grad_shape: tuple, shape: tuple) -> str:
    """Sum a broadcast gradient down to ``shape`` (leading axes and unit axes)."""
    if tuple(grad_shape) == tuple(shape):
        return grad
    lead = len(grad_shape) - len(shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(shape) if d == 1 and grad_shape[lead + i] != 1]
    if axes:
        grad = ctx.emit.reduce("ReduceSum", grad, axes, keepdims=True)
    if lead:
        grad = ctx.emit.op("Reshape", [grad, ctx.emit.ints([0 if d is None else d for d in shape])])
    return grad


# --- normalisation ---------------------------------------------------------------------------


def _batch_norm(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    attrs = attributes(node)
    if attrs.get("training_mode", 0):
        fail(node, "training-mode batch normalisation is not supported (export the model in eval mode)")
    scale = ctx.const_input(node, 1, "scale")
    var = ctx.const_input(node, 4, "variance")
    eps = np.float32(attrs.get("epsilon", 1e-5))
    factor = scale.astype(np.float32) / np.sqrt(var.astype(np.float32) + eps)
    rank = len(ctx.shape(x))
    factor = factor.reshape([1, -1] + [1] * (rank - 2))
    return {x: ctx.emit.op("Mul", [grads[0], ctx.emit.const(factor, hint="bn_factor")])}


def _layer_norm(ctx: Context, node, grads):
    x = node.input[0]
    e, attrs = ctx.emit, attributes(node)
    rank = len(ctx.shape(x))
    axis = _rank_axis(attrs.get("axis", -1), rank)
    axes = list(range(axis, rank))
    eps = attrs.get("epsilon", 1e-5)
    result = {}
    gy = grads[0]
    if len(node.input) > 1 and ctx.needs(node.input[1]):
        fail(node, "a computed LayerNormalization scale is not supported")
    if not ctx.needs(x):
        return result
    mean = e.reduce("ReduceMean", x, axes)
    centred = e.op("Sub", [x, mean])
    var = e.reduce("ReduceMean", e.op("Mul", [centred, centred]), axes)
    inv = e.op("Reciprocal", [e.op("Sqrt", [e.op("Add", [var, e.const(eps)])])])
    xhat = e.op("Mul", [centred, inv])
    if len(node.input) > 1 and node.input[1]:
        gy = e.op("Mul", [gy, node.input[1]])
    inner = e.op("Sub", [e.op("Sub", [gy, e.reduce("ReduceMean", gy, axes)]),
                         e.op("Mul", [xhat, e.reduce("ReduceMean", e.op("Mul", [gy, xhat]), axes)])])
    result[x] = e.op("Mul", [inv, inner])
    return result


def _softmax(ctx: Context, node, grads):
    x, y = node.input[0], node.output[0]
    if not ctx.needs(x):
        return {}
    e = ctx.emit
    axis = _rank_axis(attributes(node).get("axis", -1), len(ctx.shape(x)))
    if node.op_type == "Softmax":
        total = e.reduce("ReduceSum", e.op("Mul", [grads[0], y]), [axis])
        return {x: e.op("Mul", [y, e.op("Sub", [grads[0], total])])}
    total = e.reduce("ReduceSum", grads[0], [axis])
    return {x: e.op("Sub", [grads[0], e.op("Mul", [e.op("Exp", [y]), total])])}


# --- reductions and pooling ------------------------------------------------------------------


def _reduce_axes(ctx: Context, node, shape) -> list[int] | None:
    """The reduced axes of a Reduce* node (None: a no-op on empty axes)."""
    attrs = attributes(node)
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = ctx.const_input(node, 1, "axes")
    if axes is None or len(axes) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            return None
        axes = list(range(len(shape)))
    return sorted(_rank_axis(int(a), len(shape)) for a in axes)


def _reduce(ctx: Context, node, grads):
    """ReduceSum / ReduceMean: the gradient broadcast back (divided by the count for a mean)."""
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    e = ctx.emit
    shape = ctx.shape(x)
    axes = _reduce_axes(ctx, node, shape)
    if axes is None:
        return {x: grads[0]}
    g = grads[0] if attributes(node).get("keepdims", 1) else e.unsqueeze(grads[0], axes)
    if node.op_type == "ReduceMean":
        if any(shape[a] is None for a in axes):
            fail(node, "averaging over the batch axis is not supported")
        g = e.scale(g, 1.0 / float(np.prod([shape[a] for a in axes])))
    return {x: e.op("Expand", [g, e.shape_of(x)])}


def _reduce_extreme(ctx: Context, node, grads):
    """ReduceMax / ReduceMin: the gradient split evenly among tied extremes (as torch.amax
    and TensorFlow's reduce_max do)."""
    x, y = node.input[0], node.output[0]
    if not ctx.needs(x):
        return {}
    e = ctx.emit
    axes = _reduce_axes(ctx, node, ctx.shape(x))
    if axes is None:
        return {x: grads[0]}
    keep = attributes(node).get("keepdims", 1)
    g = grads[0] if keep else e.unsqueeze(grads[0], axes)
    extreme = y if keep else e.unsqueeze(y, axes)
    hit = e.mask(e.op("Equal", [x, extreme]))
    share = e.op("Div", [g, e.reduce("ReduceSum", hit, axes, keepdims=True)])
    return {x: e.op("Mul", [hit, share])}


def _global_average_pool(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    e = ctx.emit
    spatial = ctx.shape(x)[2:]
    return {x: e.op("Expand", [e.scale(grads[0], 1.0 / float(np.prod(spatial))), e.shape_of(x)])}


def _global_max_pool(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    e = ctx.emit
    shape = ctx.shape(x)
    count = int(np.prod(shape[2:]))
    flat = e.op("Reshape", [x, e.ints([0, 0, -1])])
    first = e.op("ArgMax", [flat], axis=2, keepdims=1, select_last_index=0)
    onehot = e.mask(e.op("Equal", [e.ints(np.arange(count).reshape(1, 1, count)), first]))
    routed = e.op("Mul", [onehot, e.op("Reshape", [grads[0], e.ints([0, 0, 1])])])
    return {x: e.op("Reshape", [routed, e.shape_of(x)])}


def _pool_geometry(ctx: Context, node, in_hw, out_hw):
    """Kernel, strides, dilations and explicit begin pads of a 2-D pooling/conv node."""
    attrs = attributes(node)
    kernel = list(attrs.get("kernel_shape") or ctx.shape(node.input[1])[2:])
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1, 1]))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin = []
        for size, out, k, s, d in zip(in_hw, out_hw, kernel, strides, dilations):
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            begin.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    elif auto_pad == "VALID":
        begin = [0, 0]
    else:
        begin = list(attrs.get("pads", [0, 0, 0, 0])[:2])
    return kernel, strides, dilations, begin


def _crop_to(ctx: Context, full: str, full_hw, begin, target_hw) -> str:
    """Take ``target_hw`` rows/columns of ``full`` starting at ``begin`` (zero-padding past its end)."""
    e = ctx.emit
    starts, ends, axes, tail = [], [], [], [0, 0]
    for axis, (size, start, want) in enumerate(zip(full_hw, begin, target_hw)):
        end = min(size, start + want)
        if start > 0 or end < size:
            starts.append(start)
            ends.append(end)
            axes.append(axis + 2)
        tail[axis] = want - (end - start)
    out = e.slice(full, starts, ends, axes) if axes else full
    if any(tail):
        out = e.pad(out, [0, 0, 0, 0, 0, 0, tail[0], tail[1]])
    return out


def _conv(ctx: Context, node, grads):
    x, w = node.input[0], node.input[1]
    if ctx.needs(w):
        fail(node, "a computed convolution weight is not supported")
    if not ctx.needs(x):
        return {}
    shape, out_shape = ctx.shape(x), ctx.shape(node.output[0])
    if len(shape) != 4:
        fail(node, "only 2-D convolutions have a backward rule")
    kernel, strides, dilations, begin = _pool_geometry(ctx, node, shape[2:], out_shape[2:])
    group = attributes(node).get("group", 1)
    full_hw = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_shape[2:], strides, kernel, dilations)]
    full = ctx.emit.op("ConvTranspose", [grads[0], w], group=group, strides=strides, dilations=dilations,
                       kernel_shape=kernel)
    return {x: _crop_to(ctx, full, full_hw, begin, shape[2:])}


def _max_pool(ctx: Context, node, grads):
    """First maximum of each window (row-major scan, as torch), summed over overlaps.

    For every kernel offset the strided slice of the (-inf padded) input is compared with
    the pooled output; ``first = equal AND NOT found-earlier``. The masked gradients of
    all offsets are stacked as channels and scattered back by one grouped ConvTranspose
    with one-hot kernels.
    """
    x, y = node.input[0], node.output[0]
    if not ctx.needs(x):
        return {}
    if len(node.output) > 1 and node.output[1] and node.output[1] in ctx.reader.consumers:
        fail(node, "the Indices output is not supported")
    e = ctx.emit
    shape, out_shape = ctx.shape(x), ctx.shape(y)
    if len(shape) != 4:
        fail(node, "only 2-D max pooling has a backward rule")
    channels = shape[1]
    kernel, strides, dilations, begin = _pool_geometry(ctx, node, shape[2:], out_shape[2:])
    full_hw = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_shape[2:], strides, kernel, dilations)]
    end_pad = [max(f - b - size, 0) for f, b, size in zip(full_hw, begin, shape[2:])]
    padded = x
    if any(begin) or any(end_pad):
        padded = e.pad(x, [0, 0, begin[0], begin[1], 0, 0, end_pad[0], end_pad[1]], FLOAT_MIN)
    found = None
    parts = []
    kh, kw = kernel
    for i in range(kh):
        for j in range(kw):
            starts = [i * dilations[0], j * dilations[1]]
            ends = [starts[0] + (out_shape[2] - 1) * strides[0] + 1, starts[1] + (out_shape[3] - 1) * strides[1] + 1]
            window = e.slice(padded, starts, ends, [2, 3], strides)
            equal = e.op("Equal", [window, y])
            first = equal if found is None else e.op("And", [equal, e.op("Not", [found])])
            found = equal if found is None else e.op("Or", [found, equal])
            parts.append(e.unsqueeze(e.op("Mul", [grads[0], e.mask(first)]), [2]))
    stacked = e.op("Concat", parts, axis=2)  # [B, C, K, oh, ow]
    stacked = e.op("Reshape", [stacked, e.ints([0, channels * kh * kw, out_shape[2], out_shape[3]])])
    onehot = np.zeros((channels * kh * kw, 1, kh, kw), np.float32)
    for c in range(channels):
        for k in range(kh * kw):
            onehot[c * kh * kw + k, 0, k // kw, k % kw] = 1.0
    full = e.op("ConvTranspose", [stacked, e.const(onehot, hint="maxpool_scatter")], group=channels,
                strides=strides, dilations=dilations, kernel_shape=kernel)
    return {x: _crop_to(ctx, full, full_hw, begin, shape[2:])}


def _average_pool(ctx: Context, node, grads):
    """Average pooling is linear per channel: its transpose is a constant matrix, measured
    by running the operator itself on the basis images (exact for any padding, ceil mode
    and count_include_pad setting), applied as one MatMul."""
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    e = ctx.emit
    shape, out_shape = ctx.shape(x), ctx.shape(node.output[0])
    if len(shape) != 4:
        fail(node, "only 2-D average pooling has a backward rule")
    matrix = linear_operator_matrix(node, shape[2:], out_shape[2:])  # y = M x per channel: [out, in]
    flat = e.op("Reshape", [grads[0], e.ints([0, 0, -1])])  # [B, C, out]
    spread = e.op("MatMul", [flat, e.const(matrix, hint="avgpool_matrix")])  # dx = g M
    return {x: e.op("Reshape", [spread, e.shape_of(x)])}


def linear_operator_matrix(node, in_hw, out_hw) -> np.ndarray:
    """``M`` with ``y[o] = sum_i M[o, i] x[i]`` for a per-channel linear 2-D operator node,
    measured in ONNX Runtime on the ``h*w`` basis images."""
    import onnxruntime as ort

    count = int(np.prod(in_hw))
    basis = np.eye(count, dtype=np.float32).reshape(count, 1, *in_hw)
    probe = helper.make_node(node.op_type, ["x"], ["y"], **attributes(node))
    graph = helper.make_graph([probe], "operator", [helper.make_tensor_value_info("x", TensorProto.FLOAT, basis.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(["y"], {"x": basis})
    if tuple(out.shape[2:]) != tuple(out_hw):
        raise UnionCamError(f"{node.op_type} {node.name}: measured output {out.shape[2:]} != {tuple(out_hw)}")
    return np.ascontiguousarray(out.reshape(count, -1).T)  # row i of out.reshape is column i of M


RULES = {
    "Relu": _unary(_d_relu),
    "LeakyRelu": _unary(_d_leaky_relu),
    "Elu": _unary(_d_elu),
    "Sigmoid": _unary(_d_sigmoid),
    "Tanh": _unary(_d_tanh),
    "Softplus": _unary(_d_softplus),
    "HardSigmoid": _unary(_d_hard_sigmoid),
    "HardSwish": _unary(_d_hard_swish),
    "Exp": _unary(_d_exp),
    "Log": _unary(_d_log),
    "Sqrt": _unary(_d_sqrt),
    "Reciprocal": _unary(_d_reciprocal),
    "Neg": _unary(_d_neg),
    "Abs": _unary(_d_abs),
    "Erf": _unary(_d_erf),
    "Gelu": _unary(_d_gelu),
    "Clip": _clip,
    "Identity": _passthrough,
    "Dropout": _passthrough,
    "Cast": _cast,
    "Floor": _zero,
    "Ceil": _zero,
    "Round": _zero,
    "Sign": _zero,
    "Add": _binary,
    "Sub": _binary,
    "Mul": _binary,
    "Div": _binary,
    "Pow": _binary,
    "Sum": _variadic_sum,
    "Mean": _variadic_sum,
    "Where": _where,
    "Expand": _expand,
    "Reshape": _reshape_back,
    "Flatten": _reshape_back,
    "Squeeze": _reshape_back,
    "Unsqueeze": _reshape_back,
    "Transpose": _transpose,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Pad": _pad,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "ReduceMean": _reduce,
    "ReduceSum": _reduce,
    "ReduceMax": _reduce_extreme,
    "ReduceMin": _reduce_extreme,
    "GlobalAveragePool": _global_average_pool,
    "GlobalMaxPool": _global_max_pool,
    "Conv": _conv,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
}


def head_nodes(reader: GraphReader, activations: str, logits: str, float_tensors: set[str]) -> tuple[list, set[str]]:
    """The nodes on a float path from ``activations`` to ``logits``, in graph order, and
    the set of tensors that depend on the activations."""
    dependent = reader.reachable_from([activations]) & float_tensors
    dependent.add(activations)
    needed = reader.ancestors(logits)
    nodes = [n for n in reader.graph.node if any(o in dependent and o in needed for o in n.output)]
    return nodes, dependent


def check_no_bypass(reader: GraphReader, image: str, activations: str, logits: str, label: str | None = None) -> None:
    """Refuse a graph whose logits depend on the input other than through the activations."""
    around = reader.reachable_from([image], blocked=[activations])
    if logits in around:
        needed = reader.ancestors(logits)
        from_activations = reader.reachable_from([activations])
        via = [n for n in reader.graph.node
               if any(i in around and i in needed and not reader.is_constant(i) for i in n.input)
               and any(i in from_activations for i in n.input)]
        culprit = via[0] if via else None
        where = f" (at node {culprit.name or culprit.output[0]!r}, {culprit.op_type})" if culprit is not None else ""
        raise UnionCamError(
            f"the logits depend on the input through a path that bypasses the target layer {label or activations!r}{where}: "
            "a skip connection around it; choose a target layer after the skip joins (e.g. the block's output)")


def head_backward(graph, activations: str, logits: str, seed: str, shapes: dict[str, tuple],
                  float_tensors: set[str], emit: Emitter, directory=None, constants=None) -> str:
    """Append to ``emit`` the nodes computing ``d sum(seed * logits) / d activations``.

    Args:
        graph: the forward graph (read only).
        activations, logits: tensor names.
        seed: name of the ``[B, classes]`` float tensor multiplying the logits.
        shapes: static shapes of head tensors (``None`` = batch axis).
        float_tensors: names of floating-point tensors (the differentiable ones).
        emit: where the backward nodes go.
        directory: where the graph's external data lies.
        constants: values of tensors computed from constants alone (measured).

    Returns:
        The name of the gradient tensor (same shape as the activations).

    Raises:
        UnsupportedOpError: a head operator without a rule (named with its node).
    """
    reader = GraphReader(graph, directory)
    nodes, dependent = head_nodes(reader, activations, logits, float_tensors)
    if logits not in dependent:
        raise UnionCamError(f"the logits do not depend on the target layer {activations!r}")
    ctx = Context(emit, reader, shapes, dependent, constants or {})
    missing = sorted({n.op_type for n in nodes if n.op_type not in RULES})
    if missing:
        node = next(n for n in nodes if n.op_type in missing)
        raise UnsupportedOpError(
            f"head op {node.op_type} (node {node.name or node.output[0]!r}) has no backward rule; "
            f"supported: {', '.join(sorted(RULES))}")
    grads: dict[str, list[str]] = {logits: [seed]}

    def total(name: str) -> str | None:
        parts = grads.get(name)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else emit.op("Sum", parts)

    for node in reversed(nodes):
        out_grads = [total(o) if o in dependent else None for o in node.output]
        if all(g is None for g in out_grads):
            continue
        if out_grads[0] is None and node.op_type != "Split":
            continue  # only a secondary output (e.g. LayerNormalization's Mean) is used
        for name, grad in RULES[node.op_type](ctx, node, out_grads).items():
            grads.setdefault(name, []).append(grad)
    result = total(activations)
    if result is None:
        raise UnionCamError(f"no gradient reaches the target layer {activations!r}")
    return result


__all__ = ["RULES", "UnsupportedOpError", "head_backward", "check_no_bypass", "linear_operator_matrix", "onnx"]
