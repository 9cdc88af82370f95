"""EvoNorm-S0 and EvoNorm-B0 with Triton kernels (evonorm_triton_kernels.py), and their
autograd functions: the same math and the same saved statistics as the C++ CPU kernels of
evonorm.py, one pass over x each way where the GPU holds every program of a statistic's set
at once (two launches otherwise, and under Triton's interpreter), parameter gradients summed
in the kernels in a fixed order. Launch machinery, sizes and switches are FRN's
(frn/triton_backend.py: CHUNK, the persistent grid, direct launches, FRN_DET_TRITON_ONE_PASS,
FRN_DET_TRITON_DIRECT, FRN_DET_NO_TRITON).

Not yet wired into EvoNorm2dS0 / EvoNorm2dB0: their choice of implementation, and its
record, are being changed by issue 33; until then these functions are called directly
(tests, tools/benchmark_frn.py's "EvoNorm-S0 Triton" / "EvoNorm-B0 Triton" rows).

    z = evonorm_s0_triton(x, weight, bias, v, groups, eps)
    z, batch_var = evonorm_b0_triton(x, weight, bias, v, running_var, eps)   # running_var None: training

Inputs: non-empty 4-d float32/bf16/fp16 CUDA tensors (CPU under the interpreter), any layout
(NCHW copies are made); outputs NCHW-contiguous in x's dtype; statistics float32.
"""
from typing import Optional

import torch

from ..autograd_utils import needs_graph, once_differentiable_backward
from ..frn import triton_backend as _tb

__all__ = ["evonorm_s0_triton", "evonorm_b0_triton", "check_input"]

FINALIZE_BLOCK_C = 32


def check_input(x: torch.Tensor) -> None:
    """As FRN's: RuntimeError if the kernels are unavailable, ValueError for x."""
    try:
        _tb.check_input(x)
    except (RuntimeError, ValueError) as e:
        raise type(e)(str(e).replace("FRN Triton", "EvoNorm Triton")) from None


def _kernels():
    from .evonorm_triton_kernels import kernels

    return kernels()


