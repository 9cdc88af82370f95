"""Weight Standardization (Qiao et al. 2019, arXiv 1903.10520) for the convs that "GNWS"
normalizes with GroupNorm.

    W_hat[o] = (W[o] - mean(W[o])) / sqrt(var(W[o]) + eps)

per output channel o, over its in_channels/groups * kh * kw weights (biased variance, eps
inside the square root, as timm's StdConv2d; eps 1e-5 by default, MODEL.WS.EPS). The
standardization is differentiable (the gradient reaches W through it) and computed at every
forward, so the stored parameter stays the raw W: state_dict keys and shapes are those of
the plain conv.

WSConv2d is Detectron2's Conv2d (norm and activation after the conv) with a standardized
weight; `standardize_convs` turns the convs a GNWS norm follows into WSConv2d's in place.

Cost: WS is proportional to the weight (C_out x C_in x 3 x 3), not to the feature map: for
a 256-channel 3x3 conv about 2.5 ms forward+backward on one CPU thread, about the cost of
BN+ReLU on a 1x256x64x64 map and small next to the conv itself. RetinaNet's head runs its
convs on 5 levels but standardizes each weight once per forward (`standardized_once`);
without autograd (inference) W_hat is kept until the weight changes.
"""
import contextlib
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from torch import nn

__all__ = ["standardize_weight", "WSConv2d", "to_ws_conv", "standardize_convs", "standardized_once", "WSLinear",
           "to_ws_linear"]


def standardize_weight(weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(W - mean) / sqrt(var + eps) per output channel (dim 0), biased variance. One call of
    the batch-norm kernel on W viewed as (1, out_channels, fan_in), as timm's StdConv2d."""
    out = weight.shape[0]
    return F.batch_norm(weight.reshape(1, out, -1), None, None, training=True, momentum=0.0, eps=eps).reshape_as(weight)


class WSConv2d(Conv2d):
    """Detectron2's Conv2d with Weight Standardization (see the module docstring)."""

    _ws_cache: Optional[torch.Tensor] = None
    _ws_caching: bool = False
    _ws_frozen: Optional[tuple] = None  # (key of the weight's state, W_hat) without autograd

    def __init__(self, *args, ws_eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.ws_eps = float(ws_eps)

    def standardized_weight(self) -> torch.Tensor:
        """W_hat; computed once per `standardized_once` block (RetinaNet's head applies its
        convs to 5 levels), else at every call; without autograd (inference) once per
        value of the weight (kept until the weight changes: in-place updates and
        load_state_dict bump its version)."""
        w = self.weight
        if not (torch.is_grad_enabled() and w.requires_grad):
            key = (w._version, w.data_ptr(), w.dtype, w.device, self.ws_eps)
            if self._ws_frozen is None or self._ws_frozen[0] != key:
                with torch.no_grad():
                    self._ws_frozen = (key, self.transform_weight(w))
            return self._ws_frozen[1]
        if not self._ws_caching:
            return self.transform_weight(self.weight)
        if self._ws_cache is None:
            self._ws_cache = self.transform_weight(self.weight)
        return self._ws_cache

    def transform_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """W_hat from W (subclasses transform otherwise: MABN's WCConv2d centralizes)."""
        return standardize_weight(weight, self.ws_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ws_eps={self.ws_eps}"


def to_ws_conv(conv: nn.Conv2d, eps: float = 1e-5) -> WSConv2d:
    """Make `conv` (an nn.Conv2d or Detectron2 Conv2d) a WSConv2d in place and return it: the
    same object, parameters and submodules (so every reference to it, e.g. the FPN's
    lateral_convs list, sees the change), now standardizing its weight. No random numbers
    are drawn and the state_dict is unchanged."""
    if isinstance(conv, WSConv2d):
        conv.ws_eps = float(eps)
        return conv
    if type(conv) not in (nn.Conv2d, Conv2d):
        raise TypeError(f"Weight Standardization converts nn.Conv2d or detectron2 Conv2d, got {type(conv).__name__}")
    if conv.padding_mode != "zeros":
        raise ValueError(f"Weight Standardization supports padding_mode='zeros', got {conv.padding_mode!r}")
    if type(conv) is nn.Conv2d:  # Detectron2's Conv2d attributes, as Conv2d(norm=None, activation=None) has them
        conv.norm = None
        conv.activation = None
    conv.__class__ = WSConv2d
    conv.ws_eps = float(eps)
    return conv


class WSLinear(nn.Linear):
    """nn.Linear with Weight Standardization (per output feature), for a GNWS norm after an
    FC layer (the R-CNN box head with MODEL.ROI_BOX_HEAD.NORM_FCS)."""

    ws_eps: float = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, standardize_weight(self.weight, self.ws_eps), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ws_eps={self.ws_eps}"


def to_ws_linear(fc: nn.Linear, eps: float = 1e-5) -> WSLinear:
    """Make `fc` a WSLinear in place (same object and parameters, state_dict unchanged)."""
    if type(fc) not in (nn.Linear, WSLinear):
        raise TypeError(f"Weight Standardization converts nn.Linear, got {type(fc).__name__}")
    fc.__class__ = WSLinear
    fc.ws_eps = float(eps)
    return fc


def standardize_convs(modules: Iterable[nn.Module], eps: float = 1e-5) -> int:
    """Make WSConv2d's (in place, see to_ws_conv) of the convs that a norm follows, in each of
    `modules` (the modules themselves included): Detectron2 Conv2d's with a `norm`, and in
    nn.Sequential's (RetinaNet's subnets) an nn.Conv2d directly followed by a GroupNorm.
    Returns how many were converted."""
    targets = []
    for root in modules:
        for _, module in root.named_modules():
            if isinstance(module, Conv2d) and not isinstance(module, WSConv2d) and module.norm is not None:
                targets.append(module)
            if isinstance(module, nn.Sequential):
                for conv, follower in zip(list(module)[:-1], list(module)[1:]):
                    if type(conv) is nn.Conv2d and isinstance(follower, nn.GroupNorm):
                        targets.append(conv)
    unique = list({id(m): m for m in targets}.values())
    for conv in unique:
        to_ws_conv(conv, eps)
    return len(unique)


@contextlib.contextmanager
def standardized_once(convs: Iterable[WSConv2d]):
    """Within the block, each WSConv2d of `convs` standardizes its weight at its first call
    only and reuses W_hat (the same graph node: gradients from every use add up), e.g. for
    a head that runs the same convs on every FPN level."""
    convs = list(convs)
    for conv in convs:
        conv._ws_caching, conv._ws_cache = True, None
    try:
        yield
    finally:
        for conv in convs:
            conv._ws_caching, conv._ws_cache = False, None
