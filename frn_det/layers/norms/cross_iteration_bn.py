"""Cross-Iteration Batch Normalization (Yao, Cao, Zheng, Huang & Lin, CVPR 2021,
arXiv 2002.05712; public code Howal/Cross-iterationBatchNorm, mmdet/models/utils/CBN.py).

Training at iteration t, with theta_t the weight of the layer before the norm (the conv or
FC whose output it normalizes), per channel c:

    mu_t = mean(x),  nu_t = mean(x^2)                         (over N, H, W)
    mu_{t-tau}(theta_t) ~ mu_{t-tau} + rho * <d mu_{t-tau} / d theta, theta_t - theta_{t-tau}>
    nu_{t-tau}(theta_t) ~ nu_{t-tau} + rho * <d nu_{t-tau} / d theta, theta_t - theta_{t-tau}>
    over the k most recent iterations tau = 0..k-1 whose compensated variance
    nu - mu^2 is >= 0 (the paper's max(., mu^2) rule, as the code applies it: such an
    iteration is left out for that channel):
    mu_bar = mean(mu_{t-tau}(theta_t)),  sigma2_bar = max(mean(nu_{t-tau}(theta_t)) - mu_bar^2, 0)
    y = weight * (x - mu_bar) / sqrt(sigma2_bar + eps) + bias

The gradient flows through the current iteration's mu_t and nu_t only (the stored
statistics, their derivatives and weights are constants), as in the paper and the code.
The derivatives d mu_t / d theta and d nu_t / d theta are taken with torch.autograd.grad
through the layer before the norm (as the code does), so the norm must be linked to that
layer: `follow(layer)` (`link_cbn_layers` does it where the frn-det builders place the
norm). Not linked, not in grad mode, or with a frozen layer, the norm is BN (k = 1).

Choices:
- k = `buffer_size` counts the current iteration (the paper's k; BN is k = 1). The
  public code's `buffer_num` counts the previous ones: its "buffer 3" config is k = 4.
- Burn-in: BN (k = 1) for the first `burnin` training iterations, then the full window
  (the code's default two-stage switch); the window fills from the first iteration after
  the burn-in (the code stores nothing during the burn-in). rho = 1 (the code's default).
- Normalization with eps inside the square root and the biased window variance (the
  paper's equations; the code divides by sqrt(sigma2) + eps, which makes k = 1 differ from
  BN). Moving averages as BatchNorm2d updates them, from the current batch (as the code).
- Eval: BatchNorm2d's eval (running statistics).
- The stored window is not part of the state_dict (the code keeps it in Python lists too):
  after a resume it refills over k - 1 iterations.
- The iteration is BatchNorm's num_batches_tracked (saved in checkpoints).

Cost: per training forward two extra backward passes of the layer before the norm, for
d mu / d theta and d nu / d theta (the code's way; measured: docs/performance.md,
"Comparator norms on CPU"). d mu / d theta is the mean input patch (an average pooling of
the layer's input) and d nu / d theta one weight-gradient conv of that input: given the
layer's input, the norm would need one such pass and no autograd.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CrossIterationBatchNorm2d", "link_cbn_layers"]


class CrossIterationBatchNorm2d(nn.BatchNorm2d):
    """CBN over NCHW tensors (see the module docstring). A BatchNorm2d subclass: BN's
    parameters and buffers (BN checkpoints load, FrozenBN conversion freezes it)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 buffer_size: int = 4, burnin: int = 0, rho: float = 1.0, **kwargs):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=True, **kwargs)
        if buffer_size < 1 or burnin < 0:
            raise ValueError(f"CrossIterationBatchNorm2d needs buffer_size >= 1 and burnin >= 0, got {buffer_size}, "
                             f"{burnin}")
        if momentum is None:
            raise ValueError("CrossIterationBatchNorm2d needs a float momentum (moving averages), got None")
        self.buffer_size, self.burnin, self.rho = int(buffer_size), int(burnin), float(rho)
        self._source: List[nn.Module] = []  # the layer before the norm (a list: not a submodule)
        self._history: List[tuple] = []  # (mu, nu, d mu / d theta, d nu / d theta, theta), newest first

    def follow(self, layer: nn.Module) -> None:
        """Compensate with the weight of `layer`, whose output this norm normalizes."""
        self._source = [layer]

    def window(self) -> int:
        """k for the next training forward: 1 during the burn-in, buffer_size after."""
        return self.buffer_size if int(self.num_batches_tracked) >= self.burnin else 1

    def _source_weight(self) -> Optional[torch.Tensor]:
        if not self._source or not torch.is_grad_enabled():
            return None
        w = self._source[0].weight
        return w if w.requires_grad else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training or x.numel() == 0:  # empty batch (ROI head without ROIs): as eval, nothing updated
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        theta = self._source_weight() if self.window() > 1 else None
        if theta is None or not x.requires_grad:
            return super().forward(x)  # BN (k = 1)
        c = x.shape[1]
        flat = x.transpose(0, 1).reshape(c, -1)
        mu, nu = flat.mean(dim=1), (flat * flat).mean(dim=1)
        ones = torch.ones_like(mu)
        dmu = torch.autograd.grad(mu, theta, ones, retain_graph=True)[0]
        dnu = torch.autograd.grad(nu, theta, ones, retain_graph=True)[0]
        mus, nus = [mu], [nu]
        theta_now = theta.detach()
        for mu_p, nu_p, dmu_p, dnu_p, theta_p in self._history:
            delta = theta_now - theta_p
            mus.append(mu_p + self.rho * (dmu_p * delta).reshape(c, -1).sum(dim=1))
            nus.append(nu_p + self.rho * (dnu_p * delta).reshape(c, -1).sum(dim=1))
        mu_all, nu_all = torch.stack(mus), torch.stack(nus)
        valid = (nu_all - mu_all * mu_all >= 0).to(x.dtype)
        count = valid.sum(dim=0).clamp(min=1)
        mu_bar = (mu_all * valid).sum(dim=0) / count
        var_bar = ((nu_all * valid).sum(dim=0) / count - mu_bar * mu_bar).clamp(min=0)
        self._history = [(mu.detach(), nu.detach(), dmu, dnu, theta_now.clone())] + \
            self._history[:self.buffer_size - 2]
        with torch.no_grad():  # as BatchNorm2d: the current batch, unbiased variance
            n = flat.shape[1]
            var_b = (nu - mu * mu).detach() * (n / max(n - 1, 1))
            self.running_mean.lerp_(mu.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(var_b.to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked.add_(1)
        scale = torch.rsqrt(var_bar + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mu_bar * scale
        if self.bias is not None:
            shift = shift + self.bias
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, buffer_size={self.buffer_size}, burnin={self.burnin}, rho={self.rho}"


def link_cbn_layers(modules) -> int:
    """Link every CrossIterationBatchNorm2d of `modules` to the conv or FC before it
    (normalized_layers); returns how many layers were linked."""
    from .normalized_layers import normalized_layers

    pairs = normalized_layers(modules, CrossIterationBatchNorm2d)
    for layer, holder in pairs:
        for norm in holder.modules():
            if isinstance(norm, CrossIterationBatchNorm2d):
                norm.follow(layer)
    return len(pairs)
