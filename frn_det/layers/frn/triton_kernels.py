"""Triton kernels of FRN(+TLU), used through triton_backend.py. This module imports triton at
the top: triton_backend.py imports it only when the Triton path runs.

The math is derived in fused.py. x is NCHW-contiguous, seen as P = N*C planes of M = H*W
elements; each kernel reads x (and dz) once from memory, keeping what it loaded in
registers while the plane's sums are combined:

  forward:  nu2 = sum(x^2) / M,  r = 1 / sqrt(nu2 + e),  e = eps + |eps_l[c]|
            z = max(a x + b, tau),  a = w r                    (without TLU: z = a x + b)
  backward: g = dz where a x + b > tau, else 0;  Sgx = sum g x, Sg = sum g, Sdz = sum dz
            dx = a g + b2 x,  b2 = -w r^3 Sgx / M               (only if dx is needed)
            dw = sum_n r Sgx,  db = sum_n Sg,  dtau = sum_n (Sdz - Sg),  de = sum_n -w r^3 Sgx / 2

Only r (float32, per (n, c)) is saved by the forward; the backward recomputes a x + b and
the TLU mask from x. Two layouts of the work:

* tile (a plane fits one program, M <= the tile): a program holds ROWS whole planes as a
  [ROWS, BLOCK] tile. Forward: one program per ROWS consecutive planes. Backward: one
  program per ROWS channels, looping over the N samples, which also sums the parameter
  gradients over n in registers (fixed order: deterministic) and writes them directly.
* split (larger planes): the plane is cut into S chunks of CHUNK elements, the work items
  (plane, chunk) are spread over a persistent grid of G programs, and each program keeps
  its chunk in registers. Its partial sums go to a float32 buffer [P, S] (fixed slots);
  the plane's total is the sum of its S slots in a fixed order, so every program of a plane
  gets the same bits (deterministic). PHASE selects how the partials are combined:
    0  one launch: after writing its partials a program counts itself in on the plane's
       counter (atomic add, acquire-release) and spins until all S have arrived, then
       finishes from registers. Needs all S programs of a plane resident at once: the
       host takes G no larger than the programs the GPU holds at once and S <= G (items
       are handed out in order, so a plane's chunks are at most two rounds apart and every
       program reaches its next item; see triton_backend._split_plan).
    1  partials only (x read once); 2  re-read x, combine, finish: the two-launch fallback
       where one launch is impossible (S larger than what is resident; the interpreter,
       which runs programs one after another). x is then read twice.
  The backward's parameter gradients come from the partials in a last small kernel
  (_frn_bwd_finalize: sum over n and chunks per channel, fixed order).

All arithmetic is float32 whatever the input dtype (loads converted; z and dx rounded once
when stored). y = a x + b is an explicit fma in every kernel from the same a = w * r (the
saved r), so the backward's TLU mask is exactly the forward's whatever the compiler's
fp-contraction choices. At a tie y == tau the gradient goes to tau, as in fused.py.
Per-plane scalars use IEEE-rounded sqrt and division (tl.sqrt, tl.rsqrt and `/` are
approximations on NVIDIA GPUs).

The kernels are plain functions here: `kernels()` wraps them with `triton.jit` at the
first use, once per interpreter mode, because `triton.jit` decides at decoration time
between compiling and interpreting (TRITON_INTERPRET).
"""
import functools
import os
from collections import namedtuple

import triton
import triton.language as tl

# Only Triton builtins (tl.full, tl.reduce, ...) are used in the kernels, not the functions
# of triton.language.standard (tl.zeros, tl.sum, tl.cdiv, tl.sigmoid, ...): those are
# @triton.jit functions, compiled or interpreted as decided when triton was imported, and
# the interpreter cannot call compiled ones. With builtins only, the kernels run in either
# mode whatever the TRITON_INTERPRET setting was at the import (torch may import triton early).


def add_values(a, b):
    return a + b


# The combine function of tl.reduce: compiled with the kernel on a GPU; the interpreter
# calls its Python function (.fn), so a JITFunction serves both modes.
add_values = triton.runtime.JITFunction(add_values)


