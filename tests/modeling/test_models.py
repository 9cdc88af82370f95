"""Model structure: parity with stock Detectron2, FRN placement, no ReLU after FRN+TLU."""
import re

import pytest
import torch
from detectron2 import model_zoo
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer as d2_build_optimizer
from frn_testing import record_execution
from harness import tiny_cfg
from torch import nn

from frn_det.config.build import build_config
from frn_det.engine.optimizer import build_optimizer
from frn_det.layers import TLU, FilterResponseNorm2d

ZOO_RETINANET = "COCO-Detection/retinanet_R_50_FPN_1x.yaml"


def zoo_cfg(norm, ours):
    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RETINANET.NUM_CONVS", "2"]
    opts += [
        "MODEL.RESNETS.NORM",
        norm,
        "MODEL.FPN.NORM",
        norm if norm != "FrozenBN" else "",
        "MODEL.RETINANET.NORM",
        norm,
    ]
    if ours:
        opts += [
            "MODEL.META_ARCHITECTURE",
            "FRNRetinaNet",
            "MODEL.BACKBONE.NAME",
            "build_frn_retinanet_resnet_fpn_backbone",
        ]
    return build_config(model_zoo.get_config_file(ZOO_RETINANET), opts)


@pytest.mark.parametrize("norm", ["BN", "FrozenBN", "GN", ""])
def test_non_frn_norms_build_exactly_the_stock_model(norm):
    torch.manual_seed(0)
    stock = build_model(zoo_cfg(norm, ours=False)).eval()
    ours = build_model(zoo_cfg(norm, ours=True)).eval()
    stock_sd, ours_sd = stock.state_dict(), ours.state_dict()
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in stock_sd.items()}
    # Same weights -> same detections: the modules compute the same function, not just look alike.
    ours.load_state_dict(stock_sd, strict=True)
    image = {"image": torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8).float()}
    with torch.no_grad():
        a, b = stock([image])[0]["instances"], ours([image])[0]["instances"]
    torch.testing.assert_close(a.scores, b.scores)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor)


def test_bn_head_keeps_per_level_statistics():
    head = build_model(zoo_cfg("BN", ours=True)).head
    assert type(head.cls_subnet[1]).__name__ == "CycleBatchNormList"
    assert len(head.cls_subnet[1]) == 5  # P3-P7


@pytest.mark.parametrize("residual", ["TLU", "ReLU"])
def test_frn_model_has_no_relu_after_frn_tlu(residual):
    model = build_model(tiny_cfg("FRN", "MODEL.FRN.RESIDUAL_ACTIVATION", residual)).eval()
    events = record_execution(model, [{"image": torch.rand(3, 64, 64) * 255}],
                              lambda name, m: isinstance(m, (FilterResponseNorm2d, TLU)))
    frn_tlu_calls = [i for i, (_, m) in enumerate(events) if isinstance(m, FilterResponseNorm2d) and m.tlu]
    assert len(frn_tlu_calls) > 20
    offenders = [events[i][0] for i in frn_tlu_calls if i + 1 < len(events) and events[i + 1][0] == "relu"]
    assert offenders == []
    relus = sum(1 for name, _ in events if name == "relu")
    if residual == "TLU":
        assert relus == 1  # only the ReLU between P6 and P7, where there is no norm
    else:
        assert relus == 1 + 8  # plus one after each of R18's 8 residual adds


def test_frn_is_where_configured():
    model = build_model(tiny_cfg("FRN"))
    bottom_up, fpn, head = model.backbone.bottom_up, model.backbone, model.head
    assert isinstance(bottom_up.stem.conv1.norm, FilterResponseNorm2d) and bottom_up.stem.conv1.norm.tlu
    block = bottom_up.res3[0]
    assert block.conv1.norm.tlu and isinstance(block.act1, nn.Identity)
    assert not block.conv2.norm.tlu  # its activation comes after the residual add
    assert isinstance(block.shortcut.norm, FilterResponseNorm2d) and not block.shortcut.norm.tlu
    assert isinstance(block.out_act, TLU) and block.out_act.num_features == 64
    fpn_norms = [m.norm for m in list(fpn.lateral_convs) + list(fpn.output_convs)]
    assert len(fpn_norms) == 6
    assert all(isinstance(n, FilterResponseNorm2d) and not n.tlu for n in fpn_norms)
    head_frn = [m for m in head.cls_subnet if isinstance(m, FilterResponseNorm2d)]
    assert len(head_frn) == 2 and all(m.tlu for m in head_frn)
    assert not any(isinstance(m, nn.ReLU) for m in list(head.cls_subnet) + list(head.bbox_subnet))
    assert fpn.lateral_convs[0].bias is None  # normalized convs drop their bias, as in Detectron2


