"""The second round of small-batch norms: EvalNorm, Cross-Iteration BN, MABN (with weight
centralization), Instance Normalization, Weight Normalization; PreciseBN for every
batch-statistics norm. Formulas and gradients in float64 against direct implementations of
the papers' equations, hand-computed statistics, batch (in)dependence, empty batches, one
training step per string in RetinaNet and Mask R-CNN, where the layers go, the sweep axis."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from frn_testing import batch as retinanet_batch  # two tiny images, one box each
from frn_testing import record_execution
from harness import compose_job, tiny_cfg
from lazy_testing import shapes, yaml_and_lazy_models
from rcnn_testing import rcnn_training_batch, tiny_rcnn
from torch import nn
from torch.nn.utils import parametrize

from frn_det.engine.precise_bn import batch_stat_modules, update_population_stats
from frn_det.layers import ACCEPTED_NORMS, TLU, BatchRenorm2d, EvoNorm2dB0
from frn_det.layers.factory import resolve_norm
from frn_det.layers.norms import (
    CrossIterationBatchNorm2d,
    EvalNorm2d,
    InstanceNorm2d,
    MABN2d,
    WCConv2d,
    WCLinear,
    WNBias2d,
    centralize_weight,
    link_cbn_layers,
    weight_normalize_layers,
)

SH = (1, -1, 1, 1)
NEW = ["EvalNorm", "CBN", "MABN", "IN", "WN"]


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("weight", "bias")) and p.dim() == 1:
                p.copy_(
                    torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (1.0 if name.endswith("weight") else 0)
                )
    return module


def conv_cbn(k=3, burnin=0, c_in=3, c=4, seed=0):
    """A float64 conv followed by a CBN linked to it (what the model builders do)."""
    torch.manual_seed(seed)
    conv = Conv2d(c_in, c, 3, padding=1, bias=False, norm=CrossIterationBatchNorm2d(c, buffer_size=k, burnin=burnin))
    randomize(conv.norm)
    conv = conv.double()
    assert link_cbn_layers([conv]) == 1
    return conv


# ---------------------------------------------------------------------------------------
# Cross-Iteration BN


def test_cbn_with_buffer_1_is_bn_over_training_steps():
    torch.manual_seed(0)
    cbn = conv_cbn(k=1)
    bn = Conv2d(3, 4, 3, padding=1, bias=False, norm=nn.BatchNorm2d(4)).double()
    bn.load_state_dict(cbn.state_dict())
    for step in range(4):
        x = torch.randn(2, 3, 6, 6, dtype=torch.float64) * (1 + step)
        dz = torch.randn(2, 4, 6, 6, dtype=torch.float64)
        outs = []
        for m in (cbn, bn):
            out = m(x)
            g = torch.autograd.grad(out, [m.weight, m.norm.weight, m.norm.bias], dz)
            outs.append((out, g))
            with torch.no_grad():
                m.weight -= 0.1 * g[0]
        torch.testing.assert_close(outs[0][0], outs[1][0])
        for a, b in zip(outs[0][1], outs[1][1]):
            torch.testing.assert_close(a, b)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(cbn.norm.state_dict()[key], bn.norm.state_dict()[key])


def cbn_reference(xs, thetas, x_t, theta, w, b, k, eps=1e-5):
    """The paper's equations directly: the statistics of the previous k - 1 iterations (inputs
    xs, conv weights thetas) compensated to `theta` by the first-order Taylor term, computed as
    a directional derivative (mu is linear in theta: exact; nu = mean(y^2): 2 mean(y dy));
    the gradient flows through the current iteration's statistics only."""
    y_t = F.conv2d(x_t, theta, padding=1)
    mus, nus = [y_t.mean(dim=(0, 2, 3))], [(y_t * y_t).mean(dim=(0, 2, 3))]
    delta = theta.detach()
    for x_p, th_p in list(zip(xs, thetas))[-(k - 1):][::-1]:
        y_p = F.conv2d(x_p, th_p, padding=1)
        dy = F.conv2d(x_p, delta - th_p, padding=1)
        mus.append(y_p.mean(dim=(0, 2, 3)) + dy.mean(dim=(0, 2, 3)))
        nus.append((y_p * y_p).mean(dim=(0, 2, 3)) + 2 * (y_p * dy).mean(dim=(0, 2, 3)))
    mu_all, nu_all = torch.stack(mus), torch.stack(nus)
    valid = (nu_all - mu_all ** 2 >= 0).double()
    mu = (mu_all * valid).sum(0) / valid.sum(0)
    var = (nu_all * valid).sum(0) / valid.sum(0) - mu ** 2
    return w.view(SH) * (y_t - mu.view(SH)) / torch.sqrt(var.view(SH) + eps) + b.view(SH)


