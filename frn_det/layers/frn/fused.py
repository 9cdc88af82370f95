"""Fused FRN(+TLU): one autograd function with a hand-derived backward.

Three implementations of the same math, chosen by `frn_fused(..., backend=)`:

* "cpp": C++ CPU kernels (layers/csrc/frn_cpu.cpp via cpp.py, two passes over the tensor per
  direction, bf16/fp16 computed in float32; the op's autograd is C++ too), taken
  automatically ("auto") for CPU inputs that are not channels_last when the extension
  builds;
* "triton": Triton kernels (triton_kernels.py via triton_backend.py), taken by "auto" for
  CUDA float32/bf16/fp16 inputs that are not channels_last when triton is importable;
* "torch": `FRNFunction` below, built from native PyTorch ops, for every other case
  (channels_last, CUDA float64, no compiler, no triton).

The Triton path reads x once per direction (dz and x once in the backward), whole planes
or plane chunks held in registers while their sums are combined (triton_backend.py), with
float32 arithmetic for every input dtype; only x and r (float32, per (n, c)) are saved
besides the parameters. Forced with
backend="triton", other layouts are first copied to NCHW (the output is NCHW-contiguous);
float64 is refused; CPU tensors are accepted only under Triton's interpreter
(TRITON_INTERPRET=1, used by the tests). FRN_DET_NO_TRITON=1 disables it.

Forward, per sample n and channel c, over the M = H*W positions i:

    nu2 = sum_i x_i^2 / M         r = rsqrt(nu2 + e)        e = eps + |eps_l|
    y_i = w r x_i + b             z_i = max(y_i, tau)       (TLU, optional)

Backward. With g_i = dz_i * [y_i > tau] (g = dz without TLU), x_hat_i = r x_i and the
per-(n, c) sums S_x = sum_i g_i x_i and S_g = sum_i g_i:

    dL/dr = w S_x,    dr/dnu2 = dr/de = -r^3 / 2,    dnu2/dx_i = 2 x_i / M
    dx_i  = w r g_i - w r^3 S_x x_i / M  =  a g_i + b2 x_i,     a = w r,  b2 = -w r^3 S_x / M
          = w r (g_i - x_hat_i * (r S_x) / M)
    dw    = sum_n r S_x       db = sum_n S_g       dtau = sum_n (sum_i dz_i - S_g)
    de    = -w r^3 S_x / 2 = M b2 / 2 per (n, c);   d eps_l = sign(eps_l) * sum_n de

The backward therefore needs only x and per-(n, c) statistics (r and a = w r are saved, plus
the parameter tensors themselves); y > tau is recomputed from x. At a tie y == tau the
gradient goes to tau (torch.maximum would split it). Double backward is not supported
(once_differentiable); use impl="reference" for that.

Full-tensor work uses native kernels. Where the layout allows it (NCHW-contiguous, or
N == 1) the tensor is viewed as (1, N*C, H, W) so that PyTorch's per-channel batch-norm
kernels work per (n, c):

* `torch.native_batch_norm` in inference mode with mean 0, var 1 and eps 0 computes the
  affine x * alpha + beta in one vectorised pass (float32 math and a single rounding for
  bf16/fp16 inputs); `torch.addcmul` does it for other layouts.
* `native_batch_norm_backward` with save_mean 0 and save_invstd r returns r * S_x and S_g
  (its weight and bias gradients) in one pass over (g, x), accumulated in float32. With
  dy = x and invstd 1 it returns sum_i x_i^2, which we use for bf16/fp16 inputs (there
  `linalg.vector_norm(dtype=float32)` would first copy the input to float32).

Full-tensor passes (tensor reads + writes) with TLU: forward 1 (sum of squares) + 2 (affine)
+ 2 (TLU, in place) = 5; backward 2 (recompute y - tau) + 3 (mask dz, in place) + 2 (the
two sums) + 1 (sum of dz, for dtau) + 2 + 3 (dx = a g + b2 x, in place) = 13. The only
full-size allocations are the output and the backward buffer that becomes dx.
"""
import functools
import logging
from typing import Optional

import torch

