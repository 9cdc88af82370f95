"""One training process of a sweep run (Detectron2's `launch` starts one per worker)."""
import logging
import math
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from tqdm import tqdm

from ...data import prepare_datasets_distributed
from ...engine import Trainer
from ...engine.preemption import Preempted
from ...engine.trackers import TrackingOptions, tracking_writers, yacs_params
from ...layers import implementations
from ...record.metrics import DETECTIONS_FILE, DIVERGED, FINISHED, OUTCOME_FILE, PREEMPTED, RUN_LOG, TRAINING_LOG
from ...utils.atomic import write_json_atomic
from ...utils.damaged import describe
from ...utils.imports import import_from_env
from ...utils.jsonlines import repair_torn_tail
from .console import configure_worker_logging

logger = logging.getLogger("frn_det")


class SweepTrainer(Trainer):
    """Writes Detectron2's per-iteration JSON log under another name (a sweep run's
    metrics.json is its result summary), and times its evaluations."""

    seconds_evaluating = 0.0

    def test(self, cfg, model, evaluators=None):
        # DefaultTrainer.test is a classmethod; its EvalHook calls it through the instance
        start = time.perf_counter()
        try:
            return super().test(cfg, model, evaluators)
        finally:
            self.seconds_evaluating += time.perf_counter() - start

    def build_writers(self):
        training_log = os.path.join(self.cfg.OUTPUT_DIR, TRAINING_LOG)
        repair_torn_tail(training_log)  # a resumed run appends to it
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(training_log),
            *tracking_writers(TrackingOptions.from_yacs(self.cfg), yacs_params(self.cfg, comm.get_world_size())),
        ]


