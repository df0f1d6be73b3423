"""The two exported graphs as torch modules (what `onnx_export` traces).

``features``: ``(image [B,3,H,W], class_index [B]) -> (logits, activations, gradients,
class_index)``; ``scores``: ``(image [B,3,H,W], masks [N,1,h,w], image_index [N],
class_index [N]) -> probs [N]``. Both take RGB in [0, 1]; normalisation is inside.
"""

from __future__ import annotations

from ..errors import require
from .head_backward import HeadWithGradient

torch = require("torch", "export")
nn = torch.nn
F = torch.nn.functional

FEATURES_INPUTS = ("image", "class_index")
FEATURES_OUTPUTS = ("logits", "activations", "gradients", "class_index")
SCORES_INPUTS = ("image", "masks", "image_index", "class_index")
SCORES_OUTPUTS = ("probs",)


class FeaturesGraph(nn.Module):
    """Forward to the logits plus the explicit backward of the head."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.head_grad = HeadWithGradient(model.head)

    def forward(self, image, class_index):
        acts = self.model.activations(image)
        logits, grads, resolved = self.head_grad(acts, class_index)
        return logits, acts, grads, resolved


class ScoresGraph(nn.Module):
    """``softmax(f(image[image_index] * up(masks)))[class_index]``; bilinear, align_corners=False."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.head = HeadWithGradient(model.head)
        self.size = tuple(model.spec.input_size)

    def forward(self, image, masks, image_index, class_index):
        up = F.interpolate(masks, size=self.size, mode="bilinear", align_corners=False)
        up = up.reshape(-1, 1, *self.size)  # static H, W for ONNX shape inference
        logits = self.head.logits(self.model.activations(image.index_select(0, image_index) * up))
        probs = F.softmax(logits, dim=1)
        return probs.gather(1, class_index.unsqueeze(1)).squeeze(1)
