"""The comparator norms (BRN, EvoNorm-B0/S0, GN with Weight Standardization) and the
NORM+ACT grammar: formulas in float64, batch (in)dependence, BRN = BN at r_max 1 / d_max 0,
the ramp, synced BRN over GLOO workers, where the layers and activations go in the model,
errors, weight decay."""
import io
import os
import tempfile

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from frn_testing import batch, record_execution
from harness import tiny_cfg
from torch import nn

from frn_det.engine.optimizer import build_optimizer
from frn_det.layers import (
    ACCEPTED_NORMS,
    TLU,
    BatchRenorm2d,
    CycleBatchRenormList,
    EvoNorm2dB0,
    EvoNorm2dS0,
    FilterResponseNorm2d,
    NaiveSyncBatchRenorm2d,
    WSConv2d,
    brn_limits,
    cpu_ops,
    parse_norm,
    standardize_weight,
)

SH = (1, -1, 1, 1)


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (1.0 if name in ("weight", "v") else 0.0))
    return module


def grads(out, inputs, dz):
    return torch.autograd.grad(out, inputs, dz)


# ---------------------------------------------------------------------------------------
# Formulas, float64


def brn_formula(x, w, b, running_mean, running_var, r_max, d_max, eps=1e-5):
    """The paper's training-mode formula, r and d detached."""
    mu = x.mean(dim=(0, 2, 3), keepdim=True)
    sigma_b = torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + eps)
    sigma = torch.sqrt(running_var.view(SH) + eps)
    r = (sigma_b / sigma).detach().clamp(1 / r_max, r_max)
    d = ((mu - running_mean.view(SH)) / sigma).detach().clamp(-d_max, d_max)
    return w.view(SH) * ((x - mu) / sigma_b * r + d) + b.view(SH)


def active_brn(c, sync=False, **kw):
    """A BRN whose ramp is over (r_max 3, d_max 5) with moving averages that make r and d
    matter, some of them clipped."""
    cls = NaiveSyncBatchRenorm2d if sync else BatchRenorm2d
    m = randomize(cls(c, warmup_start=0, r_max_end=10, d_max_end=10, r_max=1.5, d_max=0.5, **kw).double())
    with torch.no_grad():
        m.running_mean.copy_(torch.linspace(-1.0, 1.0, c))
        m.running_var.copy_(torch.linspace(0.2, 4.0, c))
        m.num_batches_tracked.fill_(10)
    return m


def test_brn_training_forward_and_gradients_equal_the_formula():
    brn = active_brn(6)
    x = (torch.randn(4, 6, 5, 7, dtype=torch.float64) * 1.7 + 0.3).requires_grad_()
    dz = torch.randn_like(x)
    rm, rv = brn.running_mean.clone(), brn.running_var.clone()
    expected = brn_formula(x, brn.weight, brn.bias, rm, rv, 1.5, 0.5)
    out = brn(x)
    torch.testing.assert_close(out, expected)
    for a, e in zip(grads(out, [x, brn.weight, brn.bias], dz), grads(expected, [x, brn.weight, brn.bias], dz)):
        torch.testing.assert_close(a, e)
    # the clip bites: some r at its bounds, some d at +-d_max
    sigma_b = torch.sqrt(x.detach().var(dim=(0, 2, 3), unbiased=False) + 1e-5)
    r = sigma_b / torch.sqrt(rv + 1e-5)
    assert ((r > 1.5) | (r < 1 / 1.5)).any() and ((r < 1.5) & (r > 1 / 1.5)).any()
    # moving averages as BatchNorm2d updates them (unbiased variance), counter + 1
    n = 4 * 5 * 7
    torch.testing.assert_close(brn.running_mean, 0.9 * rm + 0.1 * x.detach().mean(dim=(0, 2, 3)))
    torch.testing.assert_close(brn.running_var, 0.9 * rv + 0.1 * x.detach().var(dim=(0, 2, 3), unbiased=True))
    assert brn.num_batches_tracked.item() == 11
    assert n > 1


