"""FRN(+TLU) op by op: the paper's formula, the reference the fused backends are tested
against (and what runs under TorchScript)."""
from typing import Optional

import torch

__all__ = ["frn_reference"]


def frn_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    tau: Optional[torch.Tensor],
    eps: torch.Tensor,
) -> torch.Tensor:
    """The paper's formula, op by op. The reduction runs in float32 for low-precision inputs."""
    shape = (1, -1, 1, 1)
    acc = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for float64 input
    xf = x.to(acc)
    nu2 = xf.pow(2).mean(dim=(2, 3), keepdim=True)
    x_hat = xf * torch.rsqrt(nu2 + eps.to(acc))
    y = weight.to(acc).view(shape) * x_hat + bias.to(acc).view(shape)
    if tau is not None:
        y = torch.maximum(y, tau.to(acc).view(shape))
    return y.to(x.dtype)
