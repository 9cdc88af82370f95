"""Hydra job config -> Detectron2 config (and its hash, which identifies a run)."""
import hashlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..engine.train_net import build_config
from .scaling import ScaledSchedule, scale_schedule

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


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
    )


def model_config_file(job: DictConfig) -> str:
    path = Path(job.model.config_file)
    return str(path if path.is_absolute() else CONFIGS_DIR / path)


def build_detectron2_config(job: DictConfig, output_dir: str):
    """The Detectron2 config of one sweep job; everything the run does is in here."""
    sched = schedule_from(job)
    opts = [
        "MODEL.DEVICE", job.model.device,
        "MODEL.RESNETS.NORM", job.norm.backbone,
        "MODEL.FPN.NORM", job.norm.fpn,
        "MODEL.RETINANET.NORM", job.norm.head,
        "MODEL.RETINANET.NUM_CLASSES", job.dataset.num_classes,
        "DATASETS.TRAIN", tuple(job.dataset.train),
        "DATASETS.TEST", tuple(job.dataset.test),
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
