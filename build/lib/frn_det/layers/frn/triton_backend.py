"""Triton kernels for FRN(+TLU) on CUDA (triton_kernels.py), with their autograd function.

Inputs: 4-d float32/bfloat16/float16 CUDA tensors (float64 is not supported: frn_fused
keeps it on the PyTorch path). The kernels work on NCHW-contiguous tensors; other layouts
(channels_last included) are copied with `.contiguous()` first, and the output and dx are
NCHW-contiguous. Statistics and sums are float32; z and dx are rounded to x's dtype once.
The parameters may have any float dtype (they are read and converted in the kernels).

Each direction is one kernel launch that reads each (n, c) plane twice (see
triton_kernels.py); the per-channel sums over n of the backward's (N, C) partials are
taken in PyTorch. Saved for the backward: x (the contiguous copy, if one was made), r per
(n, c) in float32 and the parameter tensors themselves. Double backward is not supported
(once_differentiable), as with the other fused backends.

triton is imported at the first use, not with this module, and need not be installed:
`available()` / `unavailable_reason()` say whether the kernels can be used
(FRN_DET_NO_TRITON=1 disables them). Under Triton's interpreter (TRITON_INTERPRET=1,
read through `triton.knobs` at each call) the kernels also accept CPU tensors; that is
how the tests run them on machines without a GPU (slow: tiny tensors only).
"""
import contextlib
import os
from typing import Optional

import torch

from ..autograd_utils import needs_graph, once_differentiable_backward

__all__ = ["available", "unavailable_reason", "interpreting", "check_input", "FRNTritonFunction", "frn_triton",
           "DTYPES"]

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Elements of a plane per chunk (the plane loops over chunks), at most: with one program
# per (n, c) plane, larger blocks only add registers and masked-off lanes.
_MAX_BLOCK = 2048

_NOT_YET = object()
_triton = _NOT_YET  # the triton module, or None once an import failed
_import_error: Optional[str] = None


def _import_triton():
    global _triton, _import_error
    if _triton is _NOT_YET:
        try:
            import triton
        except Exception as e:  # not installed, or a broken install (missing libraries, ...)
            lines = str(e).strip().splitlines() or [""]
            _import_error = f"{type(e).__name__}: {lines[0][:300]}"
            triton = None
        _triton = triton
    return _triton


def unavailable_reason() -> Optional[str]:
    """Why the Triton kernels cannot be used in this process; None if they can (which
    does not mean that a CUDA device exists)."""
    if os.environ.get("FRN_DET_NO_TRITON", "0") not in ("", "0"):
        return "disabled by FRN_DET_NO_TRITON"
    if _import_triton() is None:
        return f"triton not importable ({_import_error})"
    return None


def available() -> bool:
    return unavailable_reason() is None


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter now (TRITON_INTERPRET=1)."""
    if _import_triton() is None:
        return False
    from .triton_kernels import interpreting as triton_interpreting

    return triton_interpreting()


def check_input(x: torch.Tensor) -> None:
    """Raises if the kernels cannot run on x: RuntimeError if they are unavailable,
    ValueError for the tensor's device, dtype or shape."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"FRN Triton kernels unavailable: {reason}")
    if not x.is_cuda and not interpreting():
        raise ValueError(f"FRN Triton kernels need a CUDA tensor, got device {x.device} "
                         "(CPU tensors only under Triton's interpreter, TRITON_INTERPRET=1)")
    if x.dtype not in DTYPES:
        raise ValueError(f"FRN Triton kernels support {[str(d).replace('torch.', '') for d in DTYPES]}, "
                         f"got {str(x.dtype).replace('torch.', '')}")
    if x.dim() != 4 or x.numel() == 0:
        raise ValueError(f"FRN Triton kernels expect a non-empty NCHW tensor, got shape {list(x.shape)}")


