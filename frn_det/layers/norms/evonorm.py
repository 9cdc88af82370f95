"""EvoNorm-B0 and EvoNorm-S0 (Liu, Brock, Simonyan & Le, NeurIPS 2020, arXiv 2004.02967):
normalization-activation layers. Like FRN+TLU they replace the norm *and* the ReLU after it.

    S0: z = weight * x * sigmoid(v x) / sqrt(group_var(x) + eps) + bias
        group_var per sample over the C/groups channels of a group and H, W: no batch
        statistics, the output for a sample does not depend on the rest of the batch.
    B0: z = weight * x / max(sqrt(batch_var(x) + eps), v x + sqrt(instance_var(x) + eps)) + bias
        batch_var per channel over N, H, W in training (gradient through it, like BN; the
        moving average running_var is updated with its unbiased value, momentum 0.1) and
        running_var in eval; instance_var per sample and channel over H, W.

Variances are biased (divide by the count). weight, bias and v are per-channel (init 1, 0,
1). With apply_act=False (where no activation follows: before a residual add, in the FPN)
the layer is the reference's "linear" EvoNorm, the affine weight * x + bias alone, as in the
authors' TensorFlow code and timm (`apply_act=False`). Parameter and buffer names follow
timm's EvoNorm2dB0 / EvoNorm2dS0 (weight, bias, v, running_var), whose formulas these are:
timm state_dicts load.

Implementations (`impl`): "reference" is the formula op by op (autograd keeps its
intermediates; what timm computes). "auto" runs the fused C++ CPU kernels
(layers/csrc/evonorm_cpu.cpp: two passes over the tensor per direction, sigmoid recomputed
in the backward instead of stored; saved for the backward: x and per-(n, group) or per-
(n, c) statistics) for CPU inputs when the kernels build, and the reference elsewhere
(CUDA, channels_last, TorchScript). What each costs next to BN+ReLU: docs/performance.md
("Comparator norms on CPU"); on small maps the Python autograd.Function and B0's
running-variance update are a fixed cost per call, which an autograd kernel in C++ (as the
FRN op has) would remove.

Gradients (derived for the kernels; per sample n, channel c, the M = H*W positions of a
plane, dz the upstream gradient, g = weight * dz):

    S0 (group of K = C/groups * M elements, s = 1/sqrt(var + eps), u = sigmoid(v x)):
      dx = g s u (1 + v x (1 - u)) - (sum_{group} g x u) s^3 (x - mean) / K
      dweight = sum dz x u s,  dv = sum g s x^2 u (1 - u),  dbias = sum dz
    B0 (den = max(left, right), left = sqrt(var_c + eps), right = v x + istd,
        istd = sqrt(ivar_nc + eps), q = -g x / den^2):
      dx = g / den + [den = right] q v
           + (sum_{n, i: den = left} q) (x - mean_c) / (left N M)      (training only)
           + (sum_{i: den = right} q) (x - imean_nc) / (istd_nc M)
      dweight = sum dz x / den,  dv = sum_{den = right} q x,  dbias = sum dz
    At a tie left == right the gradient takes the left branch (torch.maximum splits it).
"""
from typing import Optional

import torch
from torch import nn

from .. import cpu_ops, implementations
from ..autograd_utils import needs_graph, once_differentiable_backward

__all__ = [
    "EvoNorm2dB0",
    "EvoNorm2dS0",
    "evonorm_b0_reference",
    "evonorm_s0_reference",
    "EVONORM_IMPLS",
]

