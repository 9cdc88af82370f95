"""Moving Average Batch Normalization (Yan, Wan, Zhang, Zhang, Wei & Sun, ICLR 2020,
arXiv 2001.06838; public code megvii-model/MABN, MABN.py), with weight centralization of
the layer before it (WCConv2d / WCLinear: W - mean(W) per output channel, the code's
CenConv2d).

The features are not centered (the centralized weights keep their mean near 0): only the
quadratic mean psi = mean(x^2) over N, H, W is estimated, per channel. Training at
iteration t (counted from 1; B = `buffer_size`, the code's real_B / B):

    psi_t = mean(x^2);  psi = psi_t during the warm-up (t <= B or t < warmup_iters),
                        else the simple moving average of the last B psi_t (SMAS)
    z = x / sqrt(psi + eps)
    r = sqrt(psi + eps) / sqrt(running_var + eps), clipped to [1/r_max, r_max]; r = 1 up
        to iteration max(renorm_start, warmup_iters) (the code's renormalization to the
        exponential moving average, no gradient)
    y = weight * r * z + bias
    running_var <- (1 - momentum) running_var + momentum psi   (EMAS; momentum 0.02 here
        is the code's 0.98 written as BatchNorm writes it)

Backward (the paper's moving-average statistic of the backward pass), g = dy * weight * r:

    g_psi_t = mean(g * z);  g_psi = g_psi_t during the warm-up, else the SMA of the last B
    dx = (g - z * g_psi) / sqrt(psi + eps)
    dweight = sum(dy * r * z),  dbias = sum(dy)

During the warm-up with r = 1 this is the exact gradient of y = weight x / sqrt(mean(x^2)
+ eps) + bias. Eval: y = weight * x / sqrt(running_var + eps) + bias (BN's speed).
Defaults are the code's detection ones: B = 16 (real_B 32 over 2 images per GPU),
warmup_iters 100, renorm_start 1000, r_max 5, eps 1e-5. The ring buffers and the counter
are buffers (saved in checkpoints). An empty batch (an ROI head without ROIs) is
normalized as in eval and changes nothing.

Cost: a Python autograd function with a mean(x^2) pass, one pass forward and two backward
(measured: docs/performance.md, "Comparator norms on CPU"); a fused C++ kernel would match BN.
"""
from typing import Iterable

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from torch import nn

from .weight_std import WSConv2d

__all__ = ["MABN2d", "centralize_weight", "WCConv2d", "WCLinear", "centralize_layers"]

_SHAPE = (1, -1, 1, 1)


def _channel_mean(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=(0, 2, 3))


def _mabn_backward(ctx, dy):
    """dx = (g - z g_psi) / sqrt(psi + eps) with g = dy weight r and z = x / sqrt(psi + eps),
    written per channel as dx = a dy - b x (two passes; z is not stored)."""
    x, inv, r, weight, buffer_gz = ctx.saved_tensors
    wr = r if weight is None else weight * r
    count = x.numel() // x.shape[1]
    dyx = (dy * x).sum(dim=(0, 2, 3))
    gz = wr * inv * dyx / max(count, 1)  # mean(g z) per channel
    with torch.no_grad():
        buffer_gz[ctx.slot].copy_(gz)
        mean_gz = buffer_gz.mean(dim=0).to(dy.dtype) if ctx.use_sma else gz
    dx = None
    if ctx.needs_input_grad[0]:
        dx = torch.addcmul(dy * (wr * inv).view(_SHAPE), x, (-mean_gz * inv * inv).view(_SHAPE))
    dweight = dyx * inv * r if weight is not None and ctx.needs_input_grad[1] else None
    dbias = dy.sum(dim=(0, 2, 3)) if ctx.needs_input_grad[2] else None
    return dx, dweight, dbias, None, None, None, None, None, None


class _MABNFunction(torch.autograd.Function):
    """y = x * (weight r / sqrt(psi + eps)) + bias in one pass; saves x and per-channel vectors."""

    @staticmethod
    def forward(ctx, x, weight, bias, psi, r, buffer_gz, slot: int, use_sma: bool, eps: float):
        inv = torch.rsqrt(psi + eps)
        scale = inv * r if weight is None else inv * r * weight
        y = x * scale.view(_SHAPE) if bias is None else torch.addcmul(bias.view(_SHAPE), x, scale.view(_SHAPE))
        ctx.save_for_backward(x, inv, r, weight, buffer_gz)
        ctx.slot, ctx.use_sma = slot, use_sma
        return y

    @staticmethod
    def backward(ctx, dy):
        return _mabn_backward(ctx, dy)


