"""Export: a classifier -> its forward graph -> ``features`` (with the head's gradient)
and ``scores`` (masked inputs) sharing one weights file -> parity check -> TensorRT
engines -> ``manifest.json``.

Modules: `torch_to_onnx` (forward graph of a torch model), `onnx_classifier` (forward
graph of an ONNX classifier), `backward` (the head's backward as ONNX nodes, one module per operator family), `graphs`
(the two engine graphs), `weights` (one shared weights file), `parity` (the self-check),
`tensorrt_build` (EngineFromOnnx), `quantize` (INT8), `pipeline` (the whole export,
atomic). All need the ``export`` extra (torch for torch models, onnx).
"""

from __future__ import annotations


def export_model(config, progress: bool = False):
    """Export a classifier; see `unioncam_rt.export.pipeline.export_model`."""
    from .pipeline import export_model as _export

    return _export(config, progress)


def __getattr__(name):
    if name in ("ExportConfig", "ExportReport"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
