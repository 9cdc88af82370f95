"""frn-det-lazy-train / tools/lazyconfig_train_net.py: Detectron2's lazyconfig_train_net
command line, with frn-det's LazyConfig training (frn_det/engine/lazy_training.py)."""

from ..config.checks import check_config
from ..config.lazy import load_config
from ..data import check_register_coco
from ..engine.lazy_training import REGISTER_KEY, register_coco_entries, train
from ..layers import implementations
from .workers import launch_workers, parse_training_args


def main(argv=None) -> None:
    args = parse_training_args(argv)
    # A broken config fails here, once, before any worker process starts or any folder is made.
    cfg = load_config(args.config_file, args.opts)
    check_config(cfg, args.num_gpus * args.num_machines)
    check_register_coco(register_coco_entries(cfg), REGISTER_KEY)
    implementations.prepare(cfg.train.device)  # the kernels, built before any worker starts
    launch_workers(train, args)
