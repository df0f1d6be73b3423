"""Backward rules of operators that only move values: reshape, transpose, concat, split,
slice, pad."""

from __future__ import annotations

import numpy as np

from ..onnx_graph import attributes, numpy_helper
from .context import Context, fail, rank_axis


def reshape_back_rule(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    return {x: ctx.emit.op("Reshape", [grads[0], ctx.emit.shape_of(x)])}


def transpose_rule(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    perm = attributes(node).get("perm") or list(reversed(range(len(ctx.shape(x)))))
    inverse = [int(i) for i in np.argsort(perm)]
    return {x: ctx.emit.op("Transpose", [grads[0]], perm=inverse)}


def concat_rule(ctx: Context, node, grads):
    e = ctx.emit
    rank = len(ctx.shape(node.output[0]))
    axis = rank_axis(attributes(node)["axis"], rank)
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


def split_rule(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    e = ctx.emit
    rank = len(ctx.shape(x))
    axis = rank_axis(attributes(node).get("axis", 0), rank)
    parts = []
    for out, grad in zip(node.output, grads):
        if grad is None:
            grad = e.op("ConstantOfShape", [e.shape_of(out)], value=numpy_helper.from_array(np.zeros(1, np.float32)))
        parts.append(grad)
    return {x: e.op("Concat", parts, axis=axis)}


def slice_rule(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    shape = ctx.shape(x)
    starts = ctx.const_input(node, 1, "starts")
    ends = ctx.const_input(node, 2, "ends")
    axes = ctx.const_input(node, 3, "axes")
    steps = ctx.const_input(node, 4, "steps")
    axes = list(range(len(starts))) if axes is None else [rank_axis(int(a), len(shape)) for a in axes]
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


def pad_rule(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    attrs = attributes(node)
    if attrs.get("mode", b"constant") not in (b"constant", "constant"):
        fail(node, "only constant padding has a backward rule")
    pads = ctx.const_input(node, 1, "pads") if len(node.input) > 1 else np.asarray(attrs["pads"])
    shape = ctx.shape(x)
    axes = ctx.const_input(node, 3, "axes") if len(node.input) > 3 and node.input[3] else None
    axes = list(range(len(shape))) if axes is None else [rank_axis(int(a), len(shape)) for a in axes]
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


ONE_HOT_LIMIT = 1 << 20  # entries of a Gather's one-hot backward matrix (4 MiB)


def gather_rule(ctx: Context, node, grads):
    """``Gather(data, indices, axis)``: the gradient of ``data`` is zeros with each gathered
    slice's gradient added back at its index.

    Constant indices (a ViT's class token ``x[:, 0]``) with a one-hot matrix of at most
    `ONE_HOT_LIMIT` entries: one ``MatMul`` with ``M[j, i] = 1`` where ``indices[j] == i``
    along the axis moved last, so repeated indices sum (`_gather_one_hot`; standard for
    TensorRT, which runs ``ScatterElements`` without reduction only). Other indices (e.g.
    from ``Shape``: torch's dynamo exporter writes ``as_strided`` as a Gather of ``Range``
    arithmetic): ``ScatterElements`` with reduction ``add``, which needs opset 16."""
    data, indices = node.input[0], node.input[1]
    if not ctx.needs(data):
        return {}
    e = ctx.emit
    known = ctx.constants.get(indices)
    if known is None:
        known = ctx.reader.constant(indices)
    shape = ctx.shape(data)
    size = shape[rank_axis(attributes(node).get("axis", 0), len(shape))]
    if known is not None and size is not None and np.size(known) * size <= ONE_HOT_LIMIT:
        return {data: _gather_one_hot(ctx, node, grads[0], np.asarray(known))}
    if e.opset < 16:
        fail(node, "its backward (ScatterElements with reduction) needs opset 16 or later; upgrade the model's opset")
    rank = len(ctx.shape(data))
    axis = rank_axis(attributes(node).get("axis", 0), rank)
    flat = e.op("Reshape", [indices, e.ints([-1])])
    data_shape = e.shape_of(data)
    # the output's gradient with the index axes flattened to one: data's shape, n at ``axis``
    parts = [e.op("Slice", [data_shape, e.ints([0]), e.ints([axis])]), e.shape_of(flat),
             e.op("Slice", [data_shape, e.ints([axis + 1]), e.ints([rank])])]
    grad_shape = e.op("Concat", parts, axis=0)
    grad = e.op("Reshape", [grads[0], grad_shape])
    index_shape = [1] * rank
    index_shape[axis] = -1
    spread = e.op("Expand", [e.op("Reshape", [flat, e.ints(index_shape)]), grad_shape])
    zeros = e.op("ConstantOfShape", [data_shape], value=numpy_helper.from_array(np.zeros(1, np.float32)))
    return {data: e.op("ScatterElements", [zeros, spread, grad], axis=axis, reduction="add")}


def _gather_one_hot(ctx: Context, node, grad: str, indices: np.ndarray) -> str:
    """The gradient of a Gather with constant ``indices`` along a static axis of size
    ``d``: ``g`` with the index axes flattened to ``n`` and moved last, times the one-hot
    ``[n, d]`` matrix, moved back: ``dx[..., i, ...] = sum_{j: indices[j] = i} g[..., j, ...]``."""
    e = ctx.emit
    data = node.input[0]
    shape = ctx.shape(data)
    rank = len(shape)
    axis = rank_axis(attributes(node).get("axis", 0), rank)
    size = int(shape[axis])
    flat = indices.reshape(-1).astype(np.int64)
    flat = np.where(flat < 0, flat + size, flat)
    one_hot = np.zeros((len(flat), size), np.float32)
    np.add.at(one_hot, (np.arange(len(flat)), flat), 1.0)
    # g: data's axes before `axis`, then indices' axes, then data's axes after `axis`
    dims = [-1 if d is None else int(d) for d in shape]
    g = e.op("Reshape", [grad, e.ints(dims[:axis] + [len(flat)] + dims[axis + 1:])])
    last = list(range(axis)) + list(range(axis + 1, rank)) + [axis]
    moved = e.op("Transpose", [g], perm=last) if axis != rank - 1 else g
    spread = e.op("MatMul", [moved, e.const(one_hot, hint="gather_one_hot")])
    back = [int(i) for i in np.argsort(last)]
    return e.op("Transpose", [spread], perm=back) if axis != rank - 1 else spread
