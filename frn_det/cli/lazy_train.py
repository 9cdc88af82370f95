"""frn-det-lazy-train / tools/lazyconfig_train_net.py: Detectron2's lazyconfig_train_net
command line, with frn-det's LazyConfig training (frn_det/engine/lazy_training.py)."""
from detectron2.engine import default_argument_parser

from ..config.checks import check_config
from ..config.lazy import load_config
from ..data import check_register_coco
from ..engine.lazy_training import REGISTER_KEY, register_coco_entries, train
from ..layers import implementations
from ..utils.imports import UserImportError, add_import_argument, import_requested
from .workers import launch_workers


def main(argv=None) -> None:
    parser = add_import_argument(default_argument_parser())
    args = parser.parse_args(argv)
    print("Command Line Args:", args)
    try:
        import_requested(args)  # a user's norms (--import, FRN_DET_IMPORTS), before the config is read
    except UserImportError as e:
        parser.error(str(e))
    # A broken config fails here, once, before any worker process starts or any folder is made.
    cfg = load_config(args.config_file, args.opts)
    check_config(cfg, args.num_gpus * args.num_machines)
    check_register_coco(register_coco_entries(cfg), REGISTER_KEY)
    implementations.prepare(cfg.train.device)  # the kernels, built before any worker starts
    launch_workers(train, args)
