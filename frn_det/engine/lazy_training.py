"""LazyConfig training, the library behind tools/lazyconfig_train_net.py (frn_det/cli/lazy_train.py):
Detectron2's LazyConfig training script with frn-det's pieces.

Same command line and flow as Detectron2's tools/lazyconfig_train_net.py
(default_argument_parser; `--config-file x.py`; overrides in Hydra's grammar, e.g.
`train.max_iter=6 model.backbone.bottom_up.stages.norm=GN`; --eval-only, --resume,
--num-gpus, launch; LazyConfig.load / apply_overrides / instantiate; AMPTrainer or
SimpleTrainer with hooks; COCOEvaluator through inference_on_dataset). frn-det adds:

- atomic checkpoints (SafeDetectionCheckpointer); --eval-only evaluates only weights that
  were loaded (`load_for_evaluation`: --resume takes the last usable checkpoint of
  train.output_dir, else train.init_checkpoint);
- a checkpoint and a clean stop on SIGTERM / SIGUSR1 (PreemptionHook), resumable;
- the datasets of dataloader.train / dataloader.test are registered (dataloader.prepare
  .register_coco), generated (built-in set) and validated before anything is built, as
  frn_det.data.prepare_datasets does for YAML configs;
- without CUDA a config for train.device=cuda runs on the CPU (with a warning), and
  DDP over CPU (GLOO) workers works;
- overrides of keys the config does not have are errors with the nearest keys, and the
  values get the YAML path's checks (config/checks.py, check_config: batch, lr, iterations,
  steps, sizes, classes, norms, ...), before anything is built;
- a config whose model and data disagree on masks fails before anything is built
  (config_lazy.check_masks: a Mask R-CNN needs dataloader.train.mapper.use_instance_mask, segm
  evaluation needs a mask head);
- `train.precise_bn` (enabled, num_iter): Detectron2's PreciseBN hook, as TEST.PRECISE_BN
  in YAML (the SyncBN R-CNN configs turn it on, as Detectron2's scratch SyncBN config does).
"""
import json
import logging
import os
import sys
from typing import Optional

from detectron2.config import instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from omegaconf import OmegaConf

from ..config.checks import check_config
from ..config.lazy import lazy_model_has_masks, load_config, name_list
from ..data import ModelClasses, prepare_datasets_distributed
from ..layers import implementations
from ..utils.imports import import_requested
from ..utils.jsonlines import repair_torn_tail
from .checkpoint import SafeDetectionCheckpointer
from .precise_bn import PrecisePopulationStats, batch_stat_modules
from .preemption import PreemptionHook
from .trackers import TrackingOptions, lazy_params, recorded_result, tracking_writers
from .trainer import ddp_model

__all__ = ["prepare_lazy_datasets", "register_coco_entries", "precise_bn_hook", "do_test", "do_train", "train"]


# Where a LazyConfig's model holds its class count (RetinaNet's, the R-CNN ROI heads').
CLASS_COUNT_KEYS = ("model.num_classes", "model.roi_heads.num_classes")
REGISTER_KEY = "dataloader.prepare.register_coco"


def _model_classes(cfg) -> Optional[ModelClasses]:
    """The model's class count, where the LazyConfig has one (else no class check)."""
    for key in CLASS_COUNT_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, int):
            return ModelClasses(key, value, f"set by {key}")
    return None


def register_coco_entries(cfg) -> list:
    """The (name, json_file, image_root) triples of dataloader.prepare.register_coco."""
    return [tuple(t) for t in OmegaConf.select(cfg, REGISTER_KEY, default=None) or []]


def prepare_lazy_datasets(cfg) -> list:
    """frn_det.data.prepare_datasets for a LazyConfig: registers dataloader.prepare
    .register_coco, generates the built-in set and validates (json, boxes, evaluation
    fields, class count against the model's, images) the datasets of dataloader.train
    and dataloader.test, before anything is built. Returns the dataset names."""
    train = name_list(OmegaConf.select(cfg, "dataloader.train.dataset.names", default=None))
    test = name_list(OmegaConf.select(cfg, "dataloader.test.dataset.names", default=None))
    prep = OmegaConf.select(cfg, "dataloader.prepare", default=None) or {}
    prepare_datasets_distributed(
        train=train,
        test=test,
        register_coco=register_coco_entries(cfg),
        invalid_boxes=prep.get("invalid_boxes", "drop"),
        missing_eval_fields=prep.get("missing_eval_fields", "fill"),
        check_images=bool(prep.get("check_images", True)),
        model_classes=_model_classes(cfg),
        masks_asked_by="the LazyConfig's model has a mask head (model.roi_heads.mask_head)"
        if lazy_model_has_masks(cfg) else None,
        register_key=REGISTER_KEY,
    )
    return train + test


