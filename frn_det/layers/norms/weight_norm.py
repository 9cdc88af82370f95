"""Weight Normalization (Salimans & Kingma, NeurIPS 2016, arXiv 1602.07868), the "WN" norm
string: the convs (and FCs) a norm would follow are reparametrized as

    W = g * V / ||V||       per output channel (norm over the fan-in)

and no activation is normalized. The norm slot holds `WNBias2d`, the per-channel bias
y = x + b (Detectron2 builds convs without a bias where a norm follows; WN's layer
y = W x + b has one). The reparametrization is PyTorch's
torch.nn.utils.parametrizations.weight_norm (dim 0): parameters
`parametrizations.weight.original0` (g) and `original1` (V), g initialized to ||V||, so the
initial W is the conv's own (Detectron2's init). The paper's data-dependent init of g and b
is not done (no public code to follow; PyTorch's choice). RetinaNet's head computes each W
once per forward for all levels (torch.nn.utils.parametrize.cached).
"""
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["WNBias2d", "weight_normalize_layers"]


class WNBias2d(nn.Module):
    """The bias of a weight-normalized layer: y = x + bias (per channel, init 0)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype)

    def extra_repr(self) -> str:
        return str(self.num_features)


def weight_normalize_layers(modules: Iterable[nn.Module]) -> int:
    """Weight-normalize (in place) the convs and FCs followed by a WNBias2d
    (normalized_layers); already normalized ones are left as they are. Returns how many."""
    from .normalized_layers import normalized_layers

    pairs = normalized_layers(modules, WNBias2d)
    for layer, _ in pairs:
        if not parametrize.is_parametrized(layer, "weight"):
            weight_norm(layer, name="weight", dim=0)
    return len(pairs)
