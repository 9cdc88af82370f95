"""Hydra composition -> Detectron2 config values, the scaling rule and run identity."""
import re

import pytest
from harness import compose_job
from hydra import initialize_config_dir

from frn_det.sweep.planning.d2config import CONFIGS_DIR, build_detectron2_config, config_hash
from frn_det.sweep.planning.scaling import scale_schedule
from frn_det.sweep.running.callbacks import count_sweep_jobs


@pytest.mark.parametrize("norm,expected", [("gn", ("GN", "GN", "GN")), ("frn", ("FRN", "FRN", "FRN")),
                                           ("syncbn", ("SyncBN",) * 3), ("frozenbn", ("FrozenBN", "", ""))])
def test_norm_strings_reach_backbone_fpn_and_head(norm, expected):
    cfg, _ = build_detectron2_config(compose_job(f"norm={norm}"), "/tmp/x")
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.RETINANET.NORM) == expected


def test_defaults_are_the_cpu_demo():
    cfg, sched = build_detectron2_config(compose_job(), "/tmp/x")
    assert cfg.MODEL.DEVICE == "cpu" and cfg.MODEL.RESNETS.DEPTH == 18
    assert cfg.DATASETS.TRAIN == ("frn_shapes_train",) and cfg.MODEL.RETINANET.NUM_CLASSES == 4
    # cpu_short: base lr 0.02 and 150 iterations at a reference batch of 8; default 2 images x 1 worker
    assert cfg.SOLVER.IMS_PER_BATCH == 2 and cfg.SOLVER.BASE_LR == pytest.approx(0.005)
    assert cfg.SOLVER.MAX_ITER == 600 and cfg.SOLVER.STEPS == (440, 560) and cfg.SOLVER.WARMUP_ITERS == 120
    assert sched.images_seen == 1200
    # AP on val, the learning rate chosen on the disjoint tune split
    assert cfg.DATASETS.TEST == ("frn_shapes_val", "frn_shapes_tune")


@pytest.mark.parametrize("ims,gpus,machines", [(1, 1, 1), (4, 2, 1), (2, 8, 2)])
def test_total_batch_lr_and_schedule_scale_linearly(ims, gpus, machines):
    job = compose_job(
        "schedule=paper",
        "model=retinanet_r50_fpn",
        f"ims_per_gpu={ims}",
        f"num_gpus={gpus}",
        f"num_machines={machines}",
    )
    cfg, sched = build_detectron2_config(job, "/tmp/x")
    total = ims * gpus * machines
    assert cfg.SOLVER.IMS_PER_BATCH == total == sched.total_batch
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.04 * total / 64)
    assert cfg.SOLVER.MAX_ITER == round(125000 * 64 / total)
    assert cfg.SOLVER.STEPS == tuple(round(s * 64 / total) for s in (83333, 111111))
    assert cfg.SOLVER.WARMUP_ITERS == round(2000 * 64 / total)
    assert cfg.SOLVER.CHECKPOINT_PERIOD == round(5000 * 64 / total)
    assert sched.images_seen == pytest.approx(125000 * 64, rel=1e-4)
    assert (
        cfg.SOLVER.WEIGHT_DECAY == pytest.approx(4e-4)
        and cfg.MODEL.BACKBONE.NAME == "build_frn_retinanet_resnet_fpn_backbone"
    )


def test_extra_detectron2_overrides_pass_through():
    cfg, _ = build_detectron2_config(compose_job("opts=[TEST.DETECTIONS_PER_IMAGE,50,MODEL.FRN.EPS,1e-5]"), "/tmp/x")
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 50 and cfg.MODEL.FRN.EPS == pytest.approx(1e-5)


@pytest.mark.parametrize("bad", [{"ims_per_gpu": 0}, {"num_gpus": -1}, {"ims_per_gpu": 1.5}])
def test_invalid_worker_counts_are_clear_errors(bad):
    args = dict(
        ims_per_gpu=2,
        num_gpus=1,
        num_machines=1,
        reference_batch=8,
        base_lr=0.1,
        max_iter=10,
        steps=[5],
        warmup_iters=1,
    )
    args.update(bad)
    name, value = next(iter(bad.items()))
    with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1, got {value}"):
        scale_schedule(**args)


