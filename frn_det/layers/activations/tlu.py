"""Thresholded Linear Unit (Singh & Krishnan, 2020): z = max(x, tau), tau learned per channel."""
import torch
from torch import nn

from .. import cpu_ops, implementations

__all__ = ["TLU", "tlu_cpp"]


def tlu_cpp(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """max(x, tau[c]) with the C++ op frn_det::tlu (cpu_ops.ops() must not be None); tau is
    rounded to x's dtype first. Differentiable; saves only the output."""
    return cpu_ops.op("tlu")(x, tau)


class TLU(nn.Module):
    """Thresholded Linear Unit max(x, tau) for activations that have no FRN in front
    (after a residual add, or after another norm: "GN+TLU", "BN+TLU", ...). On CPU it runs
    the C++ op frn_det::tlu (one pass per direction, saves only its output), elsewhere
    torch.maximum. At a tie x == tau the C++ op gives the gradient to tau; torch.maximum
    splits it. Takes (N, C, H, W) maps and (N, C) features (after an FC layer)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.tau = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (N, C) features: as (N, C, 1, 1) maps
            return self._forward_maps(x[:, :, None, None]).flatten(1)
        return self._forward_maps(x)

    def _forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return torch.maximum(x, self.tau.view(1, -1, 1, 1).to(x.dtype))
        return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_ops.takes(x):
            implementations.note("TLU", implementations.CPP)
            return tlu_cpp(x, self.tau)
        implementations.note("TLU", implementations.PYTORCH, lambda: cpu_ops.why_not(x))
        return torch.maximum(x, self.tau.view(1, -1, 1, 1).to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.num_features}"
