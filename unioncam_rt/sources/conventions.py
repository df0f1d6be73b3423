"""The conventional target layer of well-known torchvision and timm CNN families.

These are the layers CAM practice uses (pytorch-grad-cam's documentation lists most of
them: ResNet ``layer4``, DenseNet ``features``, ConvNeXt the last stage, MobileNet
``features``, EfficientNet ``conv_head``/``bn2``...): the last block of the last stage, where
the feature map is still spatial. Families are recognised by the network's class and module
names; `conventional_target` returns None for anything else, and the generic default
(the last module with a spatial 4-D output that runs once) applies.
"""

from __future__ import annotations

# (class name, package prefix of the class's module) -> candidate module names, first present wins
CONVENTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    # torchvision
    ("AlexNet", "torchvision"): ("features",),
    ("VGG", "torchvision"): ("features",),
    ("ResNet", "torchvision"): ("layer4",),
    ("DenseNet", "torchvision"): ("features",),
    ("SqueezeNet", "torchvision"): ("features",),
    ("GoogLeNet", "torchvision"): ("inception5b",),
    ("Inception3", "torchvision"): ("Mixed_7c",),
    ("MobileNetV2", "torchvision"): ("features",),
    ("MobileNetV3", "torchvision"): ("features",),
    ("MNASNet", "torchvision"): ("layers",),
    ("ShuffleNetV2", "torchvision"): ("conv5",),
    ("EfficientNet", "torchvision"): ("features",),
    ("RegNet", "torchvision"): ("trunk_output",),
    ("ConvNeXt", "torchvision"): ("features",),
    # timm
    ("ResNet", "timm"): ("layer4",),
    ("DenseNet", "timm"): ("features",),
    ("ConvNeXt", "timm"): ("stages.3", "stages"),
    ("EfficientNet", "timm"): ("bn2", "conv_head"),
    ("MobileNetV3", "timm"): ("blocks",),
    ("RegNet", "timm"): ("final_conv", "s4"),
    ("ByobNet", "timm"): ("final_conv", "stages"),
    ("CspNet", "timm"): ("stages",),
    ("DLA", "timm"): ("level5",),
    ("GhostNet", "timm"): ("blocks",),
    ("RexNet", "timm"): ("features",),
    ("XceptionAligned", "timm"): ("blocks",),
    ("Xception", "timm"): ("act4", "bn4"),
    ("NormFreeNet", "timm"): ("final_act", "final_conv"),
    ("DPN", "timm"): ("features",),
    ("HighResolutionNet", "timm"): ("final_layer", "incre_modules"),
    ("MobileOne", "timm"): ("final_conv", "stages"),
    ("VovNet", "timm"): ("stages",),
    ("InceptionV3", "timm"): ("Mixed_7c",),
    ("InceptionV4", "timm"): ("features",),
    ("InceptionResnetV2", "timm"): ("conv2d_7b",),
}


def conventional_target(net) -> str | None:
    """The conventional target module of ``net``'s family, if known and present."""
    cls = type(net)
    package = cls.__module__.split(".")[0]
    names = {name for name, _ in net.named_modules() if name}
    for candidate in CONVENTIONS.get((cls.__name__, package), ()):
        if candidate in names:
            return candidate
    return None