def test_unknown_norm_group_lists_the_choices():
    with pytest.raises(Exception, match=r"(?s)Could not find 'norm/batchnorm'.*bn.*frn.*gn"):
        compose_job("norm=batchnorm")


def test_config_hash_identifies_the_run_not_its_folder():
    a, _ = build_detectron2_config(compose_job("norm=frn"), "/tmp/a")
    b, _ = build_detectron2_config(compose_job("norm=frn"), "/tmp/b")
    c, _ = build_detectron2_config(compose_job("norm=gn"), "/tmp/a")
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_lr_scale_multiplies_the_linearly_scaled_lr_only():
    base, _ = build_detectron2_config(compose_job("ims_per_gpu=4"), "/tmp/x")
    half, sched = build_detectron2_config(compose_job("ims_per_gpu=4", "lr_scale=0.5"), "/tmp/x")
    assert half.SOLVER.BASE_LR == pytest.approx(base.SOLVER.BASE_LR / 2) == pytest.approx(0.02 * 4 / 8 / 2)
    assert half.SOLVER.MAX_ITER == base.SOLVER.MAX_ITER and half.SOLVER.STEPS == base.SOLVER.STEPS
    assert sched.lr_scale == 0.5 and "x lr_scale 0.5" in sched.describe()
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="lr_scale must be a finite number > 0"):
            build_detectron2_config(compose_job(f"lr_scale={bad}"), "/tmp/x")


def test_activation_axis_appends_to_every_norm_that_exists():
    cfg, _ = build_detectron2_config(compose_job("norm=gn", "act=tlu"), "/tmp/x")
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.RETINANET.NORM) == ("GN+TLU",) * 3
    cfg, _ = build_detectron2_config(compose_job("norm=frozenbn", "act=relu"), "/tmp/x")
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.RETINANET.NORM) == ("FrozenBN+ReLU", "", "")


def test_run_names_show_the_lr_and_activation_only_when_set():
    from frn_det.sweep.planning.d2config import run_name

    assert run_name("gn", None, 4, 1.0, 0) == "gn_ims4_seed0"
    assert run_name("gn", "tlu", 1, 0.5, 2) == "gn+tlu_ims1_lr0.5_seed2"


