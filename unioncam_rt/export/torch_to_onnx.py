"""``OnnxFromTorch``: a torch classifier's forward graph, ``image -> (logits, activations)``.

The whole network (normalisation included) is traced once with torch's TorchScript ONNX
exporter; the target module's output becomes the ``activations`` output through a
forward hook, so any ``forward`` code works. The head's backward is then built over this
graph (`unioncam_rt.export.backward`), the same way for torch and ONNX models.
"""

from __future__ import annotations

import inspect
import io
import warnings

from ..errors import UnionCamError, require
from .graphs import ForwardGraph

torch = require("torch", "export")
onnx = require("onnx", "export")


class _WithActivations(torch.nn.Module):
    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, image):
        return self.classifier.logits_and_activations(image)


def forward_graph_from_torch(classifier, opset: int = 17) -> ForwardGraph:
    """Trace ``classifier`` (a `TorchClassifier`) into a `ForwardGraph`."""
    height, width = classifier.input_size
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, stable op set
    buffer = io.BytesIO()
    module = _WithActivations(classifier).eval()
    # Without grad, max_pool2d traces as MaxPool with one output (no Indices).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about static shapes are expected here
        try:
            torch.onnx.export(
                module, (torch.rand(2, 3, height, width),), buffer, input_names=["image"],
                output_names=["logits", "activations"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "activations": {0: "batch"}},
                opset_version=opset, do_constant_folding=True, **kwargs)
        except UnionCamError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnionCamError(f"torch could not export {classifier.name} to ONNX ({type(exc).__name__}: {first[:300]})") from None
    model = onnx.load_from_string(buffer.getvalue())
    return ForwardGraph(model, target="activations", target_layout="nchw", input_size=(height, width),
                        label=classifier.target_layer)
