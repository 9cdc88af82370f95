"""Autograd plumbing shared by the fused autograd Functions: FRN (frn/fused.py,
frn/triton_backend.py), BRN and EvoNorm."""

from typing import Callable, Optional

import torch
from torch.autograd.function import once_differentiable


def needs_graph(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether a call must go through its autograd.Function: grad mode is on and some
    input (None for an absent one) requires grad. Otherwise the plain forward suffices."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def once_differentiable_backward(backward: Callable) -> Callable:
    """A Function.backward that runs `backward` directly in the usual case, and through
    @once_differentiable when the graph of the backward is being built
    (create_graph=True), so that differentiating the gradients again raises."""
    refusing = once_differentiable(backward)

    def dispatch(ctx, *grads):
        return refusing(ctx, *grads) if torch.is_grad_enabled() else backward(ctx, *grads)

    return staticmethod(dispatch)