def _launch_config(m: int):
    """BLOCK (elements per chunk of an H*W = m plane) and num_warps."""
    block = min(_import_triton().next_power_of_2(m), _MAX_BLOCK)
    return block, max(1, min(8, block // 256))  # ~256 elements per warp: 1 warp up to 256, 8 at 2048


def _kernels():
    from .triton_kernels import kernels

    return kernels()


def _on_device(x: torch.Tensor):
    # Triton launches on the current CUDA device: make it x's
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _forward(x, weight, bias, tau, eps: float, eps_l):
    """z and r = rsqrt(nu2 + e) per (n, c) (float32) for an NCHW-contiguous x."""
    n, c, h, w = x.shape
    z = torch.empty_like(x)
    r = torch.empty((n, c), device=x.device, dtype=torch.float32)
    block, num_warps = _launch_config(h * w)
    forward_kernel, _ = _kernels()
    with _on_device(x):
        forward_kernel[(n * c,)](
            x, z, r, weight, bias,
            tau if tau is not None else weight,  # unused placeholders (HAS_TAU, HAS_EPS_L False)
            eps_l if eps_l is not None else weight,
            eps, c, h * w,
            HAS_TAU=tau is not None, HAS_EPS_L=eps_l is not None, BLOCK=block, num_warps=num_warps,
        )
    return z, r


def _contiguous(p: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return p if p is None or p.is_contiguous() else p.contiguous()


def _backward(ctx, dz):
    x, r, weight, bias, tau, eps_l = ctx.saved_tensors
    need_x, need_w, need_b, need_tau, need_eps_l, _ = ctx.needs_input_grad
    n, c, h, w = x.shape
    dz = dz.contiguous()  # e.g. the expanded ones of out.sum().backward()
    dx = torch.empty_like(x) if need_x else None
    # per (n, c): r Sgx, Sg, Sdz - Sg (only meaningful with TLU), -w r^3 Sgx / 2 = dL/de
    partials = torch.empty((n, c, 4), device=x.device, dtype=torch.float32)
    block, num_warps = _launch_config(h * w)
    _, backward_kernel = _kernels()
    with _on_device(x):
        backward_kernel[(n * c,)](
            dz, x, r, _contiguous(weight), _contiguous(bias),
            _contiguous(tau) if tau is not None else weight,  # placeholder, unused without TLU
            dx if need_x else x,  # placeholder, not written without NEED_DX
            partials, c, h * w,
            HAS_TAU=tau is not None, NEED_DX=need_x, BLOCK=block, num_warps=num_warps,
        )

    def channel_sum(k: int) -> torch.Tensor:  # a fresh (C,) tensor: no aliasing between gradients
        return partials[:, :, k].sum(0)

    # autograd casts each gradient to its input's dtype
    return (
        dx,
        channel_sum(0) if need_w else None,
        channel_sum(1) if need_b else None,
        channel_sum(2) if need_tau else None,
        torch.mul(channel_sum(3), eps_l.sign()) if need_eps_l else None,  # d|eps_l|/d eps_l = sign(eps_l)
        None,
    )


class FRNTritonFunction(torch.autograd.Function):
    """z = FRN(+TLU)(x) with the Triton kernels. Saves the (NCHW-contiguous) input and r
    per (n, c), besides the parameters themselves."""

    @staticmethod
    def forward(ctx, x, weight, bias, tau, eps_l, eps: float):
        x = x.contiguous()
        z, r = _forward(x, _contiguous(weight), _contiguous(bias), _contiguous(tau), eps, _contiguous(eps_l))
        ctx.save_for_backward(x, r, weight, bias, tau, eps_l)
        return z

    backward = once_differentiable_backward(_backward)


def frn_triton(x, weight, bias, tau, eps: float, eps_l=None) -> torch.Tensor:
    """FRN(+TLU) with the Triton kernels: x a non-empty 4-d float32/bf16/fp16 CUDA tensor
    (or CPU under the interpreter) of any layout; output NCHW-contiguous, x's dtype."""
    check_input(x)
    if needs_graph(x, weight, bias, tau, eps_l):
        return FRNTritonFunction.apply(x, weight, bias, tau, eps_l, float(eps))
    return _forward(x.contiguous(), _contiguous(weight), _contiguous(bias), _contiguous(tau), float(eps),
                    _contiguous(eps_l))[0]
