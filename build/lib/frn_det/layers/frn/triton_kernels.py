"""Triton kernels of FRN(+TLU), used through triton_backend.py. This module imports triton at
the top: triton_backend.py imports it only when the Triton path runs.

The math is derived in fused.py; the structure follows layers/csrc/frn_cpu.cpp. One program
per (n, c) plane of an NCHW-contiguous tensor, M = H*W elements, read in BLOCK-sized
chunks (the last one masked); each kernel reads the plane twice:

  forward:  pass 1  nu2 = sum(x^2) / M,  r = 1 / sqrt(nu2 + e),  e = eps + |eps_l[c]|
            pass 2  z = max(a x + b, tau),  a = w r              (without TLU: z = a x + b)
  backward: pass 1  g = dz where a x + b > tau, else 0;  Sgx = sum g x, Sg = sum g, Sdz = sum dz
            pass 2  dx = a g + b2 x,  b2 = -w r^3 Sgx / M        (only if dx is needed)

All arithmetic is in float32 whatever the input dtype (x, dz loaded and converted; z and
dx rounded once when stored). Sums are accumulated per lane in a BLOCK-wide float32
vector and reduced across lanes once, after the loop (no cross-lane reduction per chunk).
The backward writes four float32 partials per (n, c), (r Sgx, Sg, Sdz - Sg,
-w r^3 Sgx / 2), whose sums over n triton_backend.py takes for the parameter gradients.

y = a x + b is computed with an explicit fma in both kernels, from the same a (the saved
r times w): the backward's TLU mask is exactly the forward's, whatever the compiler's
fp-contraction choices. At a tie y == tau the gradient goes to tau, as in fused.py.

The kernels are plain functions here: `kernels()` wraps them with `triton.jit` at the
first use, once per interpreter mode, because `triton.jit` decides at decoration time
between compiling and interpreting (TRITON_INTERPRET).
"""
import functools
import os

import triton
import triton.language as tl

# Only Triton builtins (tl.full, tl.reduce, ...) are used in the kernels, not the functions
# of triton.language.standard (tl.zeros, tl.sum, ...): those are @triton.jit functions,
# compiled or interpreted as decided when triton was imported, and the interpreter cannot
# call compiled ones. With builtins only, the kernels run in either mode whatever the
# TRITON_INTERPRET setting was at the import (torch may import triton early).


def _add(a, b):
    return a + b


# The combine function of tl.reduce: compiled with the kernel on a GPU; the interpreter
# calls its Python function (.fn), so a JITFunction serves both modes.
_add = triton.runtime.JITFunction(_add)


def _frn_forward_kernel(
    x_ptr, z_ptr, r_ptr, w_ptr, b_ptr, tau_ptr, eps_l_ptr, eps, C, M,
    HAS_TAU: tl.constexpr, HAS_EPS_L: tl.constexpr, BLOCK: tl.constexpr,
):
    plane = tl.program_id(0)  # n * C + c
    c = plane % C
    base = plane.to(tl.int64) * M  # N*C*M may exceed 2^31
    offs = tl.arange(0, BLOCK)

    # pass 1: r = 1 / sqrt(mean(x^2) + e). Per-plane scalars use IEEE-rounded sqrt and
    # division: tl.sqrt, tl.rsqrt and `/` are approximations on NVIDIA GPUs.
    acc = tl.full([BLOCK], 0.0, tl.float32)
    for start in range(0, M, BLOCK):
        idx = start + offs
        x = tl.load(x_ptr + base + idx, mask=idx < M, other=0.0).to(tl.float32)
        acc += x * x
    nu2 = tl.div_rn(tl.reduce(acc, 0, _add), M * 1.0)
    if HAS_EPS_L:
        e = eps + tl.abs(tl.load(eps_l_ptr + c).to(tl.float32))
    else:
        e = eps
    r = tl.div_rn(1.0, tl.sqrt_rn(nu2 + e))
    tl.store(r_ptr + plane, r)

    # pass 2: z = max(a x + b, tau)
    a = tl.load(w_ptr + c).to(tl.float32) * r
    b = tl.load(b_ptr + c).to(tl.float32)
    if HAS_TAU:
        tau = tl.load(tau_ptr + c).to(tl.float32)
    for start in range(0, M, BLOCK):
        idx = start + offs
        mask = idx < M
        x = tl.load(x_ptr + base + idx, mask=mask, other=0.0).to(tl.float32)
        z = tl.fma(a, x, b)
        if HAS_TAU:
            z = tl.maximum(z, tau)
        tl.store(z_ptr + base + idx, z.to(z_ptr.dtype.element_ty), mask=mask)


