"""The logic of tools/train_net.py: Detectron2's train_net with frn-det registered.

Same CLI and behaviour as Detectron2's tools/train_net.py (default_argument_parser,
launch, DefaultTrainer, --eval-only/--resume); adds frn-det's config keys, data
preparation and a CPU fallback for configs written for CUDA.
"""
import logging
import os

import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from ..config import add_frn_config
from ..data import prepare_datasets
from .checkpoint import SafeDetectionCheckpointer
from .trainer import Trainer

logger = logging.getLogger("frn_det")


def resolve_config_file(path: str) -> str:
    """A local file, or a path inside Detectron2's model zoo (e.g. COCO-Detection/retinanet_R_50_FPN_1x.yaml)."""
    if os.path.isfile(path):
        return path
    try:
        return model_zoo.get_config_file(path)
    except RuntimeError:
        raise FileNotFoundError(
            f"Config file {path!r} not found, neither locally nor in Detectron2's model zoo"
        ) from None


def build_config(config_file: str, opts=()):
    cfg = get_cfg()
    add_frn_config(cfg)
    if config_file:
        cfg.merge_from_file(resolve_config_file(config_file))
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: running on CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    return cfg


SYNC_NORMS = ("SyncBN", "naiveSyncBN", "naiveSyncBN_N", "nnSyncBN")


def check_config(cfg, world_size: int) -> None:
    """Checks that need the number of workers, before anything is built."""
    if world_size < 1 or cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} (the total batch) must be a positive "
            f"multiple of the number of workers ({world_size})"
        )
    keys = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.RETINANET.NORM")
    values = (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.RETINANET.NORM)
    synced = [f"{k}={v}" for k, v in zip(keys, values) if v in SYNC_NORMS]
    if synced and world_size == 1:
        logger.warning("%s with a single worker computes exactly what BN computes", ", ".join(synced))


def setup(args):
    if args.config_file:
        args.config_file = resolve_config_file(args.config_file)  # default_setup re-reads it
    cfg = build_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    check_config(cfg, comm.get_world_size())
    prepare_datasets(cfg)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        SafeDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None):
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