def _chunks(m: int) -> tuple:
    """(chunk, chunks per plane, partials summed at a time, num_warps) for H*W = m."""
    chunk = min(_tb.pow2(m), _tb.CHUNK)
    s = -(-m // chunk)
    return chunk, s, min(_tb.pow2(s), 1024), _tb.warps_for(chunk)


def _run_split(kernel, args, flags: tuple, sizes: tuple, num_warps, items, set_items, x, need_combine=True):
    """Launches a split kernel (constexprs: flags, PHASE, sizes, in the kernel's order): one
    launch (PHASE 0) where the sets fit on the GPU, else the partials launch and the
    finishing one; need_combine False: the partials alone."""
    programs, one_launch = _tb.split_grid(kernel, args, flags + (("PHASE", 0),) + sizes, num_warps, items,
                                           set_items, x.device)
    phases = (1,) if not need_combine else ((0,) if one_launch else (1, 2))
    _tb.launch_stats.count("split one-pass" if phases != (1, 2) else "split two-pass")
    for phase in phases:
        _tb.launch(kernel, (programs,), args, flags + (("PHASE", phase),) + sizes, num_warps, x.device)


def _f32(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(n, device=like.device, dtype=torch.float32)


def _c(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t if t is None or t.is_contiguous() else t.contiguous()


def _check_groups(c: int, groups: int) -> None:
    if groups < 1 or c % groups:
        raise ValueError(f"EvoNorm-S0: C={c} channels are not divisible by groups={groups}")


# ---------------------------------------------------------------------------------------
# S0


def _s0_forward(x, weight, bias, v, groups: int, eps: float):
    """z and the (N, groups) mean and 1/std, float32, for an NCHW-contiguous x."""
    n, c, h, w = x.shape
    m, cpg = h * w, c // groups
    chunk, s, s_block, warps = _chunks(m)
    items = n * c * s
    z = torch.empty_like(x)
    mean, rstd = _f32(n * groups, x), _f32(n * groups, x)
    partials = _f32(items * 2, x)
    counters = torch.zeros(n * groups, device=x.device, dtype=torch.int32)
    args = (x, z, mean, rstd, weight, bias, v, partials, counters, float(eps), c, m, s, cpg, items)
    with _tb.on_device(x):
        _run_split(_kernels().s0_fwd, args, (), (("CHUNK", chunk), ("S_BLOCK", s_block)), warps, items, cpg * s, x)
    return z, mean, rstd


def _s0_backward(ctx, dz):
    x, mean, rstd, weight, v = ctx.saved_tensors
    need_x, need_w, need_b, need_v = ctx.needs_input_grad[:4]
    n, c, h, w = x.shape
    m, cpg = h * w, c // ctx.groups
    chunk, s, s_block, warps = _chunks(m)
    items = n * c * s
    dz = dz.to(x.dtype).contiguous()
    weight_, v_ = _c(weight), _c(v)
    dx = torch.empty_like(x) if need_x else x  # placeholder, not written without NEED_DX
    dw, dv, db = _f32(c, x), _f32(c, x), _f32(c, x)
    partials = _f32(items * 4, x)
    counters = torch.zeros(n * ctx.groups, device=x.device, dtype=torch.int32) if need_x else partials
    k = _kernels()
    with _tb.on_device(x):
        _run_split(k.s0_bwd, (dz, x, mean, rstd, weight_, v_, dx, partials, counters, c, m, s, cpg, items),
                   (("NEED_DX", need_x),), (("CHUNK", chunk), ("S_BLOCK", s_block)), warps, items, cpg * s, x,
                   need_combine=need_x)
        _tb.launch(k.s0_finalize, (-(-c // FINALIZE_BLOCK_C),), (partials, rstd, weight_, dw, dv, db, n, c, s, cpg),
                    (("BLOCK_C", FINALIZE_BLOCK_C), ("S_BLOCK", min(s_block, 64))), 4, x.device)
    return (dx if need_x else None, dw if need_w else None, db if need_b else None, dv if need_v else None,
            None, None)


class EvoNormS0TritonFunction(torch.autograd.Function):
    """EvoNorm-S0 with the Triton kernels; saves x and the (N, groups) mean and 1/std."""

    @staticmethod
    def forward(ctx, x, weight, bias, v, groups: int, eps: float):
        x = x.contiguous()
        z, mean, rstd = _s0_forward(x, _c(weight), _c(bias), _c(v), groups, eps)
        ctx.save_for_backward(x, mean, rstd, weight, v)
        ctx.groups = groups
        return z

    backward = once_differentiable_backward(_s0_backward)


def evonorm_s0_triton(x, weight, bias, v, groups: int, eps: float) -> torch.Tensor:
    """EvoNorm-S0 (evonorm.py) with the Triton kernels."""
    check_input(x)
    _check_groups(x.shape[1], groups)
    if needs_graph(x, weight, bias, v):
        return EvoNormS0TritonFunction.apply(x, weight, bias, v, int(groups), float(eps))
    return _s0_forward(x.contiguous(), _c(weight), _c(bias), _c(v), int(groups), float(eps))[0]


# ---------------------------------------------------------------------------------------
# B0


def _b0_forward(x, weight, bias, v, running_var: Optional[torch.Tensor], eps: float):
    """z, and float32 statistics: left = sqrt(var + eps) per channel, the batch mean and
    biased variance (training), the instance mean and sqrt(var + eps) per (n, c)."""
    n, c, h, w = x.shape
    m = h * w
    batch = running_var is None
    chunk, s, s_block, warps = _chunks(m)
    items = n * c * s
    z = torch.empty_like(x)
    left, bmean, bvar = _f32(c, x), _f32(c, x), _f32(c, x)
    imean, istd = _f32(n * c, x), _f32(n * c, x)
    partials = _f32(items * 2, x)
    counters = torch.zeros(c if batch else n * c, device=x.device, dtype=torch.int32)
    rv = left if batch else _c(running_var)  # placeholder without it
    args = (x, z, left, bmean, bvar, imean, istd, weight, bias, v, rv, partials, counters, float(eps), n, c, m, s,
            items)
    with _tb.on_device(x):
        _run_split(_kernels().b0_fwd, args, (("BATCH", batch),), (("CHUNK", chunk), ("S_BLOCK", s_block)), warps,
                   items, n * s if batch else s, x)
    if not batch:
        bmean.zero_()
        bvar.zero_()
    return z, left, bmean, bvar, imean, istd


def _b0_backward(ctx, dz, _dbvar):
    x, weight, v, left, bmean, imean, istd = ctx.saved_tensors
    need_x, need_w, need_b, need_v = ctx.needs_input_grad[:4]
    n, c, h, w = x.shape
    m = h * w
    chunk, s, s_block, warps = _chunks(m)
    items = n * c * s
    dz = dz.to(x.dtype).contiguous()
    weight_, v_ = _c(weight), _c(v)
    dx = torch.empty_like(x) if need_x else x
    dw, dv, db = _f32(c, x), _f32(c, x), _f32(c, x)
    partials = _f32(items * 5, x)
    counters = torch.zeros(c if ctx.batch_stats else n * c, device=x.device, dtype=torch.int32) if need_x \
        else partials
    k = _kernels()
    with _tb.on_device(x):
        _run_split(k.b0_bwd, (dz, x, weight_, v_, left, bmean, imean, istd, dx, partials, counters, n, c, m, s, items),
                   (("BATCH", ctx.batch_stats), ("NEED_DX", need_x)), (("CHUNK", chunk), ("S_BLOCK", s_block)), warps,
                   items, n * s if ctx.batch_stats else s, x, need_combine=need_x)
        _tb.launch(k.b0_finalize, (-(-c // FINALIZE_BLOCK_C),), (partials, dw, dv, db, c, n * s),
                    (("BLOCK_C", FINALIZE_BLOCK_C), ("S_BLOCK", min(_tb.pow2(n * s), 64))), 4, x.device)
    return (dx if need_x else None, dw if need_w else None, db if need_b else None, dv if need_v else None,
            None, None)


class EvoNormB0TritonFunction(torch.autograd.Function):
    """EvoNorm-B0 with the Triton kernels. Returns z and the biased batch variance per
    channel (for the moving average; zeros with running_var; not differentiable). Saves x
    and per-channel / per-(n, c) statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, v, running_var: Optional[torch.Tensor], eps: float):
        x = x.contiguous()
        z, left, bmean, bvar, imean, istd = _b0_forward(x, _c(weight), _c(bias), _c(v), running_var, eps)
        ctx.save_for_backward(x, weight, v, left, bmean, imean, istd)
        ctx.batch_stats = running_var is None
        ctx.mark_non_differentiable(bvar)
        return z, bvar

    backward = once_differentiable_backward(_b0_backward)


def evonorm_b0_triton(x, weight, bias, v, running_var: Optional[torch.Tensor], eps: float):
    """EvoNorm-B0 (evonorm.py) with the Triton kernels: (z, biased batch variance per channel)
    in training (running_var None), (z, zeros) with running_var (eval)."""
    check_input(x)
    if needs_graph(x, weight, bias, v):
        return EvoNormB0TritonFunction.apply(x, weight, bias, v, running_var, float(eps))
    z, _, _, bvar, _, _ = _b0_forward(x.contiguous(), _c(weight), _c(bias), _c(v), running_var, float(eps))
    return z, bvar