def _frn_backward_kernel(
    dz_ptr, x_ptr, r_ptr, w_ptr, b_ptr, tau_ptr, dx_ptr, part_ptr, C, M,
    HAS_TAU: tl.constexpr, NEED_DX: tl.constexpr, BLOCK: tl.constexpr,
):
    plane = tl.program_id(0)
    c = plane % C
    base = plane.to(tl.int64) * M
    offs = tl.arange(0, BLOCK)
    r = tl.load(r_ptr + plane)
    w = tl.load(w_ptr + c).to(tl.float32)
    a = w * r  # as in the forward: the same y = fma(a, x, b), the same TLU mask
    b = tl.load(b_ptr + c).to(tl.float32)
    if HAS_TAU:
        tau = tl.load(tau_ptr + c).to(tl.float32)

    # pass 1: Sgx, Sg (and Sdz with TLU)
    acc_gx = tl.full([BLOCK], 0.0, tl.float32)
    acc_g = tl.full([BLOCK], 0.0, tl.float32)
    acc_dz = tl.full([BLOCK], 0.0, tl.float32)
    for start in range(0, M, BLOCK):
        idx = start + offs
        mask = idx < M
        x = tl.load(x_ptr + base + idx, mask=mask, other=0.0).to(tl.float32)
        dz = tl.load(dz_ptr + base + idx, mask=mask, other=0.0).to(tl.float32)
        if HAS_TAU:
            g = tl.where(tl.fma(a, x, b) > tau, dz, 0.0)
            acc_dz += dz
        else:
            g = dz
        acc_gx += g * x
        acc_g += g
    sgx = tl.reduce(acc_gx, 0, _add)
    sg = tl.reduce(acc_g, 0, _add)
    wr3s = a * r * r * sgx  # w r^3 Sgx
    out = part_ptr + plane * 4  # partials (N, C, 4): r Sgx, Sg, Sdz - Sg, dL/de
    tl.store(out, r * sgx)
    tl.store(out + 1, sg)
    if HAS_TAU:
        tl.store(out + 2, tl.reduce(acc_dz, 0, _add) - sg)
    else:
        tl.store(out + 2, 0.0)
    tl.store(out + 3, -0.5 * wr3s)

    # pass 2: dx = a g + b2 x
    if NEED_DX:
        b2 = tl.div_rn(-wr3s, M * 1.0)
        for start in range(0, M, BLOCK):
            idx = start + offs
            mask = idx < M
            x = tl.load(x_ptr + base + idx, mask=mask, other=0.0).to(tl.float32)
            dz = tl.load(dz_ptr + base + idx, mask=mask, other=0.0).to(tl.float32)
            if HAS_TAU:
                g = tl.where(tl.fma(a, x, b) > tau, dz, 0.0)
            else:
                g = dz
            dx = a * g + b2 * x
            tl.store(dx_ptr + base + idx, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter now (TRITON_INTERPRET=1)."""
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4: reads the environment at each access
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernels():
    """(forward, backward) kernels for the current mode: compiled, or interpreted."""
    return _jit(interpreting())


@functools.lru_cache(maxsize=None)
def _jit(interpret: bool):
    # triton.jit reads the interpreter setting when it wraps a function, not at launch: one
    # pair per mode (the argument is the cache key), so that the interpreter can be switched
    # on and off within one process (the CPU tests) without using stale kernels.
    return triton.jit(_frn_forward_kernel), triton.jit(_frn_backward_kernel)
