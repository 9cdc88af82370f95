"""Batch Renormalization (Ioffe, NeurIPS 2017, arXiv 1702.03275).

In training, with the batch statistics mu_B, sigma_B = sqrt(var_B + eps) (biased var_B)
and the moving averages mu, sigma = sqrt(running_var + eps):

    r = clip(sigma_B / sigma, 1 / r_max, r_max)         no gradient (detached)
    d = clip((mu_B - mu) / sigma, -d_max, d_max)        no gradient (detached)
    y = weight * ((x - mu_B) / sigma_B * r + d) + bias

then the moving averages are updated as BatchNorm2d updates them (running_mean and
running_var, momentum 0.1 by default, running_var from the unbiased batch variance). In
eval mode y = weight * (x - mu) / sigma + bias, exactly BatchNorm2d's eval. With
r_max = 1 and d_max = 0 the layer is BatchNorm2d.

r_max and d_max are ramped as the paper describes: r_max = 1 and d_max = 0 up to
`warmup_start`, then linearly to R_MAX (reached at `r_max_end`) and D_MAX (reached at
`d_max_end`). The iteration is the layer's own `num_batches_tracked` buffer (BatchNorm's
counter of training forwards, saved in checkpoints, so the schedule survives a resume):
one training forward per iteration, as in every place the frn-det builders put the layer
(RetinaNet's head keeps one BRN per level, CycleBatchRenormList).

Since y = (weight * r) * BN_B(x) + (bias + weight * d), where BN_B normalizes with the
batch statistics, training is PyTorch's batch-norm kernels with that affine: one pass for
mu_B / sigma_B, one for y, and BN's training backward (the same gradient through mu_B and
sigma_B as BN); r and d cost a few per-channel ops, which with the autograd.Function are a
fixed cost per call that dominates on small maps (measured: docs/performance.md,
"Comparator norms on CPU"); one C++ op for the per-channel part would remove most of it.

`NaiveSyncBatchRenorm2d` ("naiveSyncBRN" / "SyncBRN") sums each worker's per-channel sums
of x and x^2 and its element count with one differentiable all_reduce (Detectron2's
NaiveSyncBatchNorm with stats_mode "N"): the statistics of the whole batch, also when the
workers hold different numbers of elements (R-CNN heads: ROIs per worker differ, or are
none); it runs on CPU with GLOO and equals BRN on the concatenated batch.
"""
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.layers import CycleBatchNormList
from fvcore.nn.distributed import differentiable_all_reduce
from torch import nn

from ..autograd_utils import once_differentiable_backward

__all__ = ["BatchRenorm2d", "NaiveSyncBatchRenorm2d", "CycleBatchRenormList", "brn_limits"]


def brn_limits(iteration, r_max: float, d_max: float, warmup_start: int, r_max_end: int, d_max_end: int):
    """(r_max, d_max) at `iteration` (a number or a tensor): 1 and 0 until warmup_start, then
    linear to r_max at r_max_end and to d_max at d_max_end, constant after."""

    def frac(end):
        span = max(end - warmup_start, 1)
        if torch.is_tensor(iteration):
            return ((iteration.to(torch.float64) - warmup_start) / span).clamp(0.0, 1.0)
        return min(max((iteration - warmup_start) / span, 0.0), 1.0)

    return 1.0 + (r_max - 1.0) * frac(r_max_end), d_max * frac(d_max_end)


def _fused_ok(x: torch.Tensor, weight: Optional[torch.Tensor]) -> bool:
    return x.dtype in (torch.float32, torch.float64) and (weight is None or weight.dtype == x.dtype) and \
        x.numel() > 0 and not torch.jit.is_scripting()


_bn_backward = torch.ops.aten.native_batch_norm_backward.default