@pytest.mark.parametrize("k", [2, 3])
def test_cbn_forward_and_gradients_equal_the_papers_equations(k):
    m = conv_cbn(k=k)
    g = torch.Generator().manual_seed(1)
    xs, thetas = [], []
    for step in range(4):  # the weight changes between iterations: the compensation matters
        x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64) + 0.3
        dz = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64)
        x_in = x.clone().requires_grad_()
        out = m(x_in)
        got = torch.autograd.grad(out, [x_in, m.weight, m.norm.weight, m.norm.bias], dz)
        theta = m.weight.detach().clone().requires_grad_()
        w, b = (p.detach().clone().requires_grad_() for p in (m.norm.weight, m.norm.bias))
        x_ref = x.clone().requires_grad_()
        ref = cbn_reference(xs, thetas, x_ref, theta, w, b, k)
        want = torch.autograd.grad(ref, [x_ref, theta, w, b], dz)
        torch.testing.assert_close(out, ref)
        for a, e in zip(got, want):
            torch.testing.assert_close(a, e)
        xs.append(x)
        thetas.append(m.weight.detach().clone())
        with torch.no_grad():
            m.weight.add_(0.05 * torch.randn(m.weight.shape, generator=g, dtype=torch.float64))
    assert len(m.norm._history) == k - 1


def test_cbn_burn_in_is_bn_and_stores_nothing():
    m = conv_cbn(k=3, burnin=2)
    assert m.norm.window() == 1
    for _ in range(2):
        m(torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True))
        assert m.norm._history == []
    assert m.norm.window() == 3
    for n in (1, 2, 2):
        m(torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True))
        assert len(m.norm._history) == n


def test_cbn_eval_and_without_grad_use_bn():
    m = conv_cbn(k=3)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():  # no d mu / d theta: BN with the batch statistics, nothing stored
        y = m(x)
    assert m.norm._history == []
    conv = F.conv2d(x, m.weight, padding=1)
    var = conv.var(dim=(0, 2, 3), unbiased=False)
    expected = (conv - conv.mean(dim=(0, 2, 3)).view(SH)) / torch.sqrt(var.view(SH) + 1e-5)
    torch.testing.assert_close(y, expected * m.norm.weight.view(SH) + m.norm.bias.view(SH))
    m.eval()
    torch.testing.assert_close(m(x), F.batch_norm(conv, m.norm.running_mean, m.norm.running_var, m.norm.weight,
                                                  m.norm.bias, False, 0.0, 1e-5))


# ---------------------------------------------------------------------------------------
# MABN


