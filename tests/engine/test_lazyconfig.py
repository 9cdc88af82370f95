"""Python LazyConfigs (configs/lazy/): parity with the YAML models (RetinaNet, Faster and
Mask R-CNN), norm overrides, the optimizer and schedule, Trainer.build_model's
MODEL.LAZY_CONFIG bridge, the lazy tool's checks, and (slow) real runs of frn-det's and
Detectron2's tools/lazyconfig_train_net.py."""
import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from dataset_files import make_coco
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.layers import CycleBatchNormList
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler
from detectron2.solver.lr_scheduler import LRMultiplier
from frn_testing import record_execution
from harness import REPO, run_tool, tiny_cfg
from lazy_testing import (
    LAZY,
    NORM_KEY,
    TINY_LAZY,
    TINY_MASK_LAZY,
    lazy_cfg,
    lazy_model,
    shapes,
    small_val_set,
    yaml_and_lazy_models,
)
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from frn_det.config.build import build_config
from frn_det.engine.optimizer import build_optimizer
from frn_det.engine.trainer import Trainer, evaluation_tasks
from frn_det.layers import TLU, FilterResponseNorm2d


def outputs(model, image):
    """Backbone features, (RetinaNet) head logits and box deltas, and the detections (score
    threshold 0, so an untrained model has some; R-CNN: with their masks), for one image."""
    rcnn = hasattr(model, "roi_heads")
    if rcnn:
        model.roi_heads.box_predictor.test_score_thresh = 0.0
    else:
        model.test_score_thresh = 0.0
    with torch.no_grad():
        features = model.backbone(model.preprocess_image([{"image": image}]).tensor)
        heads = [] if rcnn else [t for ts in model.head([features[f] for f in model.head_in_features]) for t in ts]
        inst = model([{"image": image}])[0]["instances"]
    detections = [inst.scores, inst.pred_boxes.tensor, inst.pred_classes]
    return [features[k] for k in sorted(features)] + heads + detections + \
        ([inst.pred_masks] if inst.has("pred_masks") else [])


def assert_same_function(yaml_model, lazy, image, count=5 + 5 + 5 + 3):
    """Same weights -> same outputs (eval mode, a fixed input); `count`: tensors compared."""
    lazy.load_state_dict(yaml_model.state_dict(), strict=True)
    yaml_model.eval(), lazy.eval()
    a, b = outputs(yaml_model, image), outputs(lazy, image)
    assert len(a) == len(b) == count and a[-1].shape[0] > 0  # detections to compare
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


PARITY_NORMS = ["FRN", "GN", "BN", "GN+TLU"]


@pytest.mark.parametrize("norm", PARITY_NORMS)
def test_tiny_lazy_model_equals_the_yaml_model(norm):
    yaml_model, lazy = yaml_and_lazy_models(norm)
    assert shapes(lazy) == shapes(yaml_model)
    assert len(shapes(lazy)) > 100
    assert repr(lazy) == repr(yaml_model)  # module for module, activations included
    # The builders create modules in the same order: the same seed gives the same weights.
    ys, ls = yaml_model.state_dict(), lazy.state_dict()
    assert all(torch.equal(ys[k], ls[k]) for k in ys)
    torch.manual_seed(1)
    for p in yaml_model.parameters():  # move every weight off its init, then copy them over
        p.data.add_(0.05 * torch.randn_like(p))
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 160, 160, generator=generator) * 255
    with torch.no_grad():  # BN: running statistics of real activations (a no-op for the others)
        yaml_model.train()
        for _ in range(3):
            features = yaml_model.backbone(yaml_model.preprocess_image([{"image": image}]).tensor)
            yaml_model.head([features[f] for f in yaml_model.head_in_features])
    assert_same_function(yaml_model, lazy, image)


@pytest.mark.parametrize("norm", ["frn", "gn", "bn"])
def test_r50_lazy_model_has_the_yaml_state_dict(norm):
    lazy = instantiate(lazy_cfg(LAZY / f"retinanet_R_50_FPN_{norm}.py").model)
    yaml_cfg = build_config(str(REPO / "configs" / f"retinanet_R_50_FPN_{norm}.yaml"), ["MODEL.DEVICE", "cpu"])
    yaml_model = build_model(yaml_cfg)
    assert shapes(lazy) == shapes(yaml_model)
    assert shapes(lazy)["backbone.bottom_up.res5.2.conv3.weight"] == (2048, 512, 1, 1)
    assert repr(lazy) == repr(yaml_model)


def test_r50_lazy_configs_follow_the_paper_protocol():
    for norm, expected in (("frn", FilterResponseNorm2d), ("gn", nn.GroupNorm), ("bn", nn.BatchNorm2d)):
        cfg = lazy_cfg(LAZY / f"retinanet_R_50_FPN_{norm}.py")
        assert cfg.dataloader.train.total_batch_size == 64 and cfg.train.max_iter == 125000
        assert cfg.optimizer.lr == 0.04 and cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 4e-4
        assert cfg.optimizer.params.weight_decay_norm == 0.0 and cfg.train.init_checkpoint == ""
        assert cfg.model.backbone.bottom_up.freeze_at == 0
        sched = instantiate(cfg.lr_multiplier)
        assert sched(0.0) == pytest.approx(0.001) and sched(1999 / 125000) < 1.0
        assert sched(2000 / 125000) == pytest.approx(1.0)
        assert sched(83333 / 125000) == pytest.approx(0.1) and sched(111111 / 125000) == pytest.approx(0.01)
        assert cfg.model.backbone.bottom_up.stages.norm == norm.upper()
        assert cfg.model.head.norm == norm.upper()  # the interpolations follow the one place


def trace(model, inputs):
    """(module type, name) of every leaf module (and FRN) call, ("relu", None) for relu calls."""
    select = lambda name, m: not list(m.children()) or isinstance(m, FilterResponseNorm2d)  # noqa: E731
    return [
        (name, None) if m is None else (type(m).__name__, name) for name, m in record_execution(model, inputs, select)
    ]


@pytest.mark.parametrize("norm", ["FRN", "GN+TLU"])
def test_lazy_model_has_no_relu_after_frn_tlu(norm):
    lazy, yaml_model = lazy_model(norm).eval(), build_model(tiny_cfg(norm)).eval()
    inputs = [{"image": torch.rand(3, 64, 64) * 255}]
    events, yaml_events = (trace(model, inputs) for model in (lazy, yaml_model))
    assert events == yaml_events  # the same modules and relus, in the same order
    tlu_like = [i for i, (kind, name) in enumerate(events)
                if kind == "TLU" or (kind == "FilterResponseNorm2d" and lazy.get_submodule(name).tlu)]
    assert len(tlu_like) > 20
    assert [events[i] for i in tlu_like if i + 1 < len(events) and events[i + 1][0] in ("relu", "ReLU")] == []
    assert sum(1 for kind, _ in events if kind == "relu") == 1  # only between P6 and P7, where there is no norm
    assert not any(isinstance(m, nn.ReLU) for m in lazy.modules())


