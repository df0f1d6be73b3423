"""Torch classifiers from a `ModelSource`: zoo networks, Python factories, module instances.

The result, `TorchClassifier`, is ``net(normalize(x))`` for RGB input in [0, 1] plus the
name of the target module. Its activations are read with a forward hook, so the network's
``forward`` may be any code; gradients come from autograd (the reference every exported
graph is checked against). A target's output may be a feature map, channels-last, or a
transformer's tokens: `target_map.TargetMap` says how it reads as ``[B, K, h, w]``. Needs
the ``export`` extra.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelError, UnionCamError, require
from ..zoo.spec import MODELS
from ..zoo.torch_models import build_net, load_state, parse_seed, read_state_dict, state_dict_sha256
from . import ModelSource, check_labels
from .target_map import TargetMap, infer_target_map, loose_grid

torch = require("torch", "export")
nn = torch.nn

DEFAULT_INPUT_SIZE = (224, 224)


class Normalize(nn.Module):
    """``(x - mean) / std`` with per-channel constants, inside the model."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class TargetCopy(torch.autograd.Function):
    """``y = x.clone()``, exported to ONNX as the marker node ``unioncam::TargetCopy``.

    The rest of the network reads the target's output through this copy. Torch's ONNX
    exporter drops plain clones, so where a module returns a tensor that other code also
    reads (``nn.Identity``, a skip around it), the graph could not tell the module's
    consumers from the others; the marker keeps them apart, and the export differentiates
    with respect to the marker's output: the partial derivative autograd gives at the
    hooked output (`unioncam_rt.exporting.torch_to_onnx` turns it into an ``Identity``).
    """

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad

    @staticmethod
    def symbolic(g, x):
        return g.op("unioncam::TargetCopy", x).setType(x.type())


@dataclass
class Capture:
    """What the target layer's forward hook saw during one forward pass."""

    outputs: list = field(default_factory=list)

    @property
    def value(self):
        if len(self.outputs) != 1:
            raise ModelError(f"the target layer ran {len(self.outputs)} times in one forward pass; choose a module "
                             "that runs exactly once (e.g. the block that contains it)")
        return self.outputs[0]


