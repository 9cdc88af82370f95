"""Triton kernels of EvoNorm-S0 and EvoNorm-B0 (formulas and gradients: evonorm.py), used
through evonorm_triton.py. They reuse FRN's split layout (frn/triton_kernels.py): an NCHW x
is cut into work items of CHUNK elements of one (n, c) plane, spread over a persistent grid;
each program keeps its chunk of x (and dz) in registers, writes its partial sums to fixed
slots, and the statistics are the fixed-order sums of a *set* of consecutive items:

* S0: the set is a group, the CPG = C/groups planes of (n, g) (items plane-major, plane =
  n*C + c, so a group's planes are consecutive);
* B0: the sets are a plane (instance statistics) and, in training, a channel over the batch
  (items channel-major, c*N + n, so a channel's planes are consecutive).

PHASE as for FRN: 0 one launch, the programs of a set meeting on its counter (all of the
set resident: the host checks); 1 partials only; 2 re-read and finish (the two-launch
fallback). Means and variances come from sums shifted by one element of the set (the
group's first element for S0, x[0, c, 0] for B0), so that E[(x-k)^2] - E[x-k]^2 does not
cancel where the mean is large against the spread. Arithmetic is float32; outputs are
rounded once to x's dtype. The backward's parameter gradients are summed per channel by a
last small kernel from the per-item partials (fixed order: deterministic).

Wrapped with triton.jit at the first use, once per interpreter mode, as FRN's kernels.
"""
import functools
from collections import namedtuple

import triton
import triton.language as tl

from ..frn.triton_kernels import add_values, arrive_and_wait, interpreting, plane_total, with_globals  # noqa: F401


def _sigmoid(t):
    return 1.0 / (1.0 + tl.exp(-t))


def _s0_fwd(
    x_ptr, z_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, v_ptr, part_ptr, cnt_ptr, eps, C, M, S, CPG, ITEMS,
    PHASE: tl.constexpr, CHUNK: tl.constexpr, S_BLOCK: tl.constexpr,
):
    cols = tl.arange(0, CHUNK)
    for item in range(tl.program_id(0), ITEMS, tl.num_programs(0)):  # item = plane * S + chunk
        plane = item // S
        chunk = item % S
        c = plane % C
        grp = plane // CPG  # n * groups + g
        idx = chunk * CHUNK + cols
        mask = idx < M
        offs = plane.to(tl.int64) * M + idx
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        k = tl.load(x_ptr + grp.to(tl.int64) * CPG * M).to(tl.float32)  # the shift: the group's first element
        if PHASE != 2:
            d = tl.where(mask, x - k, 0.0)
            out = part_ptr + (plane.to(tl.int64) * S + chunk) * 2
            tl.store(out, tl.reduce(d, 0, add_values))
            tl.store(out + 1, tl.reduce(d * d, 0, add_values))
        if PHASE == 0:
            arrive_and_wait(cnt_ptr, grp, CPG * S)
        if PHASE != 1:
            count = (CPG * M) * 1.0
            m1 = tl.div_rn(plane_total(part_ptr, grp, CPG * S, 2, 0, S_BLOCK, PHASE == 0), count)
            var = tl.maximum(tl.div_rn(plane_total(part_ptr, grp, CPG * S, 2, 1, S_BLOCK, PHASE == 0), count)
                             - m1 * m1, 0.0)
            rstd = tl.div_rn(1.0, tl.sqrt_rn(var + eps))
            if item == grp * CPG * S:  # the group's first item records its statistics
                tl.store(mean_ptr + grp, k + m1)
                tl.store(rstd_ptr + grp, rstd)
            v = tl.load(v_ptr + c).to(tl.float32)
            u = _sigmoid(v * x)
            z = (x * u) * rstd * tl.load(w_ptr + c).to(tl.float32) + tl.load(b_ptr + c).to(tl.float32)
            tl.store(z_ptr + offs, z.to(z_ptr.dtype.element_ty), mask=mask)