def norm_layers(model):
    """Every norm of the model: the convs' norms and the head subnets' norm modules."""
    convs = [m.norm for m in model.modules() if isinstance(m, nn.Conv2d) and getattr(m, "norm", None) is not None]
    if not hasattr(model, "head"):  # R-CNN: the box and mask heads' norms are their convs'
        return convs
    head = [m for s in (model.head.cls_subnet, model.head.bbox_subnet) for m in s
            if not isinstance(m, (nn.Conv2d, nn.ReLU, nn.Identity, TLU))]
    return convs + head


@pytest.mark.parametrize("norm, expected", [("GN", nn.GroupNorm), ("BN", (nn.BatchNorm2d, CycleBatchNormList))])
def test_one_command_line_override_changes_every_norm(norm, expected):
    default = norm_layers(lazy_model())
    assert len(default) == 1 + 2 * 8 + 3 + 6 + 4 and all(isinstance(n, FilterResponseNorm2d) for n in default)
    changed = norm_layers(lazy_model(norm))
    assert len(changed) == len(default)
    assert all(isinstance(n, expected) for n in changed), [type(n).__name__ for n in changed]
    if norm == "BN":  # per-level statistics in the head, as Detectron2 keeps them
        assert all(isinstance(n, CycleBatchNormList) and len(n) == 5 for n in changed[-4:])


def test_norm_parts_and_options_override_separately():
    model = lazy_model("GN", "model.head.norm=GN+TLU", "model.backbone.norm=''",
                       "model.backbone.bottom_up.stages.norm_options.frn.eps=1e-5")
    assert all(isinstance(m.norm, nn.GroupNorm) for m in model.backbone.bottom_up.modules()
               if isinstance(m, nn.Conv2d) and getattr(m, "norm", None) is not None)
    assert all(m.norm is None for m in list(model.backbone.lateral_convs) + list(model.backbone.output_convs))
    assert sum(isinstance(m, TLU) for m in model.head.cls_subnet) == 2
    frn = lazy_model("FRN", "model.backbone.bottom_up.stages.norm_options.frn.eps=1e-5",
                     "model.backbone.bottom_up.stages.norm_options.frn.learnable_eps=true")
    frns = [m for m in frn.modules() if isinstance(m, FilterResponseNorm2d)]
    assert len(frns) == 30 and all(m.eps == 1e-5 and m.eps_l is not None for m in frns)


def test_norm_can_be_an_importable_callable(tmp_path):
    cfg = lazy_cfg(TINY_LAZY)
    cfg.model.backbone.bottom_up.stages.norm = nn.BatchNorm2d  # Detectron2's convention: a ReLU follows it
    model = instantiate(cfg.model)
    norms = norm_layers(model)
    assert len(norms) == 30 and all(type(n) is nn.BatchNorm2d for n in norms)
    assert sum(isinstance(m, nn.ReLU) for m in model.head.modules()) == 4
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    assert not (tmp_path / "config.yaml.pkl").exists()
    assert LazyConfig.load(str(tmp_path / "config.yaml")).model.backbone.bottom_up.stages.norm is nn.BatchNorm2d


def test_unknown_norm_names_the_lazy_key():
    with pytest.raises(ValueError,
                       match=r"model\.backbone\.bottom_up\.stem\.norm='BatchNorm' is not a known norm.*'FRN'"):
        lazy_model("BatchNorm")
    with pytest.raises(ValueError, match=r"model\.head\.norm='GN\+GELU' is not a known norm"):
        lazy_model("GN", "model.head.norm=GN+GELU")


def test_config_saves_to_yaml_and_reloads(tmp_path):
    cfg = lazy_cfg(TINY_LAZY, f"{NORM_KEY}=GN+TLU")
    path = tmp_path / "config.yaml"
    LazyConfig.save(cfg, str(path))
    assert path.is_file() and not (tmp_path / "config.yaml.pkl").exists()  # nothing unserializable (no lambdas)
    again = LazyConfig.load(str(path))
    assert again.model.backbone.bottom_up.stages.norm == "GN+TLU"
    raw = OmegaConf.to_container(again.model.head, resolve=False)
    assert raw["norm"] == "${..backbone.bottom_up.stages.norm}"  # the link is kept
    assert shapes(instantiate(again.model)) == shapes(instantiate(cfg.model))