def test_frn_options_reach_the_layers():
    model = build_model(
        tiny_cfg("FRN", "MODEL.FRN.EPS", "1e-5", "MODEL.FRN.LEARNABLE_EPS", "True", "MODEL.FRN.IMPL", "reference")
    )
    frns = [m for m in model.modules() if isinstance(m, FilterResponseNorm2d)]
    assert frns and all(m.eps == 1e-5 and m.eps_l is not None and m.impl == "reference" for m in frns)


def weight_decay_of(optimizer):
    return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}


def test_optimizer_treats_frn_parameters_as_norm_parameters():
    cfg = tiny_cfg(
        "FRN", "MODEL.FRN.LEARNABLE_EPS", "True", "SOLVER.WEIGHT_DECAY", "1e-4", "SOLVER.WEIGHT_DECAY_NORM", "0.0"
    )
    model = build_model(cfg)
    wd = weight_decay_of(build_optimizer(cfg, model))
    norm_params = [p for m in model.modules() if isinstance(m, (FilterResponseNorm2d, TLU)) for p in m.parameters()]
    assert len(norm_params) > 100
    assert all(wd[id(p)] == 0.0 for p in norm_params)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(wd[id(p)] == 1e-4 for p in convs)
    assert len(wd) == sum(1 for p in model.parameters() if p.requires_grad)


def test_optimizer_matches_detectron2_for_bn():
    cfg = tiny_cfg("BN", "SOLVER.WEIGHT_DECAY_NORM", "0.0", "SOLVER.BIAS_LR_FACTOR", "2.0")
    model = build_model(cfg)
    ours, stock = build_optimizer(cfg, model), d2_build_optimizer(cfg, model)
    assert weight_decay_of(ours) == weight_decay_of(stock)
    lr = lambda opt: {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}  # noqa: E731
    assert lr(ours) == lr(stock)


def test_unknown_norm_is_a_clear_error():
    with pytest.raises(ValueError, match=r"MODEL.RESNETS.NORM='BatchNorm' is not a known norm.*'GN'.*'FRN'"):
        build_model(tiny_cfg("FRN", "MODEL.RESNETS.NORM", "BatchNorm"))


def test_gn_with_indivisible_channels_names_the_count():
    with pytest.raises(ValueError, match=r"MODEL.FPN.NORM='GN'.*C=48.*not divisible by 32"):
        build_model(tiny_cfg("GN", "MODEL.FPN.OUT_CHANNELS", "48"))


@pytest.mark.parametrize("eps", ["0.0", "-1e-3"])
def test_non_positive_config_eps_is_a_clear_error(eps):
    from frn_det.config.checks import check_config

    cfg = tiny_cfg("FRN", "MODEL.FRN.EPS", eps)
    # The config check names the key (before anything is built); the layer checks its argument.
    with pytest.raises(ValueError, match=re.escape(f"MODEL.FRN.EPS={float(eps)!r} is not allowed: expected a "
                                                   "finite number > 0")):
        check_config(cfg, 1)
    with pytest.raises(ValueError, match=r"FRN eps must be > 0") as err:
        build_model(cfg)
    assert f"got eps={float(eps)!r}" in str(err.value)


def test_total_batch_must_divide_across_workers():
    from frn_det.config.checks import check_config

    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH=5 \(the total batch\) must be a positive multiple of "
                                         r"the number of workers \(2\)"):
        check_config(tiny_cfg("FRN", "SOLVER.IMS_PER_BATCH", "5"), 2)


def test_sync_bn_with_one_worker_warns(caplog):
    from frn_det.config.checks import check_config

    with caplog.at_level("WARNING", logger="frn_det"):
        check_config(tiny_cfg("SyncBN"), 1)
    assert (
        "MODEL.RESNETS.NORM=SyncBN" in caplog.text and "computes exactly what its unsynced norm computes" in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="frn_det"):
        check_config(tiny_cfg("SyncBN", "SOLVER.IMS_PER_BATCH", "4"), 2)
    assert "unsynced norm computes" not in caplog.text