def _s0_bwd(
    dz_ptr, x_ptr, mean_ptr, rstd_ptr, w_ptr, v_ptr, dx_ptr, part_ptr, cnt_ptr, C, M, S, CPG, ITEMS,
    NEED_DX: tl.constexpr, PHASE: tl.constexpr, CHUNK: tl.constexpr, S_BLOCK: tl.constexpr,
):
    cols = tl.arange(0, CHUNK)
    for item in range(tl.program_id(0), ITEMS, tl.num_programs(0)):
        plane = item // S
        chunk = item % S
        c = plane % C
        grp = plane // CPG
        idx = chunk * CHUNK + cols
        mask = idx < M
        offs = plane.to(tl.int64) * M + idx
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dz = tl.load(dz_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + c).to(tl.float32)
        u = _sigmoid(v * x)
        g = tl.load(w_ptr + c).to(tl.float32) * dz
        if PHASE != 2:  # per item: sum g x u (for dx), and dz x u, dz x^2 u (1 - u), dz (parameters)
            out = part_ptr + (plane.to(tl.int64) * S + chunk) * 4
            tl.store(out, tl.reduce(g * x * u, 0, add_values))
            tl.store(out + 1, tl.reduce(dz * x * u, 0, add_values))
            tl.store(out + 2, tl.reduce(dz * x * x * u * (1.0 - u), 0, add_values))
            tl.store(out + 3, tl.reduce(dz, 0, add_values))
        if NEED_DX:
            if PHASE == 0:
                arrive_and_wait(cnt_ptr, grp, CPG * S)
            if PHASE != 1:
                a = plane_total(part_ptr, grp, CPG * S, 4, 0, S_BLOCK, PHASE == 0)
                s = tl.load(rstd_ptr + grp)
                mean = tl.load(mean_ptr + grp)
                coef = tl.div_rn(a * s * s * s, (CPG * M) * 1.0)
                dx = g * s * u * (1.0 + v * x * (1.0 - u)) - coef * (x - mean)
                tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _s0_finalize(
    part_ptr, rstd_ptr, w_ptr, dw_ptr, dv_ptr, db_ptr, N, C, S, CPG,
    BLOCK_C: tl.constexpr, S_BLOCK: tl.constexpr,
):
    """dweight = sum_n s sum dz x u, dv = w sum_n s sum dz x^2 u (1 - u), dbias = sum dz, per
    channel in a fixed order."""
    ch = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    sidx = tl.arange(0, S_BLOCK)
    acc_w = tl.full([BLOCK_C], 0.0, tl.float32)
    acc_v = tl.full([BLOCK_C], 0.0, tl.float32)
    acc_b = tl.full([BLOCK_C], 0.0, tl.float32)
    groups = C // CPG
    for n in range(0, N):
        planes = n * C + ch
        p1 = tl.full([BLOCK_C], 0.0, tl.float32)
        p2 = tl.full([BLOCK_C], 0.0, tl.float32)
        p3 = tl.full([BLOCK_C], 0.0, tl.float32)
        for s0 in range(0, S, S_BLOCK):
            s = s0 + sidx
            m = ch_ok[:, None] & (s < S)[None, :]
            base = (planes.to(tl.int64)[:, None] * S + s[None, :]) * 4
            p1 += tl.reduce(tl.load(part_ptr + base + 1, mask=m, other=0.0), 1, add_values)
            p2 += tl.reduce(tl.load(part_ptr + base + 2, mask=m, other=0.0), 1, add_values)
            p3 += tl.reduce(tl.load(part_ptr + base + 3, mask=m, other=0.0), 1, add_values)
        rs = tl.load(rstd_ptr + n * groups + ch // CPG, mask=ch_ok, other=0.0)
        acc_w += rs * p1
        acc_v += rs * p2
        acc_b += p3
    tl.store(dw_ptr + ch, acc_w, mask=ch_ok)
    tl.store(dv_ptr + ch, tl.load(w_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32) * acc_v, mask=ch_ok)
    tl.store(db_ptr + ch, acc_b, mask=ch_ok)


def _b0_fwd(
    x_ptr, z_ptr, left_ptr, bmean_ptr, bvar_ptr, imean_ptr, istd_ptr, w_ptr, b_ptr, v_ptr, rv_ptr, part_ptr, cnt_ptr,
    eps, N, C, M, S, ITEMS,
    BATCH: tl.constexpr, PHASE: tl.constexpr, CHUNK: tl.constexpr, S_BLOCK: tl.constexpr,
):
    cols = tl.arange(0, CHUNK)
    for item in range(tl.program_id(0), ITEMS, tl.num_programs(0)):  # item = (c * N + n) * S + chunk
        cp = item // S
        chunk = item % S
        c = cp // N
        plane = (cp % N) * C + c  # n * C + c in memory
        idx = chunk * CHUNK + cols
        mask = idx < M
        offs = plane.to(tl.int64) * M + idx
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        k = tl.load(x_ptr + c.to(tl.int64) * M).to(tl.float32)  # the shift: x[0, c, 0]
        if PHASE != 2:
            d = tl.where(mask, x - k, 0.0)
            out = part_ptr + (cp.to(tl.int64) * S + chunk) * 2
            tl.store(out, tl.reduce(d, 0, add_values))
            tl.store(out + 1, tl.reduce(d * d, 0, add_values))
        if PHASE == 0:
            if BATCH:  # the channel's items include the plane's
                arrive_and_wait(cnt_ptr, c, N * S)
            else:
                arrive_and_wait(cnt_ptr, cp, S)
        if PHASE != 1:
            im = tl.div_rn(plane_total(part_ptr, cp, S, 2, 0, S_BLOCK, PHASE == 0), M * 1.0)
            ivar = tl.maximum(tl.div_rn(plane_total(part_ptr, cp, S, 2, 1, S_BLOCK, PHASE == 0), M * 1.0) - im * im,
                              0.0)
            istd = tl.sqrt_rn(ivar + eps)
            if BATCH:
                count = (N * M) * 1.0
                bm = tl.div_rn(plane_total(part_ptr, c, N * S, 2, 0, S_BLOCK, PHASE == 0), count)
                bvar = tl.maximum(tl.div_rn(plane_total(part_ptr, c, N * S, 2, 1, S_BLOCK, PHASE == 0), count)
                                  - bm * bm, 0.0)
                left = tl.sqrt_rn(bvar + eps)
            else:
                left = tl.sqrt_rn(tl.load(rv_ptr + c).to(tl.float32) + eps)
            if chunk == 0:
                tl.store(imean_ptr + plane, k + im)
                tl.store(istd_ptr + plane, istd)
            if item == c * N * S:  # the channel's first item records its statistics
                tl.store(left_ptr + c, left)
                if BATCH:
                    tl.store(bmean_ptr + c, k + bm)
                    tl.store(bvar_ptr + c, bvar)
            den = tl.maximum(left, tl.fma(tl.load(v_ptr + c).to(tl.float32), x, istd))
            z = (x / den) * tl.load(w_ptr + c).to(tl.float32) + tl.load(b_ptr + c).to(tl.float32)
            tl.store(z_ptr + offs, z.to(z_ptr.dtype.element_ty), mask=mask)


def _b0_bwd(
    dz_ptr, x_ptr, w_ptr, v_ptr, left_ptr, bmean_ptr, imean_ptr, istd_ptr, dx_ptr, part_ptr, cnt_ptr, N, C, M, S,
    ITEMS,
    BATCH: tl.constexpr, NEED_DX: tl.constexpr, PHASE: tl.constexpr, CHUNK: tl.constexpr, S_BLOCK: tl.constexpr,
):
    cols = tl.arange(0, CHUNK)
    for item in range(tl.program_id(0), ITEMS, tl.num_programs(0)):
        cp = item // S
        chunk = item % S
        c = cp // N
        plane = (cp % N) * C + c
        idx = chunk * CHUNK + cols
        mask = idx < M
        offs = plane.to(tl.int64) * M + idx
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dz = tl.load(dz_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + c).to(tl.float32)
        left = tl.load(left_ptr + c)
        istd = tl.load(istd_ptr + plane)
        right = tl.fma(v, x, istd)  # as in the forward: the same branch at every element
        on_left = left >= right  # a tie takes the left branch, as the C++ kernels
        den = tl.where(on_left, left, right)
        g = tl.load(w_ptr + c).to(tl.float32) * dz
        q = -g * x / (den * den)
        if PHASE != 2:  # per item: sum q on each branch (for dx); dz x / den, q x on the right, dz
            out = part_ptr + (cp.to(tl.int64) * S + chunk) * 5
            tl.store(out, tl.reduce(tl.where(on_left, q, 0.0), 0, add_values))
            tl.store(out + 1, tl.reduce(tl.where(on_left, 0.0, q), 0, add_values))
            tl.store(out + 2, tl.reduce(dz * x / den, 0, add_values))
            tl.store(out + 3, tl.reduce(tl.where(on_left, 0.0, q * x), 0, add_values))
            tl.store(out + 4, tl.reduce(dz, 0, add_values))
        if NEED_DX:
            if PHASE == 0:
                if BATCH:
                    arrive_and_wait(cnt_ptr, c, N * S)
                else:
                    arrive_and_wait(cnt_ptr, cp, S)
            if PHASE != 1:
                q_right = plane_total(part_ptr, cp, S, 5, 1, S_BLOCK, PHASE == 0)
                imean = tl.load(imean_ptr + plane)
                dx = g / den + tl.where(on_left, 0.0, q * v) + tl.div_rn(q_right, istd * M) * (x - imean)
                if BATCH:
                    q_left = plane_total(part_ptr, c, N * S, 5, 0, S_BLOCK, PHASE == 0)
                    dx += tl.div_rn(q_left, left * (N * M)) * (x - tl.load(bmean_ptr + c))
                tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _b0_finalize(
    part_ptr, dw_ptr, dv_ptr, db_ptr, C, SET, BLOCK_C: tl.constexpr, S_BLOCK: tl.constexpr,
):
    """dweight, dv, dbias per channel: the sums of the channel's SET = N * S consecutive items."""
    ch = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    sidx = tl.arange(0, S_BLOCK)
    acc_w = tl.full([BLOCK_C, S_BLOCK], 0.0, tl.float32)
    acc_v = tl.full([BLOCK_C, S_BLOCK], 0.0, tl.float32)
    acc_b = tl.full([BLOCK_C, S_BLOCK], 0.0, tl.float32)
    for s0 in range(0, SET, S_BLOCK):
        s = s0 + sidx
        m = ch_ok[:, None] & (s < SET)[None, :]
        base = (ch.to(tl.int64)[:, None] * SET + s[None, :]) * 5
        acc_w += tl.load(part_ptr + base + 2, mask=m, other=0.0)
        acc_v += tl.load(part_ptr + base + 3, mask=m, other=0.0)
        acc_b += tl.load(part_ptr + base + 4, mask=m, other=0.0)
    tl.store(dw_ptr + ch, tl.reduce(acc_w, 1, add_values), mask=ch_ok)
    tl.store(dv_ptr + ch, tl.reduce(acc_v, 1, add_values), mask=ch_ok)
    tl.store(db_ptr + ch, tl.reduce(acc_b, 1, add_values), mask=ch_ok)


EvoKernels = namedtuple("EvoKernels", "s0_fwd s0_bwd s0_finalize b0_fwd b0_bwd b0_finalize")


def kernels() -> EvoKernels:
    """The kernels for the current mode: compiled, or interpreted."""
    return _jit(interpreting())


@functools.lru_cache(maxsize=None)
def _jit(interpret: bool) -> EvoKernels:
    # as frn/triton_kernels._jit: the helpers wrapped in the same mode as the kernels
    helpers = {f.__name__: triton.jit(f) for f in (plane_total, arrive_and_wait, _sigmoid)}
    return EvoKernels(*(triton.jit(with_globals(f, helpers)) for f in (
        _s0_fwd, _s0_bwd, _s0_finalize, _b0_fwd, _b0_bwd, _b0_finalize)))
