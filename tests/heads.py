"""Tiny seeded classifiers whose heads (after the target layer ``features``) hold every
operator family the export must differentiate, transformer heads included (attention as
a MatMul of two activations, scaled Softmax, LayerNorm over the last axis, GELU, class
and prefix tokens by Gather/Slice, a mean over tokens, Swin's rolled window partition).
Each builder returns an ``nn.Module`` taking normalised ``[B, 3, 16, 16]`` input; the
target ``features`` outputs ``[B, 8, 8, 8]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLASSES = 5


class Classifier(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = head

    def forward(self, x):
        return self.head(self.features(x))


class Lambda(nn.Module):
    """A head whose forward is arbitrary code around a few parameterised layers."""

    def __init__(self, fn, **layers):
        super().__init__()
        self.fn = fn
        for name, layer in layers.items():
            setattr(self, name, layer)

    def forward(self, x):
        return self.fn(self, x)


def _randomise_norms(module: nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def _attention_pool(m, x):
    tokens = x.flatten(2).transpose(1, 2)  # [B, 64, 8]
    weights = torch.softmax(tokens @ m.query, dim=1)  # [B, 64]
    pooled = (weights.unsqueeze(-1) * tokens).sum(dim=1)
    return m.fc(pooled)


def _residual_mlp(m, x):
    h = x.mean(dim=(2, 3))
    h = h + F.relu(m.fc1(h))
    gate = torch.sigmoid(m.gate(h))
    return m.fc2(h * gate - h / 4)


def _reshape_matmul(m, x):
    b = x.shape[0]
    t = x.reshape(b, 8, 64).transpose(1, 2)  # [B, 64, 8]
    t = torch.matmul(t, m.weight)  # [B, 64, 6]
    return m.fc(t.mean(dim=1).unsqueeze(1).squeeze(1))


def _concat_pools(m, x):
    avg = F.adaptive_avg_pool2d(x, 1).flatten(1)
    top = F.adaptive_max_pool2d(x, 1).flatten(1)
    return m.fc(torch.cat([avg, top], dim=1))


def _pad_slice(m, x):
    x = F.pad(x, (1, 1, 2, 0))[:, :, 1:9, 0:9]
    return m.fc(m.conv(x).flatten(1))


def _clamp_sum_tanh(m, x):
    x = torch.clamp(x, 0.0, 0.8) * 2.0
    return m.fc(torch.tanh(x.sum(dim=(2, 3)) / 16.0))


def _amax(m, x):
    return m.fc(torch.amax(x, dim=(2, 3)))


def _tokens(x):
    return x.flatten(2).transpose(1, 2)  # [B, 64, 8]: the map's positions as tokens


def _attention(m, t, heads=2):
    """Multi-head self-attention as timm writes it by hand: qkv, reshape, permute, unbind,
    ``softmax(q k^T * scale) v`` (a MatMul of two activations twice)."""
    b, n, c = t.shape
    qkv = m.qkv(t).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    attn = (q @ k.transpose(-2, -1)) * (c // heads) ** -0.5
    return m.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))


def _vit_class_token(m, x):
    """A ViT block after a class token: LayerNorm, attention, GELU MLP, residuals, then
    the class token alone (``x[:, 0]``: Gather) to the classifier."""
    t = _tokens(x)
    t = torch.cat([m.cls.expand(t.shape[0], -1, -1), t], dim=1) + m.pos
    t = t + _attention(m, m.norm1(t))
    t = t + m.fc2(F.gelu(m.fc1(m.norm2(t))))
    return m.fc(m.norm(t)[:, 0])


def _sdpa_token_mean(m, x):
    """``F.scaled_dot_product_attention`` (timm's fused path), a mean over tokens, and tokens
    picked by constant indices with a repeat and a negative one (Gather)."""
    t = m.norm1(_tokens(x))
    b, n, c = t.shape
    q, k, v = m.qkv(t).reshape(b, n, 3, 2, c // 2).permute(2, 0, 3, 1, 4).unbind(0)
    t = t + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
    h = F.gelu(m.norm2(t))
    return m.fc(h.mean(dim=1) + h[:, [0, 0, -1]].sum(dim=1))


def _class_token_slice(m, x):
    """Distilled-style prefix: two tokens prepended, the head reads ``t[:, :2]`` (Slice) of a
    LayerNorm over the last axis, after tanh-approximated GELU."""
    t = torch.cat([m.prefix.expand(x.shape[0], -1, -1), _tokens(x)], dim=1)
    t = t + m.mix(F.gelu(m.norm1(t), approximate="tanh").transpose(1, 2)).transpose(1, 2)
    head = m.norm2(t)[:, :2]
    return (m.fc(head[:, 0]) + m.fc_dist(head[:, 1])) / 2


def _swin_window_attention(m, x, window=4, shift=2):
    """A shifted-window Swin block on the channels-last map: roll, window partition
    (reshape/permute), attention with a relative-position bias gathered from a table,
    window reverse, roll back, residual, LayerNorm, mean over positions."""
    h = x.permute(0, 2, 3, 1)  # [B, 8, 8, 8] channels-last
    b, height, width, c = h.shape
    s = torch.roll(m.norm1(h), shifts=(-shift, -shift), dims=(1, 2))
    s = s.view(b, height // window, window, width // window, window, c).permute(0, 1, 3, 2, 4, 5)
    s = s.reshape(-1, window * window, c)  # [B * 4 windows, 16, C]
    n = s.shape[1]
    qkv = m.qkv(s).reshape(-1, n, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = m.table[m.index.view(-1)].view(n, n, 2).permute(2, 0, 1)
    attn = ((q * (c // 2) ** -0.5) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
    s = m.proj((attn @ v).transpose(1, 2).reshape(-1, n, c))
    s = s.view(b, height // window, width // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    s = torch.roll(s.reshape(b, height, width, c), shifts=(shift, shift), dims=(1, 2))
    h = h + s
    return m.fc(m.norm2(h).mean(dim=(1, 2)))


def _relative_index(window=4):
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


HEADS = {
    "bn2d_conv1x1_relu6_gap": lambda: nn.Sequential(
        nn.BatchNorm2d(8), nn.Conv2d(8, 12, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, CLASSES)),
    "conv3x3_overlapping_maxpool": lambda: nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(),
        nn.Linear(8 * 4 * 4, CLASSES)),
    "strided_dilated_grouped_conv": lambda: nn.Sequential(
        nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=4), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 4 * 4, CLASSES)),
    "maxpool_ceil_and_dilation": lambda: nn.Sequential(
        nn.MaxPool2d(3, stride=2, ceil_mode=True), nn.MaxPool2d(2, stride=1, dilation=2), nn.Flatten(),
        nn.Linear(8 * 2 * 2, CLASSES)),
    "avgpool_padding_ceil": lambda: nn.Sequential(
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), nn.AvgPool2d(2, ceil_mode=True),
        nn.Flatten(), nn.Linear(8 * 2 * 2, CLASSES)),
    "vgg_like_maxpool_adaptive_avgpool_mlp": lambda: nn.Sequential(
        nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(16, CLASSES)),
    "gap_bn1d_gelu_mlp": lambda: nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.BatchNorm1d(16), nn.GELU(), nn.Linear(16, CLASSES)),
    "silu_hardswish_sigmoid_tanh_gelu_tanh": lambda: nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.SiLU(), nn.Linear(16, 16), nn.Hardswish(),
        nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.GELU(approximate="tanh"),
        nn.Linear(16, CLASSES)),
    "layernorm_leakyrelu_hardsigmoid": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(512, 24), nn.LayerNorm(24), nn.LeakyReLU(0.1), nn.Linear(24, 16), nn.Hardsigmoid(),
        nn.Linear(16, CLASSES)),
    "dropout_identity_flatten": lambda: nn.Sequential(
        nn.Dropout(0.3), nn.Identity(), nn.Flatten(), nn.Linear(512, CLASSES)),
    "residual_mlp_add_mul_div": lambda: Lambda(_residual_mlp, fc1=nn.Linear(8, 8), gate=nn.Linear(8, 8),
                                               fc2=nn.Linear(8, CLASSES)),
    "reshape_transpose_matmul_reducemean_squeeze": lambda: Lambda(
        _reshape_matmul, weight=nn.Parameter(torch.randn(8, 6)), fc=nn.Linear(6, CLASSES)),
    "softmax_attention_pooling": lambda: Lambda(_attention_pool, query=nn.Parameter(torch.randn(8)),
                                                fc=nn.Linear(8, CLASSES)),
    "concat_avg_and_max_pools": lambda: Lambda(_concat_pools, fc=nn.Linear(16, CLASSES)),
    "pad_slice_conv": lambda: Lambda(_pad_slice, conv=nn.Conv2d(8, 4, 3, stride=2), fc=nn.Linear(4 * 3 * 4, CLASSES)),
    "clamp_reducesum_tanh": lambda: Lambda(_clamp_sum_tanh, fc=nn.Linear(8, CLASSES)),
    "reducemax": lambda: Lambda(_amax, fc=nn.Linear(8, CLASSES)),
    "vit_attention_layernorm_gelu_class_token": lambda: Lambda(
        _vit_class_token, cls=nn.Parameter(torch.randn(1, 1, 8)), pos=nn.Parameter(torch.randn(1, 65, 8) * 0.1),
        norm1=nn.LayerNorm(8), qkv=nn.Linear(8, 24), proj=nn.Linear(8, 8), norm2=nn.LayerNorm(8), fc1=nn.Linear(8, 16),
        fc2=nn.Linear(16, 8), norm=nn.LayerNorm(8), fc=nn.Linear(8, CLASSES)),
    "sdpa_attention_token_mean": lambda: Lambda(
        _sdpa_token_mean, norm1=nn.LayerNorm(8), qkv=nn.Linear(8, 24), norm2=nn.LayerNorm(8), fc=nn.Linear(8, CLASSES)),
    "prefix_tokens_slice_tanh_gelu": lambda: Lambda(
        _class_token_slice, prefix=nn.Parameter(torch.randn(1, 2, 8)), norm1=nn.LayerNorm(8), mix=nn.Linear(66, 66),
        norm2=nn.LayerNorm(8), fc=nn.Linear(8, CLASSES), fc_dist=nn.Linear(8, CLASSES)),
    "swin_shifted_window_attention": lambda: _swin_head(),
}


def _swin_head() -> nn.Module:
    head = Lambda(_swin_window_attention, norm1=nn.LayerNorm(8), qkv=nn.Linear(8, 24), proj=nn.Linear(8, 8),
                  table=nn.Parameter(torch.randn(49, 2) * 0.5), norm2=nn.LayerNorm(8), fc=nn.Linear(8, CLASSES))
    head.register_buffer("index", _relative_index())
    return head


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = Classifier(HEADS[name]())
    _randomise_norms(net)
    return net.eval()


class WithFeatures(nn.Module):
    """``x -> (logits, features)``: exported to ONNX, the features output names the target tensor."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.eval()  # exported in eval mode, as the wrapped net (no training-mode export warning)

    def forward(self, x):
        features = self.net.features(x)
        return self.net.head(features), features
