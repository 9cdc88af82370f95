"""A norm of one's own (docs/own_norm.md): docs/own_norm.md's module, written to a folder
outside the package, registers "RMS" with frn_det.register_norm; the norm is then built by
its string in every model place (backbone, FPN, RetinaNet head, R-CNN box and mask heads,
a LazyConfig), its options keys are checked, the sweep checks `imports` before any job and
(slow) trains and reports a 2-iteration run with it."""
import importlib
import json
import os
import re
import sys
from pathlib import Path

import pytest
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model
from harness import REPO, run_tool, tiny_cfg
from omegaconf import OmegaConf

from frn_det.config.build import build_config
from frn_det.config.checks import ConfigError, check_config
from frn_det.layers import FilterResponseNorm2d, NormOptions, norm_spec, register_norm, unregister_norm
from frn_det.utils.paths import CONFIGS_DIR

DOC = REPO / "docs" / "own_norm.md"
TINY_MASK_RCNN = str(REPO / "configs" / "tiny_mask_rcnn_cpu.yaml")
SWEEP_DIR = CONFIGS_DIR / "sweep"


def doc_block(language: str, first_line: str) -> str:
    """The code block of docs/own_norm.md in `language` that starts with `first_line`."""
    for block in re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"docs/own_norm.md has no {language} block starting with {first_line!r}")


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """The docs' my_norms.py and norm/rms.yaml in a folder of the user's, imported from there."""
    root = tmp_path_factory.mktemp("my_frn")
    (root / "my_norms.py").write_text(doc_block("python", "# my_norms.py"))
    (root / "conf" / "norm").mkdir(parents=True)
    (root / "conf" / "norm" / "rms.yaml").write_text(doc_block("yaml", "# RMS (my_norms.py)"))
    sys.path.insert(0, str(root))
    try:
        importlib.import_module("my_norms")
        yield root
    finally:
        unregister_norm("RMS")
        sys.modules.pop("my_norms", None)
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def my_norms(user_dir):
    return sys.modules["my_norms"]


def rms_layers(module):
    return [m for m in module.modules() if type(m).__name__ == "RMSNorm2d"]


def test_the_docs_module_registers_rms_from_outside_the_package(my_norms, user_dir):
    assert Path(my_norms.__file__).parent == user_dir and REPO not in Path(my_norms.__file__).parents
    spec = norm_spec("RMS")
    assert spec.family == "user" and spec.section == "RMS" and spec.options is my_norms.RMSOptions
    assert not spec.batch_stats and not spec.per_level and not spec.synchronized and spec.activation == "ReLU"
    import frn_det
    from frn_det import layers

    assert "RMS" in frn_det.ACCEPTED_NORMS and "RMS" in layers.ACCEPTED_NORMS and "RMS" not in layers.BATCH_STAT_NORMS


def test_rms_is_frn_without_its_tlu(my_norms):
    import torch

    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    rms = my_norms.RMSNorm2d(8, eps=1e-6).double()
    frn = FilterResponseNorm2d(8, eps=1e-6, tlu=False, impl="reference").double()
    with torch.no_grad():
        for layer in (rms, frn):
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.5, 0.5)
        frn.weight.copy_(rms.weight.view_as(frn.weight))
        frn.bias.copy_(rms.bias.view_as(frn.bias))
        torch.testing.assert_close(rms(x), frn(x))