def test_mabn_statistics_by_hand_on_a_toy_sequence():
    """B = 2, no warm-up beyond the window, renormalization from iteration 4, momentum 0.5;
    batch t is constant t (so mean(x^2) = t^2) and dy = 1."""
    m = MABN2d(1, eps=0.0 + 1e-12, momentum=0.5, buffer_size=2, warmup_iters=0, renorm_start=3, r_max=5.0).double()
    psi_hand = [1.0, 4.0, (4 + 9) / 2, (16 + 9) / 2]  # t <= B: the batch's; then the SMA of the last 2
    run_hand = [1.0, 2.5, 4.5, 8.5]  # 0.5 * previous + 0.5 * psi, from 1
    r_hand = [1.0, 1.0, 1.0, math.sqrt(12.5 / 4.5)]  # r = 1 up to iteration 3, then sqrt(psi / running)
    for t in range(1, 5):
        x = torch.full((2, 1, 2, 2), float(t), dtype=torch.float64, requires_grad=True)
        y = m(x)
        run_before = run_hand[t - 2] if t > 1 else 1.0
        r = min(max(math.sqrt(psi_hand[t - 1] / run_before), 1 / 5), 5) if t > 3 else 1.0
        assert r == pytest.approx(r_hand[t - 1])
        torch.testing.assert_close(y, torch.full_like(x, t * r / math.sqrt(psi_hand[t - 1])))
        assert m.running_var.item() == pytest.approx(run_hand[t - 1])
        (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        # g = r, z = t / sqrt(psi): g_psi_t = r t / sqrt(psi); SMA of the last 2 after the window
        z = t / math.sqrt(psi_hand[t - 1])
        gz = [r_hand[i] * (i + 1) / math.sqrt(psi_hand[i]) for i in range(t)]
        g_psi = gz[-1] if t <= 2 else (gz[-1] + gz[-2]) / 2
        torch.testing.assert_close(dx, torch.full_like(x, (r - z * g_psi) / math.sqrt(psi_hand[t - 1])))
    assert int(m.num_batches_tracked) == 4
    torch.testing.assert_close(m.buffer_x2.flatten(), torch.tensor([16.0, 9.0], dtype=torch.float64))


def test_mabn_warm_up_gradient_is_the_exact_gradient_of_the_formula():
    m = randomize(MABN2d(4, buffer_size=4, warmup_iters=100).double())
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64) * 2 + 0.4
    dz = torch.randn_like(x)
    x1 = x.clone().requires_grad_()
    got = torch.autograd.grad(m(x1), [x1, m.weight, m.bias], dz)
    x2, w, b = (t.detach().clone().requires_grad_() for t in (x, m.weight, m.bias))
    psi = (x2 * x2).mean(dim=(0, 2, 3))
    ref = w.view(SH) * x2 / torch.sqrt(psi.view(SH) + 1e-5) + b.view(SH)
    want = torch.autograd.grad(ref, [x2, w, b], dz)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


