"""unioncam-rt: UnionCAM explanations of CNN classifiers, fast enough for production.

Pipeline: model sources (`sources`, `zoo`) -> export (`exporting`) -> engines (`runtime`) ->
the method (`method`) -> `explain` / CLI.

Python API: `export` (any classifier -> an engine directory), `Explainer` and `explain`.
"""

from ._version import __version__
from .errors import UnionCamError


def export(model, out, *, target_layer=None, labels=None, input_size=None, mean=None, std=None, weights=None,
           layout=None, target_layout=None, **options):
    """Export a classifier into an engine directory that `Explainer` and every backend read.

    Args:
        model: an ``nn.Module`` instance, an ONNX file path, a zoo name, or
            ``PATH.py:FUNCTION`` / ``package.module:FUNCTION``.
        out: the engine directory to write.
        target_layer: module name (torch) or tensor name (ONNX) whose output is explained.
        labels: class names (a sequence, or a file: one per line / a JSON list).
        input_size: (H, W) or one number. mean, std: per-channel normalisation of [0, 1] RGB.
        weights: a state_dict file for the model (``weights_only=True``).
        layout: an ONNX input's layout (``nchw`` or ``nhwc``; default: detected).
        target_layout: the target output's layout: ``nchw``, ``nhwc``, or ``tokens`` (torch
            transformers' ``[B, N, C]``); default: detected.
        **options: `unioncam_rt.exporting.pipeline.ExportConfig` fields (``opset``, ``check``,
            ``tensorrt``, ``fp16``, ``max_batch``).

    Returns:
        The `ExportReport` (files, parity, manifest).
    """
    from .exporting.pipeline import ExportConfig, export_model

    return export_model(ExportConfig(model, out, weights, labels, target_layer, input_size, mean, std, layout,
                                     target_layout, **options))


def explain(image, model=None, target=None, method="unioncam", **kwargs):
    """Explain one image; see `unioncam_rt.explainer.explain`."""
    from .explainer import explain as _explain

    return _explain(image, model, target, method, **kwargs)


def __getattr__(name):
    if name == "Explainer":
        from .explainer import Explainer

        return Explainer
    raise AttributeError(name)


__all__ = ["UnionCamError", "export", "explain", "Explainer", "__version__"]
