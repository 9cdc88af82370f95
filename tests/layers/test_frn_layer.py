import math

import pytest
import torch

from frn_det.layers import TLU, FilterResponseNorm2d

IMPLS = ["reference", "auto"]


def formula(x, weight, bias, tau, eps):
    nu2 = (x.double() ** 2).mean(dim=(2, 3), keepdim=True)
    y = x.double() / torch.sqrt(nu2 + eps) * weight.double().view(1, -1, 1, 1) + bias.double().view(1, -1, 1, 1)
    return torch.maximum(y, tau.double().view(1, -1, 1, 1)) if tau is not None else y


def randomized(frn):
    with torch.no_grad():
        for p in frn.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p is frn.weight else 0.0))
    return frn


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 1), (3, 2, 8, 8)])
def test_output_equals_formula(impl, shape):
    torch.manual_seed(0)
    frn = randomized(FilterResponseNorm2d(shape[1], impl=impl))
    x = torch.randn(*shape)
    expected = formula(x, frn.weight, frn.bias, frn.tau, 1e-6)
    torch.testing.assert_close(frn(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_without_tlu_is_affine_normalization_only():
    frn = FilterResponseNorm2d(3, tlu=False)
    x = torch.randn(2, 3, 4, 4)
    assert frn.tau is None
    out = frn(x)
    assert (out < 0).any()  # no clamping at zero
    torch.testing.assert_close(out.double(), formula(x, frn.weight, frn.bias, None, 1e-6), rtol=1e-5, atol=1e-6)


def test_parameters_follow_norm_conventions():
    frn = FilterResponseNorm2d(5, learnable_eps=True)
    names = dict(frn.named_parameters())
    assert set(names) == {"weight", "bias", "tau", "eps_l"}
    assert torch.equal(names["weight"], torch.ones(5)) and torch.equal(names["bias"], torch.zeros(5))
    assert torch.equal(names["tau"], torch.zeros(5))
    assert torch.allclose(names["eps_l"], torch.full((5,), 1e-4))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("learnable_eps", [False, True])
def test_gradcheck_float64(impl, learnable_eps):
    torch.manual_seed(1)
    frn = randomized(FilterResponseNorm2d(3, learnable_eps=learnable_eps, impl=impl)).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in frn.named_parameters()]

    def fn(x, *params):
        return torch.func.functional_call(frn, dict(zip(names, params)), (x,))

    inputs = (x,) + tuple(p.detach().clone().requires_grad_(True) for p in frn.parameters())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_1x1_maps_degenerate_to_sign_without_learned_eps():
    x = torch.tensor([[[[3.0]], [[-0.2]]]])
    out = FilterResponseNorm2d(2, tlu=False)(x)
    torch.testing.assert_close(out, torch.tensor([[[[1.0]], [[-1.0]]]]), rtol=1e-4, atol=1e-4)


def test_learned_eps_on_1x1_maps_keeps_magnitude_and_learns():
    x = torch.tensor([[[[0.001]], [[0.02]]]])
    frn = FilterResponseNorm2d(2, learnable_eps=True, tlu=False)
    out = frn(x)
    expected = x / torch.sqrt(x**2 + 1e-6 + 1e-4)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-7)
    assert abs(out[0, 0, 0, 0].item()) < 0.2  # not a sign function
    out.sum().backward()
    assert frn.eps_l.grad is not None and torch.all(frn.eps_l.grad != 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_sample_output_independent_of_other_samples(impl):
    torch.manual_seed(2)
    frn = randomized(FilterResponseNorm2d(4, impl=impl)).train()
    a = torch.randn(3, 4, 6, 6)
    b = a.clone()
    b[1:] = torch.randn(2, 4, 6, 6) * 100
    assert torch.equal(frn(a)[0], frn(b)[0])
    alone = frn(a[:1])
    torch.testing.assert_close(alone[0], frn(a)[0], rtol=0, atol=1e-6)
    # and no gradient flows from sample 0's output into other samples
    x = a.clone().requires_grad_(True)
    frn(x)[0].sum().backward()
    assert torch.count_nonzero(x.grad[1:]) == 0 and torch.count_nonzero(x.grad[0]) > 0


@pytest.mark.parametrize("impl", IMPLS)
def test_low_precision_reduces_in_float32(impl):
    # 300^2 overflows float16 (max 65504): a float16 reduction would return inf/0.
    x = torch.full((1, 2, 4, 4), 300.0, dtype=torch.float16)
    out = FilterResponseNorm2d(2, tlu=False, impl=impl)(x)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), torch.ones(1, 2, 4, 4), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("impl", IMPLS)
def test_autocast_bfloat16(impl):
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    frn = randomized(FilterResponseNorm2d(8, impl=impl))
    x = torch.randn(2, 3, 10, 10)
    ref = frn(conv(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = frn(conv(x))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)
    out.float().sum().backward()
    assert torch.isfinite(frn.weight.grad).all()


def test_torchscript_matches_eager():
    torch.manual_seed(4)
    frn = randomized(FilterResponseNorm2d(4, learnable_eps=True))
    scripted = torch.jit.script(frn)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(scripted(x), frn(x))


@pytest.mark.parametrize("eps", [0.0, -1e-6, math.nan])
def test_non_positive_eps_is_rejected(eps):
    with pytest.raises(ValueError, match=r"eps must be > 0.*eps=" + (r"nan" if eps != eps else r"-?0\.0|" + "-1e-06")):
        FilterResponseNorm2d(4, eps=eps)


def test_tlu_is_max_with_learned_threshold():
    tlu = TLU(2)
    with torch.no_grad():
        tlu.tau.copy_(torch.tensor([0.5, -1.0]))
    x = torch.tensor([[[[0.0, 1.0]], [[-2.0, 0.0]]]])
    expected = torch.tensor([[[[0.5, 1.0]], [[-1.0, 0.0]]]])
    assert torch.equal(tlu(x), expected)


def test_tlu_takes_fc_features_per_channel():
    tlu = TLU(3)
    with torch.no_grad():
        tlu.tau.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 3.0]], requires_grad=True)  # (N, C) after an FC layer
    y = tlu(x)
    assert y.shape == (2, 3) and torch.equal(y, torch.tensor([[0.5, 0.0, 2.0], [1.0, -1.0, 3.0]]))
    y.sum().backward()
    assert torch.equal(tlu.tau.grad, torch.tensor([1.0, 1.0, 1.0]))  # tau wins once per channel