def test_every_model_place_builds_it_by_its_string(my_norms):
    # RetinaNet: backbone (stem and blocks), FPN, head; the section's value reaches the layers
    retina = build_model(tiny_cfg("RMS", "MODEL.RMS.EPS", 1e-5)).eval()
    bottom_up, head = retina.backbone.bottom_up, retina.head
    assert isinstance(bottom_up.stem.conv1.norm, my_norms.RMSNorm2d)
    assert all(isinstance(b.conv1.norm, my_norms.RMSNorm2d) for b in bottom_up.res5)
    fpn = retina.backbone
    assert all(isinstance(getattr(fpn, f"fpn_{kind}{level}").norm, my_norms.RMSNorm2d)
               for kind in ("lateral", "output") for level in (3, 4, 5))
    assert [type(m) for m in head.cls_subnet] == [type(m) for m in head.bbox_subnet]
    assert len(rms_layers(head.cls_subnet)) == len(rms_layers(head.bbox_subnet)) == 2  # the 2-conv head
    assert isinstance(head.cls_subnet[1], my_norms.RMSNorm2d)
    assert {m.eps for m in rms_layers(retina)} == {1e-5}
    # Mask R-CNN: the box head's convs (and FC with NORM_FCS) and the mask head's convs
    norms = [k for key in ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD") for k in (f"MODEL.{key}.NORM", "RMS")]
    rcnn = build_model(build_config(TINY_MASK_RCNN, norms + ["MODEL.ROI_BOX_HEAD.NORM_FCS", True],
                                    announce=False)).eval()
    box, mask = rcnn.roi_heads.box_head, rcnn.roi_heads.mask_head
    assert all(isinstance(getattr(box, f"conv{k}").norm, my_norms.RMSNorm2d) for k in range(1, 5))
    assert isinstance(box.fc_norm1.norm, my_norms.RMSNorm2d)
    assert all(isinstance(getattr(mask, f"mask_fcn{k}").norm, my_norms.RMSNorm2d) for k in range(1, 5))
    assert isinstance(rcnn.backbone.bottom_up.stem.conv1.norm, my_norms.RMSNorm2d)


def test_its_parameters_get_the_norms_weight_decay_as_bns_do(my_norms):
    """Under the same protocol as BN, GN and FRN: SOLVER.WEIGHT_DECAY_NORM, not the convs' decay."""
    from frn_det.engine.optimizer import get_optimizer_params

    cfg = tiny_cfg("RMS", "SOLVER.WEIGHT_DECAY", 1e-4, "SOLVER.WEIGHT_DECAY_NORM", 0.0)
    model = build_model(cfg)
    decay = {id(p): g["weight_decay"] for g in get_optimizer_params(model, cfg) for p in g["params"]}
    rms = [p for m in rms_layers(model) for p in m.parameters()]
    assert rms and {decay[id(p)] for p in rms} == {0.0}
    assert decay[id(model.backbone.bottom_up.stem.conv1.weight)] == 1e-4
    bn = build_model(tiny_cfg("BN", "SOLVER.WEIGHT_DECAY", 1e-4, "SOLVER.WEIGHT_DECAY_NORM", 0.0))
    assert not any(getattr(m, "is_norm_layer", False) for m in bn.modules())  # built-ins: by type, as before


def test_lazyconfig_takes_it_by_its_string_with_its_options(my_norms):
    lazy = LazyConfig.load(str(REPO / "configs" / "lazy" / "tiny_retinanet_cpu.py"))
    lazy = LazyConfig.apply_overrides(lazy, ["model.backbone.bottom_up.stages.norm=RMS"])
    lazy.model.backbone.bottom_up.stages.norm_options.extra = [{"_target_": "my_norms.RMSOptions", "eps": 1e-4}]
    check_config(lazy, 1)
    model = instantiate(lazy.model)
    assert isinstance(model.backbone.bottom_up.stem.conv1.norm, my_norms.RMSNorm2d)
    assert {m.eps for m in rms_layers(model)} == {1e-4} and len(rms_layers(model.head)) > 0
    # a YAML config naming a LazyConfig model: MODEL.RMS.EPS goes into norm_options.extra
    from frn_det.engine.trainer import Trainer

    cfg = tiny_cfg("RMS", "MODEL.LAZY_CONFIG", "lazy/tiny_retinanet_cpu.py", "MODEL.RMS.EPS", 1e-3)
    assert {m.eps for m in rms_layers(Trainer.build_model(cfg))} == {1e-3}


def test_its_options_keys_are_checked_like_the_built_ins(my_norms):
    cfg = tiny_cfg("RMS")
    assert cfg.MODEL.RMS.EPS == 1e-6
    with pytest.raises(ConfigError, match=r"unknown config key MODEL\.RMS\.EPSS .*did you mean MODEL\.RMS\.EPS"):
        tiny_cfg("RMS", "MODEL.RMS.EPSS", 1e-5)
    with pytest.raises(ValueError, match=r"MODEL\.RMS\.EPS must be > 0"):
        check_config(tiny_cfg("RMS", "MODEL.RMS.EPS", -1.0), 1)
    assert NormOptions(extra=[my_norms.RMSOptions(eps=2e-6)]).for_section("RMS", my_norms.RMSOptions).eps == 2e-6
    assert NormOptions().for_section("RMS", my_norms.RMSOptions) == my_norms.RMSOptions()


def test_names_are_checked_and_taken_ones_refused(my_norms):
    spec = norm_spec("RMS")
    # the same spec again (a module imported twice) is fine
    assert register_norm("RMS", layer=my_norms.RMSNorm2d, options=my_norms.RMSOptions, section="RMS",
                         reference=spec.reference).same_as(spec)
    with pytest.raises(ValueError, match="already registered"):
        register_norm("RMS", layer=my_norms.RMSNorm2d)  # another spec under a taken name
    with pytest.raises(ValueError, match="already registered"):
        register_norm("BN", layer=my_norms.RMSNorm2d)
    with pytest.raises(ValueError, match=r"without '\+'"):
        register_norm("RMS+X", layer=my_norms.RMSNorm2d)
    with pytest.raises(ValueError, match="section MODEL.BRN"):
        register_norm("RMS2", layer=my_norms.RMSNorm2d, options=my_norms.RMSOptions, section="BRN")
    with pytest.raises(ValueError, match="is a built-in norm"):
        unregister_norm("BN")


def _job(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(SWEEP_DIR), version_base="1.3"):
        return compose("sweep", overrides=list(overrides))


def test_the_sweep_checks_imports_first_and_imports_change_no_hash(user_dir):
    from frn_det.sweep.planning.d2config import build_detectron2_config, config_hash
    from frn_det.sweep.planning.job_checks import override_value_error

    error = override_value_error(["hydra.mode=RUN", "imports=[no_such_module_of_mine]"], SWEEP_DIR)
    assert error.startswith("imports=['no_such_module_of_mine'] is not allowed: imports: cannot import "
                            "'no_such_module_of_mine' (ModuleNotFoundError"), error
    search = f"hydra.searchpath=[file://{user_dir / 'conf'}]"
    assert override_value_error([search, "hydra.mode=RUN", "imports=[my_norms]", "norm=rms"], SWEEP_DIR) is None
    # the job of the user's norm entry is composed (hydra.searchpath) and checked before it runs
    error = override_value_error([search, "imports=[my_norms]", "norm=gn,rms", "ims_per_gpu=2", "seed=0",
                                  "norm.backbone=RMS+ELU"], SWEEP_DIR)
    assert error.startswith("norm.backbone='RMS+ELU' is not allowed"), error
    error = override_value_error([search, "imports=[my_norms]", "norm=rms", "hydra.mode=RUN",
                                  "opts=[MODEL.RMS.EPS,0.0]"], SWEEP_DIR)
    assert error == "MODEL.RMS.EPS must be > 0, got 0.0", error
    # `imports` and the user's section leave the hashes of the runs without the norm as they were
    plain = build_detectron2_config(_job("norm=bn"), "")[0]
    with_imports = build_detectron2_config(_job("norm=bn", "imports=[my_norms]"), "")[0]
    assert "RMS" in with_imports.MODEL and config_hash(plain) == config_hash(with_imports)
    # where the norm is used, its section counts
    rms = build_detectron2_config(_job(search, "norm=rms", "imports=[my_norms]"), "")[0]
    rms_eps = build_detectron2_config(_job(search, "norm=rms", "imports=[my_norms]", "opts=[MODEL.RMS.EPS,1e-5]"),
                                      "")[0]
    assert rms.MODEL.RESNETS.NORM == "RMS" and config_hash(rms) != config_hash(rms_eps)


def test_the_report_orders_an_unknown_norm_after_the_known_ones():
    from frn_det.report.aggregate import NORM_ORDER, norm_sort_key

    assert sorted(["rms", "frn", "bn", "gn+tlu"], key=norm_sort_key) == ["bn", "gn+tlu", "frn", "rms"]
    assert all(norm_sort_key("rms") > norm_sort_key(n) for n in NORM_ORDER)


@pytest.mark.slow
def test_a_sweep_trains_and_reports_it(user_dir, tmp_path):
    out = tmp_path / "sweep"
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(user_dir), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}
    run_tool("sweep.py", "hydra.mode=RUN", f"hydra.searchpath=[file://{user_dir / 'conf'}]", "imports=[my_norms]",
             "norm=rms", "ims_per_gpu=2", "seed=0", f"output_dir={out}", "schedule.reference_batch=2",
             "schedule.max_iter=2", "schedule.steps=[1]", "schedule.warmup_iters=0", "dataset.tune=[]",
             "opts=[MODEL.RMS.EPS,1e-5]", env=env)
    run = out / "rms_ims2_seed0"
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "finished", m.get("status_detail")
    assert m["norm"] == "rms" and m["iterations"] == 2 and m["images_seen"] == 4
    assert isinstance(m["AP"], float) and 0.0 <= m["AP"] <= 100.0 and len(m["config_hash"]) == 12
    trained = OmegaConf.load(run / "config.yaml")
    assert trained.MODEL.RESNETS.NORM == trained.MODEL.FPN.NORM == trained.MODEL.RETINANET.NORM == "RMS"
    assert trained.MODEL.RMS.EPS == 1e-5
    assert [r["norm"] for r in json.loads((out / "results.json").read_text())] == ["rms"]
    assert any(line.startswith("| rms |") for line in (out / "results.md").read_text().splitlines())
