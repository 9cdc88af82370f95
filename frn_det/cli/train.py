"""frn-det-train / tools/train_net.py: Detectron2's train_net command line (--config-file,
--num-gpus, --eval-only, --resume, overrides) with frn-det's YAML-config training
(frn_det/engine/training.py)."""
from detectron2.utils.logger import setup_logger

from ..config.build import build_config
from ..config.checks import check_config
from ..data import check_register_coco
from ..engine.training import train
from ..layers import implementations
from .workers import launch_workers, parse_training_args


def main(argv=None) -> None:
    args = parse_training_args(argv)
    setup_logger(name="frn_det")  # frn-det's own lines (Detectron2's default_setup sets up its loggers only)
    # Bad configs fail here, once, before any worker process starts or any folder is made.
    cfg = build_config(args.config_file, args.opts)
    check_config(cfg, args.num_gpus * args.num_machines)
    check_register_coco(cfg.DATASETS.REGISTER_COCO)
    implementations.prepare(cfg.MODEL.DEVICE)  # the kernels, built before any worker starts
    launch_workers(train, args)