from .. import implementations
from ..autograd_utils import needs_graph, once_differentiable_backward
from . import triton_backend as _frn_triton
from .cpp import DTYPES as _CPP_DTYPES
from .cpp import frn_cpp, unavailable_reason
from .cpp import ops as _cpp_ops
from .cpp import takes as _cpp_takes
from .cpp import why_not as _cpp_why_not
from .reference import frn_reference

__all__ = ["frn_fused", "FRNFunction", "BACKENDS"]

logger = logging.getLogger(__name__)

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# Below this many elements the per-call overhead of the batch-norm-kernel route (views,
# constant vectors, op dispatch) outweighs its faster passes; plain addcmul/sum are used.
_NATIVE_MIN_NUMEL = 1 << 17
_bn_backward = torch.ops.aten.native_batch_norm_backward.default
_threshold_backward_ = torch.ops.aten.threshold_backward.grad_input


def _nc_view(t: torch.Tensor) -> Optional[torch.Tensor]:
    """`t` as (1, N*C, H, W), so that per-channel kernels work per (n, c); None if the
    layout does not allow such a view or the tensor is too small to profit from it."""
    if t.numel() < _NATIVE_MIN_NUMEL:
        return None
    if t.is_contiguous():
        n, c, h, w = t.shape
        return t.view(1, n * c, h, w)
    if t.shape[0] == 1 and t.is_contiguous(memory_format=torch.channels_last):
        return t
    return None


