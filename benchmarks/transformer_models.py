"""Vision transformers for the benchmarks, as Python factories (``PATH.py:FUNCTION``).

Random seeded weights (this machine cannot download pretrained ones): a pass costs the
same whatever the weights, but the class probabilities are nearly flat, so fidelity
numbers on them say how closely an approximate mode follows exact UnionCAM's arithmetic,
not how good the maps are.

Usage::

    python benchmarks/fidelity.py --model benchmarks/transformer_models.py:vit_tiny --images 20 --modes fast
"""

from __future__ import annotations

import torch


def vit_tiny():
    """timm ``vit_tiny_patch16_224`` as published (224x224, 16x16 patches: a 14x14 grid of
    192 channels, 12 blocks, 1000 classes), seeded random weights."""
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False)


def deit_tiny_distilled():
    """timm ``deit_tiny_distilled_patch16_224`` (class and distillation tokens), seeded random weights."""
    import timm

    torch.manual_seed(0)
    return timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
