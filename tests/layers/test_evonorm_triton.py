"""The Triton EvoNorm-S0/B0 kernels (layers/norms/evonorm_triton.py) against the op-by-op
references of evonorm.py in float64: compiled on CUDA where a GPU exists, else on CPU under
Triton's interpreter (the `dev` fixture of test_frn_triton.py), tiny tensors there."""
import pytest
import torch
from frn_testing import rel_err

from frn_det.layers.frn import triton_backend as frn_triton
from frn_det.layers.norms.evonorm import evonorm_b0_reference, evonorm_s0_reference
from frn_det.layers.norms.evonorm_triton import evonorm_b0_triton, evonorm_s0_triton

EPS = 1e-5


def _params(c, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [t.to(device) for t in (torch.rand(c, generator=g) + 0.5, 0.3 * torch.randn(c, generator=g),
                                   torch.rand(c, generator=g) + 0.2)]


def _inputs(shape, device, dtype=torch.float32, shift=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 2 + shift).to(dtype).to(device)
    return x, torch.randn(shape, generator=g).to(dtype).to(device)


def _grads(fn, x, params, dz):
    """fn's output and the gradients of x and the parameters, each as float64."""
    leaves = [x.detach().clone().requires_grad_()] + [p.detach().clone().requires_grad_() for p in params]
    out = fn(*leaves)
    frn_triton.launch_stats.reset()
    grads = torch.autograd.grad(out, leaves, dz)
    return [out.detach()] + list(grads)


def _s0(groups):
    return lambda x, w, b, v: evonorm_s0_triton(x, w, b, v, groups, EPS)


def _b0(running_var):
    return lambda x, w, b, v: evonorm_b0_triton(x, w, b, v, running_var, EPS)[0]


def _b0_reference(running_var):
    def fn(x, w, b, v):
        var = x.var(dim=(0, 2, 3), unbiased=False) if running_var is None else running_var.to(x.dtype)
        return evonorm_b0_reference(x, w, b, v, var, EPS)
    return fn


def _training_pair(norm):
    """(the Triton function, its reference): S0 with 4 groups, or B0 with batch statistics."""
    if norm == "S0":
        return _s0(4), lambda *a: evonorm_s0_reference(*a, 4, EPS)
    return _b0(None), _b0_reference(None)


def _close(got, want, tol):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        if not w.any():  # e.g. dv where the sigmoid saturates
            assert not g.any()
            continue
        assert rel_err(g, w) < tol, (rel_err(g, w), tol)


def _chunks(monkeypatch, layout):
    if layout == "chunks":  # several chunks per plane: the two-pass fallback under the interpreter
        monkeypatch.setattr(frn_triton, "CHUNK", 16)


# (shape, groups, layout): prime sizes, 1x1 maps, one plane per group; one chunk per plane or several
S0_CASES = [((2, 8, 5, 7), 4, "planes"), ((2, 8, 5, 7), 4, "chunks"), ((3, 6, 1, 1), 2, "planes"),
            ((1, 5, 13, 3), 5, "chunks")]


@pytest.mark.parametrize("shape, groups, layout", S0_CASES, ids=str)
def test_s0_matches_float64_reference(dev, monkeypatch, layout, shape, groups):  # noqa: F811
    _chunks(monkeypatch, layout)
    x, dz = _inputs(shape, dev)
    params = _params(shape[1], dev)
    got = _grads(_s0(groups), x, params, dz)
    want = _grads(lambda *a: evonorm_s0_reference(*a, groups, EPS), x.double(), [p.double() for p in params],
                  dz.double())
    _close(got, want, 1e-5)


B0_CASES = [((2, 5, 5, 7), True, "planes"), ((2, 5, 5, 7), True, "chunks"), ((2, 5, 5, 7), False, "chunks"),
            ((3, 4, 1, 1), True, "planes"), ((3, 4, 1, 1), False, "planes")]


@pytest.mark.parametrize("shape, training, layout", B0_CASES, ids=str)
def test_b0_matches_float64_reference_in_training_and_eval(dev, monkeypatch, layout, training, shape):  # noqa: F811
    """Training: batch statistics (their gradient included) and the biased batch variance
    returned for the moving average; eval: running_var, no batch statistics."""
    _chunks(monkeypatch, layout)
    x, dz = _inputs(shape, dev)
    params = _params(shape[1], dev)
    running_var = None if training else torch.rand(shape[1], generator=torch.Generator().manual_seed(3)).to(dev) + 0.5
    got = _grads(_b0(running_var), x, params, dz)
    want = _grads(_b0_reference(running_var), x.double(), [p.double() for p in params], dz.double())
    _close(got, want, 1e-5)
    _, bvar = evonorm_b0_triton(x, *params, running_var, EPS)
    expected = x.double().var(dim=(0, 2, 3), unbiased=False) if training else torch.zeros(shape[1], dtype=torch.float64)
    assert bvar.dtype == torch.float32
    torch.testing.assert_close(bvar.double(), expected.to(dev), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("norm, dtype", [("S0", torch.bfloat16), ("B0", torch.float16)], ids=str)
def test_low_precision_against_float32_reference(dev, norm, dtype):  # noqa: F811
    """bf16/fp16 in and out, statistics and sums in float32: within a few units of the
    format's rounding of the float32 reference of the same rounded inputs."""
    x, dz = _inputs((2, 8, 6, 5), dev, dtype)
    params = _params(8, dev)
    fn, ref = _training_pair(norm)
    got = _grads(fn, x, params, dz)
    want = _grads(ref, x.float(), params, dz.float())
    assert got[0].dtype == dtype and got[1].dtype == dtype and all(g.dtype == torch.float32 for g in got[2:])
    ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
    _close(got[:2], want[:2], 4 * ulp)
    _close(got[2:], want[2:], 2 * ulp)


@pytest.mark.parametrize("norm", ["S0", "B0"])
def test_statistics_keep_their_precision_far_from_zero(dev, norm):  # noqa: F811
    """A mean of 300 against a spread of 2: the sums are shifted by one element of the set,
    so the float32 variance keeps its digits (unshifted, E[x^2] - E[x]^2 loses about 4)."""
    x, dz = _inputs((2, 8, 6, 5), dev, shift=300.0)
    params = _params(8, dev)
    fn, ref = _training_pair(norm)
    got = _grads(fn, x, params, dz)
    want = _grads(ref, x.double(), [p.double() for p in params], dz.double())
    _close(got, want, 1e-5)


@pytest.mark.parametrize("norm", ["S0", "B0"])
def test_launches_deterministic_and_parameter_gradients_alone(dev, monkeypatch, norm):  # noqa: F811
    """Two forward and two backward launches plus the parameter-gradient sums where the
    statistics' sets span several programs under the interpreter (one each way where they
    are resident together, on a GPU); bit-identical reruns; the partials launch alone
    where x needs no gradient."""
    x, dz = _inputs((2, 6, 5, 7), dev)
    params = [p.requires_grad_() for p in _params(6, dev)]
    fn = _s0(3) if norm == "S0" else _b0(None)
    xg = x.clone().requires_grad_()
    frn_triton.launch_stats.reset()
    out = fn(xg, *params)
    fwd = dict(frn_triton.launch_stats.layouts), frn_triton.launch_stats.jit + frn_triton.launch_stats.direct
    frn_triton.launch_stats.reset()
    first = torch.autograd.grad(out, [xg] + params, dz)
    bwd = frn_triton.launch_stats.jit + frn_triton.launch_stats.direct
    if dev.type == "cuda":
        assert (fwd, bwd) == (({"split one-pass": 1}, 1), 2)
    else:
        assert (fwd, bwd) == (({"split two-pass": 1}, 2), 3)
    second = torch.autograd.grad(fn(xg, *params), [xg] + params, dz)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    out = fn(x, *params)
    frn_triton.launch_stats.reset()
    param_grads = torch.autograd.grad(out, params, dz)
    assert frn_triton.launch_stats.jit + frn_triton.launch_stats.direct == 2
    assert all(torch.equal(a, b) for a, b in zip(param_grads, first[1:]))


def test_bad_input_is_refused(dev):  # noqa: F811
    params = _params(6, dev)
    with pytest.raises(ValueError, match="C=6 channels are not divisible by groups=4"):
        evonorm_s0_triton(torch.randn(1, 6, 2, 2, device=dev), *params, 4, EPS)
    with pytest.raises(ValueError, match="EvoNorm Triton kernels expect a non-empty NCHW tensor"):
        evonorm_b0_triton(torch.zeros(0, 6, 2, 2, device=dev), *params, None, EPS)
    with pytest.raises(ValueError, match="EvoNorm Triton kernels support"):
        evonorm_s0_triton(torch.randn(1, 6, 2, 2, device=dev).double(), *params, 3, EPS)