class ProgressBar(HookBase):
    """A tqdm bar with ETA over the run's iterations (main process only)."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar = None

    def before_train(self):
        self.bar = tqdm(
            total=self.trainer.max_iter,
            initial=self.trainer.start_iter,
            desc=self.desc,
            unit="it",
            dynamic_ncols=True,
            position=1,  # under the sweep's bar
            leave=False,
            mininterval=1.0 if sys.stderr.isatty() else 15.0,
        )

    def after_step(self):
        self.bar.update(1)

    def after_train(self):
        self.bar.close()


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB; process peak RSS


def _scalar_summary(storage):
    history = storage.histories()
    losses = {k: h.median(20) for k, h in history.items() if k.startswith("loss") or k == "total_loss"}
    s_per_iter = history["time"].global_avg() if "time" in history else None
    return {k: float(v) for k, v in losses.items()}, s_per_iter


def _finite_or_none(value):
    return None if isinstance(value, float) and math.isnan(value) else float(value)


def _coco_keys(metrics: dict) -> dict:
    return {k: _finite_or_none(v) for k, v in metrics.items() if "-" not in k}  # drop per-category "AP-cat"


def evaluation_records(cfg, results) -> dict:
    """Per test dataset: COCO bbox metrics ("metrics"), mask metrics ("segm_metrics",
    only for models that predict masks) plus the files they came from.

    The ground-truth json and the detections file let the report bootstrap AP over
    images later without re-running inference. {} when nothing was evaluated.
    """
    if not results:
        return {}
    if "bbox" in results:  # DefaultTrainer unwraps the dict when there is one dataset
        results = {cfg.DATASETS.TEST[0]: results}
    records = {}
    for name, res in results.items():
        if "bbox" not in res:
            continue
        metadata = MetadataCatalog.get(name)
        detections = Path(cfg.OUTPUT_DIR) / "inference" / name / DETECTIONS_FILE
        records[name] = {
            "metrics": _coco_keys(res["bbox"]),
            "gt_json": str(Path(metadata.json_file).resolve()) if getattr(metadata, "json_file", None) else None,
            "detections": str(detections) if detections.is_file() else None,
        }
        if "segm" in res:  # Mask R-CNN: the same detections file carries the masks
            records[name]["segm_metrics"] = _coco_keys(res["segm"])
    return records


# How a collective reports that a peer went away (GLOO: the socket closed or reset; NCCL: the
# communicator aborted; either: the process group's timeout).
_LOST_WORKER = re.compile(r"Connection (reset|closed) by peer|Broken pipe|Socket Timeout|Timed out waiting|"
                          r"collective operation timeout|communicator was aborted", re.IGNORECASE)


def lost_worker(error: BaseException) -> bool:
    """Whether `error` says that another worker of a distributed run is gone (killed, its
    machine lost): the run is resumable, not failed."""
    network = getattr(torch.distributed, "DistNetworkError", ())
    return isinstance(error, network) or (isinstance(error, RuntimeError) and bool(_LOST_WORKER.search(str(error))))


def make_deterministic() -> None:
    """PyTorch's deterministic algorithms (warn-only: an op without a deterministic version
    warns in the run's log instead of stopping it), cuDNN without autotuning. With a fixed
    thread count, the same seed then gives bit-identical results on the same machine."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' deterministic mode
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def train_worker(cfg, run_dir: str, run_name: str, verbose: bool = False, threads: Optional[int] = None,
                 deterministic: bool = False) -> None:
    """One training process (a fresh interpreter: see fresh_process.py). `threads`: torch's
    intra-op threads (None: its default, one per core); `deterministic`: see make_deterministic."""
    rank = comm.get_rank()
    configure_worker_logging(str(Path(run_dir) / RUN_LOG), rank, verbose)  # spawned: no logging set up
    import_from_env()  # the sweep's `imports` (a user's norms), which the sweep process put in FRN_DET_IMPORTS
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        make_deterministic()
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    start = time.perf_counter()
    prepare_datasets_distributed(cfg)
    datasets_done = time.perf_counter()
    trainer = SweepTrainer(cfg)
    trainer.resume_or_load(resume=True)
    built = time.perf_counter()
    outcome = {"resumed_from_iter": trainer.start_iter}
    if trainer.start_iter:
        logger.info("%s: resuming from iteration %d", run_name, trainer.start_iter)
    if comm.is_main_process():
        trainer.register_hooks([ProgressBar(run_name)])
    error = None
    try:
        trainer.train()
        # EvalHook keeps the results of the evaluation it runs after the last iteration.
        outcome.update(
            status=FINISHED, evaluation=evaluation_records(cfg, getattr(trainer, "_last_eval_results", None))
        )
    except FloatingPointError as e:  # Detectron2 raises it when the loss is not finite
        outcome.update(status=DIVERGED, diverged_at_iter=int(trainer.iter), status_detail=str(e))
        error = e
    except Preempted as e:
        outcome.update(status=PREEMPTED, status_detail=str(e))
        error = e
    except Exception as e:  # noqa: BLE001  only a lost worker is caught; anything else fails the run
        if not lost_worker(e):
            raise
        last = os.path.basename(trainer.checkpointer.get_checkpoint_file()) or "iteration 0 (no checkpoint yet)"
        outcome.update(status=PREEMPTED, status_detail=(
            f"lost contact with another worker at iteration {trainer.iter} ({describe(e)}): a machine or process "
            f"of this run stopped; re-run the sweep (on every machine) to resume from {last}"))
        error = e
    if comm.is_main_process():
        losses, s_per_iter = _scalar_summary(trainer.storage)
        end = time.perf_counter()
        evaluating, saving = trainer.seconds_evaluating, trainer.checkpointer.seconds_saving
        outcome.update(
            iterations=int(min(trainer.iter + 1, cfg.SOLVER.MAX_ITER)),
            wall_time_s=end - start,
            # where the run's time went (tools/benchmark_run_cost.py prints it)
            time_breakdown_s={"dataset_checks": datasets_done - start, "model_and_data_build": built - datasets_done,
                              "training": end - built - evaluating - saving, "evaluation": evaluating,
                              "checkpoint_writes": saving},
            s_per_iter=s_per_iter,
            peak_memory_mb=_peak_memory_mb(cfg.MODEL.DEVICE),
            final_losses=losses,
            implementations=implementations.used(),  # which FRN/TLU/EvoNorm implementation ran, and why
        )
        write_json_atomic(Path(run_dir) / OUTCOME_FILE, outcome)
    if error is not None and comm.get_world_size() > 1:
        raise error  # stop the other workers, which would wait for rank 0 forever