def test_mabn_eval_and_weight_centralization():
    m = randomize(MABN2d(4).double()).eval()
    with torch.no_grad():
        m.running_var.copy_(torch.tensor([0.5, 1.0, 2.0, 4.0]))
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(m(x), m.weight.view(SH) * x / torch.sqrt(m.running_var.view(SH) + 1e-5)
                               + m.bias.view(SH))
    torch.testing.assert_close(m(x[:1]), m(x)[:1])  # eval: batch-independent
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    wc = centralize_weight(w)
    torch.testing.assert_close(wc.mean(dim=(1, 2, 3)), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(w - wc, w.mean(dim=(1, 2, 3), keepdim=True).expand_as(w))


# ---------------------------------------------------------------------------------------
# EvalNorm


def test_evalnorm_trains_as_bn_and_tracks_the_batch_size():
    torch.manual_seed(0)
    en, bn = randomize(EvalNorm2d(4).double()), randomize(nn.BatchNorm2d(4).double())
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    dz = torch.randn_like(x)
    outs = [torch.autograd.grad(m(x.requires_grad_()), [x, m.weight], dz) + (m(x.detach()),) for m in (en, bn)]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(en.running_var, bn.running_var)
    assert en.batch_samples.item() == 3.0


def test_evalnorm_eval_statistics_reproduce_the_training_normalization():
    """A sample trained in a batch of 2 with a sample o: with the population statistics equal
    to o's, EvalNorm's eval output for the sample is exactly its training output."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 4, 6, 6, generator=g, dtype=torch.float64) * 1.5 + 0.7
    o = torch.randn(1, 4, 6, 6, generator=g, dtype=torch.float64) * 0.5 - 0.2
    m = randomize(EvalNorm2d(4).double())
    trained = m(torch.cat([a, o]))[:1]  # training: batch statistics of {a, o}; S = 2
    with torch.no_grad():
        m.running_mean.copy_(o.mean(dim=(0, 2, 3)))
        m.running_var.copy_(o.var(dim=(0, 2, 3), unbiased=False))
    m.eval()
    torch.testing.assert_close(m(a), trained)
    torch.testing.assert_close(m(torch.cat([a, o]))[:1], m(a))  # eval: batch-independent
    # S = 1 (one image per worker): the sample's own statistics, as in training
    m.batch_samples.fill_(1.0)
    torch.testing.assert_close(m(a), F.instance_norm(a, eps=1e-5) * m.weight.view(SH) + m.bias.view(SH))
    # S unknown (a BN checkpoint): BatchNorm's eval
    m.batch_samples.zero_()
    torch.testing.assert_close(m(a), F.batch_norm(a, m.running_mean, m.running_var, m.weight, m.bias, False, 0, 1e-5))


def test_evalnorm_loads_a_bn_checkpoint():
    bn = randomize(nn.BatchNorm2d(4))
    en = EvalNorm2d(4)
    en.load_state_dict(bn.state_dict(), strict=True)
    torch.testing.assert_close(en.weight, bn.weight)
    assert en.batch_samples.item() == 0.0


# ---------------------------------------------------------------------------------------
# IN, WN


def test_instance_norm_formula_and_gradients_float64():
    m = randomize(InstanceNorm2d(6).double())
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64) * 3 + 1
    dz = torch.randn_like(x)
    x1 = x.clone().requires_grad_()
    got = torch.autograd.grad(m(x1), [x1, m.weight, m.bias], dz)
    x2, w, b = (t.detach().clone().requires_grad_() for t in (x, m.weight, m.bias))
    mean, var = x2.mean(dim=(2, 3), keepdim=True), x2.var(dim=(2, 3), unbiased=False, keepdim=True)
    ref = w.view(SH) * (x2 - mean) / torch.sqrt(var + 1e-5) + b.view(SH)
    torch.testing.assert_close(m(x), ref)
    for a, e in zip(got, torch.autograd.grad(ref, [x2, w, b], dz)):
        torch.testing.assert_close(a, e)
    one = torch.randn(2, 6, 1, 1, dtype=torch.float64)  # a 1x1 map (P7 of a small image): the bias
    torch.testing.assert_close(m(one), m.bias.view(SH).expand_as(one))


def test_weight_norm_conv_formula_and_gradients_float64():
    torch.manual_seed(0)
    conv = Conv2d(3, 4, 3, padding=1, bias=False, norm=WNBias2d(4)).double()
    before = conv.weight.detach().clone()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        y0 = conv(x)
    assert weight_normalize_layers([conv]) == 1 and weight_normalize_layers([conv]) == 1  # idempotent
    assert parametrize.is_parametrized(conv, "weight")
    with torch.no_grad():
        torch.testing.assert_close(conv(x), y0)  # g starts at ||V||: the conv's own init
        conv.norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        conv.parametrizations.weight.original0.mul_(torch.tensor([2.0, 0.5, 1.0, 3.0]).view(-1, 1, 1, 1))
    g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
    torch.testing.assert_close(v, before)
    dz = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    got = torch.autograd.grad(conv(x), [g, v, conv.norm.bias], dz)
    g2, v2, b2 = (t.detach().clone().requires_grad_() for t in (g, v, conv.norm.bias))
    w = g2 * v2 / v2.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    ref = F.conv2d(x, w, padding=1) + b2.view(SH)
    torch.testing.assert_close(conv(x), ref)
    for a, e in zip(got, torch.autograd.grad(ref, [g2, v2, b2], dz)):
        torch.testing.assert_close(a, e)
    # no activation normalization: scaling the input scales the output (less the bias)
    torch.testing.assert_close(conv(3 * x) - conv.norm.bias.view(SH), 3 * (conv(x) - conv.norm.bias.view(SH)))


# ---------------------------------------------------------------------------------------
# Batch (in)dependence, empty batches


@pytest.mark.parametrize("norm", ["IN", "WN", "EvalNorm", "MABN"])
def test_batch_independent_where_claimed(norm):
    """IN and WN always; EvalNorm and MABN in eval."""
    factory = resolve_norm(norm, key="k")
    m = randomize(factory(8)).eval()
    if norm == "EvalNorm":
        m.batch_samples.fill_(2.0)
    x = torch.randn(4, 8, 5, 5) * 2 + 0.5
    modes = [True, False] if norm in ("IN", "WN") else [False]
    for training in modes:
        m.train(training)
        together = m(x)
        for i in range(4):
            torch.testing.assert_close(m(x[i:i + 1]), together[i:i + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["EvalNorm", "CBN", "MABN"])
def test_batch_dependent_in_training(norm):
    m = randomize(resolve_norm(norm, key="k")(8))
    x = torch.randn(4, 8, 5, 5) * 2 + 0.5
    assert (m(x[:1]) - m(x)[:1]).abs().max() > 1e-2


@pytest.mark.parametrize("norm", NEW)
@pytest.mark.parametrize("training", [True, False])
def test_an_empty_batch_passes_through_and_teaches_the_statistics_nothing(norm, training):
    factory = resolve_norm(norm, key="k")
    m = randomize(factory(32)).train(training)
    buffers = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(0, 32, 7, 7, requires_grad=True)
    y = factory.activation(32)(m(x))
    assert y.shape == (0, 32, 7, 7)
    y.sum().backward()
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())
    for k, v in m.state_dict().items():
        assert torch.equal(v, buffers[k]), k


# ---------------------------------------------------------------------------------------
# In the models


def train_two_steps(model, data):
    """Two training steps (CBN's window and MABN's buffers in use from the second)."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        with EventStorage():
            losses = model(data)
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == []
        opt.step()
    return losses


LAYER_OF = {"EvalNorm": EvalNorm2d, "CBN": CrossIterationBatchNorm2d, "MABN": MABN2d, "IN": InstanceNorm2d,
            "WN": WNBias2d}


def check_adapted(model, norm):
    """Every conv / FC the norm follows is adapted as the norm asks: MABN centralized, WN
    weight-normalized, CBN linked; returns how many norm layers there are."""
    from frn_det.layers.norms import normalized_layers

    layer_type = LAYER_OF[norm]
    pairs = normalized_layers([model], layer_type)
    n_norms = sum(isinstance(m, layer_type) for m in model.modules())
    assert pairs and n_norms >= len(pairs)
    for layer, holder in pairs:
        if norm == "MABN":
            assert isinstance(layer, (WCConv2d, WCLinear)), layer
        elif norm == "WN":
            assert parametrize.is_parametrized(layer, "weight")
        elif norm == "CBN":
            assert all(n._source == [layer] for n in holder.modules() if isinstance(n, CrossIterationBatchNorm2d))
    if norm == "CBN":  # every CBN linked, to the layer right before it
        for name, m in model.named_modules():
            if isinstance(m, Conv2d) and isinstance(m.norm, CrossIterationBatchNorm2d):
                assert m.norm._source == [m], name
    return n_norms


@pytest.mark.parametrize("norm", NEW)
def test_every_new_norm_trains_in_retinanet(norm):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(norm, "MODEL.CBN.BURNIN_ITER", 0, "MODEL.MABN.BUFFER_SIZE", 2,
                                 "MODEL.MABN.WARMUP_ITER", 0)).train()
    assert check_adapted(model, norm) > 20
    train_two_steps(model, retinanet_batch())
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 64) * 255}])
    assert "instances" in out[0]