class TorchClassifier(nn.Module):
    """A classifier as ``net(normalize(x))`` with a named target module.

    Attributes:
        name: display name (zoo name, factory name or class name).
        net: the user's network in eval mode.
        normalize: mean/std normalisation of [0, 1] RGB input.
        target_layer: the target module's name in ``net.named_modules()``.
        input_size: (H, W).
        class_names: one name per logit.
        weights_sha256: hash of the network's state_dict.
        source_info: what the manifest records about where it came from.
        target_map: how the target's output reads as ``[B, K, h, w]`` (set by
            `load_torch_classifier`; None: taken as ``[B, K, h, w]``).
    """

    def __init__(self, name: str, net: nn.Module, target_layer: str, input_size, mean, std,
                 class_names: list[str], weights_sha256: str, source_info: dict,
                 target_map: TargetMap | None = None):
        super().__init__()
        self.name = name
        self.net = net.eval()
        self.normalize = Normalize(mean, std)
        self.target_layer = target_layer
        self.input_size = tuple(input_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.class_names = list(class_names)
        self.weights_sha256 = weights_sha256
        self.source_info = source_info
        self.target_map = target_map

    def forward(self, x):
        return self.net(self.normalize(x))

    def target_module(self) -> nn.Module:
        return dict(self.net.named_modules())[self.target_layer]

    @contextmanager
    def capture(self, leaf: bool = False):
        """Record the target module's output; with ``leaf``, replace it by a detached leaf
        that requires grad, so autograd stops there and ``d logits / d A`` is cheap.

        The rest of the network receives a copy: an in-place operation after the target
        (DenseNet's ``F.relu(features, inplace=True)``, ResNet's ``out += identity`` after
        ``bn2``) then changes neither the recorded activations nor the leaf, which autograd
        refuses to modify in place. In the ONNX export the copy is a `TargetCopy` marker.
        """
        captured = Capture()

        def hook(module, inputs, output):
            if not torch.is_tensor(output):
                raise ModelError(f"target layer {self.target_layer} returns {type(output).__name__}, not a tensor")
            if leaf:
                output = output.detach().requires_grad_(True)
            captured.outputs.append(output)
            return TargetCopy.apply(output) if torch.onnx.is_in_onnx_export() else output.clone()

        handle = self.target_module().register_forward_hook(hook)
        try:
            yield captured
        finally:
            handle.remove()

    def logits_and_activations(self, x, leaf: bool = False):
        """``(logits, the target module's output)``, the output as the module returned it."""
        with self.capture(leaf) as captured:
            logits = self(x)
        return logits, captured.value

    def feature_map(self, output):
        """The target's output (or its gradient) as ``[B, K, h, w]`` (`target_map`)."""
        return to_feature_map(output, self.target_map)


def to_feature_map(output, target_map: TargetMap | None):
    """``output`` read through ``target_map`` as ``[B, K, h, w]`` (see `target_map`)."""
    if target_map is None or target_map.layout == "nchw":
        return output
    if target_map.layout == "nhwc":
        return output.permute(0, 3, 1, 2)
    h, w = target_map.grid
    patches = output[:, target_map.prefix_tokens:]
    return patches.reshape(output.shape[0], h, w, output.shape[2]).permute(0, 3, 1, 2)


def _import_factory(spec: str):
    location, function = spec.rsplit(":", 1)
    if location.endswith(".py") or "/" in location:
        path = Path(location)
        if not path.is_file():
            raise ModelError(f"factory file {path} does not exist")
        module_name = f"unioncam_user_{abs(hash(str(path.resolve())))}"
        try:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise ModelError(f"cannot import {path} ({type(exc).__name__}: {exc})") from None
    else:
        try:
            module = importlib.import_module(location)
        except Exception as exc:
            raise ModelError(f"cannot import module {location} ({type(exc).__name__}: {exc})") from None
    factory = getattr(module, function, None)
    if factory is None or not callable(factory):
        raise ModelError(f"{location} has no callable {function!r}")
    return factory


def _factory_net(spec: str, weights: str | None) -> tuple[nn.Module, dict]:
    factory = _import_factory(spec)
    seed = parse_seed(weights) if weights is not None else None
    if seed is not None:
        torch.manual_seed(seed)
    try:
        net = factory()
    except Exception as exc:
        raise ModelError(f"{spec}() failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(net, nn.Module):
        raise ModelError(f"{spec}() returned {type(net).__name__}, not a torch.nn.Module")
    if weights is not None and seed is None:
        load_state(net, read_state_dict(Path(weights)), spec, str(weights))
    return net, {"kind": "python", "factory": spec, "weights": weights}


def list_layers(net: nn.Module, input_size, normalize: nn.Module | None = None) -> list[tuple[str, tuple, int]]:
    """``(module name, output shape, calls)`` of every module with a tensor output, in the
    order their forward passes finished, for one batch-1 pass at ``input_size``."""
    seen: dict[str, list] = {}
    order: list[str] = []
    handles = []
    for name, module in net.named_modules():
        if not name:
            continue

        def hook(module, inputs, output, name=name):
            if torch.is_tensor(output):
                seen.setdefault(name, []).append(tuple(output.shape))
                order.append(name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, *input_size)
            net(normalize(x) if normalize is not None else x)
    finally:
        for handle in handles:
            handle.remove()
    last = {name: i for i, name in enumerate(order)}
    return [(name, seen[name][-1], len(seen[name])) for name in sorted(last, key=last.get)]


def layer_map(net: nn.Module, shape, input_size, layout: str | None = None, label: str = "target") -> TargetMap:
    """How the output of shape ``shape`` (batch first) of one of ``net``'s modules reads as
    ``[B, K, h, w]``, with the family's hints (`conventions.layout_hints`)."""
    from .conventions import layout_hints

    return infer_target_map(tuple(shape)[1:], input_size, layout, label=label, **layout_hints(net))


def layer_maps(net: nn.Module, layers, input_size) -> dict[str, TargetMap]:
    """The `TargetMap` of every `list_layers` entry that reads as a map whose grid may be
    the input's (`loose_grid`; an attention tensor's heads x tokens x dims is left out, as
    are other outputs)."""
    maps = {}
    for name, shape, _ in layers:
        if len(shape) in (3, 4):
            try:
                found = layer_map(net, shape, input_size, label=name)
            except ModelError:
                continue
            if loose_grid(*found.feature_shape[1:], input_size):
                maps[name] = found
    return maps


def spatial_candidates(layers: list[tuple[str, tuple, int]], maps: dict[str, TargetMap]) -> list[str]:
    """Modules of `list_layers` that run once with an output that reads as a map (`maps`)
    of more than one position."""
    return [n for n, _, calls in layers
            if n in maps and maps[n].feature_shape[1] * maps[n].feature_shape[2] > 1 and calls == 1]


def default_target(net: nn.Module, input_size, normalize) -> str:
    """The family's conventional target (`conventions`) where it is a spatial feature map
    that runs once, else the last module to finish with such an output (token outputs
    whose patch tokens the logits read, see `unread_patch_layers`)."""
    from .conventions import conventional_target

    layers = list_layers(net, input_size, normalize)
    maps = layer_maps(net, layers, input_size)
    candidates = spatial_candidates(layers, maps)
    if not candidates:
        raise ModelError("no module outputs a feature map [B, K, h, w] (or tokens, or channels-last) with more than "
                         "one position; pass --target-layer (see unioncam-rt inspect) or a larger --input-size")
    conventional = conventional_target(net)
    if conventional in candidates:
        return conventional
    unread = unread_patch_layers(net, input_size, normalize, maps)
    read = [name for name in candidates if name not in unread]
    return read[-1] if read else candidates[-1]


def unread_patch_layers(net: nn.Module, input_size, normalize, maps: dict[str, TargetMap]) -> set[str]:
    """Token modules (in ``maps``) whose patch tokens the logits do not read: ``d logit / d
    output`` is zero on every patch token and not on the prefix (one forward and backward
    pass of a random image, top-1 class). Empty where autograd through the model fails."""
    tokens = {name: m for name, m in maps.items() if m.layout == "tokens" and m.prefix_tokens}
    outputs: dict[str, object] = {}
    handles = []
    for name, module in net.named_modules():
        if name in tokens:
            def hook(module, inputs, output, name=name):
                if torch.is_tensor(output) and output.requires_grad:
                    output.retain_grad()
                    outputs[name] = output
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            x = torch.rand(1, 3, *input_size, generator=torch.Generator().manual_seed(0))
            net(normalize(x)).max(dim=1).values.sum().backward()
    except Exception:  # inspect still lists the layers
        return set()
    finally:
        for handle in handles:
            handle.remove()
        net.zero_grad(set_to_none=True)
    unread = set()
    for name, output in outputs.items():
        grad, prefix = output.grad, tokens[name].prefix_tokens
        if grad is not None and bool(torch.any(grad[:, :prefix] != 0)) and not bool(torch.any(grad[:, prefix:] != 0)):
            unread.add(name)
    return unread


def check_patch_gradient(classifier: "TorchClassifier") -> None:
    """Refuse a token target whose patch tokens the logits do not read.

    A ViT's head reads the class token (or the prefix tokens) alone, so at the last block's
    output (``blocks.N``, ``norm``) ``d logit / d A`` is zero on every patch token: the
    gradient CAM would be empty. Checked with autograd on two random images (top-1 class):
    refused where the prefix tokens' gradient is not zero and the patch tokens' is (a head
    of zeros, as torchvision initialises it, gives zero everywhere and is not refused).
    """
    if classifier.target_map is None or classifier.target_map.layout != "tokens":
        return
    x = torch.rand(2, 3, *classifier.input_size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.enable_grad():
            logits, acts = classifier.logits_and_activations(x, leaf=True)
            (grads,) = torch.autograd.grad(logits.max(dim=1).values.sum(), acts, allow_unused=True)
    except Exception:  # the export's parity check reports autograd failures
        return
    prefix = classifier.target_map.prefix_tokens
    if (grads is not None and prefix and bool(torch.any(grads[:, :prefix] != 0))
            and not bool(torch.any(classifier.feature_map(grads) != 0))):
        from .conventions import conventional_target

        suggestion = conventional_target(classifier.net) or "a layer inside the last block (e.g. blocks.N.norm1)"
        h, w = classifier.target_map.grid
        raise ModelError(f"target layer {classifier.target_layer!r}: the logits read none of its {h}x{w} patch tokens "
                         f"(the head reads the class token only), so every gradient on the grid is zero; choose "
                         f"{suggestion}")


def _check_target(net: nn.Module, target: str) -> None:
    names = [n for n, _ in net.named_modules() if n]
    if target not in names:
        close = difflib.get_close_matches(target, names, n=4, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else f"; e.g. {', '.join(names[-4:])}"
        raise UnionCamError(f"target layer {target!r} is not a module of the model{hint}")


def load_torch_classifier(source: ModelSource) -> TorchClassifier:
    """Build the classifier a torch `ModelSource` describes, checked with one forward pass.

    Raises:
        ModelError / UnionCamError: unknown target layer (closest names listed), a
            checkpoint that does not fit (the tensor named), a factory that cannot be
            imported or does not return an ``nn.Module``, an input size the network
            rejects, logits that are not ``[B, classes]``, labels of the wrong count.
    """
    kind = source.kind
    if kind == "onnx":
        raise UnionCamError("an ONNX model is not a torch model; use the ONNX export path")
    if kind == "zoo":
        spec = MODELS[str(source.model)]
        net, sha = build_net(spec.name, source.weights)
        target = source.target_layer or spec.target_module
        input_size = source.input_size or spec.input_size
        info = {"kind": "zoo", "name": spec.name, "weights": source.weights or "pretrained"}
    elif kind == "python":
        net, info = _factory_net(str(source.model), source.weights)
        sha, target, input_size = state_dict_sha256(net.state_dict()), source.target_layer, source.input_size
    else:
        net = source.model
        if source.weights is not None:
            load_state(net, read_state_dict(Path(source.weights)), type(net).__name__, str(source.weights))
        sha, target, input_size = state_dict_sha256(net.state_dict()), source.target_layer, source.input_size
        info = {"kind": "module", "class": f"{type(net).__module__}.{type(net).__qualname__}"}
    net = net.eval()
    input_size = tuple(input_size or DEFAULT_INPUT_SIZE)
    mean, std = source.resolved_mean_std()
    if target is None:
        target = default_target(net, input_size, Normalize(mean, std))
    _check_target(net, target)
    classifier = TorchClassifier(source.name, net, target, input_size, mean, std, [], sha, info)
    with torch.no_grad():
        try:
            logits, acts = classifier.logits_and_activations(torch.zeros(2, 3, *input_size))
        except UnionCamError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"the network rejects input size {input_size[0]}x{input_size[1]} "
                             f"({type(exc).__name__}: {first})") from None
    if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[0] != 2 or not logits.is_floating_point():
        what = f"shape {list(logits.shape)}" if torch.is_tensor(logits) else type(logits).__name__
        raise ModelError(f"the model must return logits [batch, classes]; it returns {what}")
    classifier.target_map = layer_map(net, acts.shape, input_size, source.target_layout, target)
    _, h, w = classifier.target_map.feature_shape
    if h * w <= 1:
        raise ModelError(f"target layer {target!r} outputs {list(acts.shape[1:])}: one spatial position at input size "
                         f"{input_size[0]}x{input_size[1]}, so a CAM has nothing to locate; choose an earlier layer "
                         "(see unioncam-rt inspect) or a larger --input-size")
    classifier.class_names = check_labels(source.label_names(), int(logits.shape[1]))
    check_patch_gradient(classifier)
    return classifier


def build_classifier(model, weights=None, **options) -> TorchClassifier:
    """Shortcut: ``load_torch_classifier(ModelSource(model, weights, **options))``."""
    return load_torch_classifier(ModelSource(model, weights, **options))
