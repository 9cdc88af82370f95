"""Hydra job config -> Detectron2 config (and its hash, which identifies a run)."""
import hashlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..engine.train_net import build_config
from .scaling import ScaledSchedule, scale_schedule

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
ACTIVATION_NAMES = {"relu": "ReLU", "tlu": "TLU"}


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
    path = Path(job.model.config_file)
    return str(path if path.is_absolute() else CONFIGS_DIR / path)


def with_activation(norm: str, act) -> str:
    """The sweep's activation axis: "GN" with act "tlu" -> "GN+TLU"; no norm stays no norm."""
    if not act or not norm:
        return norm
    return f"{norm}+{ACTIVATION_NAMES.get(str(act).lower(), act)}"


def norm_label(job: DictConfig) -> str:
    """The norm as reports name it: the group entry's name, plus "+act" on the activation axis."""
    return job.norm.name + (f"+{str(job.act).lower()}" if job.get("act") else "")


def run_name(norm: str, act, ims_per_gpu, lr_scale, seed) -> str:
    """A run's folder name: <norm>[+<act>]_ims<N>[_lr<scale>]_seed<S> (lr only when not 1)."""
    name = norm + (f"+{str(act).lower()}" if act else "") + f"_ims{ims_per_gpu}"
    if float(lr_scale) != 1.0:
        name += f"_lr{float(lr_scale):g}"
    return f"{name}_seed{seed}"


def tune_datasets(job: DictConfig) -> tuple:
    return tuple(job.dataset.get("tune") or ())


def build_detectron2_config(job: DictConfig, output_dir: str):
    """The Detectron2 config of one sweep job; everything the run does is in here."""
    sched = schedule_from(job)
    act = job.get("act")
    opts = [
        "MODEL.DEVICE", job.model.device,
        "MODEL.RESNETS.NORM", with_activation(job.norm.backbone, act),
        "MODEL.FPN.NORM", with_activation(job.norm.fpn, act),
        "MODEL.RETINANET.NORM", with_activation(job.norm.head, act),
        "MODEL.RETINANET.NUM_CLASSES", job.dataset.num_classes,
        "DATASETS.TRAIN", tuple(job.dataset.train),
        # The test split first (its AP is the result), then the tuning split the lr is chosen on.
        "DATASETS.TEST", tuple(job.dataset.test) + tune_datasets(job),
        "DATASETS.REGISTER_COCO", [tuple(t) for t in job.dataset.register],
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
    ]
    # merge_from_list literal_evals strings and takes other values as they are.
    opts += list(OmegaConf.to_container(job.opts))
    cfg = build_config(model_config_file(job), opts)
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.freeze()
    return cfg, sched


def config_hash(cfg) -> str:
    """Hash of everything that affects the result: the config without its output folder."""
    c = cfg.clone()
    c.defrost()
    c.OUTPUT_DIR = ""
    return hashlib.sha256(c.dump().encode()).hexdigest()[:12]
