"""The torch reference engine: autograd gradients, the oracle every exported graph and
runtime backend is checked against."""

from __future__ import annotations

import numpy as np

from ..errors import UnionCamError, require
from .base import FeatureBatch

torch = require("torch", "export")
F = torch.nn.functional


class TorchEngine:
    """`CamEngine` over a `unioncam_rt.sources.torch_source.TorchClassifier` (CPU or CUDA).

    Activations are the target module's output (a forward hook); gradients are
    ``d logit[c] / d A`` from autograd, with ``A`` made a leaf so nothing before it is
    differentiated.

    Args:
        classifier: the torch classifier (any ``forward`` code).
        device: torch device string (default ``"cpu"``).
        precision: ``"fp32"`` (default) or ``"fp16"`` (CUDA only: weights and inputs in half;
            outputs returned as float32).
    """

    def __init__(self, classifier, device: str = "cpu", precision: str = "fp32"):
        if precision not in ("fp32", "fp16"):
            raise UnionCamError(f"the torch backend runs fp32 or fp16, not {precision}")
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise UnionCamError("fp16 with the torch backend needs a CUDA device (--device cuda)")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UnionCamError(f"device {device} requested but torch sees no CUDA GPU")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.backend, self.precision = f"torch-{self.device.type}", precision
        self.classifier = classifier.eval().to(self.device, self.dtype)
        self.model_name = classifier.name
        self.input_size = tuple(classifier.input_size)
        self.class_names = list(classifier.class_names)
        self._black: np.ndarray | None = None
        with torch.inference_mode():
            probe = torch.zeros(1, 3, *self.input_size, device=self.device, dtype=self.dtype)
            _, acts = self.classifier.logits_and_activations(probe)
            self.feature_shape = tuple(int(d) for d in acts.shape[1:])

    def _tensor(self, array: np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        return tensor.to(self.dtype) if tensor.is_floating_point() else tensor

    def features(self, images: np.ndarray, class_index: np.ndarray) -> FeatureBatch:
        x = self._tensor(images.astype(np.float32))
        with torch.enable_grad():
            logits, acts = self.classifier.logits_and_activations(x, leaf=True)
            wanted = self._tensor(np.asarray(class_index, dtype=np.int64))
            resolved = torch.where(wanted < 0, logits.argmax(dim=1), wanted)
            selected = logits.gather(1, resolved[:, None]).sum()
            (grads,) = torch.autograd.grad(selected, acts)
        return FeatureBatch(
            logits=logits.detach().float().cpu().numpy(),
            activations=acts.detach().float().cpu().numpy(),
            gradients=grads.float().cpu().numpy(),
            class_index=resolved.cpu().numpy().astype(np.int64),
        )

    @torch.inference_mode()
    def masked_probs(self, images, masks, image_index, class_index) -> np.ndarray:
        x = self._tensor(images.astype(np.float32))
        up = F.interpolate(self._tensor(masks.astype(np.float32)), size=self.input_size,
                           mode="bilinear", align_corners=False)
        logits = self.classifier(x[self._tensor(image_index.astype(np.int64))] * up).float()
        probs = F.softmax(logits, dim=1)
        picked = probs.gather(1, self._tensor(class_index.astype(np.int64))[:, None])[:, 0]
        return picked.float().cpu().numpy()

    @torch.inference_mode()
    def probs(self, images: np.ndarray) -> np.ndarray:
        logits = self.classifier(self._tensor(images.astype(np.float32))).float()
        return F.softmax(logits, dim=1).cpu().numpy()

    def black_probs(self) -> np.ndarray:
        if self._black is None:
            black = np.zeros((1, 3, *self.input_size), dtype=np.float32)
            self._black = self.probs(black)[0].astype(np.float64)
        return self._black
