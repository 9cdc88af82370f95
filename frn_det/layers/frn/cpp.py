"""FRN(+TLU) through the C++ CPU op `torch.ops.frn_det.frn` (csrc/frn_cpu.cpp, built and
loaded by layers/cpu_ops.py)."""
import torch

from ..cpu_ops import DTYPES, op, ops, takes, unavailable_reason, why_not

__all__ = ["frn_cpp", "DTYPES", "ops", "takes", "unavailable_reason", "why_not"]


def frn_cpp(x, weight, bias, tau, eps: float, eps_l=None) -> torch.Tensor:
    """FRN(+TLU) with the C++ kernels (ops() must not be None); float32/float64/bf16/fp16
    CPU input of any layout, output NCHW-contiguous; parameters of any float dtype.
    Differentiable: the op's autograd lives in C++ (grad_fn
    "torch::autograd::CppNode<frn_det::FRNAutograd>"), which saves the contiguous input and
    r per (n, c)."""
    return op("frn")(x, weight, bias, tau, float(eps), eps_l)
