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
framework-specific ops, no ScatterND, no MaxPool ``Indices`` (``Gather``'s backward is a
``ScatterElements`` with reduction ``add``, opset 16).

Rules follow torch autograd's conventions where a derivative is not unique: ReLU and
ReLU6/Clip pass the gradient strictly inside their linear range; max pooling sends each
window's gradient to the *first* maximum in row-major order (even for ties), summed over
overlapping windows.

Shapes: rules read static shapes of head tensors (``None`` for the batch axis), measured by
running the forward graph (see `unioncam_rt.exporting.graphs`).
"""

from __future__ import annotations

from ...errors import UnionCamError
from ..onnx_graph import Emitter, GraphReader
from .context import Context, UnsupportedOpError
from .elementwise import (
    binary_rule,
    cast_rule,
    clip_rule,
    d_abs,
    d_elu,
    d_erf,
    d_exp,
    d_gelu,
    d_hard_sigmoid,
    d_hard_swish,
    d_leaky_relu,
    d_log,
    d_neg,
    d_reciprocal,
    d_relu,
    d_sigmoid,
    d_softplus,
    d_sqrt,
    d_tanh,
    expand_rule,
    passthrough_rule,
    unary_rule,
    variadic_sum_rule,
    where_rule,
    zero_rule,
)
from .linear import (
    batch_norm_rule,
    gemm_rule,
    layer_norm_rule,
    matmul_rule,
    softmax_rule,
)
from .pooling import (
    average_pool_rule,
    conv_rule,
    global_average_pool_rule,
    global_max_pool_rule,
    linear_operator_matrix,
    max_pool_rule,
    reduce_extreme_rule,
    reduce_rule,
)
from .shapes import (
    concat_rule,
    gather_rule,
    pad_rule,
    reshape_back_rule,
    slice_rule,
    split_rule,
    transpose_rule,
)

RULES = {
    "Relu": unary_rule(d_relu),
    "LeakyRelu": unary_rule(d_leaky_relu),
    "Elu": unary_rule(d_elu),
    "Sigmoid": unary_rule(d_sigmoid),
    "Tanh": unary_rule(d_tanh),
    "Softplus": unary_rule(d_softplus),
    "HardSigmoid": unary_rule(d_hard_sigmoid),
    "HardSwish": unary_rule(d_hard_swish),
    "Exp": unary_rule(d_exp),
    "Log": unary_rule(d_log),
    "Sqrt": unary_rule(d_sqrt),
    "Reciprocal": unary_rule(d_reciprocal),
    "Neg": unary_rule(d_neg),
    "Abs": unary_rule(d_abs),
    "Erf": unary_rule(d_erf),
    "Gelu": unary_rule(d_gelu),
    "Clip": clip_rule,
    "Identity": passthrough_rule,
    "Dropout": passthrough_rule,
    "Cast": cast_rule,
    "Floor": zero_rule,
    "Ceil": zero_rule,
    "Round": zero_rule,
    "Sign": zero_rule,
    "Add": binary_rule,
    "Sub": binary_rule,
    "Mul": binary_rule,
    "Div": binary_rule,
    "Pow": binary_rule,
    "Sum": variadic_sum_rule,
    "Mean": variadic_sum_rule,
    "Where": where_rule,
    "Expand": expand_rule,
    "Reshape": reshape_back_rule,
    "Flatten": reshape_back_rule,
    "Squeeze": reshape_back_rule,
    "Unsqueeze": reshape_back_rule,
    "Transpose": transpose_rule,
    "Concat": concat_rule,
    "Split": split_rule,
    "Slice": slice_rule,
    "Gather": gather_rule,
    "Pad": pad_rule,
    "Gemm": gemm_rule,
    "MatMul": matmul_rule,
    "BatchNormalization": batch_norm_rule,
    "LayerNormalization": layer_norm_rule,
    "Softmax": softmax_rule,
    "LogSoftmax": softmax_rule,
    "ReduceMean": reduce_rule,
    "ReduceSum": reduce_rule,
    "ReduceMax": reduce_extreme_rule,
    "ReduceMin": reduce_extreme_rule,
    "GlobalAveragePool": global_average_pool_rule,
    "GlobalMaxPool": global_max_pool_rule,
    "Conv": conv_rule,
    "MaxPool": max_pool_rule,
    "AveragePool": average_pool_rule,
}


def head_nodes(reader: GraphReader, activations: str, logits: str, float_tensors: set[str]) -> tuple[list, set[str]]:
    """The nodes on a float path from ``activations`` to ``logits``, in graph order, and
    the set of tensors that depend on the activations."""
    dependent = reader.reachable_from([activations], values_only=True) & float_tensors
    dependent.add(activations)
    needed = reader.ancestors(logits)
    nodes = [n for n in reader.graph.node if any(o in dependent and o in needed for o in n.output)]
    return nodes, dependent


def bypass_join(reader: GraphReader, image: str, activations: str, logits: str) -> str | None:
    """Where the logits' dependence on the input's values other than through the
    activations (a skip around a target inside a residual block) joins the head: the first
    node reading both, by name; None where there is no such path (a path through
    ``Shape``/``Size`` carries no values and does not count).

    Such a path is not refused: `head_backward` differentiates only tensors that depend on
    the activations, so the tensors on the path are held at their forward values and the
    gradient is the partial derivative ``d logits / d A`` that autograd gives at a leaf ``A``.
    """
    around = reader.reachable_from([image], blocked=[activations], values_only=True) - {activations}
    if logits not in around:
        return None
    needed = reader.ancestors(logits)
    from_activations = reader.reachable_from([activations], values_only=True)
    for node in reader.graph.node:
        if (any(i in around and i in needed and not reader.is_constant(i) for i in node.input)
                and any(i in from_activations for i in node.input)):
            return node.name or node.output[0]
    return logits


def head_backward(graph, activations: str, logits: str, seed: str, shapes: dict[str, tuple],
                  float_tensors: set[str], emit: Emitter, directory=None, constants=None) -> str:
    """Append to ``emit`` the nodes computing ``d sum(seed * logits) / d activations``, the
    partial derivative: head tensors that do not depend on ``activations`` (a skip around
    it) are read at their forward values, as constants.

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


__all__ = ["RULES", "UnsupportedOpError", "bypass_join", "head_backward", "head_nodes", "linear_operator_matrix"]