EVONORM_IMPLS = ("auto", "reference")
_SHAPE = (1, -1, 1, 1)


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def evonorm_s0_reference(x, weight, bias, v, groups: int, eps: float) -> torch.Tensor:
    """EvoNorm-S0 op by op (float32 math for bf16/fp16 input)."""
    n, c, h, w = x.shape
    xf = x.to(_acc(x))
    var = xf.view(n, groups, (c // groups) * h * w).var(dim=2, unbiased=False, keepdim=True)
    std = (var + eps).sqrt().view(n, groups, 1, 1, 1)
    y = (xf * torch.sigmoid(v.to(xf.dtype).view(_SHAPE) * xf)).view(n, groups, c // groups, h, w) / std
    return (y.view(n, c, h, w) * weight.to(xf.dtype).view(_SHAPE) + bias.to(xf.dtype).view(_SHAPE)).to(x.dtype)


def evonorm_b0_reference(x, weight, bias, v, var, eps: float) -> torch.Tensor:
    """EvoNorm-B0 op by op; `var` is the per-channel variance of the left branch (the batch
    variance, with its graph, in training; running_var in eval)."""
    xf = x.to(_acc(x))
    left = (var.to(xf.dtype) + eps).sqrt().view(_SHAPE)
    istd = (xf.var(dim=(2, 3), unbiased=False, keepdim=True) + eps).sqrt()
    right = v.to(xf.dtype).view(_SHAPE) * xf + istd
    y = xf / torch.maximum(left, right)
    return (y * weight.to(xf.dtype).view(_SHAPE) + bias.to(xf.dtype).view(_SHAPE)).to(x.dtype)


def _affine(x, weight, bias) -> torch.Tensor:
    return torch.addcmul(bias.to(x.dtype).view(_SHAPE), x, weight.to(x.dtype).view(_SHAPE))


def _grads(ctx, dx, dw, db, dv):
    need_x, need_w, need_b, need_v = ctx.needs_input_grad[:4]
    return dx if need_x else None, dw if need_w else None, db if need_b else None, dv if need_v else None, None, None


def _s0_backward(ctx, dz):
    x, mean, rstd, weight, v = ctx.saved_tensors
    grads = cpu_ops.op("evonorm_s0_backward")(
        dz.to(x.dtype).contiguous(), x, mean, rstd, weight, v, ctx.groups, ctx.needs_input_grad[0]
    )
    return _grads(ctx, *grads)


class _S0Function(torch.autograd.Function):
    """EvoNorm-S0 with the C++ kernels; saves x and the (N, groups) mean and 1/std."""

    @staticmethod
    def forward(ctx, x, weight, bias, v, groups: int, eps: float):
        z, mean, rstd = cpu_ops.op("evonorm_s0_forward")(x, weight, bias, v, groups, eps)
        ctx.save_for_backward(x, mean, rstd, weight, v)
        ctx.groups = groups
        return z

    backward = once_differentiable_backward(_s0_backward)


def _b0_backward(ctx, dz, _dbvar):
    x, weight, v, left, bmean, imean, istd = ctx.saved_tensors
    grads = cpu_ops.op("evonorm_b0_backward")(
        dz.to(x.dtype).contiguous(), x, weight, v, left, bmean, imean, istd, ctx.batch_stats, ctx.needs_input_grad[0]
    )
    return _grads(ctx, *grads)


class _B0Function(torch.autograd.Function):
    """EvoNorm-B0 with the C++ kernels. Returns z and the biased batch variance per channel
    (for the moving average; not differentiable). Saves x and per-channel / per-(n, c)
    statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, v, running_var: Optional[torch.Tensor], eps: float):
        z, left, bmean, bvar, imean, istd = cpu_ops.op("evonorm_b0_forward")(x, weight, bias, v, running_var, eps)
        ctx.save_for_backward(x, weight, v, left, bmean, imean, istd)
        ctx.batch_stats = running_var is None
        ctx.mark_non_differentiable(bvar)
        return z, bvar

    backward = once_differentiable_backward(_b0_backward)


def _check_impl(impl: str) -> str:
    if impl not in EVONORM_IMPLS:
        raise ValueError(f"Unknown EvoNorm impl {impl!r}; choose one of {EVONORM_IMPLS}")
    return impl


def _check_eps(eps: float) -> float:
    if not eps > 0:
        raise ValueError(f"EvoNorm eps must be > 0, got eps={eps!r}")
    return float(eps)


class _EvoNorm2d(nn.Module):
    def __init__(self, num_features: int, apply_act: bool, eps: float, impl: str):
        super().__init__()
        self.num_features = num_features
        self.apply_act = apply_act
        self.eps = _check_eps(eps)
        self.impl = _check_impl(impl)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None

    def _fused(self, x: torch.Tensor) -> bool:
        if torch.jit.is_scripting():
            return False
        return self._noted(self.impl == "auto" and cpu_ops.takes(x), x)

    @torch.jit.unused
    def _noted(self, fused: bool, x: torch.Tensor) -> bool:
        """Records the implementation that runs (layers/implementations.py)."""
        layer = "EvoNorm-" + type(self).__name__[-2:]  # EvoNorm-S0, EvoNorm-B0
        if fused:
            implementations.note(layer, implementations.CPP)
        else:
            implementations.note(layer, implementations.PYTORCH,
                                 lambda: "impl 'reference' requested" if self.impl != "auto" else cpu_ops.why_not(x))
        return fused

    def _without_normalization(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Checks x; the result where nothing is normalized, else None: the linear variant
        (the affine alone), and an empty batch (an R-CNN mask head without ROIs: no
        statistics to use or learn; the result keeps every parameter in the graph, as DDP
        expects)."""
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects NCHW input, got shape {list(x.shape)}")
        if self.v is None:
            return _affine(x, self.weight, self.bias)
        if x.numel() == 0:
            return x * (self.weight * self.v).view(_SHAPE) + self.bias.view(_SHAPE)
        return None


class EvoNorm2dS0(_EvoNorm2d):
    """EvoNorm-S0 over NCHW tensors (see the module docstring); batch-independent."""

    def __init__(self, num_features: int, groups: int = 32, apply_act: bool = True, eps: float = 1e-5,
                 impl: str = "auto"):
        if apply_act and (groups < 1 or num_features % groups):  # (the linear variant has no groups)
            raise ValueError(f"EvoNorm2dS0: C={num_features} channels are not divisible by groups={groups}")
        super().__init__(num_features, apply_act, eps, impl)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._without_normalization(x)
        if out is not None:
            return out
        if self._fused(x):
            if needs_graph(x, self.weight, self.bias, self.v):
                return _S0Function.apply(x, self.weight, self.bias, self.v, self.groups, self.eps)
            return cpu_ops.op("evonorm_s0_forward")(x, self.weight, self.bias, self.v, self.groups, self.eps)[0]
        return evonorm_s0_reference(x, self.weight, self.bias, self.v, self.groups, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, groups={self.groups}, apply_act={self.apply_act}, eps={self.eps}, "
                f"impl={self.impl}")


class EvoNorm2dB0(_EvoNorm2d):
    """EvoNorm-B0 over NCHW tensors (see the module docstring); uses batch statistics in
    training and running_var in eval, like BatchNorm."""

    def __init__(self, num_features: int, apply_act: bool = True, momentum: float = 0.1, eps: float = 1e-5,
                 impl: str = "auto"):
        super().__init__(num_features, apply_act, eps, impl)
        self.momentum = float(momentum)
        self.register_buffer("running_var", torch.ones(num_features))

    def _update_running_var(self, var: torch.Tensor, count: int) -> None:
        with torch.no_grad():
            unbiased = var.detach() * (count / max(count - 1, 1))
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._without_normalization(x)
        if out is not None:
            return out
        count = x.numel() // max(x.shape[1], 1)
        if self._fused(x):
            running_var = None if self.training else self.running_var
            if needs_graph(x, self.weight, self.bias, self.v):
                z, bvar = _B0Function.apply(x, self.weight, self.bias, self.v, running_var, self.eps)
            else:
                z, _, _, bvar, _, _ = cpu_ops.op("evonorm_b0_forward")(x, self.weight, self.bias, self.v, running_var,
                                                                       self.eps)
            if self.training:
                self._update_running_var(bvar, count)
            return z
        if self.training:
            var = x.to(_acc(x)).var(dim=(0, 2, 3), unbiased=False)
            self._update_running_var(var, count)
        else:
            var = self.running_var
        return evonorm_b0_reference(x, self.weight, self.bias, self.v, var, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, apply_act={self.apply_act}, momentum={self.momentum}, eps={self.eps}, "
                f"impl={self.impl}")