def group_settings(optimizer):
    return {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("norm", ["FRN", "EvoNormS0", "BN"])
def test_lazy_optimizer_groups_equal_the_yaml_ones(norm):
    cfg = lazy_cfg(TINY_LAZY, f"{NORM_KEY}={norm}",
                   "model.backbone.bottom_up.stages.norm_options.frn.learnable_eps=true")
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    lazy_opt = instantiate(cfg.optimizer)
    ycfg = tiny_cfg(norm, "MODEL.FRN.LEARNABLE_EPS", "True")
    yaml_opt = build_optimizer(ycfg, model)
    assert group_settings(lazy_opt) == group_settings(yaml_opt)
    decays = group_settings(lazy_opt)
    norm_params = [p for m in model.modules() if isinstance(m, (FilterResponseNorm2d, TLU, nn.BatchNorm2d)) or
                   type(m).__name__.startswith("EvoNorm") for p in m.parameters(recurse=False)]
    assert len(norm_params) > 40 and all(decays[id(p)] == (0.02, 0.0) for p in norm_params)
    assert all(decays[id(m.weight)] == (0.02, 1e-4) for m in model.modules() if isinstance(m, nn.Conv2d))


def test_lazy_schedule_equals_the_yaml_one():
    cfg = lazy_cfg(TINY_LAZY)
    lazy_lrs = assert_same_schedule(cfg, tiny_cfg("FRN"))
    assert cfg.train.max_iter == 300
    assert lazy_lrs[0] == pytest.approx(0.02 * 0.001) and lazy_lrs[-1] == pytest.approx(2e-4)


def assert_same_schedule(cfg, ycfg):
    """The LazyConfig's lr at every iteration equals the yacs config's; returns the lrs."""
    params = [nn.Parameter(torch.zeros(1))]
    yaml_opt = torch.optim.SGD(params, lr=ycfg.SOLVER.BASE_LR)
    lazy_opt = torch.optim.SGD(params, lr=cfg.optimizer.lr)
    yaml_sched = build_lr_scheduler(ycfg, yaml_opt)
    lazy_sched = LRMultiplier(lazy_opt, multiplier=instantiate(cfg.lr_multiplier), max_iter=cfg.train.max_iter)
    yaml_lrs, lazy_lrs = [], []
    for _ in range(ycfg.SOLVER.MAX_ITER):
        yaml_lrs.append(yaml_opt.param_groups[0]["lr"])
        lazy_lrs.append(lazy_opt.param_groups[0]["lr"])
        yaml_opt.step(), lazy_opt.step(), yaml_sched.step(), lazy_sched.step()
    assert cfg.train.max_iter == ycfg.SOLVER.MAX_ITER
    assert lazy_lrs == pytest.approx(yaml_lrs, rel=1e-12, abs=0)
    return lazy_lrs


def test_tiny_lazy_data_and_training_match_the_yaml_config():
    cfg, ycfg = lazy_cfg(TINY_LAZY), tiny_cfg("FRN")
    assert cfg.dataloader.train.dataset.names == ycfg.DATASETS.TRAIN[0] == "frn_shapes_train"
    assert cfg.dataloader.test.dataset.names == ycfg.DATASETS.TEST[0] == "frn_shapes_val"
    assert cfg.dataloader.train.total_batch_size == ycfg.SOLVER.IMS_PER_BATCH == 8
    assert cfg.train.checkpointer.period == ycfg.SOLVER.CHECKPOINT_PERIOD and cfg.train.device == "cpu"
    lazy_augs = assert_same_augmentations(cfg, ycfg)
    assert tuple(lazy_augs[0].short_edge_length) == (160,) and lazy_augs[0].max_size == 160


def assert_same_augmentations(cfg, ycfg):
    """The LazyConfig's train and test mappers resize and flip as the yacs config's do."""
    for is_train, loader in ((True, cfg.dataloader.train), (False, cfg.dataloader.test)):
        lazy_augs = instantiate(loader.mapper).augmentations.augs
        yaml_augs = DatasetMapper(ycfg, is_train=is_train).augmentations.augs
        assert [type(a) for a in lazy_augs] == [type(a) for a in yaml_augs]
        for a, b in zip(lazy_augs, yaml_augs):
            assert {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in vars(a).items()} == \
                   {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in vars(b).items()}
        if is_train:
            train_augs = lazy_augs
    return train_augs


def test_r50_lazy_data_matches_the_yaml_config():
    cfg = lazy_cfg(LAZY / "retinanet_R_50_FPN_frn.py")
    ycfg = build_config(str(REPO / "configs" / "retinanet_R_50_FPN_frn.yaml"), ["MODEL.DEVICE", "cpu"])
    assert cfg.dataloader.train.dataset.names == ycfg.DATASETS.TRAIN[0] == "coco_2017_train"
    assert cfg.dataloader.test.dataset.names == ycfg.DATASETS.TEST[0] == "coco_2017_val"
    assert cfg.dataloader.train.total_batch_size == ycfg.SOLVER.IMS_PER_BATCH
    train_augs = assert_same_augmentations(cfg, ycfg)
    assert tuple(train_augs[0].short_edge_length) == (640, 672, 704, 736, 768, 800)


@pytest.mark.parametrize("norm", ["GN", "FRN"])
def test_trainer_build_model_from_lazy_config_equals_yaml(norm):
    opts = ["MODEL.FRN.EPS", "1e-5"]
    torch.manual_seed(0)
    yaml_model = Trainer.build_model(tiny_cfg(norm, *opts))
    torch.manual_seed(0)
    # the path relative to configs/, as the sweep's model group gives it
    lazy = Trainer.build_model(tiny_cfg(norm, *opts, "MODEL.LAZY_CONFIG", "lazy/tiny_retinanet_cpu.py"))
    assert type(lazy).__name__ == "FRNRetinaNet"
    assert shapes(lazy) == shapes(yaml_model) and repr(lazy) == repr(yaml_model)
    ys, ls = yaml_model.state_dict(), lazy.state_dict()
    assert all(torch.equal(ys[k], ls[k]) for k in ys)
    if norm == "FRN":  # MODEL.FRN.* reaches the lazy model
        assert all(m.eps == 1e-5 for m in lazy.modules() if isinstance(m, FilterResponseNorm2d))


def test_trainer_build_model_applies_classes_pixels_and_norms_per_key():
    cfg = tiny_cfg("GN", "MODEL.LAZY_CONFIG", str(TINY_LAZY), "MODEL.RETINANET.NUM_CLASSES", "7",
                   "MODEL.RETINANET.NORM", "BN", "MODEL.PIXEL_MEAN", "[1.0, 2.0, 3.0]")
    lazy = Trainer.build_model(cfg)
    assert lazy.num_classes == 7 and lazy.head.cls_score.out_channels == 7 * 9
    assert lazy.pixel_mean.flatten().tolist() == [1.0, 2.0, 3.0]
    assert isinstance(lazy.head.cls_subnet[1], CycleBatchNormList)
    assert isinstance(lazy.backbone.bottom_up.stem.conv1.norm, nn.GroupNorm)
    with pytest.raises(FileNotFoundError, match="nope.py"):
        Trainer.build_model(tiny_cfg("GN", "MODEL.LAZY_CONFIG", "lazy/nope.py"))


def test_sweep_model_entry_names_the_lazy_config():
    entry = OmegaConf.load(REPO / "configs" / "sweep" / "model" / "tiny_cpu_lazy.yaml")
    assert entry.name == "tiny_cpu_lazy" and entry.device == "cpu"
    assert (REPO / "configs" / entry.config_file).is_file() and (REPO / "configs" / entry.lazy_config).is_file()


def test_lazy_datasets_are_prepared_and_checked():
    from frn_det.engine.lazy_training import prepare_lazy_datasets

    assert prepare_lazy_datasets(lazy_cfg(TINY_LAZY)) == ["frn_shapes_train", "frn_shapes_val"]
    with pytest.raises(KeyError) as err:
        prepare_lazy_datasets(lazy_cfg(TINY_LAZY, "dataloader.test.dataset.names=no_such_set"))
    assert err.value.args[0].startswith("Dataset 'no_such_set' is not registered")
    with pytest.raises(ValueError, match="has 4 categories, but the model has only 2 classes"):
        prepare_lazy_datasets(lazy_cfg(TINY_LAZY, "model.num_classes=2"))


# ---------------------------------------------------------------- Faster / Mask R-CNN

RCNN_NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")


def tiny_rcnn_cfg(norm="FRN", *opts, detector="mask"):
    """configs/tiny_<detector>_rcnn_cpu.yaml with `norm` in backbone, FPN, box and mask heads."""
    norms = [item for key in RCNN_NORM_KEYS for item in (key, norm)]
    return build_config(str(REPO / "configs" / f"tiny_{detector}_rcnn_cpu.yaml"), norms + list(opts), announce=False)


def settings(model):
    """Every module's plain attributes (thresholds, top-k, feature names, matchers, box
    transforms, ...): what the state_dict does not hold. OmegaConf lists count as lists;
    FastRCNNOutputLayers' loss_weight without its 1.0 entries (a missing key weighs 1.0)."""
    def plain(v, depth=0):
        if isinstance(v, (ListConfig, DictConfig)):
            v = OmegaConf.to_container(v)
        if isinstance(v, (int, float, str, bool, type(None))):
            return v
        if isinstance(v, (list, tuple)):
            return tuple(plain(x, depth) for x in v)
        if isinstance(v, dict):
            return {k: plain(x, depth) for k, x in v.items()}
        if isinstance(v, torch.Tensor):
            return "tensor", tuple(v.shape), v.flatten()[:8].tolist()
        if isinstance(v, nn.Module):
            return "module", type(v).__name__
        if hasattr(v, "__dict__") and depth < 2:
            return type(v).__name__, {k: plain(x, depth + 1) for k, x in vars(v).items()}
        return type(v).__name__

    out = {}
    for name, module in model.named_modules():
        attrs = {k: plain(v) for k, v in vars(module).items() if not k.startswith("_") and k != "training"}
        if isinstance(attrs.get("loss_weight"), dict):
            attrs["loss_weight"] = {k: w for k, w in attrs["loss_weight"].items() if w != 1.0}
        out[name] = attrs
    return out


def assert_same_model(lazy, yaml_model):
    """Module for module the same model: parameters and buffers, modules (repr) and settings."""
    assert shapes(lazy) == shapes(yaml_model)
    assert repr(lazy) == repr(yaml_model)  # activations included
    assert settings(lazy) == settings(yaml_model)


def few_detections(model):
    """An R50 R-CNN that is quick on one CPU thread: 20 proposals, 10 detections per image."""
    model.proposal_generator.post_nms_topk[False] = 20
    model.roi_heads.box_predictor.test_topk_per_image = 10
    return model


@pytest.mark.parametrize("norm", ["frn", "gn"])
def test_r50_lazy_mask_rcnn_equals_the_yaml_model(norm):
    torch.manual_seed(0)
    lazy = instantiate(lazy_cfg(LAZY / f"mask_rcnn_R_50_FPN_{norm}.py").model)
    torch.manual_seed(0)
    yaml_model = build_model(build_config(str(REPO / "configs" / f"mask_rcnn_R_50_FPN_{norm}.yaml"),
                                          ["MODEL.DEVICE", "cpu"], announce=False))
    assert_same_model(lazy, yaml_model)
    sd = shapes(lazy)
    assert sd["backbone.bottom_up.res5.2.conv3.weight"] == (2048, 512, 1, 1)
    assert sd["roi_heads.box_head.conv4.weight"] == (256, 256, 3, 3) and sd["roi_heads.box_head.fc1.weight"][0] == 1024
    assert sd["roi_heads.mask_head.predictor.weight"] == (80, 256, 1, 1)
    torch.manual_seed(1)
    for p in yaml_model.parameters():  # move every weight off its init, then copy them over
        p.data.add_(0.05 * torch.randn_like(p))
    image = torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(0)) * 255
    # P2-P6, scores, boxes, classes and masks
    assert_same_function(few_detections(yaml_model), few_detections(lazy), image, count=5 + 4)


