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