@pytest.mark.slow
@pytest.mark.parametrize("norm", NEW)
def test_every_new_norm_trains_in_mask_rcnn_heads_and_fcs(norm):

    torch.manual_seed(0)
    model = tiny_rcnn(norm, "MODEL.ROI_BOX_HEAD.NORM_FCS", True, "MODEL.CBN.BURNIN_ITER", 0).train()
    check_adapted(model, norm)
    box, mask = model.roi_heads.box_head, model.roi_heads.mask_head
    assert isinstance(box.fc_norm1.norm, LAYER_OF[norm]) and isinstance(mask.mask_fcn1.norm, LAYER_OF[norm])
    if norm == "MABN":
        assert isinstance(box.fc1, WCLinear) and isinstance(mask.mask_fcn4, WCConv2d)
    losses = train_two_steps(model, rcnn_training_batch())
    assert {"loss_cls", "loss_box_reg", "loss_mask"} <= set(losses)


def test_per_level_head_statistics_for_the_batch_statistics_norms():
    for norm, layer in (("EvalNorm", EvalNorm2d), ("CBN", CrossIterationBatchNorm2d), ("MABN", MABN2d)):
        head = build_model(tiny_cfg(norm)).head
        lists = [m for m in head.cls_subnet if isinstance(m, nn.ModuleList)]
        assert lists and all(len(lst) == 5 and all(isinstance(n, layer) for n in lst) for lst in lists)


