"""The conventional target layer of well-known torchvision and timm families.

These are the layers CAM practice uses (pytorch-grad-cam's documentation lists most of
them: ResNet ``layer4``, DenseNet ``features``, ConvNeXt the last stage, MobileNet
``features``, EfficientNet ``conv_head``/``bn2``...): the last block of the last stage, where
the feature map is still spatial. For vision transformers it is the first LayerNorm of the
last block (``blocks[-1].norm1``): the head (the class token's path) reads every patch token
there through the last attention, while at the last block's output only the class token
reaches the logits. Families are recognised by the network's class and module names;
`conventional_target` returns None for anything else, and the generic default (the last
module with a spatial output that runs once) applies.

A candidate's component ``-1`` (``blocks.-1.norm1``) or ``PREFIX-1``
(``encoder_layer_-1``) names the child with the largest index, whatever the depth.
"""

from __future__ import annotations

import re

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
    # vision transformers: tokens [B, N, C] (ViT, DeiT) or channels-last [B, h, w, C] (Swin)
    ("VisionTransformer", "torchvision"): ("encoder.layers.encoder_layer_-1.ln_1",),
    ("SwinTransformer", "torchvision"): ("features.-1",),
    ("VisionTransformer", "timm"): ("blocks.-1.norm1",),
    ("VisionTransformerDistilled", "timm"): ("blocks.-1.norm1",),
    ("SwinTransformer", "timm"): ("layers.-1.blocks.-1.norm1",),
    ("SwinTransformerV2", "timm"): ("layers.-1.blocks.-1.norm1",),
}

# families whose stage outputs are channels-last [B, h, w, C] where the shape alone is ambiguous
CHANNELS_LAST = {("SwinTransformer", "torchvision"), ("SwinTransformer", "timm"), ("SwinTransformerV2", "timm")}

_LAST = re.compile(r"^(.*?)-1$")


def _family(net) -> tuple[str, str]:
    cls = type(net)
    return cls.__name__, cls.__module__.split(".")[0]


def resolve(candidate: str, names: set[str]) -> str | None:
    """``candidate`` with every ``-1`` / ``PREFIX-1`` component replaced by the child of
    that prefix with the largest index among ``names``; None where nothing matches."""
    resolved: list[str] = []
    for part in candidate.split("."):
        match = _LAST.match(part)
        if match is None:
            resolved.append(part)
            continue
        parent = ".".join(resolved)
        stem = f"{parent}.{match.group(1)}" if parent else match.group(1)
        indices = [int(n[len(stem):]) for n in names
                   if n.startswith(stem) and n[len(stem):].isdigit() and n.count(".") == stem.count(".")]
        if not indices:
            return None
        resolved.append(f"{match.group(1)}{max(indices)}")
    name = ".".join(resolved)
    return name if name in names else None


def conventional_target(net) -> str | None:
    """The conventional target module of ``net``'s family, if known and present."""
    names = {name for name, _ in net.named_modules() if name}
    for candidate in CONVENTIONS.get(_family(net), ()):
        found = resolve(candidate, names)
        if found is not None:
            return found
    return None


def patch_size(net):
    """The patch size a transformer states (timm ``patch_embed.patch_size``, torchvision
    ``patch_size``), or None."""
    for owner in (getattr(net, "patch_embed", None), net):
        size = getattr(owner, "patch_size", None)
        if isinstance(size, int) or (isinstance(size, (tuple, list)) and len(size) == 2
                                     and all(isinstance(d, int) for d in size)):
            return size
    return None


def layout_hints(net) -> dict:
    """``infer_target_map`` hints for ``net``'s family: ``patch_size``, ``channels_last``."""
    return {"patch_size": patch_size(net), "channels_last": _family(net) in CHANNELS_LAST}
