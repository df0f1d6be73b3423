"""An independent, deliberately plain implementation of the UnionCAM method statement
(``shared/design/unioncam-method.md``) in torch, one image and one channel at a time.

It shares nothing with ``unioncam_rt.method`` or the runtime: its own forward hook on the
target module, torch autograd for gradients, ``torch.quantile`` (linear, numpy's rule)
for the percentile, ``F.interpolate`` for upsampling. Tests compare the package against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _minmax(x):
    lo, hi = x.min(), x.max()
    return torch.zeros_like(x) if hi == lo else (x - lo) / (hi - lo)


def logits_and_leaf_activations(model, x):
    """Run ``model.net(model.normalize(x))`` with the target module's output replaced by a
    leaf tensor that requires grad; return (logits, that leaf)."""
    target = dict(model.net.named_modules())[model.target_layer]
    seen = []

    def hook(module, inputs, output):
        leaf = output.detach().requires_grad_(True)
        seen.append(leaf)
        return leaf

    handle = target.register_forward_hook(hook)
    try:
        logits = model.net(model.normalize(x))
    finally:
        handle.remove()
    assert len(seen) == 1
    return logits, seen[0]


def unioncam_one(model, image, theta: float = 10.0, target: int | None = None):
    """UnionCAM for one ``[3, H, W]`` image in [0, 1]; ``model`` has ``net``,
    ``normalize`` and ``target_layer`` (a module name of ``net``)."""
    x = image[None].float()
    size = x.shape[-2:]
    logits, acts = logits_and_leaf_activations(model, x)
    c = int(logits.argmax()) if target is None else target
    logits[0, c].backward()
    A, W = acts.detach()[0].double(), acts.grad[0].double()

    def prob(inp):
        with torch.no_grad():
            return float(F.softmax(model(inp.float()), dim=1)[0, c])

    def up(m):
        return F.interpolate(m[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]

    p_black = prob(torch.zeros_like(x))

    def score(L):
        return prob(x * up(_minmax(L))) - p_black

    # AMD
    denoise = torch.zeros_like(A[0])
    for k in range(A.shape[0]):
        t = torch.quantile(W[k].flatten(), theta / 100.0)
        kept = torch.where(W[k] >= t, W[k], torch.zeros_like(W[k]))
        n = int((kept > 0).sum())
        alpha = kept.clamp(min=0) / max(n, 1)
        denoise += alpha * A[k]
    denoise = denoise.clamp(min=0)
    # Region (Score-CAM)
    region = torch.zeros_like(A[0])
    passes = 0
    for k in range(A.shape[0]):
        if A[k].max() == A[k].min():
            continue
        passes += 1
        region += prob(x * up(_minmax(A[k]))) * A[k]
    region = region.clamp(min=0)
    beta_d, beta_r = score(denoise), score(region)
    b_d, b_r = max(beta_d, 0.0), max(beta_r, 0.0)
    if b_d == 0 and b_r == 0:
        b_d = b_r = 1.0
    fused = _minmax(b_d * _minmax(denoise) + b_r * _minmax(region))
    beta_f = score(fused)
    chosen, branch = (fused, "fused") if beta_f > beta_r else (region, "region")
    cam = _minmax(F.interpolate(chosen[None, None], size=size, mode="bilinear", align_corners=False)[0, 0])
    return {
        "cam": cam.numpy(), "class_index": c, "branch": branch, "beta_denoise": beta_d,
        "beta_region": beta_r, "beta_fused": beta_f, "region_passes": passes,
        "denoise_map": denoise.numpy(), "region_map": region.numpy(),
    }