@pytest.mark.parametrize("detector, norm", [("faster", "frn"), ("faster", "bn"), ("faster", "syncbn"),
                                            ("mask", "bn"), ("mask", "syncbn")])
def test_r50_lazy_rcnn_model_is_the_yaml_model(detector, norm):
    lazy = instantiate(lazy_cfg(LAZY / f"{detector}_rcnn_R_50_FPN_{norm}.py").model)
    yaml_model = build_model(build_config(str(REPO / "configs" / f"{detector}_rcnn_R_50_FPN_{norm}.yaml"),
                                          ["MODEL.DEVICE", "cpu"], announce=False))
    assert_same_model(lazy, yaml_model)
    assert lazy.roi_heads.mask_on == (detector == "mask")


@pytest.mark.parametrize("detector", ["faster", "mask"])
@pytest.mark.parametrize("norm", ["bn", "gn", "syncbn", "frn"])
def test_r50_lazy_rcnn_configs_follow_the_scratch_9x_protocol(detector, norm):
    cfg = lazy_cfg(LAZY / f"{detector}_rcnn_R_50_FPN_{norm}.py")
    ycfg = build_config(str(REPO / "configs" / f"{detector}_rcnn_R_50_FPN_{norm}.yaml"), ["MODEL.DEVICE", "cpu"],
                        announce=False)
    solver = ycfg.SOLVER
    assert cfg.dataloader.train.total_batch_size == solver.IMS_PER_BATCH == 64
    assert cfg.optimizer.lr == solver.BASE_LR == 0.08 and cfg.train.max_iter == solver.MAX_ITER == 202500
    assert cfg.optimizer.momentum == solver.MOMENTUM and cfg.optimizer.weight_decay == solver.WEIGHT_DECAY == 1e-4
    assert cfg.optimizer.params.weight_decay_norm == solver.WEIGHT_DECAY_NORM == 0.0
    assert cfg.train.checkpointer.period == solver.CHECKPOINT_PERIOD and cfg.train.init_checkpoint == ""
    assert cfg.train.precise_bn.enabled == ycfg.TEST.PRECISE_BN.ENABLED == (norm == "syncbn")
    assert cfg.train.precise_bn.num_iter == ycfg.TEST.PRECISE_BN.NUM_ITER
    # the lr multiplier at the warm-up's and the decays' edges (stepping 202.5k iterations is slow)
    yaml_sched = build_lr_scheduler(ycfg, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=solver.BASE_LR))
    lazy_sched = instantiate(cfg.lr_multiplier)
    for it in (0, 1, 500, 999, 1000, 1001, 187499, 187500, 197499, 197500, 202499):
        assert lazy_sched(it / 202500) == pytest.approx(yaml_sched._multiplier(it / solver.MAX_ITER), rel=1e-12)
    assert lazy_sched(999 / 202500) < 1.0 and lazy_sched(1000 / 202500) == 1.0
    assert lazy_sched(197500 / 202500) == pytest.approx(0.01)
    # the data: COCO, with masks and mask AP for Mask R-CNN
    assert cfg.dataloader.train.dataset.names == ycfg.DATASETS.TRAIN[0] == "coco_2017_train"
    assert cfg.dataloader.test.dataset.names == ycfg.DATASETS.TEST[0] == "coco_2017_val"
    assert_same_augmentations(cfg, ycfg)
    yaml_mapper = DatasetMapper(ycfg, is_train=True)
    use_mask = instantiate(cfg.dataloader.train.mapper).use_instance_mask
    assert use_mask == yaml_mapper.use_instance_mask == ycfg.MODEL.MASK_ON
    assert tuple(cfg.dataloader.evaluator.get("tasks") or ("bbox",)) == evaluation_tasks(ycfg)
    # the norm: one place, the others follow it
    expected = {"bn": "BN", "gn": "GN", "syncbn": "SyncBN", "frn": "FRN"}[norm]
    assert cfg.model.backbone.bottom_up.stages.norm == cfg.model.backbone.norm == expected
    assert cfg.model.roi_heads.box_head.conv_norm == expected and cfg.model.roi_heads.box_head.fc_norm == ""
    assert (cfg.model.roi_heads.mask_head.conv_norm == expected) if detector == "mask" else \
        "mask_head" not in cfg.model.roi_heads


