"""``unioncam-rt inspect``: what a model offers as target layers, or what an engine holds."""

from __future__ import annotations

from pathlib import Path

from .manifest import MANIFEST_NAME, describe_target_map, load_manifest
from .sources import ModelSource


def _table(rows: list[tuple], headers: tuple) -> list[str]:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers, *rows]]


def describe_engine(directory: Path) -> str:
    m = load_manifest(directory)
    names = ", ".join(m.class_names[:8]) + (" ..." if m.num_classes > 8 else "")
    lines = [f"engine directory {directory}",
             f"  model      {m.model} ({', '.join(f'{k}={v}' for k, v in m.source.items())})",
             f"  input      {m.input_size[0]}x{m.input_size[1]} RGB in [0, 1], mean {list(m.mean)}, std {list(m.std)}, "
             f"original layout {m.layout}",
             f"  target     {m.target_layer} -> activations {'x'.join(map(str, m.feature_shape))}"
             f"{describe_target_map(m.target_map)}",
             f"  classes    {m.num_classes}: {names}",
             "  files      " + ", ".join(sorted(m.files)),
             f"  exported   by unioncam-rt {m.unioncam_rt}, opset {m.opset}"]
    return "\n".join(lines)


def describe(model: str, weights: str | None = None, input_size=None, layout: str | None = None) -> str:
    """Candidate target layers of a model (outputs that read as a map: 4-D, channels-last,
    or transformer tokens; in execution order), the default marked, or a summary of an
    engine directory."""
    if Path(model).is_dir() and (Path(model) / MANIFEST_NAME).is_file():
        return describe_engine(Path(model))
    source = ModelSource(model, weights, input_size=input_size, layout=layout)
    if source.kind == "onnx":
        return _describe_onnx(Path(model), source.input_size, layout)
    from .sources.conventions import conventional_target
    from .sources.torch_source import (
        DEFAULT_INPUT_SIZE,
        Normalize,
        layer_maps,
        list_layers,
        spatial_candidates,
        unread_patch_layers,
    )
    from .zoo.spec import MODELS
    from .zoo.torch_models import build_net

    if source.kind == "zoo":
        net, _ = build_net(str(model), weights)
        size = source.input_size or MODELS[str(model)].input_size
        default = MODELS[str(model)].target_module
    else:
        from .sources.torch_source import load_torch_classifier

        classifier = load_torch_classifier(source)
        net, size, default = classifier.net, classifier.input_size, classifier.target_layer
    mean, std = source.resolved_mean_std()
    size = size or DEFAULT_INPUT_SIZE
    layers = list_layers(net, size, Normalize(mean, std))
    maps = layer_maps(net, layers, size)
    unread = unread_patch_layers(net, size, Normalize(mean, std), maps)
    spatial = set(spatial_candidates(layers, maps)) - unread
    conventional = conventional_target(net)
    modules = dict(net.named_modules())
    rows = []
    for name, shape, calls in layers:
        if name not in maps:
            continue
        k, h, w = maps[name].feature_shape
        notes = [note for note, holds in (("default target", name == default),
                                          (f"conventional for {type(net).__name__}", name == conventional),
                                          ("1 position: not a target", h * w <= 1),
                                          ("patch tokens unread (class token only): not a target", name in unread),
                                          (f"runs {calls} times: not a target", calls > 1)) if holds]
        layout = maps[name].layout
        if layout == "tokens":
            layout = f"tokens ({maps[name].prefix_tokens} prefix)"
        rows.append((name, type(modules[name]).__name__, "x".join(map(str, shape[1:])), layout, f"{k}x{h}x{w}",
                     ("<- " + ", ".join(notes)) if notes else ""))
    lines = [f"{len(spatial)} candidate target modules of {model} (outputs that read as a feature map K x h x w: "
             "4-D, channels-last or transformer tokens; in execution order; pass one as --target-layer):"]
    lines += ["  " + line for line in _table(rows, ("module", "type", "output", "layout", "K x h x w", ""))]
    return "\n".join(lines)


def _describe_onnx(path: Path, input_size, layout: str | None) -> str:
    from .exporting.onnx_classifier import list_tensors
    from .exporting.onnx_targets import default_target

    found = list_tensors(path, input_size, layout)
    default = default_target(found)
    rows = []
    for tensor in found:
        k, h, w = tensor.khw
        notes = [note for note, holds in (("default target", tensor is default),
                                          ("1 position: not a target", tensor.positions <= 1),
                                          ("layout unknown: pass --target-layout", not tensor.layout)) if holds]
        rows.append((tensor.name, tensor.op, "x".join(map(str, tensor.shape[1:])), tensor.layout or "?",
                     f"{k}x{h}x{w}", ("<- " + ", ".join(notes)) if notes else ""))
    usable = sum(1 for t in found if t.layout and t.positions > 1)
    lines = [f"{usable} candidate target tensors of {path} (4-D float tensors computed from the image, in graph order; "
             "pass one as --target-layer):"]
    lines += ["  " + line for line in _table(rows, ("tensor", "op", "shape", "layout", "K x h x w", ""))]
    return "\n".join(lines)