def _brn_backward(ctx, dy):
    x, w_eff, mean, invstd, r, d, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_affine = need_w or need_b
    dx, dw_eff, db_eff = _bn_backward(dy, x, w_eff, None, None, mean, invstd, True, ctx.eps,
                                      [need_x, need_affine, need_affine])
    dweight = torch.addcmul(dw_eff * r, db_eff, d) if need_w else None
    return dx if need_x else None, dweight, db_eff if need_b else None, None, None, None, None, None, None


class _BRNFunction(torch.autograd.Function):
    """y = w_eff (x - mean_B) / sqrt(var_B + eps) + b_eff with w_eff = weight r and
    b_eff = bias + weight d, r and d constants: one pass of PyTorch's batch-norm kernel in
    inference form (mean_B, var_B given) forward, and its training-mode backward (gradient
    through mean_B and var_B, as BN's). Saves x and per-channel vectors, like BN."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, invstd, r, d, eps: float):
        if weight is None:
            w_eff, b_eff = r.to(x.dtype), d.to(x.dtype)
        else:
            w_eff, b_eff = weight * r, torch.addcmul(bias, weight, d)
        y = torch.native_batch_norm(x, w_eff, b_eff, mean, var, False, 0.0, eps)[0]
        ctx.save_for_backward(x, w_eff, mean, invstd, r, d, weight)
        ctx.eps = eps
        return y

    backward = once_differentiable_backward(_brn_backward)


class BatchRenorm2d(nn.BatchNorm2d):
    """Batch Renormalization over NCHW tensors; see the module docstring.

    A BatchNorm2d subclass: same parameters and buffers (weight, bias, running_mean,
    running_var, num_batches_tracked), so BN checkpoints load, optimizers treat it as a
    norm and Detectron2's FrozenBatchNorm2d.convert_frozen_batchnorm freezes it (frozen
    BRN is frozen BN: eval-mode BRN uses the moving averages only)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_start: int = 5000,
        r_max_end: int = 40000,
        d_max_end: int = 25000,
        **kwargs,
    ):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=True, **kwargs)
        if not (r_max >= 1.0 and d_max >= 0.0):
            raise ValueError(f"BatchRenorm2d needs r_max >= 1 and d_max >= 0, got r_max={r_max}, d_max={d_max}")
        if momentum is None:
            raise ValueError("BatchRenorm2d needs a float momentum (moving averages), got None")
        self.r_max, self.d_max = float(r_max), float(d_max)
        self.warmup_start, self.r_max_end, self.d_max_end = int(warmup_start), int(r_max_end), int(d_max_end)

    def limits(self):
        """(r_max, d_max) for the next training forward: Python floats when the counter is on
        the CPU, else 0-dim tensors on its device (no host sync)."""
        it = self.num_batches_tracked
        if it.device.type == "cpu":
            it = int(it)
        return brn_limits(it, self.r_max, self.d_max, self.warmup_start, self.r_max_end, self.d_max_end)

    def _correction(self, mean_b: torch.Tensor, invstd_b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """r and d (detached) from the batch mean, 1 / sigma_B and the moving averages."""
        with torch.no_grad():
            r_max, d_max = self.limits()
            inv_sigma = torch.rsqrt(self.running_var + self.eps)
            r = inv_sigma / invstd_b.detach().to(inv_sigma.dtype)
            d = (mean_b.detach().to(inv_sigma.dtype) - self.running_mean).mul_(inv_sigma)
            if torch.is_tensor(r_max):
                r = torch.minimum(torch.maximum(r, 1.0 / r_max), r_max)
                d = torch.minimum(torch.maximum(d, -d_max), d_max)
            else:
                r, d = r.clamp_(1.0 / r_max, r_max), d.clamp_(-d_max, d_max)
        return r, d

    def _update_running_stats(self, mean_b: torch.Tensor, var_b: torch.Tensor, count) -> None:
        """As BatchNorm2d: running = (1 - momentum) running + momentum batch, the variance
        unbiased. `count` (elements per channel): an int, or the synced count as a tensor,
        used without reading it on the host (no device sync); a count of 0 changes nothing."""
        with torch.no_grad():
            if torch.is_tensor(count):
                seen = (count > 0).to(self.running_var.dtype)
                momentum, unbias, tracked = self.momentum * seen, count / (count - 1).clamp(min=1), seen.long()
            else:
                momentum, unbias, tracked = self.momentum, count / max(count - 1, 1), 1
            self.running_mean.lerp_(mean_b.detach().to(self.running_mean.dtype), momentum)
            self.running_var.lerp_(var_b.detach().to(self.running_var.dtype) * unbias, momentum)
            self.num_batches_tracked.add_(tracked)

    def _affine(self, r: torch.Tensor, d: torch.Tensor):
        if self.weight is None:
            return r, d
        return self.weight * r, torch.addcmul(self.bias, self.weight, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        # An empty batch (an ROI head without ROIs) has no statistics: the moving averages
        # normalize it and nothing is updated, as in eval mode.
        if not self.training or x.numel() == 0:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        with torch.no_grad():  # one pass: per-channel mean and biased variance
            mean_b, var_b = torch.batch_norm_update_stats(x.detach(), None, None, 0.0)
            invstd_b = torch.add(var_b, self.eps).rsqrt_()
        r, d = self._correction(mean_b, invstd_b)
        count = x.numel() // x.shape[1]
        if _fused_ok(x, self.weight):
            y = _BRNFunction.apply(x, self.weight, self.bias, mean_b, var_b, invstd_b, r, d, self.eps)
            self._update_running_stats(mean_b, var_b, count)
            return y
        weight, bias = self._affine(r, d)
        # the batch-norm kernel normalizes with the batch statistics (gradient through them as
        # in BN) and updates running_mean / running_var exactly as BatchNorm2d does
        y = F.batch_norm(x, self.running_mean, self.running_var, weight, bias, True, self.momentum, self.eps)
        self.num_batches_tracked.add_(1)
        return y

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, warmup_start={self.warmup_start}, "
            f"r_max_end={self.r_max_end}, d_max_end={self.d_max_end}"
        )


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class NaiveSyncBatchRenorm2d(BatchRenorm2d):
    """BatchRenorm2d with the statistics of the whole batch over all workers (see the module
    docstring): each worker's sums weighted by its element count, so that a worker with an
    empty batch (an ROI head without ROIs) still takes part in the all_reduce and counts for
    nothing. With one worker, or in eval mode, it is BatchRenorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        world = _world_size()
        if world == 1 or not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        half = x.dtype in (torch.float16, torch.bfloat16)
        xf = x.float() if half else x  # low precision is not enough for the reduction
        count = torch.full((1,), float(x.numel() // c), dtype=xf.dtype, device=x.device)
        vec = differentiable_all_reduce(torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)), count]))
        total = vec[-1].detach()  # 0 only when every worker's batch is empty: then nothing is updated
        mean, meansqr = torch.split(vec[:-1] / total.clamp(min=1), c)
        var = (meansqr - mean * mean).clamp(min=0)  # biased, of the whole batch
        invstd = torch.rsqrt(var + self.eps)
        r, d = self._correction(mean, invstd)
        weight, bias = self._affine(r.to(xf.dtype), d.to(xf.dtype))
        scale = weight * invstd
        shift = bias - mean * scale
        self._update_running_stats(mean, var, total)
        y = xf * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        return y.to(x.dtype) if half else y


class CycleBatchRenormList(CycleBatchNormList):
    """Detectron2's CycleBatchNormList with BRN: one BRN (statistics and iteration counter)
    per input level, cycled through at each call, with a shared affine. A class of its own
    so that the optimizer treats its shared weight and bias as norm parameters (Detectron2's
    optimizer, and frn-det's for "BN" parity, give CycleBatchNormList's the plain weight
    decay)."""

    def __init__(self, length: int, bn_class=BatchRenorm2d, **kwargs):
        super().__init__(length, bn_class=bn_class, **kwargs)