def test_brn_eval_uses_moving_averages_and_unclipped_training_equals_eval():
    brn = active_brn(3)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64) * 2 + 1
    before = {k: v.clone() for k, v in brn.state_dict().items()}
    brn.eval()
    expected = brn.weight.view(SH) * (x - brn.running_mean.view(SH)) / torch.sqrt(brn.running_var.view(SH) + 1e-5) \
        + brn.bias.view(SH)
    torch.testing.assert_close(brn(x), expected)
    assert all(torch.equal(v, brn.state_dict()[k]) for k, v in before.items())  # eval changes nothing
    # Train and eval differ only through the clip: with limits that never bind, the training
    # output (batch statistics corrected by r and d) is the eval output.
    brn.train()
    brn.r_max, brn.d_max = 1e6, 1e6
    torch.testing.assert_close(brn(x), expected)


@pytest.mark.parametrize("steps", [3])
def test_brn_is_bn_when_r_max_1_and_d_max_0(steps):
    torch.manual_seed(0)
    bn = randomize(nn.BatchNorm2d(5).double())
    brn = BatchRenorm2d(5, r_max=1.0, d_max=0.0).double()
    brn.load_state_dict(bn.state_dict())
    for _ in range(steps):
        x = (torch.randn(3, 5, 4, 6, dtype=torch.float64) * 2 + 1).requires_grad_()
        dz = torch.randn_like(x)
        a, b = bn(x), brn(x)
        torch.testing.assert_close(a, b)
        for ga, gb in zip(grads(a, [x, bn.weight, bn.bias], dz), grads(b, [x, brn.weight, brn.bias], dz)):
            torch.testing.assert_close(ga, gb)
    assert bn.state_dict().keys() == brn.state_dict().keys()
    for k, v in bn.state_dict().items():
        torch.testing.assert_close(brn.state_dict()[k], v)
    assert brn.num_batches_tracked.item() == steps
    bn.eval(), brn.eval()
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(bn(x), brn(x))
    # and before the ramp starts, BRN with the default limits is BN as well
    brn2 = BatchRenorm2d(5).double()
    assert brn2.limits() == (1.0, 0.0)


def test_brn_ramp_schedule():
    f = lambda it: brn_limits(it, 3.0, 5.0, 5000, 40000, 25000)  # noqa: E731  the paper's defaults
    assert f(0) == (1.0, 0.0) and f(5000) == (1.0, 0.0)
    r, d = f(22500)
    assert r == pytest.approx(2.0) and d == pytest.approx(4.375)
    r, d = f(25000)
    assert r == pytest.approx(1 + 2 * 20000 / 35000) and d == pytest.approx(5.0)
    assert f(40000) == (3.0, 5.0) and f(10**6) == (3.0, 5.0)
    # as tensors (no host sync on CUDA), the same values
    rt, dt = brn_limits(torch.tensor(22500), 3.0, 5.0, 5000, 40000, 25000)
    assert rt.item() == pytest.approx(2.0) and dt.item() == pytest.approx(4.375)
    # the module reads its own counter
    m = BatchRenorm2d(2)
    m.num_batches_tracked.fill_(22500)
    assert m.limits() == pytest.approx((2.0, 4.375))


def test_brn_counter_survives_state_dict_and_checkpoint_round_trip():
    m = BatchRenorm2d(3, warmup_start=1, r_max_end=5, d_max_end=5)
    for _ in range(3):
        m(torch.randn(2, 3, 4, 4))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    restored = BatchRenorm2d(3, warmup_start=1, r_max_end=5, d_max_end=5)
    restored.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    assert restored.num_batches_tracked.item() == 3
    assert restored.limits() == m.limits() == pytest.approx((1 + 2 * 2 / 4, 5 * 2 / 4))
    restored(torch.randn(2, 3, 4, 4))
    assert restored.num_batches_tracked.item() == 4
    m.eval()(torch.randn(2, 3, 4, 4))  # eval forwards do not count
    assert m.num_batches_tracked.item() == 3


