"""Target tensors of an ONNX classifier: which computed tensors are feature maps, in which
layout, and which one to explain by default.

A candidate target is a float tensor computed from the image's values (never an
initializer, a ``Constant`` or an ``Identity`` of one), on the way to the logits, 4-D, with
more than one spatial position. Its layout (``nchw`` or ``nhwc``) is propagated through
the graph from the input's: operators with NCHW semantics (Conv, pools, BatchNorm...) make
NCHW, a ``Transpose`` permutes its input's axes, and shape-preserving operators keep their
input's layout; where nothing decides it, the axes whose sizes divide the input size in
its aspect ratio are taken as the spatial ones. The default target is the last candidate:
the last spatial feature map before the global pooling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..sources.target_map import plausible_grid as _plausible_spatial
from .onnx_graph import GraphReader, attributes

# Operators whose 4-D float outputs are NCHW by the ONNX specification.
NCHW_OPS = frozenset({
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
    "GlobalLpPool", "BatchNormalization", "InstanceNormalization", "GroupNormalization", "LRN", "DepthToSpace",
    "SpaceToDepth", "MaxUnpool", "QLinearConv", "ConvInteger",
})
AXES = {"nchw": "NCHW", "nhwc": "NHWC"}


@dataclass(frozen=True)
class TargetTensor:
    """A 4-D float tensor of the graph at batch 1.

    Attributes:
        name: the tensor's name; op: the operator that computes it.
        shape: its shape as computed (batch first).
        layout: ``nchw``, ``nhwc``, or ``""`` where neither fits.
    """

    name: str
    op: str
    shape: tuple[int, ...]
    layout: str

    @property
    def khw(self) -> tuple[int, int, int]:
        """(channels, height, width) in the tensor's layout."""
        if self.layout == "nhwc":
            return self.shape[3], self.shape[1], self.shape[2]
        return self.shape[1], self.shape[2], self.shape[3]

    @property
    def positions(self) -> int:
        _, h, w = self.khw
        return h * w

    def describe(self) -> str:
        k, h, w = self.khw
        return f"{self.name} ({self.op}, {'x'.join(map(str, self.shape[1:]))} {self.layout or '?'}: K={k}, {h}x{w})"


def _guess_layout(shape, input_size) -> str:
    nchw = _plausible_spatial(shape[2], shape[3], input_size)
    nhwc = _plausible_spatial(shape[1], shape[2], input_size)
    if nchw and not nhwc:
        return "nchw"
    if nhwc and not nchw:
        return "nhwc"
    return "nchw" if nchw else ""


def _permuted(layout: str, perm) -> str:
    if layout not in AXES or sorted(perm) != [0, 1, 2, 3]:
        return ""
    axes = "".join(AXES[layout][p] for p in perm)
    return {v: k for k, v in AXES.items()}.get(axes, "")


def tensor_layouts(model, input_name: str, input_layout: str, shapes: dict[str, tuple], input_size) -> dict[str, str]:
    """The layout of every 4-D tensor in ``shapes`` (name -> shape at batch 1)."""
    layouts = {input_name: input_layout}
    for node in model.graph.node:
        for out in node.output:
            if out not in shapes or len(shapes[out]) != 4:
                continue
            if node.op_type in NCHW_OPS:
                layouts[out] = "nchw"
            elif node.op_type == "Transpose":
                perm = attributes(node).get("perm", [3, 2, 1, 0])
                layouts[out] = _permuted(layouts.get(node.input[0], ""), list(perm))
            else:  # shape-preserving ops keep a 4-D input's layout if its shape is the output's
                same = [layouts.get(i, "") for i in node.input
                        if i in shapes and tuple(shapes[i]) == tuple(shapes[out]) and layouts.get(i)]
                layouts[out] = same[0] if same else ""
            if not layouts[out]:
                layouts[out] = _guess_layout(shapes[out], input_size)
    return layouts


def target_tensors(model, input_name: str, input_layout: str, logits: str, values: dict[str, np.ndarray],
                   input_size) -> list[TargetTensor]:
    """Every 4-D float tensor computed from the image on the way to the logits, in graph
    order, with its layout (``values``: the tensors' values at batch 1)."""
    reader = GraphReader(model.graph)
    needed = reader.ancestors(logits)
    from_image = reader.reachable_from([input_name], values_only=True)
    shapes = {name: tuple(np.shape(v)) for name, v in values.items()}
    shapes[input_name] = (1, 3, *input_size) if input_layout == "nchw" else (1, *input_size, 3)
    layouts = tensor_layouts(model, input_name, input_layout, shapes, input_size)
    ops = {o: node.op_type for node in model.graph.node for o in node.output}
    found = []
    for name, value in values.items():
        if name in needed and name in from_image and value.ndim == 4 and value.dtype.kind == "f":
            found.append(TargetTensor(name, ops.get(name, "?"), tuple(int(d) for d in value.shape), layouts.get(name, "")))
    return found


def default_target(candidates: list[TargetTensor]) -> TargetTensor | None:
    """The last spatial feature map (more than one position) before the logits."""
    spatial = [t for t in candidates if t.layout and t.positions > 1]
    return spatial[-1] if spatial else None