def _frn_fwd_tile(
    x_ptr, z_ptr, r_ptr, w_ptr, b_ptr, tau_ptr, eps_l_ptr, eps, P, C, M,
    HAS_TAU: tl.constexpr, HAS_EPS_L: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # planes n * C + c
    row_ok = rows < P
    c = rows % C
    cols = tl.arange(0, BLOCK)
    mask = row_ok[:, None] & (cols < M)[None, :]
    offs = rows.to(tl.int64)[:, None] * M + cols[None, :]  # N*C*M may exceed 2^31
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    nu2 = tl.div_rn(tl.reduce(x * x, 1, add_values), M * 1.0)
    if HAS_EPS_L:
        e = eps + tl.abs(tl.load(eps_l_ptr + c, mask=row_ok, other=0.0).to(tl.float32))
    else:
        e = eps
    r = tl.div_rn(1.0, tl.sqrt_rn(nu2 + e))
    tl.store(r_ptr + rows, r, mask=row_ok)
    a = tl.load(w_ptr + c, mask=row_ok, other=0.0).to(tl.float32) * r
    b = tl.load(b_ptr + c, mask=row_ok, other=0.0).to(tl.float32)
    z = tl.fma(tl.broadcast_to(a[:, None], (ROWS, BLOCK)), x, tl.broadcast_to(b[:, None], (ROWS, BLOCK)))
    if HAS_TAU:
        tau = tl.load(tau_ptr + c, mask=row_ok, other=0.0).to(tl.float32)
        z = tl.maximum(z, tau[:, None])
    tl.store(z_ptr + offs, z.to(z_ptr.dtype.element_ty), mask=mask)


def _frn_bwd_tile(
    dz_ptr, x_ptr, r_ptr, w_ptr, b_ptr, tau_ptr, eps_l_ptr, dx_ptr, dw_ptr, db_ptr, dtau_ptr, deps_ptr, N, C, M,
    HAS_TAU: tl.constexpr, HAS_EPS_L: tl.constexpr, NEED_DX: tl.constexpr, ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    ch = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # channels
    ch_ok = ch < C
    cols = tl.arange(0, BLOCK)
    mask = ch_ok[:, None] & (cols < M)[None, :]
    w = tl.load(w_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
    b = tl.broadcast_to(tl.load(b_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)[:, None], (ROWS, BLOCK))
    if HAS_TAU:
        tau = tl.load(tau_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)[:, None]
    acc_w = tl.full([ROWS], 0.0, tl.float32)
    acc_b = tl.full([ROWS], 0.0, tl.float32)
    acc_tau = tl.full([ROWS], 0.0, tl.float32)
    acc_e = tl.full([ROWS], 0.0, tl.float32)
    for n in range(0, N):
        planes = n * C + ch
        offs = planes.to(tl.int64)[:, None] * M + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dz = tl.load(dz_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        r = tl.load(r_ptr + planes, mask=ch_ok, other=0.0)
        a = w * r  # as in the forward: the same y = fma(a, x, b), the same TLU mask
        a2 = tl.broadcast_to(a[:, None], (ROWS, BLOCK))
        if HAS_TAU:
            g = tl.where(tl.fma(a2, x, b) > tau, dz, 0.0)
        else:
            g = dz
        sgx = tl.reduce(g * x, 1, add_values)
        sg = tl.reduce(g, 1, add_values)
        wr3s = a * r * r * sgx  # w r^3 Sgx
        acc_w += r * sgx
        acc_b += sg
        if HAS_TAU:
            acc_tau += tl.reduce(dz, 1, add_values) - sg
        acc_e += -0.5 * wr3s
        if NEED_DX:
            b2 = tl.div_rn(-wr3s, M * 1.0)
            dx = a2 * g + b2[:, None] * x
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + ch, acc_w, mask=ch_ok)
    tl.store(db_ptr + ch, acc_b, mask=ch_ok)
    if HAS_TAU:
        tl.store(dtau_ptr + ch, acc_tau, mask=ch_ok)
    if HAS_EPS_L:  # d|eps_l|/d eps_l = sign(eps_l)
        el = tl.load(eps_l_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
        tl.store(deps_ptr + ch, acc_e * tl.where(el > 0, 1.0, tl.where(el < 0, -1.0, 0.0)), mask=ch_ok)


def plane_total(part_ptr, plane, S, K: tl.constexpr, k: tl.constexpr, S_BLOCK: tl.constexpr,
                 VOLATILE: tl.constexpr):
    """Sum of the S partials (slot k of K per chunk) of a plane, in a fixed order."""
    sidx = tl.arange(0, S_BLOCK)
    acc = tl.full([S_BLOCK], 0.0, tl.float32)
    for s0 in range(0, S, S_BLOCK):
        s = s0 + sidx
        acc += tl.load(part_ptr + (plane.to(tl.int64) * S + s) * K + k, mask=s < S, other=0.0, volatile=VOLATILE)
    return tl.reduce(acc, 0, add_values)


def arrive_and_wait(cnt_ptr, plane, S):
    """Counts this program in on the plane's counter and spins until all S programs of the
    plane have. The barriers make every thread's partial-sum stores part of the release
    (and the spin's acquire visible to every thread before the partials are read)."""
    tl.debug_barrier()
    seen = tl.atomic_add(cnt_ptr + plane, 1, sem="acq_rel", scope="gpu") + 1
    while seen < S:
        seen = tl.atomic_add(cnt_ptr + plane, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


def _frn_fwd_split(
    x_ptr, z_ptr, r_ptr, w_ptr, b_ptr, tau_ptr, eps_l_ptr, part_ptr, cnt_ptr, eps, C, M, S, ITEMS,
    HAS_TAU: tl.constexpr, HAS_EPS_L: tl.constexpr, PHASE: tl.constexpr, CHUNK: tl.constexpr,
    S_BLOCK: tl.constexpr,
):
    cols = tl.arange(0, CHUNK)
    for item in range(tl.program_id(0), ITEMS, tl.num_programs(0)):  # item = plane * S + chunk
        plane = item // S
        chunk = item % S
        c = plane % C
        idx = chunk * CHUNK + cols
        mask = idx < M
        offs = plane.to(tl.int64) * M + idx
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if PHASE != 2:
            tl.store(part_ptr + item, tl.reduce(x * x, 0, add_values))
        if PHASE == 0:
            arrive_and_wait(cnt_ptr, plane, S)
        if PHASE != 1:
            nu2 = tl.div_rn(plane_total(part_ptr, plane, S, 1, 0, S_BLOCK, PHASE == 0), M * 1.0)
            if HAS_EPS_L:
                e = eps + tl.abs(tl.load(eps_l_ptr + c).to(tl.float32))
            else:
                e = eps
            r = tl.div_rn(1.0, tl.sqrt_rn(nu2 + e))
            if chunk == 0:
                tl.store(r_ptr + plane, r)
            a = tl.load(w_ptr + c).to(tl.float32) * r
            z = tl.fma(a, x, tl.load(b_ptr + c).to(tl.float32))
            if HAS_TAU:
                z = tl.maximum(z, tl.load(tau_ptr + c).to(tl.float32))
            tl.store(z_ptr + offs, z.to(z_ptr.dtype.element_ty), mask=mask)


def _frn_bwd_split(
    dz_ptr, x_ptr, r_ptr, w_ptr, b_ptr, tau_ptr, dx_ptr, part_ptr, cnt_ptr, C, M, S, ITEMS,
    HAS_TAU: tl.constexpr, NEED_DX: tl.constexpr, PHASE: tl.constexpr, CHUNK: tl.constexpr,
    S_BLOCK: tl.constexpr,
):
    cols = tl.arange(0, CHUNK)
    for item in range(tl.program_id(0), ITEMS, tl.num_programs(0)):
        plane = item // S
        chunk = item % S
        c = plane % C
        idx = chunk * CHUNK + cols
        mask = idx < M
        offs = plane.to(tl.int64) * M + idx
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dz = tl.load(dz_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        r = tl.load(r_ptr + plane)
        a = tl.load(w_ptr + c).to(tl.float32) * r  # as in the forward: the same TLU mask
        if HAS_TAU:
            g = tl.where(tl.fma(a, x, tl.load(b_ptr + c).to(tl.float32)) > tl.load(tau_ptr + c).to(tl.float32),
                         dz, 0.0)
        else:
            g = dz
        if PHASE != 2:  # partials per chunk: Sgx, Sg, Sdz
            out = part_ptr + (plane.to(tl.int64) * S + chunk) * 3
            tl.store(out, tl.reduce(g * x, 0, add_values))
            tl.store(out + 1, tl.reduce(g, 0, add_values))
            if HAS_TAU:
                tl.store(out + 2, tl.reduce(dz, 0, add_values))
        if NEED_DX:
            if PHASE == 0:
                arrive_and_wait(cnt_ptr, plane, S)
            if PHASE != 1:
                sgx = plane_total(part_ptr, plane, S, 3, 0, S_BLOCK, PHASE == 0)
                b2 = tl.div_rn(-a * r * r * sgx, M * 1.0)
                tl.store(dx_ptr + offs, (a * g + b2 * x).to(dx_ptr.dtype.element_ty), mask=mask)


def _frn_bwd_finalize(
    part_ptr, r_ptr, w_ptr, eps_l_ptr, dw_ptr, db_ptr, dtau_ptr, deps_ptr, N, C, S,
    HAS_TAU: tl.constexpr, HAS_EPS_L: tl.constexpr, BLOCK_C: tl.constexpr, S_BLOCK: tl.constexpr,
):
    """The parameter gradients of the split backward, from its partials: per channel, sums
    over n (and the plane's chunks) in a fixed order."""
    ch = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    sidx = tl.arange(0, S_BLOCK)
    w = tl.load(w_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
    acc_w = tl.full([BLOCK_C], 0.0, tl.float32)
    acc_b = tl.full([BLOCK_C], 0.0, tl.float32)
    acc_tau = tl.full([BLOCK_C], 0.0, tl.float32)
    acc_e = tl.full([BLOCK_C], 0.0, tl.float32)
    for n in range(0, N):
        planes = n * C + ch
        sgx = tl.full([BLOCK_C], 0.0, tl.float32)
        sg = tl.full([BLOCK_C], 0.0, tl.float32)
        sdz = tl.full([BLOCK_C], 0.0, tl.float32)
        for s0 in range(0, S, S_BLOCK):
            s = s0 + sidx
            m = ch_ok[:, None] & (s < S)[None, :]
            base = (planes.to(tl.int64)[:, None] * S + s[None, :]) * 3
            sgx += tl.reduce(tl.load(part_ptr + base, mask=m, other=0.0), 1, add_values)
            sg += tl.reduce(tl.load(part_ptr + base + 1, mask=m, other=0.0), 1, add_values)
            if HAS_TAU:
                sdz += tl.reduce(tl.load(part_ptr + base + 2, mask=m, other=0.0), 1, add_values)
        r = tl.load(r_ptr + planes, mask=ch_ok, other=0.0)
        acc_w += r * sgx
        acc_b += sg
        acc_tau += sdz - sg
        acc_e += -0.5 * (w * r * r * r * sgx)
    tl.store(dw_ptr + ch, acc_w, mask=ch_ok)
    tl.store(db_ptr + ch, acc_b, mask=ch_ok)
    if HAS_TAU:
        tl.store(dtau_ptr + ch, acc_tau, mask=ch_ok)
    if HAS_EPS_L:
        el = tl.load(eps_l_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
        tl.store(deps_ptr + ch, acc_e * tl.where(el > 0, 1.0, tl.where(el < 0, -1.0, 0.0)), mask=ch_ok)


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter now (TRITON_INTERPRET=1)."""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4: reads the environment at each access
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


Kernels = namedtuple("Kernels", "fwd_tile bwd_tile fwd_split bwd_split bwd_finalize")


def kernels() -> Kernels:
    """The kernels for the current mode: compiled, or interpreted."""
    return _jit(interpreting())


@functools.lru_cache(maxsize=None)
def _jit(interpret: bool) -> Kernels:
    # triton.jit reads the interpreter setting when it wraps a function, not at launch: one
    # set per mode (the argument is the cache key), so that the interpreter can be switched
    # on and off within one process (the CPU tests) without using stale kernels. The helpers
    # the split kernels call are wrapped once per mode too, and the kernels' globals point at
    # them (a kernel resolves a called function through its globals at compile time).
    helpers = {f.__name__: triton.jit(f) for f in (plane_total, arrive_and_wait)}
    return Kernels(*(triton.jit(with_globals(f, helpers)) for f in (
        _frn_fwd_tile, _frn_bwd_tile, _frn_fwd_split, _frn_bwd_split, _frn_bwd_finalize)))


def with_globals(fn, extra: dict):
    """A copy of the function fn whose globals are this module's plus `extra`."""
    import types

    g = dict(fn.__globals__)
    g.update(extra)
    copy = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    return copy
