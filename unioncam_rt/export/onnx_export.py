"""``OnnxFromModel``: trace the two graphs of a `CamModel` into ONNX files."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

from ..errors import require
from .graphs import FEATURES_INPUTS, SCORES_INPUTS, FeaturesGraph, ScoresGraph

torch = require("torch", "export")
onnx = require("onnx", "export")

# ONNX forbids an output with an input's name, so the resolved class is its own output.
FEATURES_OUTPUT_NAMES = ("logits", "activations", "gradients", "resolved_class_index")
SCORES_OUTPUT_NAMES = ("probs",)
DEFAULT_OPSET = 17


def _export(module, args, path: Path, inputs, outputs, dynamic: dict, opset: int) -> None:
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, stable op set
    # Without grad, max_pool2d traces as MaxPool with one output (no Indices, which
    # TensorRT rejects) and ONNX shape inference keeps the spatial sizes.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about static shapes are expected here
        torch.onnx.export(
            module, args, str(path), input_names=list(inputs), output_names=list(outputs),
            dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True, **kwargs,
        )
    onnx.checker.check_model(str(path))


def features_onnx_from_model(model, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``features.onnx``: image, class_index -> logits, activations, gradients, resolved_class_index."""
    graph = FeaturesGraph(model).eval()
    height, width = model.spec.input_size
    args = (torch.rand(2, 3, height, width), torch.tensor([-1, 0], dtype=torch.int64))
    batch = {0: "batch"}
    dynamic = {name: batch for name in (*FEATURES_INPUTS, *FEATURES_OUTPUT_NAMES)}
    _export(graph, args, path, FEATURES_INPUTS, FEATURES_OUTPUT_NAMES, dynamic, opset)
    return path


def scores_onnx_from_model(model, path: Path, feature_hw: tuple[int, int], opset: int = DEFAULT_OPSET) -> Path:
    """Write ``scores.onnx``: image, masks, image_index, class_index -> probs."""
    graph = ScoresGraph(model).eval()
    height, width = model.spec.input_size
    args = (
        torch.rand(2, 3, height, width),
        torch.rand(3, 1, *feature_hw),
        torch.tensor([0, 1, 1], dtype=torch.int64),
        torch.tensor([0, 1, 2], dtype=torch.int64),
    )
    dynamic = {"image": {0: "batch"}, "masks": {0: "masks"}, "image_index": {0: "masks"},
               "class_index": {0: "masks"}, "probs": {0: "masks"}}
    _export(graph, args, path, SCORES_INPUTS, SCORES_OUTPUT_NAMES, dynamic, opset)
    return path
