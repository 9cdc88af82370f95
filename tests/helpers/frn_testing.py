"""Helpers shared by the tests: FRN parameters, the op-by-op reference and what autograd
saves (test_frn_fused.py, test_frn_triton.py), and the module/relu execution trace
(test_models.py, test_norms.py, test_lazyconfig.py)."""
import torch

from frn_det.layers.frn import FilterResponseNorm2d, frn_reference
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


def assert_low_precision_close_to_reference(fn, x, params, dz):
    """fn on bf16/fp16 x and dz against the float32 reference of the same (rounded) inputs:
    output and dx in x's dtype, float32 parameter gradients, each within a few units of the
    format's rounding."""
    dtype = x.dtype
    out, grads = run(fn, x, params, dz)
    ref_out, ref_grads = run(ref_forward, x.float(), params, dz.float())
    assert out.dtype == dtype and grads[0].dtype == dtype
    assert all(gr.dtype == torch.float32 for gr in grads[1:])
    ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    assert rel_err(out, ref_out) < 2 * ulp
    assert rel_err(grads[0], ref_grads[0]) < 4 * ulp
    for got, want in zip(grads[1:], ref_grads[1:]):  # parameter gradients are float32 sums
        assert rel_err(got, want) < 2 * ulp


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def record_execution(model, inputs, select):
    """(name, module) for every call of a module that `select(name, module)` accepts and
    ("relu", None) for every relu function call, in execution order (under no_grad)."""
    events = []

    class ReluSpy(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("relu", "relu_"):
                events.append(("relu", None))
            return func(*args, **(kwargs or {}))

    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: events.append((name, mod)))
             for name, m in model.named_modules() if select(name, m)]
    try:
        with ReluSpy(), torch.no_grad():
            model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return events


def batch(n=2, size=64, seed=0):
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 36.0]]))
        inst.gt_classes = torch.tensor([1])
        out.append({"image": torch.rand(3, size, size, generator=g) * 255, "instances": inst})
    return out


def module_against_reference(impl, shape, tlu, learnable_eps, dtype=torch.float32, device="cpu"):
    """An FRN module of `impl` with the random parameters of a "reference" one, and both
    modules' (output, gradients of x and the parameters) on one random input of `shape`:
    (module, reference, x, [(out, grads) of the reference, (out, grads) of the module])."""
    torch.manual_seed(6)
    c = shape[1]
    ref = FilterResponseNorm2d(c, tlu=tlu, learnable_eps=learnable_eps, impl="reference").to(device, dtype)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.5)
    module = FilterResponseNorm2d(c, tlu=tlu, learnable_eps=learnable_eps, impl=impl).to(device, dtype)
    module.load_state_dict(ref.state_dict())
    x = torch.randn(*shape, dtype=dtype, device=device, requires_grad=True)
    dz = torch.randn(*shape, dtype=dtype, device=device)
    results = []
    for m in (ref, module):
        out = m(x)
        results.append((out, torch.autograd.grad(out, [x] + list(m.parameters()), dz)))
    return module, ref, x, results
