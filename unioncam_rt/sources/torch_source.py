"""Torch classifiers from a `ModelSource`: zoo networks, Python factories, module instances.

The result, `TorchClassifier`, is ``net(normalize(x))`` for RGB input in [0, 1] plus the
name of the target module. Its activations are read with a forward hook, so the network's
``forward`` may be any code; gradients come from autograd (the reference every exported
graph is checked against). Needs the ``export`` extra.
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
    """

    def __init__(self, name: str, net: nn.Module, target_layer: str, input_size, mean, std,
                 class_names: list[str], weights_sha256: str, source_info: dict):
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
        refuses to modify in place. In the ONNX export the copy is an ``Identity`` node.
        """
        captured = Capture()

        def hook(module, inputs, output):
            if not torch.is_tensor(output):
                raise ModelError(f"target layer {self.target_layer} returns {type(output).__name__}, not a tensor")
            if leaf:
                output = output.detach().requires_grad_(True)
            captured.outputs.append(output)
            return output.clone()

        handle = self.target_module().register_forward_hook(hook)
        try:
            yield captured
        finally:
            handle.remove()

    def logits_and_activations(self, x, leaf: bool = False):
        with self.capture(leaf) as captured:
            logits = self(x)
        return logits, captured.value


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


def spatial_candidates(layers: list[tuple[str, tuple, int]]) -> list[str]:
    """Modules of `list_layers` that run once with a 4-D output of more than one position."""
    return [n for n, shape, calls in layers if len(shape) == 4 and shape[2] * shape[3] > 1 and calls == 1]


def default_target(net: nn.Module, input_size, normalize) -> str:
    """The family's conventional target (`conventions`) where it is a spatial feature map
    that runs once, else the last module to finish with such an output."""
    from .conventions import conventional_target

    candidates = spatial_candidates(list_layers(net, input_size, normalize))
    if not candidates:
        raise ModelError("no module outputs a 4-D feature map [B, K, h, w] with more than one position; pass "
                         "--target-layer (see unioncam-rt inspect) or a larger --input-size")
    conventional = conventional_target(net)
    return conventional if conventional in candidates else candidates[-1]


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
    if acts.dim() != 4:
        raise ModelError(f"target layer {target!r} outputs shape {list(acts.shape)}; it must be a 4-D feature map "
                         "[B, K, h, w]")
    if acts.shape[2] * acts.shape[3] <= 1:
        raise ModelError(f"target layer {target!r} outputs {list(acts.shape[1:])}: one spatial position at input size "
                         f"{input_size[0]}x{input_size[1]}, so a CAM has nothing to locate; choose an earlier layer "
                         "(see unioncam-rt inspect) or a larger --input-size")
    classifier.class_names = check_labels(source.label_names(), int(logits.shape[1]))
    return classifier


def build_classifier(model, weights=None, **options) -> TorchClassifier:
    """Shortcut: ``load_torch_classifier(ModelSource(model, weights, **options))``."""
    return load_torch_classifier(ModelSource(model, weights, **options))
