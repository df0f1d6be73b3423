"""The head's backward pass written with ordinary forward operators.

ONNX cannot hold an autograd call, so ``d logit[c] / d A`` is computed explicitly: the
head is run layer by layer keeping each layer's input, then a backward rule per layer
type takes the gradient from the logits back to the target-layer activations ``A``.

Every rule uses only operators TensorRT's ONNX parser takes (MatMul, Mul, Greater/Less,
Where, Reshape, Transpose, ReduceMax, Equal, Cast): no MaxUnpool, no MaxPool ``Indices``.

Supported head layers: Linear, ReLU, ReLU6/Hardtanh, Dropout (eval), Identity, Flatten,
AdaptiveAvgPool2d and non-overlapping MaxPool2d (kernel == stride, no padding/dilation).
"""

from __future__ import annotations

from ..errors import UnionCamError, require

torch = require("torch", "export")
nn = torch.nn
F = torch.nn.functional


class UnsupportedLayerError(UnionCamError):
    """A head layer has no backward rule."""


def _linear(layer, x, g):
    return g @ layer.weight


def _relu(layer, x, g):
    return g * (x > 0).to(g.dtype)


def _hardtanh(layer, x, g):
    # autograd passes the gradient strictly inside (min_val, max_val), as hardtanh_backward
    return g * ((x > layer.min_val) & (x < layer.max_val)).to(g.dtype)


def _identity(layer, x, g):
    return g


def _flatten(layer, x, g):
    return g.reshape(x.shape)


def _pool_matrix(size: int, out: int, dtype) -> "torch.Tensor":
    """``[out, size]`` averaging weights of adaptive pooling along one axis."""
    matrix = torch.zeros(out, size, dtype=dtype)
    for i in range(out):
        start, stop = (i * size) // out, -(-((i + 1) * size) // out)
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix


