"""Filter Response Normalization with a Thresholded Linear Unit (Singh & Krishnan, 2020).

    nu2   = mean_{H,W}(x^2)                      per sample and channel, no batch statistics
    x_hat = x * rsqrt(nu2 + eps)
    y     = weight * x_hat + bias                 (the paper's gamma and beta)
    z     = max(y, tau)                           TLU, replaces the ReLU that would follow

Parameter names follow PyTorch norm conventions (weight, bias) so optimizers and
checkpoint tools treat them as norm parameters.
"""
import torch
from torch import nn

from .. import implementations
from .fused import frn_fused
from .reference import frn_reference

__all__ = ["FilterResponseNorm2d", "frn_reference", "FRN_IMPLS"]

# "reference": plain PyTorch ops, autograd keeps intermediates.
# "fused": one autograd function with a hand-derived backward (fused.py), using the
#   C++ CPU kernels (cpp.py) where they build and apply, else fused PyTorch ops.
#   On CUDA, "fused" takes the Triton kernels (triton_backend.py) where Triton is installed.
# "torch" / "cpp" / "triton": force one backend of the fused function (tests, benchmarks).
# "auto": "fused", except under TorchScript, which runs the reference.
FRN_IMPLS = ("auto", "reference", "fused", "torch", "cpp", "triton")


def _check_eps(eps: float) -> float:
    if not eps > 0:
        raise ValueError(f"FRN eps must be > 0 (the paper uses 1e-6), got eps={eps!r}")
    return float(eps)


class FilterResponseNorm2d(nn.Module):
    """FRN over NCHW tensors, optionally followed by TLU.

    Args:
        num_features: channel count C.
        eps: the constant epsilon (paper: 1e-6 for conv layers).
        learnable_eps: use eps + |eps_l| with a learned eps_l (init 1e-4); the paper's
            remedy for 1x1 activation maps, where FRN otherwise degenerates to sign(x).
        tlu: apply max(y, tau) with a learned per-channel tau (init 0).
        impl: one of FRN_IMPLS.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-6,
        learnable_eps: bool = False,
        tlu: bool = True,
        impl: str = "auto",
    ):
        super().__init__()
        if impl not in FRN_IMPLS:
            raise ValueError(f"Unknown FRN impl {impl!r}; choose one of {FRN_IMPLS}")
        self.num_features = num_features
        self.eps = _check_eps(eps)
        self.learnable_eps = learnable_eps
        self.tlu = tlu
        self.impl = impl
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.tau = nn.Parameter(torch.zeros(num_features)) if tlu else None
        self.eps_l = nn.Parameter(torch.full((num_features,), 1e-4)) if learnable_eps else None

    def effective_eps(self) -> torch.Tensor:
        eps = torch.full((self.num_features,), self.eps, device=self.weight.device, dtype=self.weight.dtype)
        if self.eps_l is not None:
            eps = eps + self.eps_l.abs()
        return eps.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"FilterResponseNorm2d expects NCHW input, got shape {list(x.shape)}")
        if torch.jit.is_scripting():
            return frn_reference(x, self.weight, self.bias, self.tau, self.effective_eps())
        if self.impl == "reference":
            return self._forward_reference(x)
        return self._forward_fused(x)

    @torch.jit.unused
    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        implementations.note("FRN", implementations.REFERENCE, lambda: "impl 'reference' requested")
        return frn_reference(x, self.weight, self.bias, self.tau, self.effective_eps())

    @torch.jit.unused
    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        backend = self.impl if self.impl in ("torch", "cpp", "triton") else "auto"
        return frn_fused(x, self.weight, self.bias, self.tau, self.eps, self.eps_l, backend=backend)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, learnable_eps={self.learnable_eps}, "
            f"tlu={self.tlu}, impl={self.impl}"
        )
