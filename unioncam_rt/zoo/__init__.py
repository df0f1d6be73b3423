"""Model zoo: named classifiers, their target layers, input sizes and normalisation.

`spec` is torch-free (the runtime reads it); `torch_models.build_net` builds the torch
network and needs the ``export`` extra. A zoo model is one kind of
`unioncam_rt.sources.ModelSource`.
"""

from .spec import DEFAULT_MODEL, MODELS, ModelSpec, get_spec, imagenet_classes

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelSpec", "get_spec", "imagenet_classes"]
