"""Hydra job config -> Detectron2 config (and its hash, which identifies a run)."""
import functools
import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ...config.build import build_config
from ...config.keys import (
    NORM_KEYS,
    config_hash,  # noqa: F401  (the sweep's run identity; runner imports it from here)
    norm_schedule_fractions,
)
from ...config.tree import get_key
from ...data.datasets import model_num_classes
from ...layers import norm_spec, parse_norm
from ...layers.registry import norm_names
from ...utils.imports import import_modules
from ...utils.paths import CONFIGS_DIR
from .scaling import ScaledSchedule, scale_schedule

ACTIVATION_NAMES = {"relu": "ReLU", "tlu": "TLU"}
PRECISE_SUFFIX = "+precise"


def schedule_from(job: DictConfig) -> ScaledSchedule:
    s = job.schedule
    return scale_schedule(
        ims_per_gpu=job.ims_per_gpu,
        num_gpus=job.num_gpus,
        num_machines=job.num_machines,
        reference_batch=s.reference_batch,
        base_lr=s.base_lr,
        max_iter=s.max_iter,
        steps=list(s.steps),
        warmup_iters=s.warmup_iters,
        eval_period=s.eval_period,
        checkpoint_period=s.checkpoint_period,
        lr_scale=job.lr_scale,
    )


def model_config_file(job: DictConfig) -> str:
    """An absolute path, a path relative to configs/, or one of Detectron2's model zoo
    (e.g. COCO-Detection/retinanet_R_50_FPN_1x.yaml)."""
    path = Path(job.model.config_file)
    if path.is_absolute() or not (CONFIGS_DIR / path).is_file():
        return str(path)
    return str(CONFIGS_DIR / path)


def with_activation(norm: str, act) -> str:
    """The sweep's activation axis: "GN" with act "tlu" -> "GN+TLU"; no norm, and the
    norm+activation layers (EvoNorm), stay as they are."""
    if not act or not norm or norm in norm_names(includes_activation=True):
        return norm
    return f"{norm}+{ACTIVATION_NAMES.get(str(act).lower(), act)}"


def norm_label(job: DictConfig) -> str:
    """The norm as reports name it: the group entry's name, plus "+act" on the activation
    axis and "+precise" with precise_bn (e.g. "bn+precise", next to "bn")."""
    return (job.norm.name + (f"+{str(job.act).lower()}" if job.get("act") else "")
            + (PRECISE_SUFFIX if job.get("precise_bn") else ""))


def run_name(norm: str, act, ims_per_gpu, lr_scale, seed, precise_bn=False) -> str:
    """A run's folder name: <norm>[+<act>][+precise]_ims<N>[_lr<scale>]_seed<S> (lr only when not 1)."""
    name = norm + (f"+{str(act).lower()}" if act else "") + (PRECISE_SUFFIX if precise_bn else "") + \
        f"_ims{ims_per_gpu}"
    if float(lr_scale) != 1.0:
        name += f"_lr{float(lr_scale):g}"
    return f"{name}_seed{seed}"


def split_dataset_name(dataset_name: str, split: str) -> str:
    """The registered name of a split of a dataset given by paths (dataset=coco_json)."""
    return f"{dataset_name}_{split}"


def tune_datasets(job: DictConfig) -> tuple:
    return tuple(dataset_spec(job)["tune"])


def _category_count(json_file: str, key: str) -> int:
    try:
        st = os.stat(json_file)
        categories = _read_categories(json_file, st.st_mtime_ns, st.st_size)
    except (OSError, ValueError) as e:
        raise ValueError(f"{key}={json_file}: cannot read it as a COCO json ({e})") from None
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"{key}={json_file} has no 'categories' list to read the classes from")
    return len(categories)


@functools.lru_cache(maxsize=8)
def _read_categories(json_file: str, mtime_ns: int, size: int):
    """The json's categories; cached by file state: a COCO train json takes seconds to parse
    and the runner asks for the dataset spec more than once per job."""
    with open(json_file) as f:
        return json.load(f).get("categories")


def dataset_spec(job: DictConfig) -> dict:
    """train/test/tune dataset names, the (name, json, images) triples to register and the
    class count; for a dataset given by paths (dataset=coco_json) all are derived from them."""
    d = job.dataset
    if "train_json" not in d:
        return {"train": list(d.train), "test": list(d.test), "tune": list(d.get("tune") or ()),
                "register": [tuple(t) for t in d.register], "num_classes": d.num_classes}
    splits = {"train": (d.train_json, d.train_images), "test": (d.test_json, d.test_images),
              "tune": (d.get("tune_json"), d.get("tune_images"))}
    if bool(splits["tune"][0]) != bool(splits["tune"][1]):
        raise ValueError("dataset.tune_json and dataset.tune_images go together: give both or neither")
    spec = {"register": [], "train": [], "test": [], "tune": []}
    for split, (json_file, images) in splits.items():
        if json_file:
            name = split_dataset_name(d.name, split)
            spec["register"].append((name, str(json_file), str(images)))
            spec[split].append(name)
    found = _category_count(str(d.train_json), "dataset.train_json")
    if d.get("num_classes") is not None and d.num_classes != found:
        raise ValueError(
            f"dataset.num_classes={d.num_classes} disagrees with the {found} categories in {d.train_json}; "
            "leave dataset.num_classes out to read it from the json"
        )
    spec["num_classes"] = found
    return spec


# The keys the norm entry's `head` goes to: the heads of the model's meta architecture.
RETINANET_HEAD_NORM_KEYS = ("MODEL.RETINANET.NORM",)
RCNN_HEAD_NORM_KEYS = ("MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")