def s0_formula(x, w, b, v, groups, eps=1e-5):
    n, c, h, wd = x.shape
    var = x.reshape(n, groups, -1).var(dim=2, unbiased=False).repeat_interleave(c // groups, dim=1).view(n, c, 1, 1)
    return w.view(SH) * x * torch.sigmoid(v.view(SH) * x) / torch.sqrt(var + eps) + b.view(SH)


def b0_formula(x, w, b, v, var, eps=1e-5):
    left = torch.sqrt(var.view(SH) + eps)
    right = v.view(SH) * x + torch.sqrt(x.var(dim=(2, 3), unbiased=False, keepdim=True) + eps)
    return w.view(SH) * x / torch.maximum(left, right) + b.view(SH)


def require_cpp():
    if cpu_ops.ops() is None:
        pytest.skip(f"C++ kernels unavailable: {cpu_ops.unavailable_reason()}")


@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_evonorm_s0_equals_formula(impl):
    if impl == "auto":
        require_cpp()
    m = randomize(EvoNorm2dS0(8, groups=4, impl=impl).double())
    x = (torch.randn(3, 8, 5, 7, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    dz = torch.randn_like(x)
    out = m(x)
    if impl == "auto":
        assert "S0Function" in type(out.grad_fn).__name__  # the C++ kernels ran
    expected = s0_formula(x, m.weight, m.bias, m.v, 4)
    torch.testing.assert_close(out, expected)
    params = [x, m.weight, m.bias, m.v]
    for a, e in zip(grads(out, params, dz), grads(expected, params, dz)):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("training", [True, False])
def test_evonorm_b0_equals_formula(impl, training):
    if impl == "auto":
        require_cpp()
    m = randomize(EvoNorm2dB0(6, impl=impl).double())
    with torch.no_grad():
        m.running_var.copy_(torch.linspace(0.5, 3.0, 6))
    m.train(training)
    x = (torch.randn(4, 6, 5, 5, dtype=torch.float64) * 1.5 + 0.2).requires_grad_()
    dz = torch.randn_like(x)
    rv = m.running_var.clone()
    var = x.var(dim=(0, 2, 3), unbiased=False) if training else rv
    expected = b0_formula(x, m.weight, m.bias, m.v, var)
    out = m(x)
    torch.testing.assert_close(out, expected)
    params = [x, m.weight, m.bias, m.v]
    for a, e in zip(grads(out, params, dz), grads(expected, params, dz)):
        torch.testing.assert_close(a, e)
    # both branches of the max are taken somewhere
    left = torch.sqrt(var.detach().view(SH) + 1e-5)
    xd = x.detach()
    right = m.v.detach().view(SH) * xd + torch.sqrt(xd.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-5)
    assert (left > right).any() and (left < right).any()
    if training:
        n = 4 * 5 * 5
        batch_var = x.detach().var(dim=(0, 2, 3), unbiased=False)
        torch.testing.assert_close(m.running_var, 0.9 * rv + 0.1 * batch_var * n / (n - 1))
    else:
        assert torch.equal(m.running_var, rv)


@pytest.mark.parametrize("cls", [EvoNorm2dB0, EvoNorm2dS0])
def test_evonorm_matches_timm(cls):
    """timm's EvoNorm2dB0 / EvoNorm2dS0 compute the same function (their statistics in
    float32) and load our state_dict."""
    timm_layers = pytest.importorskip("timm.layers")
    ours = randomize(cls(64))
    theirs = getattr(timm_layers, cls.__name__)(64, eps=1e-5)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 64, 9, 11) * 3
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [EvoNorm2dB0, EvoNorm2dS0])
def test_evonorm_without_activation_is_the_affine(cls):
    m = randomize(cls(4, apply_act=False))
    assert m.v is None and set(dict(m.named_parameters())) == {"weight", "bias"}
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(m(x), m.weight.view(SH) * x + m.bias.view(SH))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cls", [EvoNorm2dB0, EvoNorm2dS0])
def test_evonorm_kernels_low_precision(cls, dtype):
    require_cpp()
    m = randomize(cls(32))
    x = (torch.randn(2, 32, 6, 6) * 2).to(dtype).requires_grad_()
    out = m(x)
    assert out.dtype == dtype
    ref = cls(32, impl="reference")
    ref.load_state_dict(m.state_dict())
    torch.testing.assert_close(out.float(), ref(x.detach().float()), rtol=2e-2, atol=2e-2)
    dx, dw = torch.autograd.grad(out.float().sum(), [x, m.weight])
    assert dx.dtype == dtype and torch.isfinite(dw).all()


def ws_formula(w, eps=1e-5):
    flat = w.reshape(w.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    var = flat.var(dim=1, unbiased=False, keepdim=True)
    return ((flat - mean) / torch.sqrt(var + eps)).reshape_as(w)


def test_ws_conv_equals_formula_and_gradcheck():
    torch.manual_seed(0)
    conv = WSConv2d(4, 6, kernel_size=3, padding=1, bias=True).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    expected = F.conv2d(x, ws_formula(conv.weight), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)
    dz = torch.randn_like(expected)
    for a, e in zip(grads(conv(x), [x, conv.weight, conv.bias], dz), grads(expected, [x, conv.weight, conv.bias], dz)):
        torch.testing.assert_close(a, e)
    assert torch.autograd.gradcheck(lambda w: standardize_weight(w), (conv.weight.detach().clone().requires_grad_(),))
    w = standardize_weight(conv.weight).reshape(6, -1)
    torch.testing.assert_close(w.mean(dim=1), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    # variance 1 up to eps / var(W) ~ 1e-3
    torch.testing.assert_close(w.var(dim=1, unbiased=False), torch.ones(6, dtype=torch.float64), atol=5e-3, rtol=0)


def test_ws_conv_matches_timm_std_conv():
    timm_layers = pytest.importorskip("timm.layers")
    ours = WSConv2d(8, 16, kernel_size=3, padding=1, bias=False)
    theirs = timm_layers.StdConv2d(8, 16, kernel_size=3, padding=1, bias=False, eps=1e-5)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 7, 7)
    torch.testing.assert_close(ours(x), theirs(x))


# ---------------------------------------------------------------------------------------
# Batch (in)dependence


def gnws_layer():
    return WSConv2d(8, 64, kernel_size=3, padding=1, bias=False, norm=nn.GroupNorm(32, 64))


@pytest.mark.parametrize(
    "make", [lambda: EvoNorm2dS0(64), gnws_layer, lambda: FilterResponseNorm2d(64)], ids=["EvoNormS0", "GNWS", "FRN"]
)
@pytest.mark.parametrize("training", [True, False])
def test_batch_independent_norms(make, training):
    m = randomize(make()).train(training)
    c_in = 8 if isinstance(m, WSConv2d) else 64
    x = torch.randn(5, c_in, 9, 9) * 2 + 0.5
    together = m(x)
    for i in range(5):
        torch.testing.assert_close(m(x[i : i + 1]), together[i : i + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: BatchRenorm2d(16), lambda: EvoNorm2dB0(16)], ids=["BRN", "EvoNormB0"])
def test_batch_dependent_norms_in_training(make):
    m = randomize(make())
    x = torch.randn(4, 16, 6, 6) * 2 + 0.5
    together = m(x)
    alone = m(x[:1])
    assert (alone - together[:1]).abs().max() > 1e-2
    m.eval()  # eval mode uses the moving averages: batch-independent
    torch.testing.assert_close(m(x[:1]), m(x)[:1])


@pytest.mark.parametrize("norm", ["BN", "GN", "FRN", "GN+TLU", "BRN", "SyncBRN", "EvoNormB0", "EvoNormS0", "LN"])
@pytest.mark.parametrize("training", [True, False])
def test_an_empty_batch_passes_through_and_teaches_the_statistics_nothing(norm, training):
    """An R-CNN mask head sees no ROIs when an image has no detections (or no foreground)."""
    from frn_det.layers.factory import resolve_norm

    factory = resolve_norm(norm, key="k")
    m = randomize(factory(32)).train(training)
    act = factory.activation(32)
    buffers = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(0, 32, 7, 7, requires_grad=True)
    y = act(m(x))
    assert y.shape == (0, 32, 7, 7)
    y.sum().backward()  # the graph reaches the parameters (DDP expects every one to get a gradient)
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())
    for k, v in m.state_dict().items():
        if not (norm == "BN" and k == "num_batches_tracked"):  # torch's BatchNorm2d counts empty batches too
            assert torch.equal(v, buffers[k]), k  # running statistics and BRN's counter unchanged


# ---------------------------------------------------------------------------------------
# Synced BRN over 2 GLOO workers


def _sync_brn_worker(rank, world, init_file, x, dz, state, out_dir, sizes):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        m = NaiveSyncBatchRenorm2d(x.shape[1], warmup_start=0, r_max_end=10, d_max_end=10, r_max=1.5, d_max=0.5)
        m = m.double()
        m.load_state_dict(state)
        part = x.split(sizes)[rank].clone().requires_grad_()
        out = m(part)
        dx, dw, db = torch.autograd.grad(out, [part, m.weight, m.bias], dz.split(sizes)[rank])
        torch.save({"out": out.detach(), "dx": dx, "dw": dw, "db": db, "state": m.state_dict()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


# (4, 0): a worker without ROIs in an R-CNN head still takes part in the all_reduce
@pytest.mark.parametrize("sizes", [(2, 2), (3, 1), (4, 0)])
def test_naive_sync_brn_over_two_gloo_workers_equals_brn_on_the_whole_batch(sizes):
    torch.manual_seed(0)
    single = active_brn(6)
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64) * 1.5 + 0.5
    dz = torch.randn_like(x)
    state = {k: v.clone() for k, v in single.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(
            _sync_brn_worker, args=(2, os.path.join(tmp, "init"), x, dz, state, tmp, sizes), nprocs=2, join=True
        )
        results = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(2)]
    xr = x.clone().requires_grad_()
    out = single(xr)
    dx, dw, db = torch.autograd.grad(out, [xr, single.weight, single.bias], dz)
    torch.testing.assert_close(torch.cat([r["out"] for r in results]), out.detach())
    torch.testing.assert_close(torch.cat([r["dx"] for r in results]), dx)
    # each worker's parameter gradient is its share (DDP then sums/averages them)
    torch.testing.assert_close(results[0]["dw"] + results[1]["dw"], dw)
    torch.testing.assert_close(results[0]["db"] + results[1]["db"], db)
    for r in results:
        for k, v in single.state_dict().items():
            torch.testing.assert_close(r["state"][k], v)
    assert results[0]["state"]["num_batches_tracked"].item() == 11


# ---------------------------------------------------------------------------------------
# The grammar, the model


def test_norm_grammar():
    assert parse_norm("FRN") == ("FRN", "TLU") and parse_norm("FRN+TLU") == ("FRN", "TLU")
    assert parse_norm("FRN+ReLU") == ("FRN", "ReLU")
    assert parse_norm("BN") == ("BN", "ReLU") == parse_norm("BN+ReLU")
    assert parse_norm("GN+TLU") == ("GN", "TLU")
    assert parse_norm("EvoNormS0") == ("EvoNormS0", None) and parse_norm("") == ("", None)
    new = {"BRN", "naiveSyncBRN", "SyncBRN", "GNWS", "EvoNormB0", "EvoNormS0"}
    assert new | {"FRN", "GN", "BN"} <= set(ACCEPTED_NORMS)


@pytest.mark.parametrize(
    "bad", ["BatchNorm", "GN+Swish", "EvoNormS0+TLU", "EvoNormB0+ReLU", "+TLU", "FRN+TLU+ReLU", "gn"]
)
def test_unknown_norm_strings_name_key_value_and_choices(bad):
    with pytest.raises(ValueError) as err:
        parse_norm(bad, "MODEL.FPN.NORM")
    msg = str(err.value)
    assert f"MODEL.FPN.NORM={bad!r}" in msg
    for choice in ("'BN'", "'GN'", "'FRN'", "'BRN'", "'GNWS'", "'EvoNormB0'", "'EvoNormS0'", "'ReLU'", "'TLU'"):
        assert choice in msg


def test_bad_head_norm_fails_before_anything_is_built(monkeypatch):
    import frn_det.modeling.retinanet as retinanet

    def no_build(cfg):
        raise AssertionError("the backbone was built before the norm strings were checked")

    monkeypatch.setattr(retinanet, "build_backbone", no_build)
    with pytest.raises(ValueError, match=r"MODEL.RETINANET.NORM='GN\+GELU' is not a known norm.*'TLU'"):
        build_model(tiny_cfg("GN", "MODEL.RETINANET.NORM", "GN+GELU"))


ALL_SPECS = [f"{n}+{a}" for n in ("BN", "GN", "FRN", "BRN", "naiveSyncBRN", "SyncBRN", "GNWS") for a in ("ReLU", "TLU")]
ALL_SPECS += ["BRN", "GNWS", "EvoNormB0", "EvoNormS0"]


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_every_norm_string_builds_and_trains_one_step(spec):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(spec)).train()
    with EventStorage():
        losses = model(batch())
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def ends_in_activation(m):
    return (isinstance(m, (EvoNorm2dB0, EvoNorm2dS0)) and m.apply_act) or isinstance(m, TLU) or \
        (isinstance(m, FilterResponseNorm2d) and m.tlu)


@pytest.mark.parametrize("spec,relus", [
    ("EvoNormB0", 1 + 8), ("EvoNormS0", 1 + 8),  # P6->P7, plus ReLU after R18's 8 residual adds
    ("GN+TLU", 1), ("BN+TLU", 1), ("FRN", 1), ("GNWS+TLU", 1),  # TLU after the adds too
    ("FRN+ReLU", None), ("GN", None),
])
def test_no_relu_follows_a_norm_activation_layer(spec, relus):
    kinds = (EvoNorm2dB0, EvoNorm2dS0, TLU, FilterResponseNorm2d, nn.GroupNorm, nn.BatchNorm2d)
    model = build_model(tiny_cfg(spec)).eval()
    events = record_execution(model, [{"image": torch.rand(3, 64, 64) * 255}], lambda name, m: isinstance(m, kinds))
    acts = [i for i, (_, m) in enumerate(events) if m is not None and ends_in_activation(m)]
    offenders = [events[i][0] for i in acts if i + 1 < len(events) and events[i + 1][0] == "relu"]
    assert offenders == []
    n_relu = sum(1 for name, _ in events if name == "relu")
    if relus is not None:
        assert len(acts) > 20
        assert n_relu == relus
    else:
        assert n_relu > 20 and not any(isinstance(m, TLU) for m in model.modules())


def test_layer_placement_for_evonorm_and_x_tlu():
    model = build_model(tiny_cfg("EvoNormS0"))
    bottom_up, fpn, head = model.backbone.bottom_up, model.backbone, model.head
    block = bottom_up.res3[0]
    assert isinstance(block.conv1.norm, EvoNorm2dS0) and block.conv1.norm.apply_act
    assert isinstance(block.act1, nn.Identity)
    assert not block.conv2.norm.apply_act and not block.shortcut.norm.apply_act  # before the add: linear
    assert isinstance(block.out_act, nn.ReLU)
    assert all(not m.norm.apply_act for m in list(fpn.lateral_convs) + list(fpn.output_convs))
    subnet = list(head.cls_subnet)
    assert [type(m).__name__ for m in subnet] == ["Conv2d", "EvoNorm2dS0", "Identity"] * 2

    model = build_model(tiny_cfg("GN+TLU"))
    block = model.backbone.bottom_up.res3[0]
    assert isinstance(block.conv1.norm, nn.GroupNorm) and isinstance(block.act1, TLU)
    assert isinstance(block.out_act, TLU) and isinstance(model.backbone.bottom_up.stem.act, TLU)
    assert all(isinstance(m.norm, nn.GroupNorm) for m in model.backbone.lateral_convs)
    assert [type(m).__name__ for m in model.head.bbox_subnet] == ["Conv2d", "GroupNorm", "TLU"] * 2
    # the residual activation option applies to every +TLU norm
    model = build_model(tiny_cfg("GN+TLU", "MODEL.FRN.RESIDUAL_ACTIVATION", "ReLU"))
    assert isinstance(model.backbone.bottom_up.res3[0].out_act, nn.ReLU)


def test_gnws_standardizes_exactly_the_convs_gn_follows():
    gn, gnws = build_model(tiny_cfg("GN")), build_model(tiny_cfg("GNWS"))
    assert {k: v.shape for k, v in gn.state_dict().items()} == {k: v.shape for k, v in gnws.state_dict().items()}
    convs = {n: m for n, m in gnws.named_modules() if isinstance(m, nn.Conv2d)}
    ws = {n for n, m in convs.items() if isinstance(m, WSConv2d)}
    normed = {n for n, m in gn.named_modules() if isinstance(m, nn.Conv2d) and getattr(m, "norm", None) is not None}
    head = {f"head.{s}.{i}" for s in ("cls_subnet", "bbox_subnet") for i in (0, 3)}
    assert ws == normed | head
    assert any(".fpn_lateral" in n for n in ws) and "backbone.bottom_up.stem.conv1" in ws
    assert not any(k in n for n in ws for k in ("top_block", "cls_score", "bbox_pred"))
    # the FPN's list references see the same (converted) modules
    assert all(isinstance(m, WSConv2d) for m in gnws.backbone.lateral_convs)


def test_brn_model_has_bn_checkpoint_keys_and_counts_iterations():
    bn, brn = build_model(tiny_cfg("BN")), build_model(tiny_cfg("BRN"))
    assert {k: v.shape for k, v in bn.state_dict().items()} == {k: v.shape for k, v in brn.state_dict().items()}
    brn.load_state_dict(bn.state_dict())  # BN checkpoints load
    assert isinstance(brn.head.cls_subnet[1], CycleBatchRenormList) and len(brn.head.cls_subnet[1]) == 5
    brn.train()
    with EventStorage():
        for _ in range(2):
            sum(brn(batch()).values()).backward()
    counters = {n: m.num_batches_tracked.item() for n, m in brn.named_modules() if isinstance(m, BatchRenorm2d)}
    assert len(counters) > 20 and set(counters.values()) == {2}  # one training forward per iteration, everywhere


def test_norm_options_reach_the_layers():
    cfg = tiny_cfg("BRN", "MODEL.BRN.R_MAX", "2.5", "MODEL.BRN.D_MAX", "1.5", "MODEL.BRN.WARMUP_START_ITER", "10",
                   "MODEL.BRN.R_MAX_END_ITER", "100", "MODEL.BRN.D_MAX_END_ITER", "50", "MODEL.BRN.MOMENTUM", "0.05")
    brns = [m for m in build_model(cfg).modules() if isinstance(m, BatchRenorm2d)]
    assert brns and all((m.r_max, m.d_max, m.warmup_start, m.r_max_end, m.d_max_end, m.momentum)
                        == (2.5, 1.5, 10, 100, 50, 0.05) for m in brns)
    cfg = tiny_cfg("EvoNormS0", "MODEL.EVONORM.GROUPS", "16", "MODEL.EVONORM.EPS", "1e-3", "MODEL.EVONORM.IMPL",
                   "reference")
    s0 = [m for m in build_model(cfg).modules() if isinstance(m, EvoNorm2dS0)]
    assert s0 and all(m.groups == 16 and m.eps == 1e-3 and m.impl == "reference" for m in s0)
    ws = [m for m in build_model(tiny_cfg("GNWS", "MODEL.WS.EPS", "1e-4")).modules() if isinstance(m, WSConv2d)]
    assert ws and all(m.ws_eps == 1e-4 for m in ws)
    with pytest.raises(ValueError, match=r"MODEL.BRN.R_MAX must be >= 1"):
        build_model(tiny_cfg("BRN", "MODEL.BRN.R_MAX", "0.5"))
    with pytest.raises(ValueError, match=r"MODEL.RETINANET.NORM='EvoNormS0'.*MODEL.EVONORM.GROUPS.*C=48"):
        build_model(tiny_cfg("EvoNormS0", "MODEL.FPN.OUT_CHANNELS", "48"))


def weight_decay_of(optimizer):
    return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("spec", ["BRN", "EvoNormB0", "EvoNormS0", "GNWS", "GN+TLU", "BN+TLU"])
def test_new_norm_parameters_get_weight_decay_norm(spec):
    cfg = tiny_cfg(spec, "SOLVER.WEIGHT_DECAY", "1e-4", "SOLVER.WEIGHT_DECAY_NORM", "0.0")
    model = build_model(cfg)
    wd = weight_decay_of(build_optimizer(cfg, model))
    norm_types = (BatchRenorm2d, CycleBatchRenormList, EvoNorm2dB0, EvoNorm2dS0, TLU, nn.GroupNorm, nn.BatchNorm2d)
    norm_params = [p for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)]
    if spec == "BN+TLU":  # Detectron2's per-level CycleBatchNormList keeps its stock (plain) decay
        norm_params = [p for m in model.modules() if isinstance(m, (TLU, nn.BatchNorm2d)) for p in m.parameters()]
    assert len(norm_params) > 50
    assert all(wd[id(p)] == 0.0 for p in norm_params)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(wd[id(p)] == 1e-4 for p in convs)


