"""The logic of tools/train_net.py: Detectron2's train_net with frn-det registered.

Same CLI and behaviour as Detectron2's tools/train_net.py (default_argument_parser,
launch, DefaultTrainer, --eval-only/--resume); adds frn-det's config keys, data
preparation and a CPU fallback for configs written for CUDA.
"""
import logging

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config_build import build_config, resolve_config_file
from ..config_checks import check_config
from ..data import check_register_coco, prepare_datasets_distributed
from ..layers import implementations
from ..utils.imports import UserImportError, add_import_argument, import_requested
from .checkpoint import SafeDetectionCheckpointer
from .trackers import TrackingOptions, recorded_result, yacs_params
from .trainer import Trainer


def setup(args):
    if args.config_file:
        args.config_file = resolve_config_file(args.config_file)  # default_setup re-reads it
    cfg = build_config(args.config_file, args.opts, announce=False)  # run() announced it
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    import_requested(args)  # again in each spawned worker
    cfg = setup(args)
    check_config(cfg, comm.get_world_size())
    prepare_datasets_distributed(cfg)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        SafeDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).load_for_evaluation(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    tracking = TrackingOptions.from_yacs(cfg)
    with recorded_result(tracking, yacs_params(cfg, comm.get_world_size()), lambda: trainer.iter) as outcome:
        result = trainer.train()
        # EvalHook keeps the results of the evaluation it runs after the last iteration.
        outcome["results"] = getattr(trainer, "_last_eval_results", None)
    if comm.is_main_process():
        logging.getLogger("frn_det").info("implementations: %s", implementations.label(implementations.used())
                                          or "no kernel-backed layer (FRN, TLU, EvoNorm)")
    return result


def run(argv=None):
    parser = add_import_argument(default_argument_parser())
    args = parser.parse_args(argv)
    print("Command Line Args:", args)
    try:
        import_requested(args)  # a user's norms (--import, FRN_DET_IMPORTS), before the config is read
    except UserImportError as e:
        parser.error(str(e))
    setup_logger(name="frn_det")  # frn-det's own lines (Detectron2's default_setup sets up its loggers only)
    # Bad configs fail here, once, before any worker process starts or any folder is made.
    cfg = build_config(args.config_file, args.opts)
    check_config(cfg, args.num_gpus * args.num_machines)
    check_register_coco(cfg.DATASETS.REGISTER_COCO)
    implementations.prepare(cfg.MODEL.DEVICE)  # the kernels, built before any worker starts
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