@pytest.mark.parametrize("spec", ["MABN+TLU", "CBN+TLU", "IN+TLU", "EvalNorm+TLU", "WN+TLU"])
def test_no_relu_after_a_norm_activation(spec):
    """X+TLU: a TLU follows every norm, and no ReLU anywhere but Detectron2's P6->P7."""
    model = build_model(tiny_cfg(spec)).eval()
    kinds = (LAYER_OF[spec.split("+")[0]], TLU)
    events = record_execution(model, [{"image": torch.rand(3, 64, 64) * 255}], lambda name, m: isinstance(m, kinds))
    norms = [i for i, (_, m) in enumerate(events) if isinstance(m, LAYER_OF[spec.split("+")[0]])]
    assert len(norms) > 20
    after = {events[i][0]: events[i + 1][0] for i in norms if i + 1 < len(events)}
    # (the FPN's last output has no activation; Detectron2's P6 conv, not recorded, and its ReLU follow)
    assert [n for n, nxt in after.items() if nxt == "relu" and not n.startswith("backbone.fpn_output")] == []
    assert sum(1 for name, _ in events if name == "relu") == 1
    assert sum(1 for name, m in events if isinstance(m, TLU)) > 20


def test_grammar_accepts_the_new_strings():
    assert set(NEW) <= set(ACCEPTED_NORMS)
    for norm in NEW:
        assert resolve_norm(norm + "+TLU", key="k").spec == norm + "+TLU"


@pytest.mark.parametrize("key,value,match", [("MODEL.CBN.BUFFER_SIZE", 0, "MODEL.CBN.BUFFER_SIZE must be >= 1"),
                                             ("MODEL.MABN.MOMENTUM", 0.0, r"MODEL.MABN.MOMENTUM must be in \(0, 1\]"),
                                             ("MODEL.MABN.R_MAX", 0.5, "MODEL.MABN.R_MAX must be >= 1")])
def test_bad_options_are_clear_errors_before_building(key, value, match):
    with pytest.raises(ValueError, match=match):
        build_model(tiny_cfg("MABN", key, value))


def test_options_reach_the_layers():
    model = build_model(tiny_cfg("CBN", "MODEL.CBN.BUFFER_SIZE", 3, "MODEL.CBN.BURNIN_ITER", 7))
    cbn = next(m for m in model.modules() if isinstance(m, CrossIterationBatchNorm2d))
    assert (cbn.buffer_size, cbn.burnin) == (3, 7)
    model = build_model(tiny_cfg("MABN", "MODEL.MABN.BUFFER_SIZE", 5, "MODEL.MABN.WARMUP_ITER", 9))
    mabn = next(m for m in model.modules() if isinstance(m, MABN2d))
    assert (mabn.buffer_size, mabn.warmup_iters, mabn.buffer_x2.shape[0]) == (5, 9, 5)