def _ddp(model, cfg):
    kwargs = dict(OmegaConf.select(cfg, "train.ddp", default=None) or {})
    return ddp_model(model, str(OmegaConf.select(cfg, "train.device", default="cuda")).startswith("cuda"), **kwargs)


def precise_bn_hook(cfg, model):
    """Detectron2's PreciseBN hook for every batch-statistics norm (engine/precise_bn.py;
    statistics recomputed on `train.precise_bn.num_iter` training batches before each
    evaluation and at the end) when `train.precise_bn.enabled` and the model has BN layers,
    else None: TEST.PRECISE_BN of the YAML configs, placed
    as DefaultTrainer places it."""
    options = OmegaConf.select(cfg, "train.precise_bn", default=None) or {}
    if not options.get("enabled", False) or not batch_stat_modules(model):
        return None
    return PrecisePopulationStats(cfg.train.eval_period, model, instantiate(cfg.dataloader.train),
                                  options.get("num_iter", 200))


def do_test(cfg, model):
    """COCO (or the config's) evaluation of dataloader.test with dataloader.evaluator."""
    if "evaluator" not in cfg.dataloader:
        return {}
    ret = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process() and ret:
        print_csv_format(ret)
    return ret


def do_train(args, cfg):
    """Detectron2's lazyconfig do_train, with frn-det's checkpointer and preemption hook."""
    model = instantiate(cfg.model)
    logging.getLogger("detectron2").info("Model:\n%s", model)
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = _ddp(model, cfg)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optim)
    checkpointer = SafeDetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.checkpointer = checkpointer  # PreemptionHook saves through trainer.checkpointer
    implementations.reset()  # checkpoints record which FRN/TLU/EvoNorm implementation ran; resuming runs the same
    checkpointer.add_checkpointable("implementations", implementations.RecordedImplementations())
    results = {}
    tracking = TrackingOptions.from_lazy(cfg)  # train.tracking: loggers (tensorboard, wandb, mlflow)

    def test_and_keep():
        results.clear()
        results.update(do_test(cfg, model))
        return results

    if comm.is_main_process():  # Detectron2's JSON log (metrics.json); a resumed run appends to it
        repair_torn_tail(os.path.join(cfg.train.output_dir, "metrics.json"))
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            precise_bn_hook(cfg, model),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            hooks.EvalHook(cfg.train.eval_period, test_and_keep),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter)[:2]  # console, JSON
                + tracking_writers(tracking, lazy_params(cfg, comm.get_world_size())),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
            PreemptionHook(),
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # The checkpoint stores the iteration that just finished: start at the next one.
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    with recorded_result(tracking, lazy_params(cfg, comm.get_world_size()), lambda: trainer.iter) as outcome:
        trainer.train(start_iter, cfg.train.max_iter)
        outcome["results"] = dict(results)
    return dict(results)


def train(args):
    """One worker's training (or --eval-only evaluation); launch() runs it in every process."""
    import_requested(args)  # again in each spawned worker
    cfg = load_config(args.config_file, args.opts)
    check_config(cfg, comm.get_world_size())
    default_setup(cfg, args)  # logs, seeds, saves config.yaml to train.output_dir
    prepare_lazy_datasets(cfg)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        SafeDetectionCheckpointer(model, save_dir=cfg.train.output_dir).load_for_evaluation(
            cfg.train.init_checkpoint, resume=args.resume
        )
        model = _ddp(model, cfg)
        results = do_test(cfg, model)
    else:
        results = do_train(args, cfg)
    if comm.is_main_process() and results:
        print("Evaluation results: " + json.dumps(_plain(results), sort_keys=True))
        sys.stdout.flush()
    return results


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    try:
        return float(obj) if not isinstance(obj, (str, bool, int)) else obj
    except (TypeError, ValueError):
        return str(obj)
