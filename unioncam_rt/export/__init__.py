"""Export: zoo model -> ONNX graphs (``features`` with explicit gradients, ``scores`` for
masked inputs) -> parity check -> TensorRT engines -> ``manifest.json``.

Modules: `head_backward` (the head's backward in plain ops), `graphs` (the two torch
modules traced), `onnx_export` (OnnxFromModel), `tensorrt_build` (EngineFromOnnx),
`pipeline` (the whole export, atomic). All need the ``export`` extra (torch, onnx).
"""

from __future__ import annotations


def export_model(config, progress: bool = False):
    """Export a zoo model; see `unioncam_rt.export.pipeline.export_model`."""
    from .pipeline import export_model as _export

    return _export(config, progress)


def __getattr__(name):
    if name in ("ExportConfig", "ExportReport"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