def head_keys(config_file: str) -> tuple:
    """(head norm keys, class count key) of the model in `config_file`: RetinaNet's, or the
    R-CNN box and mask heads' (the mask head's norm is unused without MODEL.MASK_ON)."""
    cfg = build_config(config_file, announce=False)
    classes_key, _ = model_num_classes(cfg)
    retinanet = classes_key == "MODEL.RETINANET.NUM_CLASSES"
    return (RETINANET_HEAD_NORM_KEYS if retinanet else RCNN_HEAD_NORM_KEYS), classes_key


def tracking_opts(job: DictConfig) -> list:
    """TRACKING.* from the sweep's `logger` group: the chosen loggers, the W&B project and
    the sweep (its output folder's name) as the W&B group and MLflow experiment."""
    loggers = OmegaConf.to_container(job.get("logger") or {"tensorboard": {}})
    wandb, mlflow = loggers.get("wandb") or {}, loggers.get("mlflow") or {}
    return [
        "TRACKING.LOGGERS", list(loggers),
        "TRACKING.PROJECT", wandb.get("project") or "frn-det",
        "TRACKING.GROUP", Path(job.output_dir).name,
        "TRACKING.MLFLOW_URI", mlflow.get("tracking_uri") or "",
    ]


def tracking_params(job: DictConfig, sched: ScaledSchedule) -> dict:
    """The sweep's labels of a run, as its tracker runs show them."""
    return {"norm": norm_label(job), "act": job.get("act"), "ims_per_gpu": sched.ims_per_gpu,
            "total_batch": sched.total_batch, "lr": sched.lr, "lr_scale": sched.lr_scale, "seed": job.seed,
            "model": job.model.name, "dataset": job.dataset.name, "schedule": job.schedule.name}


def build_detectron2_config(job: DictConfig, output_dir: str):
    """The Detectron2 config of one sweep job; everything the run does is in here."""
    import_modules(job.get("imports"), "imports")  # a user's norms, before their names are read (imports.py)
    sched = schedule_from(job)
    data = dataset_spec(job)
    act = job.get("act")
    amp = job.get("amp", False)  # checked with the other sweep keys (job_checks.py)
    config_file = model_config_file(job)
    head_norm_keys, classes_key = head_keys(config_file)
    opts = [
        "MODEL.DEVICE", job.model.device,
        # A LazyConfig model (configs/lazy/...) built by Trainer.build_model; "" for the YAML's.
        "MODEL.LAZY_CONFIG", job.model.get("lazy_config") or "",
        "MODEL.RESNETS.NORM", with_activation(job.norm.backbone, act),
        "MODEL.FPN.NORM", with_activation(job.norm.fpn, act),
        *[item for key in head_norm_keys for item in (key, with_activation(job.norm.head, act))],
        classes_key, data["num_classes"],
        "DATASETS.TRAIN", tuple(data["train"]),
        # The test split first (its AP is the result), then the tuning split the lr is chosen on.
        "DATASETS.TEST", tuple(data["test"]) + tuple(data["tune"]),
        "DATASETS.REGISTER_COCO", data["register"],
        "SOLVER.IMS_PER_BATCH", sched.total_batch,
        "SOLVER.REFERENCE_WORLD_SIZE", 0,  # we scale ourselves; keep Detectron2 from rescaling
        "SOLVER.BASE_LR", sched.lr,
        "SOLVER.MAX_ITER", sched.max_iter,
        "SOLVER.STEPS", sched.steps,
        "SOLVER.WARMUP_ITERS", sched.warmup_iters,
        "SOLVER.CHECKPOINT_PERIOD", sched.checkpoint_period,
        "SOLVER.WEIGHT_DECAY", job.schedule.weight_decay,
        "SOLVER.MOMENTUM", job.schedule.momentum,
        "TEST.EVAL_PERIOD", sched.eval_period if job.schedule.eval_period else 0,
        "SEED", job.seed,
        "SOLVER.AMP.ENABLED", amp,  # Detectron2's AMPTrainer: fp16 autocast and a grad scaler
        # Batch Renorm's r_max/d_max ramp, CBN's burn-in and MABN's warm-up, at the fractions of
        # their reference schedules (frn_det.config.keys.REFERENCE_SCHEDULES; opts still override them).
        *[item for key, fraction in norm_schedule_fractions().items()
          for item in (key, max(1, round(fraction * sched.max_iter)))],
        # PreciseBN (engine/precise_bn.py) for every batch-statistics norm before each evaluation
        "TEST.PRECISE_BN.ENABLED", bool(job.get("precise_bn")),
    ]
    opts += tracking_opts(job)
    # merge_from_list literal_evals strings and takes other values as they are.
    opts += list(OmegaConf.to_container(job.opts))
    cfg = build_config(config_file, opts)
    if cfg.TEST.PRECISE_BN.ENABLED:
        check_precise_bn(cfg, norm_label(job))
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.TRACKING.PARAMS = json.dumps(tracking_params(job, sched))  # set here: a JSON string would be literal_eval'ed
    cfg.freeze()
    return cfg, sched


def check_precise_bn(cfg, label: str) -> None:
    """precise_bn=true needs a batch-statistics norm somewhere (the norm table's batch_stats),
    else it would label a run "+precise" that is the same model as without."""
    norms = {key: parse_norm(get_key(cfg, key), key)[0] for key in NORM_KEYS}
    if not any(n and norm_spec(n).batch_stats for n in norms.values()):
        used = ", ".join(f"{k}={v!r}" for k, v in norms.items())
        raise ValueError(f"precise_bn=true (run {label}): the model has no batch-statistics norm to recompute "
                         f"({used}); PreciseBN applies to {', '.join(norm_names(batch_stats=True))}")

