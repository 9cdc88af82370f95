"""YAML-config training, the library behind tools/train_net.py (frn_det/cli/train.py):
Detectron2's train_net with frn-det registered.

Same CLI and behaviour as Detectron2's tools/train_net.py (default_argument_parser,
launch, DefaultTrainer, --eval-only/--resume); adds frn-det's config keys, data
preparation and a CPU fallback for configs written for CUDA.
"""
import logging

from detectron2.engine import default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from ..config.build import build_config, resolve_config_file
from ..config.checks import check_config
from ..data import prepare_datasets_distributed
from ..layers import implementations
from ..utils.imports import import_requested
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


def train(args):
    """One worker's training (or --eval-only evaluation); launch() runs it in every process."""
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
