"""``unioncam-rt inspect``: what a model offers as target layers, or what an engine holds."""

from __future__ import annotations

from pathlib import Path

from .manifest import MANIFEST_NAME, load_manifest
from .sources import ModelSource


def _table(rows: list[tuple[str, str, str]], headers: tuple[str, str, str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(3)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers, *rows]]


def describe_engine(directory: Path) -> str:
    m = load_manifest(directory)
    names = ", ".join(m.class_names[:8]) + (" ..." if m.num_classes > 8 else "")
    lines = [f"engine directory {directory}",
             f"  model      {m.model} ({', '.join(f'{k}={v}' for k, v in m.source.items())})",
             f"  input      {m.input_size[0]}x{m.input_size[1]} RGB in [0, 1], mean {list(m.mean)}, std {list(m.std)}, "
             f"original layout {m.layout}",
             f"  target     {m.target_layer} -> activations {'x'.join(map(str, m.feature_shape))}",
             f"  classes    {m.num_classes}: {names}",
             "  files      " + ", ".join(sorted(m.files)),
             f"  exported   by unioncam-rt {m.unioncam_rt}, opset {m.opset}"]
    return "\n".join(lines)


def describe(model: str, weights: str | None = None, input_size=None, layout: str | None = None) -> str:
    """Candidate target layers of a model (4-D outputs, in execution order), the default
    marked, or a summary of an engine directory."""
    if Path(model).is_dir() and (Path(model) / MANIFEST_NAME).is_file():
        return describe_engine(Path(model))
    source = ModelSource(model, weights, input_size=input_size, layout=layout)
    if source.kind == "onnx":
        from .export.onnx_classifier import list_tensors

        found = [(name, op, shape) for name, op, shape in list_tensors(Path(model), source.input_size, layout)]
        default = [n for n, _, s in found if s[2] * s[3] > 1]
        kind = "tensor"
    else:
        from .sources.torch_source import DEFAULT_INPUT_SIZE, Normalize, list_layers
        from .zoo.spec import MODELS
        from .zoo.torch_models import build_net

        if source.kind == "zoo":
            net, _ = build_net(str(model), weights)
            size = source.input_size or MODELS[str(model)].input_size
            default = [MODELS[str(model)].target_module]
        else:
            from .sources.torch_source import load_torch_classifier

            classifier = load_torch_classifier(source)
            net, size, default = classifier.net, classifier.input_size, [classifier.target_layer]
        mean, std = source.resolved_mean_std()
        layers = list_layers(net, size or DEFAULT_INPUT_SIZE, Normalize(mean, std))
        found = [(name, f"{type(dict(net.named_modules())[name]).__name__}" + (f" x{calls}" if calls > 1 else ""), shape)
                 for name, shape, calls in layers if len(shape) == 4]
        kind = "module"
    chosen = default[-1] if default else None
    rows = [(name, op, "x".join(map(str, shape[1:])) + ("   <- default target" if name == chosen else ""))
            for name, op, shape in found]
    lines = [f"{len(rows)} candidate target {kind}s of {model} (4-D outputs, in execution order; pass one as "
             "--target-layer):"]
    lines += ["  " + line for line in _table(rows, (kind, "op", "shape (K x h x w)"))]
    return "\n".join(lines)