def _adaptive_avg_pool_forward(layer, x):
    """Adaptive average pooling as two MatMuls with constant weights (traces to plain
    MatMul, with no need for ONNX shape inference to know the input size)."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    out_h, out_w = _pair(layer.output_size)
    out_h, out_w = out_h or height, out_w or width
    rows = _pool_matrix(height, out_h, x.dtype)  # [oh, H]
    cols = _pool_matrix(width, out_w, x.dtype).t().contiguous()  # [W, ow]
    return torch.matmul(torch.matmul(rows, x), cols)


def _adaptive_avg_pool(layer, x, g):
    height, width = int(x.shape[-2]), int(x.shape[-1])
    out_h, out_w = int(g.shape[-2]), int(g.shape[-1])
    rows = _pool_matrix(height, out_h, g.dtype).t().contiguous()  # [H, oh]
    cols = _pool_matrix(width, out_w, g.dtype)  # [ow, W]
    return torch.matmul(torch.matmul(rows, g), cols)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _check_maxpool(layer) -> None:
    kernel, stride = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size)
    if kernel != stride or _pair(layer.padding) != (0, 0) or _pair(layer.dilation) != (1, 1) or layer.ceil_mode:
        raise UnsupportedLayerError(
            f"MaxPool2d(kernel={layer.kernel_size}, stride={layer.stride}, padding={layer.padding}, "
            f"dilation={layer.dilation}, ceil_mode={layer.ceil_mode}) in the head: only non-overlapping "
            "max pooling (kernel == stride, no padding, dilation 1, floor mode) has a backward rule"
        )


def _maxpool(layer, x, g):
    """Route each window's gradient to the first maximum in row-major order, like autograd.

    Ties are common (all-zero windows after ReLU); a plain ``x == max`` mask would send the
    gradient to every tied element. Here ``first = equal AND (number of earlier equal
    elements == 0)``, the count taken with a strictly-upper-triangular MatMul.
    """
    kh, kw = _pair(layer.kernel_size)
    batch, channels, height, width = x.shape
    out_h, out_w = int(height) // kh, int(width) // kw
    used = x[:, :, : out_h * kh, : out_w * kw]
    windows = used.reshape(batch, channels, out_h, kh, out_w, kw).permute(0, 1, 2, 4, 3, 5)
    windows = windows.reshape(batch, channels, out_h, out_w, kh * kw)
    peak = windows.max(dim=-1, keepdim=True).values
    equal = (windows == peak).to(g.dtype)
    earlier = torch.triu(torch.ones(kh * kw, kh * kw, dtype=g.dtype), diagonal=1)  # [j, i] = 1 if j < i
    first = equal * (torch.matmul(equal, earlier) == 0).to(g.dtype)
    routed = first * g.unsqueeze(-1)
    routed = routed.reshape(batch, channels, out_h, out_w, kh, kw).permute(0, 1, 2, 4, 3, 5)
    routed = routed.reshape(batch, channels, out_h * kh, out_w * kw)
    pad_h, pad_w = int(height) - out_h * kh, int(width) - out_w * kw
    if pad_h or pad_w:
        routed = F.pad(routed, (0, pad_w, 0, pad_h))
    return routed


# layer type -> (forward without in-place side effects, backward rule)
RULES = {
    nn.Linear: (lambda layer, x: layer(x), _linear),
    nn.ReLU: (lambda layer, x: F.relu(x), _relu),
    nn.ReLU6: (lambda layer, x: F.hardtanh(x, 0.0, 6.0), _hardtanh),
    nn.Hardtanh: (lambda layer, x: F.hardtanh(x, layer.min_val, layer.max_val), _hardtanh),
    nn.Dropout: (lambda layer, x: x, _identity),
    nn.Identity: (lambda layer, x: x, _identity),
    nn.Flatten: (lambda layer, x: layer(x), _flatten),
    nn.AdaptiveAvgPool2d: (_adaptive_avg_pool_forward, _adaptive_avg_pool),
    nn.MaxPool2d: (lambda layer, x: layer(x), _maxpool),
}


def head_layers(head: nn.Module, prefix: str = "head") -> list[tuple[str, nn.Module]]:
    """The head's leaf layers in order (nested Sequentials flattened), each checked."""
    if isinstance(head, nn.Sequential):
        found = []
        for name, child in head.named_children():
            found.extend(head_layers(child, f"{prefix}.{name}"))
        return found
    if type(head) not in RULES:
        supported = ", ".join(t.__name__ for t in RULES)
        raise UnsupportedLayerError(
            f"head layer {prefix} ({type(head).__name__}) has no backward rule; supported: {supported}"
        )
    if isinstance(head, nn.Flatten) and head.end_dim != -1:
        raise UnsupportedLayerError(f"head layer {prefix}: Flatten must flatten to the last dimension")
    if isinstance(head, nn.MaxPool2d):
        try:
            _check_maxpool(head)
        except UnsupportedLayerError as exc:
            raise UnsupportedLayerError(f"head layer {prefix}: {exc}") from None
    return [(prefix, head)]


class HeadWithGradient(nn.Module):
    """``(A, class_index) -> (logits, d logit[class] / d A, resolved class)`` in plain ops.

    ``class_index`` -1 means the top-1 prediction. Dropout acts as in eval mode.
    """

    def __init__(self, head: nn.Module):
        super().__init__()
        named = head_layers(head)
        self.names = [name for name, _ in named]
        self.layers = nn.ModuleList(layer for _, layer in named)

    def run_layers(self, acts) -> tuple["torch.Tensor", list]:
        """Logits and the input of every layer."""
        inputs = []
        x = acts
        for layer in self.layers:
            inputs.append(x)
            x = RULES[type(layer)][0](layer, x)
        return x, inputs

    def logits(self, acts):
        """The head's forward pass alone, with the same operators as in ``forward``."""
        return self.run_layers(acts)[0]

    def forward(self, acts, class_index):
        logits, inputs = self.run_layers(acts)
        resolved = torch.where(class_index < 0, logits.argmax(dim=1), class_index)
        classes = torch.arange(logits.shape[1], device=logits.device)
        grad = (classes.unsqueeze(0) == resolved.unsqueeze(1)).to(logits.dtype)
        for layer, x_in in zip(reversed(self.layers), reversed(inputs)):
            grad = RULES[type(layer)][1](layer, x_in, grad)
        return logits, grad, resolved