class MABN2d(nn.Module):
    """MABN over NCHW tensors (see the module docstring). `affine=False` drops weight and
    bias (RetinaNet's per-level lists share one affine)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.02, affine: bool = True,
                 buffer_size: int = 16, warmup_iters: int = 100, renorm_start: int = 1000, r_max: float = 5.0):
        super().__init__()
        if buffer_size < 1 or warmup_iters < 0 or renorm_start < 0 or not r_max >= 1.0:
            raise ValueError(f"MABN2d needs buffer_size >= 1, warmup_iters >= 0, renorm_start >= 0, r_max >= 1; got "
                             f"{buffer_size}, {warmup_iters}, {renorm_start}, {r_max}")
        if not 0.0 < momentum <= 1.0 or not eps > 0:
            raise ValueError(f"MABN2d needs 0 < momentum <= 1 and eps > 0, got {momentum}, {eps}")
        self.num_features, self.eps, self.momentum = num_features, float(eps), float(momentum)
        self.buffer_size, self.warmup_iters = int(buffer_size), int(warmup_iters)
        self.renorm_start, self.r_max = int(renorm_start), float(r_max)
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.register_buffer("buffer_x2", torch.zeros(buffer_size, num_features))
        self.register_buffer("buffer_gz", torch.zeros(buffer_size, num_features))

    def _eval(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(self.running_var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        y = x * scale.view(_SHAPE).to(x.dtype)
        return y if self.bias is None else y + self.bias.view(_SHAPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"MABN2d expects NCHW input, got shape {list(x.shape)}")
        if not self.training or x.numel() == 0:
            return self._eval(x)
        self.num_batches_tracked.add_(1)
        t = int(self.num_batches_tracked)
        slot = t % self.buffer_size
        use_sma = not (t <= self.buffer_size or t < self.warmup_iters)
        with torch.no_grad():
            self.buffer_x2[slot].copy_(_channel_mean(x.detach() * x.detach()))
            psi = self.buffer_x2.mean(dim=0) if use_sma else self.buffer_x2[slot].clone()
            if t <= max(self.renorm_start, self.warmup_iters):
                r = torch.ones_like(psi)
            else:
                r = (torch.sqrt(psi + self.eps) / torch.sqrt(self.running_var + self.eps)).clamp_(
                    1.0 / self.r_max, self.r_max)
            self.running_var.lerp_(psi, self.momentum)
        psi, r = psi.to(x.dtype), r.to(x.dtype)
        return _MABNFunction.apply(x, self.weight, self.bias, psi, r, self.buffer_gz, slot, use_sma, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.weight is not None}, "
                f"buffer_size={self.buffer_size}, warmup_iters={self.warmup_iters}, "
                f"renorm_start={self.renorm_start}, r_max={self.r_max}")


def centralize_weight(weight: torch.Tensor) -> torch.Tensor:
    """W - mean(W) per output channel (dim 0), over its fan-in (the code's CenConv2d)."""
    return weight - weight.reshape(weight.shape[0], -1).mean(dim=1).view(-1, *([1] * (weight.dim() - 1)))


class WCConv2d(WSConv2d):
    """Detectron2's Conv2d with a centralized weight (WSConv2d's machinery: computed at each
    forward, once per `standardized_once` block, kept without autograd; the parameter stays
    the raw W, state_dict unchanged)."""

    def transform_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return centralize_weight(weight)

    def extra_repr(self) -> str:
        return Conv2d.extra_repr(self) + ", centralized"


class WCLinear(nn.Linear):
    """nn.Linear with a centralized weight (MABN after an FC layer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, centralize_weight(self.weight), self.bias)


def centralize_layers(modules: Iterable[nn.Module]) -> int:
    """Make the convs and FCs that an MABN2d normalizes (normalized_layers) centralize their
    weights, in place (the same objects, state_dict unchanged); returns how many."""
    from .normalized_layers import normalized_layers

    pairs = normalized_layers(modules, MABN2d)
    for layer, _ in pairs:
        if type(layer) in (nn.Conv2d, Conv2d):
            if type(layer) is nn.Conv2d:  # Detectron2 Conv2d's attributes
                layer.norm, layer.activation = None, None
            layer.__class__ = WCConv2d
            layer.ws_eps = 0.0
        elif type(layer) is nn.Linear:
            layer.__class__ = WCLinear
        elif not isinstance(layer, (WCConv2d, WCLinear)):
            raise TypeError(f"MABN's weight centralization converts nn.Conv2d, detectron2 Conv2d or nn.Linear, "
                            f"got {type(layer).__name__}")
    return len(pairs)