@pytest.mark.parametrize("detector, norm", [("mask", "FRN"), ("mask", "GN"), ("mask", "BN"), ("mask", "GN+TLU"),
                                            ("faster", "FRN")])
def test_tiny_lazy_rcnn_equals_the_yaml_model(detector, norm):
    torch.manual_seed(0)
    yaml_model = build_model(tiny_rcnn_cfg(norm, detector=detector))
    torch.manual_seed(0)
    lazy = lazy_model(norm, path=LAZY / f"tiny_{detector}_rcnn_cpu.py")
    assert_same_model(lazy, yaml_model)
    assert len(shapes(lazy)) > 100
    ys, ls = yaml_model.state_dict(), lazy.state_dict()
    assert all(torch.equal(ys[k], ls[k]) for k in ys)  # the same init
    torch.manual_seed(1)
    for p in yaml_model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    image = torch.rand(3, 160, 160, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():  # BN: running statistics of real activations in the backbone
        yaml_model.train()
        for _ in range(3):
            yaml_model.backbone(yaml_model.preprocess_image([{"image": image}]).tensor)
    assert_same_function(yaml_model, lazy, image, count=5 + 3 + (detector == "mask"))


@pytest.mark.parametrize("detector", ["faster", "mask"])
def test_tiny_lazy_rcnn_data_and_training_match_the_yaml_config(detector):
    cfg, ycfg = lazy_cfg(LAZY / f"tiny_{detector}_rcnn_cpu.py"), tiny_rcnn_cfg(detector=detector)
    assert cfg.dataloader.train.dataset.names == ycfg.DATASETS.TRAIN[0] == "frn_shapes_train"
    assert cfg.dataloader.test.dataset.names == ycfg.DATASETS.TEST[0] == "frn_shapes_val"
    assert cfg.dataloader.train.total_batch_size == ycfg.SOLVER.IMS_PER_BATCH == 8
    assert cfg.dataloader.train.num_workers == ycfg.DATALOADER.NUM_WORKERS == 0
    assert cfg.train.checkpointer.period == ycfg.SOLVER.CHECKPOINT_PERIOD and cfg.train.device == "cpu"
    assert cfg.optimizer.lr == ycfg.SOLVER.BASE_LR and cfg.optimizer.weight_decay == ycfg.SOLVER.WEIGHT_DECAY
    assert cfg.optimizer.momentum == ycfg.SOLVER.MOMENTUM
    assert_same_schedule(cfg, ycfg)
    assert tuple(assert_same_augmentations(cfg, ycfg)[0].short_edge_length) == (160,)
    mapper = instantiate(cfg.dataloader.train.mapper)
    assert mapper.use_instance_mask == DatasetMapper(ycfg, is_train=True).use_instance_mask == (detector == "mask")
    assert mapper.instance_mask_format == ycfg.INPUT.MASK_FORMAT == "polygon"
    assert tuple(cfg.dataloader.evaluator.get("tasks") or ("bbox",)) == evaluation_tasks(ycfg)


def test_tiny_lazy_mask_rcnn_optimizer_groups_equal_the_yaml_ones():
    cfg = lazy_cfg(TINY_MASK_LAZY, "model.roi_heads.box_head.fc_norm=FRN")
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    yaml_opt = build_optimizer(tiny_rcnn_cfg("FRN", "MODEL.ROI_BOX_HEAD.NORM_FCS", "True"), model)
    decays = group_settings(instantiate(cfg.optimizer))
    assert decays == group_settings(yaml_opt)
    fc_frn = model.roi_heads.box_head.fc_norm1.norm  # FRN after the FC: the learned eps, no weight decay
    assert fc_frn.eps_l is not None and decays[id(fc_frn.eps_l)] == (0.02, 0.0)


def test_one_norm_place_sets_backbone_fpn_box_and_mask_heads():
    default = lazy_model(path=TINY_MASK_LAZY)
    frns = norm_layers(default)
    # stem 1, R18 blocks 16 + 3 shortcuts, FPN 4 lateral + 4 output, box head 4 convs, mask head 4 convs
    assert len(frns) == 1 + 16 + 3 + 8 + 4 + 4 and all(isinstance(n, FilterResponseNorm2d) for n in frns)
    gn = lazy_model("GN", path=TINY_MASK_LAZY)
    assert len(norm_layers(gn)) == len(frns) and all(isinstance(n, nn.GroupNorm) for n in norm_layers(gn))
    box, mask = gn.roi_heads.box_head, gn.roi_heads.mask_head
    assert all(isinstance(getattr(box, f"conv{k}").norm, nn.GroupNorm) for k in range(1, 5))
    assert all(isinstance(getattr(mask, f"mask_fcn{k}").norm, nn.GroupNorm) for k in range(1, 5))
    fpn = list(gn.backbone.lateral_convs) + list(gn.backbone.output_convs)
    assert all(isinstance(m.norm, nn.GroupNorm) for m in fpn)
    # one part set by itself breaks its link only; the options follow the one place too
    mixed = lazy_model("GN", "model.roi_heads.mask_head.conv_norm=GN+TLU", "model.roi_heads.box_head.conv_norm=BN",
                       path=TINY_MASK_LAZY)
    assert all(isinstance(getattr(mixed.roi_heads.mask_head, f"mask_fcn{k}").activation, TLU) for k in range(1, 5))
    assert all(isinstance(getattr(mixed.roi_heads.box_head, f"conv{k}").norm, nn.BatchNorm2d) for k in range(1, 5))
    assert isinstance(mixed.backbone.bottom_up.stem.conv1.norm, nn.GroupNorm)
    eps = lazy_model("FRN", "model.backbone.bottom_up.stages.norm_options.frn.eps=1e-5", path=TINY_MASK_LAZY)
    assert all(m.eps == 1e-5 for m in eps.modules() if isinstance(m, FilterResponseNorm2d))
    # a saved config keeps the links
    raw = OmegaConf.to_container(lazy_cfg(TINY_MASK_LAZY).model.roi_heads, resolve=False)
    assert raw["box_head"]["conv_norm"] == raw["mask_head"]["conv_norm"] == "${...backbone.bottom_up.stages.norm}"


@pytest.mark.parametrize("detector, norm", [("mask", "GN"), ("mask", "FRN"), ("faster", "GN+TLU")])
def test_trainer_build_model_from_lazy_rcnn_config_equals_yaml(detector, norm):
    opts = ["MODEL.FRN.EPS", "1e-5"]
    torch.manual_seed(0)
    yaml_model = Trainer.build_model(tiny_rcnn_cfg(norm, *opts, detector=detector))
    torch.manual_seed(0)
    lazy = Trainer.build_model(tiny_rcnn_cfg(norm, *opts, "MODEL.LAZY_CONFIG", f"lazy/tiny_{detector}_rcnn_cpu.py",
                                             detector=detector))
    assert type(lazy).__name__ == "GeneralizedRCNN"
    assert_same_model(lazy, yaml_model)
    ys, ls = yaml_model.state_dict(), lazy.state_dict()
    assert all(torch.equal(ys[k], ls[k]) for k in ys)
    if norm == "FRN":  # MODEL.FRN.* reaches the lazy model's heads too
        frns = [m for m in lazy.roi_heads.modules() if isinstance(m, FilterResponseNorm2d)]
        assert len(frns) == 8 and all(m.eps == 1e-5 for m in frns)


def test_apply_yacs_model_keys_sets_the_rcnn_heads_and_classes():
    from frn_det.modeling.lazy_bridge import apply_yacs_model_keys

    ycfg = tiny_rcnn_cfg("GN", "MODEL.ROI_BOX_HEAD.NORM", "BN", "MODEL.ROI_MASK_HEAD.NORM", "GN+TLU",
                         "MODEL.ROI_BOX_HEAD.NORM_FCS", "True", "MODEL.ROI_HEADS.NUM_CLASSES", "7",
                         "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "True", "MODEL.WS.EPS", "1e-3")
    cfg = LazyConfig.load(str(TINY_MASK_LAZY))
    done = apply_yacs_model_keys(cfg, ycfg)
    heads = [f"model.roi_heads.{h}.{k}" for h in ("box_head", "mask_head") for k in ("conv_norm", "norm_options")]
    classes = [f"model.roi_heads{h}.num_classes" for h in ("", ".box_predictor", ".mask_head")]
    assert set(heads + classes + ["model.roi_heads.box_head.fc_norm"]) <= set(done)
    assert not any(k.startswith("model.head") or k == "model.num_classes" for k in done)  # RetinaNet's keys
    model = instantiate(cfg.model)
    box, mask = model.roi_heads.box_head, model.roi_heads.mask_head
    assert all(isinstance(getattr(box, f"conv{k}").norm, nn.BatchNorm2d) for k in range(1, 5))
    assert isinstance(box.fc_norm1.norm, nn.BatchNorm2d)  # NORM_FCS: the box head's norm after the FC too
    assert all(isinstance(getattr(mask, f"mask_fcn{k}").norm, nn.GroupNorm) and
               isinstance(getattr(mask, f"mask_fcn{k}").activation, TLU) for k in range(1, 5))
    assert isinstance(model.backbone.bottom_up.stem.conv1.norm, nn.GroupNorm)
    assert model.roi_heads.num_classes == 7 and model.roi_heads.box_predictor.num_classes == 7
    assert model.roi_heads.box_predictor.cls_score.out_features == 8
    assert mask.predictor.out_channels == 1  # CLS_AGNOSTIC_MASK
    # the faster variant has no mask head: MODEL.ROI_MASK_HEAD.* is not applied
    faster = LazyConfig.load(str(LAZY / "tiny_faster_rcnn_cpu.py"))
    done = apply_yacs_model_keys(faster, tiny_rcnn_cfg("GN", detector="faster"))
    assert "model.roi_heads.box_head.conv_norm" in done and not any("mask_head" in k for k in done)
    # RetinaNet as before: no R-CNN keys
    done = apply_yacs_model_keys(lazy_cfg(TINY_LAZY), tiny_cfg("GN"))
    assert not any("roi_heads" in k for k in done) and "model.head.norm" in done and "model.num_classes" in done


def test_mask_on_must_agree_with_the_lazy_model():
    from frn_det.modeling.lazy_bridge import apply_yacs_model_keys

    with pytest.raises(ValueError, match=r"MODEL.MASK_ON=False but the LazyConfig's model has a mask head"):
        apply_yacs_model_keys(LazyConfig.load(str(TINY_MASK_LAZY)), tiny_rcnn_cfg("GN", detector="faster"))
    with pytest.raises(ValueError, match=r"MODEL.MASK_ON=True but the LazyConfig's model has no mask head"):
        apply_yacs_model_keys(LazyConfig.load(str(LAZY / "tiny_faster_rcnn_cpu.py")), tiny_rcnn_cfg("GN"))


def test_lazy_train_net_checks_masks_and_prepares_rcnn_datasets(caplog):
    from frn_det.config.lazy import load_config
    from frn_det.engine.lazy_training import prepare_lazy_datasets

    cfg = load_config(str(TINY_MASK_LAZY))
    assert prepare_lazy_datasets(cfg) == ["frn_shapes_train", "frn_shapes_val"]
    with pytest.raises(ValueError, match="has 4 categories, but the model has only 2 classes"):
        prepare_lazy_datasets(lazy_cfg(TINY_MASK_LAZY, "model.roi_heads.num_classes=2"))
    with pytest.raises(ValueError, match=r"mask head .*use_instance_mask=False"):
        load_config(str(TINY_MASK_LAZY), ["dataloader.train.mapper.use_instance_mask=False"])
    with pytest.raises(ValueError, match=r"asks for mask AP \(segm\) but the model has no mask head"):
        load_config(str(LAZY / "tiny_faster_rcnn_cpu.py"), ["dataloader.evaluator.tasks=[bbox,segm]"])
    with caplog.at_level("WARNING", logger="frn_det"):
        load_config(str(TINY_MASK_LAZY), ["dataloader.evaluator.tasks=[bbox]"])
    assert "masks are not evaluated" in caplog.text


def test_lazy_mask_rcnn_needs_a_mask_on_every_annotation_before_training(tmp_path):

    from frn_det.engine.lazy_training import prepare_lazy_datasets

    json_file, img_dir = make_coco(tmp_path, num_images=2)  # boxes only
    data = [f"dataloader.prepare.register_coco=[[lazy_boxes_only,{json_file},{img_dir}]]",
            "dataloader.train.dataset.names=lazy_boxes_only", "dataloader.test.dataset.names=lazy_boxes_only"]
    with pytest.raises(ValueError, match=r"has 2 of 2 annotations without a 'segmentation'.*but the LazyConfig's "
                                         r"model has a mask head \(model.roi_heads.mask_head\)"):
        prepare_lazy_datasets(lazy_cfg(TINY_MASK_LAZY, *data))
    assert prepare_lazy_datasets(lazy_cfg(LAZY / "tiny_faster_rcnn_cpu.py", *data)) == ["lazy_boxes_only"] * 2


def test_precise_bn_hook_as_the_yaml_trainer_adds_it():
    from frn_det.engine.lazy_training import precise_bn_hook
    from frn_det.engine.precise_bn import PrecisePopulationStats

    cfg = lazy_cfg(TINY_MASK_LAZY, f"{NORM_KEY}=BN", "train.precise_bn.enabled=true", "train.precise_bn.num_iter=7")
    hook = precise_bn_hook(cfg, instantiate(cfg.model))
    assert isinstance(hook, PrecisePopulationStats) and hook._num_iter == 7 and hook._period == cfg.train.eval_period
    assert precise_bn_hook(lazy_cfg(TINY_MASK_LAZY, "train.precise_bn.enabled=true"), lazy_model(path=TINY_MASK_LAZY)) \
        is None  # FRN: no BN statistics to recompute
    assert precise_bn_hook(lazy_cfg(TINY_MASK_LAZY, f"{NORM_KEY}=BN"), lazy_model("BN", path=TINY_MASK_LAZY)) is None


# ---------------------------------------------------------------- end to end (slow)


def final_ap(output: str) -> list:
    lines = re.findall(r"copypaste: ((?:[\d.]+|nan)(?:,(?:[\d.]+|nan)){5})\s*$", output, flags=re.M)
    assert lines, output[-3000:]
    return [float(x) for x in lines[-1].split(",")]


@pytest.mark.slow
def test_lazyconfig_train_net_trains_evaluates_and_resumes(tmp_path):
    out = tmp_path / "run"
    common = [f"train.output_dir={out}", f"dataloader.prepare.register_coco={small_val_set(tmp_path)}",
              "dataloader.test.dataset.names=small_val",
              "model.test_score_thresh=0.0"]  # detections (and a numeric AP) even after 6 iterations
    proc = run_tool("lazyconfig_train_net.py", "--config-file", TINY_LAZY, *common, "train.max_iter=6",
                    "dataloader.train.total_batch_size=2", "train.checkpointer.period=3", "train.log_period=1")
    ap = final_ap(proc.stdout)
    assert len(ap) == 6 and 0.0 <= ap[0] <= 100.0 and 0.0 <= ap[1] <= 100.0
    results = json.loads(proc.stdout.split("Evaluation results: ")[-1].splitlines()[0])["bbox"]
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(results)
    assert (out / "model_final.pth").is_file() and (out / "model_0000002.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert (out / "config.yaml").is_file() and "stages" in (out / "config.yaml").read_text()
    assert (out / "inference" / "coco_instances_results.json").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 5  # iterations 0..5 trained

    again = run_tool("lazyconfig_train_net.py", "--config-file", TINY_LAZY, "--eval-only", "--resume", *common)
    assert str(final_ap(again.stdout)) == str(ap)  # the trained weights, evaluated again (NaN-safe)
    assert "model_final.pth" in again.stdout

    empty = run_tool("lazyconfig_train_net.py", "--config-file", TINY_LAZY, "--eval-only",
                     f"train.output_dir={tmp_path / 'empty'}", check=False)
    assert empty.returncode != 0 and "Nothing was evaluated" in empty.stdout + empty.stderr


@pytest.mark.slow
def test_detectron2s_own_lazyconfig_train_net_runs_the_configs(tmp_path):
    script = Path(sysconfig.get_paths()["purelib"]) / "tools" / "lazyconfig_train_net.py"
    if not script.is_file():
        pytest.skip(f"Detectron2's tools/lazyconfig_train_net.py is not installed ({script})")
    out = tmp_path / "d2"
    proc = subprocess.run(
        [sys.executable, str(script), "--config-file", str(TINY_LAZY), f"train.output_dir={out}", "train.max_iter=2",
         "dataloader.train.total_batch_size=2", f"{NORM_KEY}=GN+TLU"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert (out / "model_final.pth").is_file()
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert "head.cls_subnet.2.tau" in state  # GN+TLU: the head's TLU, from frn-det's builders
    assert len(final_ap(proc.stdout)) == 6  # its own evaluation ran too (NaN: 2 iterations find nothing)


@pytest.mark.parametrize("override,key", [
    ("model.roi_heads.box_head.conv_norm=GN+GELU", r"model\.roi_heads\.box_head\.conv_norm='GN\+GELU'"),
    ("model.roi_heads.box_head.fc_norm=FRM", r"model\.roi_heads\.box_head\.fc_norm='FRM'"),
    ("model.roi_heads.mask_head.conv_norm=FRM", r"model\.roi_heads\.mask_head\.conv_norm='FRM'"),
])
def test_unknown_roi_head_norm_names_the_lazy_key(override, key):
    with pytest.raises(ValueError, match=key + " is not a known norm"):
        lazy_model("GN", override, path=TINY_MASK_LAZY)


@pytest.mark.parametrize("entry_name", ["tiny_cpu_lazy", "tiny_mask_rcnn_cpu_lazy"])
def test_sweep_lazy_model_entries_build_through_the_sweep_config(entry_name):
    from hydra import compose, initialize_config_dir

    from frn_det.sweep.planning.d2config import CONFIGS_DIR, build_detectron2_config

    with initialize_config_dir(config_dir=str(CONFIGS_DIR / "sweep"), version_base=None):
        job = compose(config_name="sweep", overrides=[f"model={entry_name}", "norm=gn"])
    cfg, _ = build_detectron2_config(job, "/tmp/x")
    assert (REPO / "configs" / cfg.MODEL.LAZY_CONFIG).is_file()
    model = Trainer.build_model(cfg)
    assert isinstance(model.backbone.bottom_up.stem.conv1.norm, nn.GroupNorm)
    if "mask" in entry_name:
        assert isinstance(model.roi_heads.mask_head.mask_fcn1.norm, nn.GroupNorm) and model.roi_heads.num_classes == 4


# ------------------------------------------- overrides and values checked like yacs ones

@pytest.mark.parametrize("typo,suggestion", [
    ("train.max_iterr=3", "train.max_iter"),
    ("optimizer.lrr=0.1", "optimizer.lr"),
    (f"{NORM_KEY}m=GN", NORM_KEY),
    ("dataloader.train.total_batch_sise=4", "dataloader.train.total_batch_size"),
])
def test_lazy_override_of_an_unknown_key_suggests_the_nearest(typo, suggestion):
    from frn_det.config.checks import ConfigError
    from frn_det.config.lazy import load_config

    key = typo.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"unknown config key {re.escape(key)} \(in the command-line overrides\); "
                                          rf"did you mean {re.escape(suggestion)}\b.*\+{re.escape(typo)}"):
        load_config(str(TINY_LAZY), [typo])


def test_lazy_overrides_of_arguments_seeds_and_added_keys_pass():
    from frn_det.config.lazy import load_config

    cfg = load_config(str(TINY_LAZY), [
        "dataloader.train.aspect_ratio_grouping=false",  # an argument of the LazyCall's target, at its default
        "dataloader.train.pin_memory=true",  # its **kwargs (for torch's DataLoader): not a near miss of a name
        "train.seed=7",  # read by Detectron2's default_setup with a default
        "+train.note=hello",  # Hydra's grammar for a new key
        "model.anchor_generator.sizes.0.0=20",  # a list element
    ])
    assert cfg.dataloader.train.aspect_ratio_grouping is False and cfg.dataloader.train.pin_memory is True
    assert cfg.train.seed == 7 and cfg.train.note == "hello"
    assert cfg.model.anchor_generator.sizes[0][0] == 20


@pytest.mark.parametrize("override,message", [
    ("dataloader.train.total_batch_size=0", "dataloader.train.total_batch_size=0 is not allowed: expected an integer "
                                            ">= 1"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is not allowed: expected a finite number > 0"),
    ("train.max_iter=0", "train.max_iter=0 is not allowed: expected an integer >= 1"),
    ("lr_multiplier.scheduler.milestones=[200,100,300]", "lr_multiplier.scheduler.milestones=[200, 100, 300] is not "
                                                          "allowed: expected increasing positive integers"),
    ("lr_multiplier.warmup_length=2", "lr_multiplier.warmup_length=2 is not allowed: expected a number in [0, 1]"),
    ("optimizer.momentum=1.5", "optimizer.momentum=1.5 is not allowed: expected a number in [0, 1)"),
    ("train.checkpointer.period=0", "train.checkpointer.period=0 is not allowed: expected an integer >= 1"),
    ("dataloader.train.num_workers=-1", "dataloader.train.num_workers=-1 is not allowed: expected an integer >= 0"),
    ("dataloader.train.mapper.augmentations.0.short_edge_length=[0]",
     "dataloader.train.mapper.augmentations[0].short_edge_length=[0] is not allowed: expected a non-empty list of "
     "positive integers"),
    ("dataloader.test.mapper.augmentations.0.max_size=-5",
     "dataloader.test.mapper.augmentations[0].max_size=-5 is not allowed: expected an integer > 0"),
    ("model.num_classes=0", "model.num_classes=0 is not allowed: expected an integer >= 1"),
    ("train.device=gpu", "train.device='gpu' is not allowed: expected 'cpu', 'cuda' or 'cuda:N'"),
    ("train.seed=abc", "train.seed='abc' is not allowed: expected an integer"),
    (f"{NORM_KEY}.norm_options.frn.eps=0".replace(".norm.", "."),
     "model.backbone.bottom_up.stages.norm_options.frn.eps=0 is not allowed: expected a finite number > 0"),
    ("dataloader.train.dataset.names=[]", "dataloader.train.dataset.names=[] is not allowed: expected a non-empty "
                                          "list"),
    (f"{NORM_KEY}=FRNN", "model.backbone.bottom_up.stages.norm='FRNN' is not a known norm"),
])
def test_lazy_values_get_the_yacs_checks(override, message):
    from frn_det.config.checks import check_config
    from frn_det.config.lazy import load_config

    with pytest.raises(ValueError) as err:
        check_config(load_config(str(TINY_LAZY), [override]), 1)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("yacs,lazy", [
    (("SOLVER.IMS_PER_BATCH", "0"), "dataloader.train.total_batch_size=0"),
    (("SOLVER.BASE_LR", "-1.0"), "optimizer.lr=-1.0"),
    (("SOLVER.STEPS", "(300, 100)"), "lr_multiplier.scheduler.milestones=[300,100]"),
    (("TEST.DETECTIONS_PER_IMAGE", "0"), "model.max_detections_per_image=0"),
    (("INPUT.MIN_SIZE_TRAIN", "(0,)"), "dataloader.train.mapper.augmentations.0.short_edge_length=[0]"),
    (("MODEL.RETINANET.NUM_CLASSES", "0"), "model.num_classes=0"),
])
def test_yacs_and_lazy_configs_are_checked_by_the_same_rule(yacs, lazy):
    """One table of rules: the same bad value gets the same "expected ..." in both kinds of config."""
    from frn_det.config.checks import ConfigError, check_config
    from frn_det.config.lazy import load_config

    with pytest.raises(ConfigError) as from_yacs:
        check_config(tiny_cfg("FRN", *yacs), 1)
    with pytest.raises(ConfigError) as from_lazy:
        check_config(load_config(str(TINY_LAZY), [lazy]), 1)
    expected = str(from_yacs.value).partition(" is not allowed: ")[2]
    assert expected and str(from_lazy.value).partition(" is not allowed: ")[2] == expected


def test_lazy_total_batch_must_divide_over_the_workers():
    from frn_det.config.checks import ConfigError, check_config
    from frn_det.config.lazy import load_config

    cfg = load_config(str(TINY_LAZY), ["dataloader.train.total_batch_size=5"])
    check_config(cfg, 1)
    with pytest.raises(ConfigError, match=r"dataloader.train.total_batch_size=5 \(the total batch\) must be a positive "
                                          r"multiple of the number of workers \(2\)"):
        check_config(cfg, 2)


def test_every_shipped_lazy_config_passes_the_checks():
    from frn_det.config.checks import check_config
    from frn_det.config.lazy import load_config

    files = sorted(LAZY.glob("*.py"))
    assert len(files) >= 15
    for path in files:
        check_config(load_config(str(path)), 8)


def test_lazy_tool_stops_on_a_typo_before_training(tmp_path):
    out = tmp_path / "out"
    proc = run_tool("lazyconfig_train_net.py", "--config-file", TINY_LAZY, f"train.output_dir={out}",
                    "train.max_iter=2", "train.max_iterr=3", check=False, timeout=300)
    assert proc.returncode != 0
    assert ("unknown config key train.max_iterr (in the command-line overrides); did you mean train.max_iter"
            in proc.stderr)
    assert not out.exists()  # nothing was set up, let alone trained