def test_gnws_head_standardizes_each_conv_once_per_forward(monkeypatch):
    from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

    import frn_det.layers.norms.weight_std as ws

    model = build_model(tiny_cfg("GNWS")).eval()
    features = [torch.randn(1, 64, s, s) for s in (8, 4, 2, 1, 1)]
    calls = []
    real = ws.standardize_weight
    monkeypatch.setattr(ws, "standardize_weight", lambda w, eps: calls.append(w) or real(w, eps))
    ours = model.head(features)  # with autograd (inference caches W_hat across calls anyway)
    assert len(calls) == 4  # 2 convs x 2 subnets, shared by the 5 levels
    stock = RetinaNetHead.forward(model.head, features)  # standardizes at every call
    assert len(calls) == 4 + 4 * 5
    for a, b in zip(ours, stock):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)


def test_ws_conv_caches_the_standardized_weight_for_inference_until_the_weight_changes():
    conv = WSConv2d(3, 4, kernel_size=3, padding=1, bias=False)
    x = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        a = conv(x)
        w_hat = conv.standardized_weight()
        assert conv.standardized_weight() is w_hat  # cached
        conv.weight.mul_(2.0).add_(0.1)  # an in-place update (optimizer step, load_state_dict)
        assert conv.standardized_weight() is not w_hat
        b = conv(x)
    torch.testing.assert_close(b, F.conv2d(x, ws_formula(conv.weight.detach()), padding=1))
    assert not torch.allclose(a, b)
    out = conv(x)  # with autograd: computed in the graph, the gradient reaches the weight
    assert torch.autograd.grad(out.sum(), conv.weight)[0].abs().sum() > 0