def _to(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


@functools.lru_cache(maxsize=32)
def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached 0-dim constant (read only): adding a Python float to a small tensor
    costs more dispatch time than the addition itself."""
    return torch.full((), value, dtype=dtype, device=device)


def _sum0(t: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (C,): sum over samples."""
    return t.view(-1) if t.shape[0] == 1 else t.sum(0)


def _nu2_plus_e(x: torch.Tensor, x1: Optional[torch.Tensor], e: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """e + mean_{H,W} x^2 per (n, c), shape (N, C), accumulated in `acc`."""
    inv_m = 1.0 / (x.shape[2] * x.shape[3])
    if x1 is not None and x.dtype in _LOW_PRECISION:
        # linalg.vector_norm(dtype=float32) would first copy a bf16/fp16 x to float32
        nc = x1.shape[1]
        zero, one = x.new_zeros(nc, dtype=acc), x.new_ones(nc, dtype=acc)
        ss = _bn_backward(x1, x1, None, None, None, zero, one, True, 0.0, [False, True, False])[1]
        return torch.add(e, ss.view(x.shape[0], x.shape[1]), alpha=inv_m)
    nu = torch.linalg.vector_norm(x, 2, dim=(2, 3), dtype=acc)
    return torch.addcmul(e, nu, nu, value=inv_m)


def _affine(x: torch.Tensor, x1: Optional[torch.Tensor], alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Fresh tensor x * alpha[n, c] + beta[c] in x's dtype and layout.

    alpha: (N, C) and beta: (C,), both in the accumulation dtype."""
    n, c = alpha.shape
    if x1 is not None:
        zero, one = alpha.new_zeros(n * c), alpha.new_ones(n * c)
        beta = beta.repeat(n) if n > 1 else beta
        return torch.native_batch_norm(x1, alpha.view(n * c), beta, zero, one, False, 0.0, 0.0)[0].view(x.shape)
    # the full-size pass stays in x's dtype (no float32 copy of a bf16 x)
    return torch.addcmul(_to(beta, x.dtype).view(1, c, 1, 1), x, _to(alpha, x.dtype).view(n, c, 1, 1))


def _grad_sums(g: torch.Tensor, x: torch.Tensor, x1: Optional[torch.Tensor], r: torch.Tensor):
    """(r * sum_{H,W} g x, sum_{H,W} g) per (n, c), both (N, C) in r's dtype."""
    n, c = r.shape
    if x1 is not None and g.stride() == x.stride():
        zero = r.new_zeros(n * c)
        _, r_sx, s_g = _bn_backward(g.view(x1.shape), x1, None, None, None, zero, r.view(n * c), True, 0.0,
                                    [False, True, True])
        return r_sx.view(n, c), s_g.view(n, c)
    acc = r.dtype
    return torch.sum(g * x, dim=(2, 3), dtype=acc).mul_(r), torch.sum(g, dim=(2, 3), dtype=acc)


def _channel_sum(t: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """Sum over N, H, W per channel, accumulated in `acc`."""
    if t.dtype in _LOW_PRECISION:
        t1 = _nc_view(t)
        if t1 is not None:  # torch.sum(dtype=float32) would copy t to float32 first
            zero = t.new_zeros(t1.shape[1], dtype=acc)
            s = _bn_backward(t1, t1, None, None, None, zero, zero, True, 0.0, [False, False, True])[2]
            return _sum0(s.view(t.shape[0], t.shape[1]))
    return torch.sum(t, dim=(0, 2, 3), dtype=acc)


def _forward(x, weight, bias, tau, eps: float, eps_l):
    """Returns z and, for the backward, r = rsqrt(nu2 + e) and a = weight * r, both (N, C)
    in the accumulation dtype."""
    acc = torch.promote_types(x.dtype, torch.float32)
    x1 = _nc_view(x)
    if x1 is None and x.dtype in _LOW_PRECISION:
        # Without the native kernels the full-size passes would run in bf16/fp16 with
        # rounded coefficients (TLU masks off by a rounding); small tensors and rare
        # layouts (channels_last with N > 1) are computed in float32 instead.
        z, r, a = _forward(x.float(), weight, bias, tau, eps, eps_l)
        return z.to(x.dtype), r, a
    e = _scalar(eps, acc, x.device) if eps_l is None else torch.add(_to(eps_l, acc).abs(), eps)
    r = _nu2_plus_e(x, x1, e, acc).rsqrt_()
    a = r * _to(weight, acc)
    z = _affine(x, x1, a, _to(bias, acc))
    if tau is not None:
        torch.maximum(z, _to(tau, z.dtype).view(1, -1, 1, 1), out=z)
    return z, r, a


def _backward(ctx, dz):
    x, r, a, bias, tau, eps_l = ctx.saved_tensors
    need_x, need_w, need_b, need_tau, need_eps_l, _ = ctx.needs_input_grad
    n, c, h, w = x.shape
    acc = r.dtype
    x1 = _nc_view(x)
    out_dtype = x.dtype
    if x1 is None and x.dtype in _LOW_PRECISION:  # as in _forward: compute in float32
        x, dz = x.float(), dz.float()

    if tau is not None:  # g = dz * [y - tau > 0]; y - tau is recomputed into the buffer that becomes dx
        g = _affine(x, x1, a, _to(bias, acc) - _to(tau, acc))
        _threshold_backward_(dz, g, 0, grad_input=g)
    else:
        g = dz
    r_sx, s_g = _grad_sums(g, x, x1, r)
    rsa = (r_sx * r).mul_(a)  # w r^3 S_x; b2 = -rsa / M

    dx = dweight = dbias = dtau = deps_l = None
    if need_x:
        a4, rsa4 = _to(a, x.dtype).view(n, c, 1, 1), _to(rsa, x.dtype).view(n, c, 1, 1)
        dx = (g.mul_(a4) if tau is not None else g * a4).addcmul_(x, rsa4, value=-1.0 / (h * w))
        dx = _to(dx, out_dtype)
    if need_w:
        dweight = _sum0(r_sx)
    if need_b or need_tau:
        s_g = _sum0(s_g)
        dbias = s_g
        if need_tau:
            dtau = _channel_sum(dz, acc).sub_(s_g)
    if need_eps_l:  # dL/de = -w r^3 S_x / 2 per (n, c)
        deps_l = torch.mul(_sum0(rsa), eps_l.sign()).mul_(-0.5)
    # autograd casts each gradient to its input's dtype
    return dx, dweight, dbias, dtau, deps_l, None


class FRNFunction(torch.autograd.Function):
    """z = FRN(+TLU)(x). Saves x, the (N, C) statistics r and a = weight * r, and the
    parameters; backward as derived in the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, bias, tau, eps_l, eps: float):
        z, r, a = _forward(x, weight, bias, tau, eps, eps_l)
        ctx.save_for_backward(x, r, a, bias, tau, eps_l)
        return z

    backward = once_differentiable_backward(_backward)


BACKENDS = ("auto", "torch", "cpp", "triton")


def _use_triton(x: torch.Tensor, backend: str) -> bool:
    """Whether frn_fused takes the Triton kernels (triton_backend.py) for x."""
    if backend == "triton":
        try:
            _frn_triton.check_input(x)
        except (ValueError, RuntimeError) as e:
            raise type(e)(f"frn_fused(backend='triton'): {e}") from None
        return True
    # auto: CUDA inputs of the kernels' dtypes. channels_last inputs stay on the torch
    # path, which keeps their layout (the kernels would need NCHW copies of x and dz and
    # return NCHW tensors), as with the C++ kernels on CPU.
    return (
        backend == "auto"
        and x.is_cuda
        and x.dtype in _frn_triton.DTYPES
        and (x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last))
        and _frn_triton.available()
    )


def _use_cpp(x: torch.Tensor, backend: str) -> bool:
    """Whether frn_fused takes the C++ kernels (cpp.py) for x."""
    if backend == "torch":
        return False
    if backend == "cpp":
        if not x.is_cpu:
            raise ValueError(f"frn_fused(backend='cpp') needs a CPU tensor, got device {x.device}")
        if x.dtype not in _CPP_DTYPES:
            raise ValueError(f"frn_fused(backend='cpp') supports dtypes {_CPP_DTYPES}, got {x.dtype}")
        if _cpp_ops() is None:
            raise RuntimeError(f"frn_fused(backend='cpp'): the C++ kernels are unavailable ({unavailable_reason()})")
        return True
    return _cpp_takes(x)  # auto


def _why_torch(x: torch.Tensor, backend: str) -> Optional[str]:
    """Why frn_fused takes its PyTorch ops for x (the record of layers/implementations.py)."""
    if backend == "torch":
        return "impl 'torch' requested"
    if not x.is_cuda:
        return _cpp_why_not(x)
    reason = _frn_triton.unavailable_reason()
    if x.dtype not in _frn_triton.DTYPES:
        return f"{str(x.dtype).replace('torch.', '')} input (the Triton kernels take float32, bfloat16, float16)"
    if reason is None:
        return "channels_last input"
    logger.warning("FRN Triton kernels unavailable, using the PyTorch implementation on CUDA (%s)", reason)
    return f"Triton {reason}"


def frn_fused(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    tau: Optional[torch.Tensor],
    eps: float,
    eps_l: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """FRN(+TLU) of an NCHW tensor of any memory layout; see the module docstring.

    backend: "torch" (FRNFunction, any device and dtype), "cpp" (the C++ CPU kernels of
    cpp.py; float32/float64/bf16/fp16, the output is NCHW-contiguous), "triton" (the
    Triton kernels of triton_backend.py; CUDA float32/bf16/fp16, output NCHW-contiguous) or
    "auto": "cpp" for CPU inputs that are not channels_last when the kernels are available (built on
    first use; FRN_DET_NO_CPP=1
    disables them), "triton" for CUDA float32/bf16/fp16 inputs that are not channels_last
    when triton is importable (FRN_DET_NO_TRITON=1 disables it), "torch" otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"frn_fused backend must be one of {BACKENDS}, got {backend!r}")
    if x.dim() != 4:
        raise ValueError(f"frn_fused expects NCHW input, got shape {list(x.shape)}")
    if x.numel() == 0:
        e = torch.full_like(weight, eps) if eps_l is None else eps + eps_l.abs()
        return frn_reference(x, weight, bias, tau, e.view(1, -1, 1, 1))
    if _use_triton(x, backend):
        implementations.note("FRN", implementations.TRITON if x.is_cuda else implementations.TRITON_INTERPRETER)
        return _frn_triton.frn_triton(x, weight, bias, tau, eps, eps_l)
    if _use_cpp(x, backend):
        implementations.note("FRN", implementations.CPP)
        return frn_cpp(x, weight, bias, tau, eps, eps_l)
    implementations.note("FRN", implementations.PYTORCH, lambda: _why_torch(x, backend))
    if needs_graph(x, weight, bias, tau, eps_l):
        return FRNFunction.apply(x, weight, bias, tau, eps_l, float(eps))
    return _forward(x, weight, bias, tau, float(eps), eps_l)[0]
