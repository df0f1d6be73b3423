"""The target's output as the ``activations`` map ``[B, K, h, w]``, as ONNX nodes.

The same nodes read the output and its gradient (`unioncam_rt.sources.target_map`): the
map is a selection of entries, so ``dL/dA`` is ``dL/dT`` read the same way.

* ``nchw``: ``A = T``;
* ``nhwc``: ``A = Transpose(T, [0, 3, 1, 2])``;
* ``tokens``: ``A = Transpose(Reshape(Slice(T, p:, axis 1), [-1, h, w, C]), [0, 3, 1, 2])``
  with ``p`` prefix tokens and an ``h x w`` patch grid.
"""

from __future__ import annotations

from ..sources.target_map import TargetMap
from .onnx_graph import Emitter, helper


def emit_feature_map(emit: Emitter, name: str, target_map: TargetMap, output: str | None = None) -> str:
    """Append the nodes reading ``name`` through ``target_map``; returns the map's name
    (``output`` where given: the last node writes it)."""
    if target_map.layout == "tokens":
        tokens, channels = target_map.shape
        h, w = target_map.grid
        patches = emit.slice(name, [target_map.prefix_tokens], [tokens], [1]) if target_map.prefix_tokens else name
        name = emit.op("Reshape", [patches, emit.ints([-1, h, w, channels])], hint="token_grid")  # [B, h, w, C]
    op, attrs = ("Identity", {}) if target_map.layout == "nchw" else ("Transpose", {"perm": [0, 3, 1, 2]})
    result = output or emit.fresh("feature_map")
    emit.nodes.append(helper.make_node(op, [name], [result], name=emit.fresh(op + "_node"), **attrs))
    return result
