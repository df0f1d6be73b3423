"""Backward rules of reductions, pooling and convolution (ConvTranspose scatters)."""

from __future__ import annotations

import numpy as np

from ...errors import UnionCamError
from ..onnx_graph import TensorProto, attributes, helper
from .context import FLOAT_MIN, Context, fail, rank_axis


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
    return sorted(rank_axis(int(a), len(shape)) for a in axes)


def reduce_rule(ctx: Context, node, grads):
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


def reduce_extreme_rule(ctx: Context, node, grads):
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


def global_average_pool_rule(ctx: Context, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    e = ctx.emit
    spatial = ctx.shape(x)[2:]
    return {x: e.op("Expand", [e.scale(grads[0], 1.0 / float(np.prod(spatial))), e.shape_of(x)])}


def global_max_pool_rule(ctx: Context, node, grads):
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


def conv_rule(ctx: Context, node, grads):
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
    full = ctx.emit.op("ConvTranspose", [grads[0], ctx.backward_weight(node, 1)], group=group, strides=strides, dilations=dilations,
                       kernel_shape=kernel)
    return {x: _crop_to(ctx, full, full_hw, begin, shape[2:])}


def max_pool_rule(ctx: Context, node, grads):
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


def average_pool_rule(ctx: Context, node, grads):
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