# ---------------------------------------------------------------------------------------
# PreciseBN


class Probe(nn.Module):
    """conv -> norm, recording the norm's inputs."""

    def __init__(self, norm):
        super().__init__()
        self.conv = Conv2d(3, 4, 3, padding=1, bias=False, norm=norm)
        self.seen = []
        self.conv.norm.register_forward_pre_hook(lambda m, inp: self.seen.append(inp[0].detach().clone()))

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("make", [lambda: nn.BatchNorm2d(4), lambda: BatchRenorm2d(4, warmup_start=0, r_max_end=1,
                                                                                     d_max_end=1),
                                  lambda: EvoNorm2dB0(4), lambda: EvalNorm2d(4),
                                  lambda: CrossIterationBatchNorm2d(4, buffer_size=3, burnin=0),
                                  lambda: MABN2d(4, buffer_size=2, warmup_iters=0)],
                         ids=["BN", "BRN", "EvoNormB0", "EvalNorm", "CBN", "MABN"])
def test_precise_bn_averages_batch_statistics_and_restores_the_rest(make):
    torch.manual_seed(0)
    model = Probe(make()).double()
    link_cbn_layers([model])
    for _ in range(3):  # some training first: counters, windows, moving averages in use
        model(torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)).sum().backward()
    norm = model.conv.norm
    assert batch_stat_modules(model) == [norm]
    kept = {k: v.clone() for k, v in norm.state_dict().items() if k not in ("running_mean", "running_var")}
    momentum = norm.momentum
    batches = [torch.randn(2, 3, 5, 5, dtype=torch.float64) * (1 + i) + i for i in range(4)]
    model.seen.clear()
    update_population_stats(model, iter(batches), num_iter=4)
    xs = model.seen
    count = xs[0].numel() // 4
    if isinstance(norm, MABN2d):  # the statistic it normalizes with: the SMA of mean(x^2) over its window (2)
        x2 = [(x * x).mean(dim=(0, 2, 3)) for x in xs]
        window = [kept["buffer_x2"][int(kept["num_batches_tracked"]) % 2]] + x2  # the slot the next one keeps
        expected_var = torch.stack([(window[i] + window[i + 1]) / 2 for i in range(4)]).mean(0)
    else:
        batch_var = torch.stack([x.var(dim=(0, 2, 3), unbiased=False) * count / (count - 1) for x in xs])
        expected_var = batch_var.mean(0)
    if hasattr(norm, "running_mean"):  # the population's E[x^2] - E[x]^2: the batch means' spread included
        means = torch.stack([x.mean(dim=(0, 2, 3)) for x in xs])
        expected_var = (batch_var + means**2).mean(0) - means.mean(0) ** 2
        assert (expected_var > batch_var.mean(0)).all()  # these batches' means differ
    torch.testing.assert_close(norm.running_var, expected_var)
    if hasattr(norm, "running_mean"):
        torch.testing.assert_close(norm.running_mean, torch.stack([x.mean(dim=(0, 2, 3)) for x in xs]).mean(0))
    assert norm.momentum == momentum
    for k, v in kept.items():  # counters, MABN's windows, EvalNorm's batch size: as before
        assert torch.equal(norm.state_dict()[k], v), k


def test_precise_bn_keeps_retinanet_head_statistics_per_level():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("BN")).train()
    levels = [m for m in model.head.cls_subnet if isinstance(m, nn.ModuleList)][0]
    inputs = {i: [] for i in range(5)}
    hooks = [bn.register_forward_pre_hook(lambda m, inp, i=i: inputs[i].append(inp[0].detach().clone()))
             for i, bn in enumerate(levels)]
    with EventStorage():  # (RetinaNet's training forward logs; the hook provides one)
        update_population_stats(model, iter([retinanet_batch(2), retinanet_batch(2, 96)]), num_iter=2)
    for h in hooks:
        h.remove()
    means = []
    for i, bn in enumerate(levels):
        assert len(inputs[i]) == 2  # each level's BN saw its own level once per batch
        expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs[i]]).mean(0)
        torch.testing.assert_close(bn.running_mean, expected)
        means.append(bn.running_mean.clone())
    assert not torch.allclose(means[0], means[4])  # P3 and P7 keep their own statistics


