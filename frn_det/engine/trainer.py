"""Detectron2's DefaultTrainer with COCO evaluation, an FRN-aware optimizer, CPU DDP,
atomic checkpoints and checkpoint-on-preemption."""
import contextlib
import io
import logging
import os
import shutil
import tempfile
import weakref

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    default_writers,
    hooks,
)
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..data.mapper import CheckedDatasetMapper
from ..evaluation import install_fast_coco_eval
from ..layers import implementations
from ..modeling.lazy_bridge import build_lazy_model
from ..utils.jsonlines import repair_torn_tail
from .checkpoint import SafeDetectionCheckpointer
from .optimizer import build_optimizer
from .precise_bn import PrecisePopulationStats
from .preemption import PreemptionHook
from .trackers import TrackingOptions, tracking_writers, yacs_params


class LoggedCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator whose COCOeval prints ("Loading and preparing results...", the stats
    table) go to the log instead of the terminal; Detectron2 logs the results table itself.
    Its files (coco_instances_results.json, instances_predictions.pth) appear whole or not
    at all: written into a temporary folder next to them, then renamed into place."""

    def evaluate(self, img_ids=None):
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured), self._atomic_outputs():
            results = super().evaluate(img_ids)
        if captured.getvalue().strip():
            logging.getLogger("detectron2.evaluation.cocoeval").info(
                "COCOeval output:\n%s", captured.getvalue().rstrip()
            )
        return results


    @contextlib.contextmanager
    def _atomic_outputs(self):
        final = self._output_dir
        if not final:
            yield
            return
        os.makedirs(final, exist_ok=True)
        self._output_dir = tempfile.mkdtemp(prefix=".evaluating-", dir=final)
        try:
            yield
            for name in os.listdir(self._output_dir):  # a rename: atomic on one filesystem
                os.replace(os.path.join(self._output_dir, name), os.path.join(final, name))
        finally:
            shutil.rmtree(self._output_dir, ignore_errors=True)
            self._output_dir = final


def coco_evaluator(dataset_name, tasks=("bbox",), distributed=True, output_dir=None, **kwargs):
    """Detectron2's COCOEvaluator on a compiled COCOeval (faster-coco-eval where Detectron2's
    own is missing), its prints in the log. Used by the YAML trainer and the LazyConfigs."""
    install_fast_coco_eval()  # before the evaluator is constructed: it picks its COCOeval then
    if tasks is not None:
        tasks = tuple(tasks)
    return LoggedCOCOEvaluator(dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir, **kwargs)


def evaluation_tasks(cfg) -> tuple:
    """COCO tasks a config's model is evaluated on: boxes, and masks for Mask R-CNN."""
    return ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)


def ddp_model(model, on_gpu: bool, **kwargs):
    """create_ddp_model, with device_ids=None for CPU models: its default [local_rank] is
    only valid on GPUs."""
    if not on_gpu:
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__, except that DDP gets device_ids=None for CPU models (ddp_model).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        if cfg.SEED >= 0:
            # Building the model drew a norm-dependent amount of random numbers; reseed so that
            # seed s gives every model the same image order and augmentations.
            seed_all_rng(cfg.SEED + comm.get_rank())
        data_loader = self.build_train_loader(cfg)
        model = ddp_model(model, cfg.MODEL.DEVICE.startswith("cuda"), broadcast_buffers=False)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SafeDetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        # checkpoints record which FRN/TLU/EvoNorm implementation ran; resuming must run the same
        implementations.reset()
        self.checkpointer.add_checkpointable("implementations", implementations.RecordedImplementations())
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        """Detectron2's hooks, with PreciseBN for every batch-statistics norm (engine/precise_bn.py)
        in place of its BN-only one, and the preemption hook."""
        ret = [h for h in super().build_hooks() if h is not None and not isinstance(h, hooks.PreciseBN)]
        if self.cfg.TEST.PRECISE_BN.ENABLED:
            cfg = self.cfg.clone()
            cfg.defrost()
            cfg.DATALOADER.NUM_WORKERS = 0  # as Detectron2's: save memory and time
            precise = PrecisePopulationStats(cfg.TEST.EVAL_PERIOD, self.model, self.build_train_loader(cfg),
                                             cfg.TEST.PRECISE_BN.NUM_ITER)
            # where Detectron2 puts it: after the lr scheduler, before the checkpointer and evaluation
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.LRScheduler)) + 1
            ret.insert(at, precise)
        return ret + [PreemptionHook()]

    def build_writers(self):
        """Detectron2's console and JSON writers, then the chosen trackers' (TRACKING.LOGGERS)."""
        repair_torn_tail(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))  # Detectron2's JSON log; resumes append
        return default_writers(self.cfg.OUTPUT_DIR, self.max_iter)[:2] + tracking_writers(
            TrackingOptions.from_yacs(self.cfg), yacs_params(self.cfg, comm.get_world_size()))

    @classmethod
    def build_model(cls, cfg):
        """Detectron2's build_model, or with MODEL.LAZY_CONFIG set that LazyConfig's `model`
        with this config's norms, norm options, classes, pixel mean/std and device."""
        if not cfg.MODEL.get("LAZY_CONFIG", ""):
            return super().build_model(cfg)
        model = build_lazy_model(cfg)
        # the same logger and line as DefaultTrainer.build_model (the sweep keeps it out of the console)
        logging.getLogger("detectron2.engine.defaults").info(
            "Model (MODEL.LAZY_CONFIG=%s):\n%s", cfg.MODEL.LAZY_CONFIG, model
        )
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=CheckedDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=CheckedDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return coco_evaluator(dataset_name, tasks=evaluation_tasks(cfg), distributed=True, output_dir=output_folder)
