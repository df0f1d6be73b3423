"""Backward rules of linear algebra and normalisation: Gemm, MatMul, BatchNormalization,
LayerNormalization, Softmax/LogSoftmax."""

from __future__ import annotations

import numpy as np

from ..onnx_graph import attributes
from .context import Context, fail, rank_axis, reduce_to


def gemm_rule(ctx: Context, node, grads):
    e, attrs = ctx.emit, attributes(node)
    a, b = node.input[0], node.input[1]
    c = node.input[2] if len(node.input) > 2 else ""
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    trans_a, trans_b = attrs.get("transA", 0), attrs.get("transB", 0)
    g = grads[0]
    result = {}
    if ctx.needs(a):
        # dA = g op(B)^T, computed as (op(B) g^T)^T (or op(B) g^T itself when A was transposed):
        # the weight is Gemm's *first* operand here, so OpenVINO does not take this Gemm for a
        # second fully-connected layer over the same constant (its CPU plugin packs a constant
        # once per address and shape: a square weight's forward packing was reused for its
        # backward, and VGG16's head gradient came out wrong: the symptom, not traced in
        # OpenVINO's sources). No copy of the weight is made.
        spread = e.op("Gemm", [b, g], alpha=alpha, transA=trans_b, transB=1)
        result[a] = spread if trans_a else e.op("Transpose", [spread], perm=[1, 0])
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


def matmul_rule(ctx: Context, node, grads):
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
    constant_matrix = len(b2_shape) == 2 and (ctx.reader.is_constant(b) or b in ctx.constants)
    if ctx.needs(a):
        if constant_matrix:
            # dA = g B^T computed as (B g^T)^T, the weight as the *first* operand: OpenVINO
            # takes g B^T for a second fully-connected layer over the forward's constant and
            # reuses its packing, which is wrong for a square B (see `gemm_rule`; a ConvNeXt
            # block's square Linear showed it)
            if two_d:
                grad = e.op("Transpose", [e.op("Gemm", [b2, g], transB=1)], perm=[1, 0])
            else:
                rank = len(out_shape)
                grad = _swap_last(ctx, e.op("MatMul", [b2, _swap_last(ctx, g, rank)]), rank)
                grad = reduce_to(ctx, grad, out_shape[:-1] + (b2_shape[-2],), a2_shape)
        elif two_d:
            grad = e.op("Gemm", [g, b2], transB=1)
        else:
            grad = e.op("MatMul", [g, _swap_last(ctx, b2, len(b2_shape))])
            grad = reduce_to(ctx, grad, out_shape[:-1] + (b2_shape[-2],), a2_shape)
        result[a] = e.op("Reshape", [grad, e.ints(a_shape)]) if len(a_shape) == 1 else grad
    if ctx.needs(b):
        if two_d:
            grad = e.op("Gemm", [a2, g], transA=1)
        else:
            grad = e.op("MatMul", [_swap_last(ctx, a2, len(a2_shape)), g])
            grad = reduce_to(ctx, grad, out_shape[:-2] + (a2_shape[-1], out_shape[-1]), b2_shape)
        grad = e.op("Reshape", [grad, e.ints(b_shape)]) if len(b_shape) == 1 else grad
        result[b] = e.op("Add", [result[b], grad]) if b in result else grad
    return result






def batch_norm_rule(ctx: Context, node, grads):
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


def layer_norm_rule(ctx: Context, node, grads):
    x = node.input[0]
    e, attrs = ctx.emit, attributes(node)
    rank = len(ctx.shape(x))
    axis = rank_axis(attrs.get("axis", -1), rank)
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


def softmax_rule(ctx: Context, node, grads):
    x, y = node.input[0], node.output[0]
    if not ctx.needs(x):
        return {}
    e = ctx.emit
    axis = rank_axis(attributes(node).get("axis", -1), len(ctx.shape(x)))
    if node.op_type == "Softmax":
        total = e.reduce("ReduceSum", e.op("Mul", [grads[0], y]), [axis])
        return {x: e.op("Mul", [y, e.op("Sub", [grads[0], total])])}
    total = e.reduce("ReduceSum", grads[0], [axis])
    return {x: e.op("Sub", [grads[0], e.op("Mul", [e.op("Exp", [y]), total])])}