def test_precise_bn_needs_enough_batches():
    model = Probe(nn.BatchNorm2d(4))
    before = model.conv.norm.running_mean.clone()
    with pytest.raises(ValueError, match="ran out after 1 batches, 3 are needed"):
        update_population_stats(model, iter([torch.randn(2, 3, 5, 5)]), num_iter=3)
    assert torch.equal(model.conv.norm.running_mean, before)  # nothing half-updated


# ---------------------------------------------------------------------------------------
# The sweep axis


def test_sweep_precise_bn_label_run_name_and_config():

    from frn_det.sweep.planning.d2config import build_detectron2_config, norm_label, run_name

    job = compose_job("norm=bn", "precise_bn=true")
    cfg, _ = build_detectron2_config(job, "/tmp/x")
    assert cfg.TEST.PRECISE_BN.ENABLED and norm_label(job) == "bn+precise"
    assert run_name("bn", None, 4, 1.0, 0, True) == "bn+precise_ims4_seed0"
    assert run_name("bn", None, 4, 1.0, 0) == "bn_ims4_seed0"
    plain = compose_job("norm=bn")
    assert not build_detectron2_config(plain, "/tmp/x")[0].TEST.PRECISE_BN.ENABLED and norm_label(plain) == "bn"
    with pytest.raises(ValueError, match=r"precise_bn=true \(run gn\+precise\).*no batch-statistics norm.*"
                                         r"MODEL.RESNETS.NORM='GN'"):
        build_detectron2_config(compose_job("norm=gn", "precise_bn=true"), "/tmp/x")


@pytest.mark.parametrize("norm,strings", [("evalnorm", "EvalNorm"), ("cbn", "CBN"), ("mabn", "MABN"), ("in", "IN"),
                                          ("wn", "WN")])
def test_sweep_entries_and_scaled_schedules(norm, strings):

    from frn_det.sweep.planning.d2config import build_detectron2_config

    cfg, sched = build_detectron2_config(compose_job(f"norm={norm}"), "/tmp/x")
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.RETINANET.NORM) == (strings,) * 3
    assert cfg.MODEL.CBN.BURNIN_ITER == round(8 / 12 * sched.max_iter)
    assert cfg.MODEL.MABN.WARMUP_ITER == max(1, round(100 / 180000 * sched.max_iter))
    assert cfg.MODEL.MABN.RENORM_START_ITER == max(1, round(1000 / 180000 * sched.max_iter))


@pytest.mark.parametrize("name,count,norms", [("cross_iteration_bn_readme", 8, {"syncbn", "gn", "cbn"}),
                                              ("mabn_readme", 6, {"bn", "brn", "syncbn", "mabn"}),
                                              ("mmdetection_gn_ws", 2, {"gnws"})])
def test_published_references_load_with_their_protocol(name, count, norms):
    from harness import REPO

    from frn_det.report.references import load_references

    path = REPO / "configs" / "references" / f"{name}.yaml"
    refs = load_references(path)
    assert len(refs) == count and {r["norm"] for r in refs if "norm" in r} == norms
    assert all(r.get("source") and r.get("total_batch") == 16 for r in refs)
    assert "Protocol:" in path.read_text()
    if name == "mabn_readme":
        mabn = next(r for r in refs if r["label"].endswith("from scratch MABN"))
        assert (mabn["AP"], mabn["mask_AP"], mabn["ims_per_gpu"]) == (36.50, 32.69, 2)


@pytest.mark.parametrize("norm", NEW)
def test_lazy_config_model_is_the_yaml_model(norm):
    yaml_model, lazy = yaml_and_lazy_models(norm)
    assert shapes(lazy) == shapes(yaml_model) and repr(lazy) == repr(yaml_model)  # adapted layers included
    check_adapted(lazy, norm)
