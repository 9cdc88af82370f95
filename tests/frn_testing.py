"""Helpers shared by the tests of the fused FRN backends (test_frn_fused.py,
test_frn_triton.py): parameters, the op-by-op reference, and what autograd saves."""
import torch

from frn_det.layers.frn import frn_reference
from frn_det.utils.saved_tensors import saved_storages  # noqa: F401 (re-exported for the tests)

EPS = 1e-3


def make_params(c, tlu, learn_eps, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c, generator=g, dtype=dtype)  # includes negative scales
    bias = 0.5 * torch.randn(c, generator=g, dtype=dtype)
    tau = 0.3 * torch.randn(c, generator=g, dtype=dtype) if tlu else None
    eps_l = 0.05 * torch.randn(c, generator=g, dtype=dtype) if learn_eps else None
    return weight, bias, tau, eps_l


def ref_forward(x, weight, bias, tau, eps_l):
    e = torch.full_like(weight, EPS) if eps_l is None else EPS + eps_l.abs()
    return frn_reference(x, weight, bias, tau, e.view(1, -1, 1, 1))


def run(fn, x, params, dz):
    """Output and the gradients of (x, *params that are not None) for upstream gradient dz."""
    x = x.detach().clone().requires_grad_()
    params = [p.detach().clone().requires_grad_() if p is not None else None for p in params]
    out = fn(x, *params)
    leaves = [x] + [p for p in params if p is not None]
    grads = torch.autograd.grad(out, leaves, dz)
    return out.detach(), list(grads)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()
