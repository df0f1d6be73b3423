"""Model zoo: named classifiers, their target layers, input sizes and normalisation.

`spec` is torch-free (the runtime reads it); `torch_models.build_model` builds the torch
module and needs the ``export`` extra.
"""

from .spec import DEFAULT_MODEL, MODELS, ModelSpec, get_spec, imagenet_classes

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelSpec", "get_spec", "imagenet_classes", "build_model"]


def build_model(name, weights=None):
    """Build a zoo model in torch; see `unioncam_rt.zoo.torch_models.build_model`."""
    from .torch_models import build_model as _build

    return _build(name, weights)