def test_default_grid_is_bn_gn_frn_at_1_and_4_images_per_worker_with_3_seeds():
    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf

    from frn_det.sweep.running.callbacks import sweep_overrides

    with initialize_config_dir(config_dir=str(CONFIGS_DIR / "sweep"), version_base="1.3"):
        cfg = hydra_compose(config_name="sweep", return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert count_sweep_jobs(sweep_overrides(cfg)) == 18
    assert cfg.hydra.sweeper.params.seed == "0,1,2"
    # the local launcher: Hydra's joblib launcher, `jobs` runs at once
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.jobs == "auto"
    # Command-line keys replace the config's params; the others stay (as Hydra's basic sweeper does).
    cfg = OmegaConf.create({"hydra": {"overrides": {"task": ["norm=frn,gn", "seed=0,1"]},
                                      "sweeper": {"params": OmegaConf.to_container(cfg.hydra.sweeper.params)}}})
    assert sorted(sweep_overrides(cfg)) == ["ims_per_gpu=1,4", "norm=frn,gn", "seed=0,1"]
    assert count_sweep_jobs(sweep_overrides(cfg)) == 8


def test_sweep_job_count_is_the_product_of_choices():
    assert count_sweep_jobs(["norm=bn,gn,frn", "ims_per_gpu=1,2,4", "seed=0"]) == 9
    assert count_sweep_jobs(["norm=frn"]) == 1
    assert count_sweep_jobs(["ims_per_gpu=range(1,5)", "norm=bn,gn"]) == 8


@pytest.mark.parametrize("override,suggestion", [
    ("ims_per_gpus=2", "ims_per_gpu"), ("schedule.max_iters=5", "schedule.max_iter"), ("lr_scal=0.5,1", "lr_scale"),
])
def test_unknown_sweep_keys_suggest_the_nearest(override, suggestion):
    from frn_det.sweep.planning.override_check import unknown_override_error

    message = unknown_override_error([override], CONFIGS_DIR / "sweep")
    assert message and f"unknown sweep key {override.split('=')[0]!r}" in message and suggestion in message


def test_known_sweep_overrides_pass_the_key_check():
    from frn_det.sweep.planning.override_check import unknown_override_error

    ok = ["norm=bn,gn", "ims_per_gpu=1,4", "schedule.max_iter=5", "dataset.tune=[]", "model=retinanet_r50_fpn",
          "hydra.mode=RUN", "+extra=1", "opts=[SOLVER.AMP.ENABLED,True]", "dataset.register=[[a,b,c]]", "act=tlu"]
    assert unknown_override_error(ok, CONFIGS_DIR / "sweep") is None


def test_sweep_cli_stops_on_an_unknown_key_before_hydra(tmp_path):
    from harness import run_tool

    proc = run_tool("sweep.py", "ims_per_gpus=2", f"output_dir={tmp_path}", check=False, timeout=120)
    assert proc.returncode == 2 and "did you mean ims_per_gpu" in proc.stderr
    assert not any(tmp_path.iterdir())


def write_coco(path, num_categories):
    import json

    path.write_text(json.dumps({"images": [], "annotations": [],
                                "categories": [{"id": i + 1, "name": f"c{i}"} for i in range(num_categories)]}))
    return path


def test_dataset_by_path_reads_the_class_count_and_registers_the_splits(tmp_path):
    train, val = write_coco(tmp_path / "train.json", 3), write_coco(tmp_path / "val.json", 3)
    job = compose_job("dataset=coco_json", f"dataset.train_json={train}", f"dataset.train_images={tmp_path}",
                      f"dataset.test_json={val}", f"dataset.test_images={tmp_path}")
    cfg, _ = build_detectron2_config(job, "/tmp/x")
    assert cfg.MODEL.RETINANET.NUM_CLASSES == 3
    assert cfg.DATASETS.TRAIN == ("coco_json_train",) and cfg.DATASETS.TEST == ("coco_json_test",)
    assert [tuple(t) for t in cfg.DATASETS.REGISTER_COCO] == [
        ("coco_json_train", str(train), str(tmp_path)), ("coco_json_test", str(val), str(tmp_path))]


def test_dataset_by_path_with_a_disagreeing_class_count_is_an_error(tmp_path):
    train = write_coco(tmp_path / "train.json", 3)
    job = compose_job("dataset=coco_json", f"dataset.train_json={train}", f"dataset.train_images={tmp_path}",
                      f"dataset.test_json={train}", f"dataset.test_images={tmp_path}", "dataset.num_classes=5")
    with pytest.raises(ValueError, match=r"dataset.num_classes=5 disagrees with the 3 categories in .*train.json"):
        build_detectron2_config(job, "/tmp/x")


def test_dataset_by_path_with_a_tuning_split(tmp_path):
    train = write_coco(tmp_path / "train.json", 2)
    job = compose_job("dataset=coco_json", f"dataset.train_json={train}", f"dataset.train_images={tmp_path}",
                      f"dataset.test_json={train}", f"dataset.test_images={tmp_path}",
                      f"dataset.tune_json={train}", f"dataset.tune_images={tmp_path}")
    cfg, _ = build_detectron2_config(job, "/tmp/x")
    assert cfg.DATASETS.TEST == ("coco_json_test", "coco_json_tune")


def test_activation_axis_leaves_norm_activation_layers_alone():
    cfg, _ = build_detectron2_config(compose_job("norm=evonorm_s0", "act=tlu"), "/tmp/x")
    assert "+" not in cfg.MODEL.RESNETS.NORM and cfg.MODEL.RESNETS.NORM.startswith("EvoNorm")


def test_batch_renorm_ramp_follows_the_run_schedule():
    cfg, sched = build_detectron2_config(compose_job("norm=brn", "ims_per_gpu=4"), "/tmp/x")
    assert sched.max_iter == 300
    assert (cfg.MODEL.BRN.WARMUP_START_ITER, cfg.MODEL.BRN.D_MAX_END_ITER, cfg.MODEL.BRN.R_MAX_END_ITER) == (12, 60, 96)
    cfg, _ = build_detectron2_config(compose_job("norm=brn", "opts=[MODEL.BRN.R_MAX_END_ITER,7]"), "/tmp/x")
    assert cfg.MODEL.BRN.R_MAX_END_ITER == 7  # opts still win


def test_sync_brn_with_one_worker_warns(caplog):
    from harness import tiny_cfg

    from frn_det.config.checks import check_config

    with caplog.at_level("WARNING", logger="frn_det"):
        check_config(tiny_cfg("SyncBRN+TLU"), 1)
    assert "MODEL.RESNETS.NORM=SyncBRN+TLU" in caplog.text


def test_bad_norm_string_fails_in_the_config_check_with_the_choices():
    from harness import tiny_cfg

    from frn_det.config.checks import check_config

    with pytest.raises(ValueError, match=r"MODEL.RESNETS.NORM='FRNN' is not a known norm. Accepted: .*'GNWS'"):
        check_config(tiny_cfg("FRNN"), 1)


def test_model_group_can_name_a_lazyconfig_model():
    from frn_det.engine import Trainer

    lazy_cfg, _ = build_detectron2_config(compose_job("model=tiny_cpu_lazy", "norm=gn"), "/tmp/x")
    yaml_cfg, _ = build_detectron2_config(compose_job("model=tiny_cpu", "norm=gn"), "/tmp/x")
    assert lazy_cfg.MODEL.LAZY_CONFIG == "lazy/tiny_retinanet_cpu.py" and yaml_cfg.MODEL.LAZY_CONFIG == ""
    lazy, built = Trainer.build_model(lazy_cfg).state_dict(), Trainer.build_model(yaml_cfg).state_dict()
    assert {k: v.shape for k, v in lazy.items()} == {k: v.shape for k, v in built.items()}
    assert any(".norm.weight" in k for k in lazy)


@pytest.mark.parametrize(
    "model", ["tiny_mask_rcnn_cpu", "tiny_faster_rcnn_cpu", "mask_rcnn_r50_fpn", "faster_rcnn_r50_fpn"]
)
def test_rcnn_models_get_the_norm_in_both_roi_heads_and_the_class_count(model):
    cfg, _ = build_detectron2_config(compose_job(f"model={model}", "norm=gn"), "/tmp/x")
    norms = (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.ROI_BOX_HEAD.NORM, cfg.MODEL.ROI_MASK_HEAD.NORM)
    assert norms == ("GN",) * 4 and cfg.MODEL.RETINANET.NORM == ""
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 4 and cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert cfg.MODEL.ROI_BOX_HEAD.NAME == "FRNFastRCNNConvFCHead" and cfg.MODEL.ROI_BOX_HEAD.NUM_CONV == 4
    assert cfg.MODEL.MASK_ON == ("mask" in model)


def test_retinanet_models_leave_the_roi_heads_alone():
    cfg, _ = build_detectron2_config(compose_job("norm=frn"), "/tmp/x")
    assert cfg.MODEL.RETINANET.NORM == "FRN" and cfg.MODEL.RETINANET.NUM_CLASSES == 4
    assert cfg.MODEL.ROI_BOX_HEAD.NORM == "" and cfg.MODEL.ROI_MASK_HEAD.NORM == ""


def test_scratch_9x_schedule_scales_from_a_total_batch_of_64():
    job = compose_job("model=mask_rcnn_r50_fpn", "schedule=scratch_9x", "ims_per_gpu=2", "num_gpus=8")
    cfg, sched = build_detectron2_config(job, "/tmp/x")
    assert (sched.total_batch, sched.lr, sched.max_iter) == (16, pytest.approx(0.02), 810000)
    assert list(cfg.SOLVER.STEPS) == [750000, 790000]


def test_runs_at_once_and_threads_share_the_cores(monkeypatch):
    from frn_det.sweep.planning import parallel

    monkeypatch.setattr(parallel, "usable_cores", lambda: 8)
    assert parallel.local_jobs("auto", "cpu", 1) == 8 and parallel.local_jobs("auto", "cpu", 2) == 4
    assert parallel.local_jobs("auto", "cuda", 1) == 1 and parallel.local_jobs(3, "cpu", 1) == 3
    # threads=auto: the machine's share for as many runs as jobs=auto starts, whatever runs beside it
    # (a run alone, resumed or added later gets the threads its sweep's runs got: issue 28)
    assert parallel.threads_per_worker("auto", "cpu", 1) == 1 and parallel.threads_per_worker("auto", "cpu", 2) == 1
    assert parallel.threads_per_worker("auto", "cuda", 1) == 8 and parallel.threads_per_worker("auto", "cuda", 2) == 4
    assert parallel.threads_per_worker(2, "cpu", 1) == 2
    monkeypatch.setattr(parallel, "usable_cores", lambda: 64)
    assert parallel.local_jobs("auto", "cpu", 1) == parallel.MAX_LOCAL_JOBS
    assert parallel.threads_per_worker("auto", "cpu", 1) == 64 // parallel.MAX_LOCAL_JOBS


def test_a_containers_cpu_quota_caps_the_cores(monkeypatch, tmp_path):
    from frn_det.sweep.planning import parallel
    from frn_det.utils import cores

    v2, v1, none = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")  # docker --cpus=1.5
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (none / "cpu").mkdir(parents=True)
    (none / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (none / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cores.cgroup_cpu_limit(v2) == 1.5 and cores.cgroup_cpu_limit(v1) == 2.0
    assert cores.cgroup_cpu_limit(none) is None and cores.cgroup_cpu_limit(tmp_path / "missing") is None
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda: 1.5)
    assert cores.usable_cores() == 2 and parallel.local_jobs("auto", "cpu", 1) == 2
    monkeypatch.setattr(cores, "cgroup_cpu_limit", lambda: None)
    assert cores.usable_cores() == 64


@pytest.mark.parametrize("norm", ["bn", "gn", "frn", "syncbn", "brn", "gnws", "evonorm_s0"])
def test_amp_key_turns_on_detectron2_mixed_precision(norm):
    cfg, _ = build_detectron2_config(compose_job(f"norm={norm}", "amp=true", "model.device=cuda"), "/tmp/x")
    assert cfg.SOLVER.AMP.ENABLED is True  # (MODEL.DEVICE falls back to cpu without CUDA, with a warning)
    plain, _ = build_detectron2_config(compose_job(f"norm={norm}", "model.device=cuda"), "/tmp/x")
    assert plain.SOLVER.AMP.ENABLED is False and config_hash(plain) != config_hash(cfg)


def test_amp_on_a_cpu_model_or_not_a_bool_is_a_clear_error():
    from frn_det.config.checks import check_config

    cfg, _ = build_detectron2_config(compose_job("amp=true"), "/tmp/x")
    with pytest.raises(ValueError, match=r"SOLVER.AMP.ENABLED=True needs a CUDA model, got MODEL.DEVICE='cpu'"):
        check_config(cfg, 1)
    from frn_det.sweep.planning.job_checks import override_value_error

    assert override_value_error(["amp=yes"], CONFIGS_DIR / "sweep").startswith("amp='yes' is not allowed: expected "
                                                                               "true or false")


# ------------------------------------------------ sweep keys: type and range, in the sweep's words

@pytest.mark.parametrize("override,message", [
    ("seed=abc", "seed='abc' is not allowed: expected an integer"),
    ("seed=0,1,abc", "seed='abc' is not allowed: expected an integer"),  # every value of a sweep
    ("num_gpus=0", "num_gpus=0 is not allowed: expected an integer >= 1"),
    ("num_machines=two", "num_machines='two' is not allowed: expected an integer >= 1"),
    ("machine_rank=-1", "machine_rank=-1 is not allowed: expected null or an integer >= 0"),
    ("act=gelu", "act='gelu' is not allowed: expected null (the norm's own activation) or one of 'relu', 'tlu'"),
    ("lr_scale=-1", "lr_scale=-1 is not allowed: expected a finite number > 0"),
    ("ims_per_gpu=1,abc", "ims_per_gpu='abc' is not allowed: expected an integer >= 1"),
    ("schedule.steps=[30,20]", "schedule.steps=[30, 20] is not allowed: expected increasing positive integers"),
    ("schedule.max_iter=0", "schedule.max_iter=0 is not allowed: expected an integer >= 1"),
    ("schedule.base_lr=fast", "schedule.base_lr='fast' is not allowed: expected a finite number > 0"),
    ("schedule.momentum=1", "schedule.momentum=1 is not allowed: expected a number in [0, 1)"),
    ("schedule.checkpoint_period=0", "schedule.checkpoint_period=0 is not allowed: expected an integer >= 1"),
    ("norm.backbone=FRNN", "norm.backbone='FRNN' is not allowed: expected a norm string"),
    ("model.device=gpu", "model.device='gpu' is not allowed: expected 'cpu', 'cuda' or 'cuda:N'"),
    ("verbose=yes", "verbose='yes' is not allowed: expected true or false"),
    ("opts=[TEST.DETECTIONS_PER_IMAGE]", "opts=['TEST.DETECTIONS_PER_IMAGE'] is not allowed: expected a list of "
                                         "Detectron2 KEY, VALUE pairs"),
])
def test_bad_sweep_values_name_the_sweep_key_and_what_is_allowed(override, message):
    from frn_det.config.checks import ConfigError
    from frn_det.sweep.planning.job_checks import check_job, override_value_error

    assert override_value_error([override], CONFIGS_DIR / "sweep").startswith(message)
    if "," not in override.partition("=")[2] or override.startswith(("schedule.steps", "opts")):
        # the job check sees the same value, whatever put it in the job (here: compose, as Hydra does)
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_job(compose_job(override))


def test_good_sweep_overrides_pass_the_value_check():
    from frn_det.sweep.planning.job_checks import check_job, override_value_error

    ok = [
        "norm=bn,gn,frn",
        "ims_per_gpu=1,4",
        "lr_scale=0.5,1,2",
        "seed=range(0,3)",
        "act=TLU",
        "machine_rank=null",
        "schedule=paper",
        "model=retinanet_r50_fpn",
        "num_gpus=8",
        "hydra.mode=RUN",
        "opts=[TEST.DETECTIONS_PER_IMAGE,50]",
    ]
    assert override_value_error(ok, CONFIGS_DIR / "sweep") is None
    for name in ("tiny_cpu", "retinanet_r50_fpn", "tiny_mask_rcnn_cpu"):
        for schedule in ("cpu_short", "paper", "scratch_9x"):
            check_job(compose_job(f"model={name}", f"schedule={schedule}", "act=relu"))


def test_every_sweep_key_has_a_rule():
    """A new key of sweep.yaml or of a group entry needs its line in SWEEP_RULES."""
    from frn_det.sweep.planning.job_checks import SWEEP_RULES
    from frn_det.sweep.planning.override_check import known_keys

    groups = {p.name for p in (CONFIGS_DIR / "sweep").iterdir() if p.is_dir()}
    keys = {k for k in known_keys(CONFIGS_DIR / "sweep") if k not in groups}
    missing = sorted(k for k in keys if k not in SWEEP_RULES)
    assert missing == [] and len(keys) > 30


def coco_paths(tmp_path):
    train = write_coco(tmp_path / "train.json", 3)
    (tmp_path / "images").mkdir()
    (tmp_path / "train_json_dir").mkdir()
    return {"json": str(train), "images": str(tmp_path / "images"), "dir": str(tmp_path / "train_json_dir"),
            "missing": str(tmp_path / "nope.json")}


@pytest.mark.parametrize("split,json_key,images_key,problem", [
    ("train", "dir", "images", "annotation file {dir} is a folder, not a file (set by dataset.train_json); "
                               "expected a readable COCO instances json file"),
    ("train", "json", "json", "image folder {json} is a file, not a folder (set by dataset.train_images); "
                              "expected a readable folder holding the json's images"),
    ("test", "missing", "images", "annotation file {missing} does not exist (set by dataset.test_json); "
                                  "expected a readable COCO instances json file"),
    ("tune", "dir", "images", "annotation file {dir} is a folder, not a file (set by dataset.tune_json); "
                              "expected a readable COCO instances json file"),
])
def test_coco_json_dataset_paths_name_the_dataset_key_path_and_what_is_expected(tmp_path, split, json_key, images_key,
                                                                                problem):
    from frn_det.data import DatasetPathError
    from frn_det.sweep.planning.job_checks import check_job, override_value_error

    p = coco_paths(tmp_path)
    paths = {f"dataset.{s}_{kind}": p["json"] if kind == "json" else p["images"] for s in ("train", "test")
             for kind in ("json", "images")}
    paths[f"dataset.{split}_json"], paths[f"dataset.{split}_images"] = p[json_key], p[images_key]
    overrides = ["dataset=coco_json", "dataset.name=mine"] + [f"{k}={v}" for k, v in paths.items()]
    expected = f"Dataset 'mine_{split}': " + problem.format(**p)
    assert override_value_error(overrides, CONFIGS_DIR / "sweep") == expected
    with pytest.raises(DatasetPathError) as err:
        check_job(compose_job(*overrides))
    assert str(err.value) == expected


def test_coco_json_dataset_without_its_paths_names_the_missing_key(tmp_path):
    from frn_det.sweep.planning.job_checks import override_value_error

    p = coco_paths(tmp_path)
    message = override_value_error(["dataset=coco_json", f"dataset.train_json={p['json']}",
                                    f"dataset.train_images={p['images']}"], CONFIGS_DIR / "sweep")
    assert message == "dataset.test_json is not set: expected a readable COCO instances json file"


def test_custom_dataset_register_paths_are_checked(tmp_path):
    from frn_det.sweep.planning.job_checks import override_value_error

    p = coco_paths(tmp_path)
    message = override_value_error(["dataset=custom", "dataset.num_classes=3", "dataset.train=[a]", "dataset.test=[a]",
                                    f"dataset.register=[[a,{p['json']},{p['images']}],[b,{p['dir']},{p['images']}]]"],
                                   CONFIGS_DIR / "sweep")
    assert message == (f"Dataset 'b': annotation file {p['dir']} is a folder, not a file (set by dataset.register[1]); "
                       "expected a readable COCO instances json file")


def test_sweep_cli_stops_on_a_bad_value_before_any_job(tmp_path):
    from harness import run_tool

    proc = run_tool("sweep.py", "seed=0,abc", f"output_dir={tmp_path}", check=False, timeout=120)
    assert proc.returncode == 2
    assert "error: seed='abc' is not allowed: expected an integer (< 0: a random seed)" in proc.stderr
    assert "Type mismatch" not in proc.stderr and not any(tmp_path.iterdir())


def test_a_resumed_run_keeps_the_threads_it_started_with(caplog):
    """threads=auto resumes with the thread count the run started with (it changes the
    numbers); an explicit other value wins, with a warning that the run mixes layouts."""
    from omegaconf import OmegaConf

    from frn_det.sweep.running.runner import keep_thread_layout

    started = {"machine": {"torch_threads": 2}}
    record = {"run": "frn_ims1", "machine": {"torch_threads": 1}}
    keep_thread_layout(OmegaConf.create({"threads": "auto"}), started, record)
    assert record["machine"]["torch_threads"] == 2
    record = {"run": "frn_ims1", "machine": {"torch_threads": 1}}
    keep_thread_layout(OmegaConf.create({"threads": 1}), started, record)
    assert record["machine"] == {"torch_threads": 1, "torch_threads_at_start": 2}
    assert "mix two thread layouts" in caplog.text


# ------------------------------------------------ sweep keys found wrong before the first job trains

@pytest.mark.parametrize("overrides,message", [
    (["references={tmp}/nope.yaml"], "references='{tmp}/nope.yaml' is not allowed: references file {tmp}/nope.yaml "
                                     "does not exist (expected a YAML list of {{label, AP, ...}} entries)"),
    (["references={tmp}/bad.yaml"], "references='{tmp}/bad.yaml' is not allowed: references file {tmp}/bad.yaml is "
                                    "not valid YAML"),
    (["output_dir={tmp}/file"], "output_dir='{tmp}/file' is not allowed: {tmp}/file is a file, not a folder; "
                                "expected a folder, or a path where one can be made"),
    (["output_dir={tmp}/file/runs"], "output_dir='{tmp}/file/runs' is not allowed: {tmp}/file is a file, not a "
                                     "folder, so {tmp}/file/runs cannot be made"),
    (["opts=[SOLVER.IMS_PER_BACH,4]"], "opts=['SOLVER.IMS_PER_BACH', 4] is not allowed: 'SOLVER.IMS_PER_BACH' is "
                                       "not a Detectron2 or frn-det config key (did you mean SOLVER.IMS_PER_BATCH"),
    (["opts=[SOLVER.BASE_LR,abc]"], "Type mismatch (<class 'float'> vs. <class 'str'>) with values (0.0025 vs. abc) "
                                    "for config key: SOLVER.BASE_LR (in the Detectron2 config of model.config_file "
                                    "with opts)"),
    (["opts=[SOLVER.BASE_LR,0.0]"], "SOLVER.BASE_LR=0.0 is not allowed: expected a finite number > 0"),
    (["num_machines=2", "machine_rank=2"], "machine_rank=2 is not allowed: expected null or an integer in 0..1 "
                                           "(below num_machines=2)"),
    (["model.config_file=nope.yaml"], "model.config_file='nope.yaml' is not allowed: Config file 'nope.yaml' not "
                                      "found"),
    (["model.lazy_config=nope.py"], "model.lazy_config='nope.py' is not allowed: LazyConfig 'nope.py' not found"),
    # a mistake in a later job of the grid (gn has no batch statistics), the default grid's axes included
    (["precise_bn=true"], "precise_bn=true (run gn+precise): the model has no batch-statistics norm"),
])
def test_sweep_key_mistakes_are_found_before_the_first_job(tmp_path, overrides, message):
    from frn_det.sweep.planning.job_checks import override_value_error

    (tmp_path / "file").write_text("a file")
    (tmp_path / "bad.yaml").write_text("- label: [unclosed\n")
    error = override_value_error([o.format(tmp=tmp_path) for o in overrides], CONFIGS_DIR / "sweep")
    assert error is not None and error.startswith(message.format(tmp=tmp_path)), error
    if overrides == ["precise_bn=true"]:
        assert error.endswith("(in the sweep's job norm=gn ims_per_gpu=1 seed=0)")


def test_machine_rank_of_a_composed_job_is_checked_against_num_machines():
    from frn_det.config.checks import ConfigError
    from frn_det.sweep.planning.job_checks import check_job

    with pytest.raises(ConfigError, match=r"machine_rank=3 is not allowed: expected null or an integer in 0\.\.2"):
        check_job(compose_job("num_machines=3", "machine_rank=3"))
    check_job(compose_job("num_machines=3", "machine_rank=2"))


def test_a_good_grid_passes_the_checks_and_they_make_no_folder(tmp_path):
    from frn_det.sweep.planning.job_checks import override_value_error

    out = tmp_path / "not" / "yet"
    overrides = ["norm=bn,frn", "ims_per_gpu=1,4", f"output_dir={out}",
                 "references=configs/references/detectron2_model_zoo.yaml", "opts=[TEST.DETECTIONS_PER_IMAGE,50]"]
    assert override_value_error(overrides, CONFIGS_DIR / "sweep") is None
    assert not (tmp_path / "not").exists()


def test_sweep_cli_stops_on_a_missing_references_file_before_training(tmp_path):
    """The issue's case: a typo in references trained the whole grid, then wrote no report."""
    from harness import run_tool

    proc = run_tool("sweep.py", f"references={tmp_path}/zoo.yam", f"output_dir={tmp_path}/out", check=False,
                    timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: references='{tmp_path}/zoo.yam' is not allowed: references file {tmp_path}/zoo.yam does not " \
           "exist" in proc.stderr
    assert not (tmp_path / "out").exists()