CPP_TLU_GRAD_FN = "torch::autograd::CppNode<frn_det::TLUAutograd>"


def require_cpp_tlu():
    from frn_det.layers import cpu_ops as frn_cpp

    if frn_cpp.ops() is None:
        pytest.skip(f"FRN C++ extension unavailable: {frn_cpp.unavailable_reason()}")


def tlu_with_random_tau(c, seed=0):
    tlu = TLU(c)
    with torch.no_grad():
        tlu.tau.copy_(torch.randn(c, generator=torch.Generator().manual_seed(seed)))
    return tlu


@pytest.mark.parametrize("layout", ["nchw", "strided", "channels_last"])
def test_tlu_cpp_matches_torch_maximum(layout):
    """Values and gradients of the C++ TLU op equal torch.maximum's (float64, no ties);
    channels_last inputs keep torch.maximum."""
    require_cpp_tlu()
    tlu = tlu_with_random_tau(6)
    x = torch.randn(3, 6, 9, 14, dtype=torch.float64)
    if layout == "strided":
        x = x[:, :, :, ::2]
    elif layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    dz = torch.randn(x.shape, dtype=torch.float64)
    out = tlu(x)
    assert out.grad_fn.name() == ("MaximumBackward0" if layout == "channels_last" else CPP_TLU_GRAD_FN)
    dx, dtau = torch.autograd.grad(out, [x, tlu.tau], dz)
    x_ref = x.detach().clone().requires_grad_()
    tau_ref = tlu.tau.detach().double().requires_grad_()
    ref = torch.maximum(x_ref, tau_ref.view(1, -1, 1, 1))
    dx_ref, dtau_ref = torch.autograd.grad(ref, [x_ref, tau_ref], dz)
    assert torch.equal(out, ref)
    assert torch.equal(dx, dx_ref)
    torch.testing.assert_close(dtau, dtau_ref.float(), rtol=1e-6, atol=1e-6)


def test_tlu_cpp_tie_sends_gradient_to_tau_and_saves_only_output():
    require_cpp_tlu()
    tlu = TLU(2)
    with torch.no_grad():
        tlu.tau.copy_(torch.tensor([0.5, -1.0]))
    x = torch.tensor([[[[0.5, 1.0, 0.0]], [[-1.0, -2.0, 3.0]]]], requires_grad=True)  # ties at [0,0,0,0], [0,1,0,0]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = tlu(x)
    assert out.grad_fn.name() == CPP_TLU_GRAD_FN
    # the output and the tau parameter; not the input (the pre-activation can be freed)
    assert {t.untyped_storage().data_ptr() for t in saved} == {
        out.untyped_storage().data_ptr(), tlu.tau.untyped_storage().data_ptr()}
    dx, dtau = torch.autograd.grad(out, [x, tlu.tau], torch.ones_like(out))
    assert torch.equal(dx, torch.tensor([[[[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]]]))
    assert torch.equal(dtau, torch.tensor([2.0, 2.0]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_tlu_cpp_low_precision(dtype):
    """tau is rounded to x's dtype (as for torch.maximum); dtau is summed in float32 or
    better, so it is within a float32 rounding of the float64 sum."""
    require_cpp_tlu()
    tlu = tlu_with_random_tau(4, seed=1)
    x = torch.randn(2, 4, 16, 16).to(dtype).requires_grad_()
    dz = torch.randn(x.shape).to(dtype)
    out = tlu(x)
    assert out.dtype == dtype and out.grad_fn.name() == CPP_TLU_GRAD_FN
    dx, dtau = torch.autograd.grad(out, [x, tlu.tau], dz)
    tau_x = tlu.tau.detach().to(dtype).view(1, -1, 1, 1)
    assert torch.equal(out, torch.maximum(x.detach(), tau_x))
    above = x.detach() > tau_x
    assert torch.equal(dx, torch.where(above, dz, torch.zeros_like(dz)))
    dtau_ref = torch.where(above, 0.0, dz.double()).sum((0, 2, 3))
    torch.testing.assert_close(dtau.double(), dtau_ref, rtol=1e-5, atol=1e-5)


def test_tlu_scripts_with_torch_maximum():
    tlu = tlu_with_random_tau(4)
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(torch.jit.script(tlu)(x), torch.maximum(x, tlu.tau.detach().view(1, -1, 1, 1)))


def test_tlu_cpp_inference_mode_and_torch_compile():
    require_cpp_tlu()
    tlu = tlu_with_random_tau(3)
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    with torch.inference_mode():
        expected = torch.maximum(x, tlu.tau.view(1, -1, 1, 1))
        assert torch.equal(tlu(x), expected)
    out = torch.compile(tlu, backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(out, expected)
    dx, dtau = torch.autograd.grad(out.sum(), [x, tlu.tau])
    torch.testing.assert_close(dx, (x > tlu.tau.view(1, -1, 1, 1)).float())
    torch.testing.assert_close(dtau, (x <= tlu.tau.view(1, -1, 1, 1)).float().sum((0, 2, 3)))
