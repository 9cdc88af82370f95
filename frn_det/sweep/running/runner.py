"""One sweep job: skip, resume or train a run, then record its metrics.json.

A run is identified by the hash of its Detectron2 config. Re-running a sweep skips
finished runs with the same hash, resumes interrupted ones from their last checkpoint,
and re-runs failed or diverged ones only with rerun_failed=true. A run folder holding a
result for a different config is moved aside, never overwritten. A lock per run keeps
two sweeps on the same folder from training the same run twice.
"""
import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Optional

from detectron2.engine import launch
from omegaconf import DictConfig
from torch.multiprocessing import ProcessRaisedException

from ...config.checks import check_config
from ...engine.preemption import Preempted
from ...engine.trackers import record_sweep_result
from ...layers.implementations import prepare as prepare_kernels
from ...record.events import log_event
from ...record.machine import machine_record
from ...record.metrics import (
    FAILED,
    FINISHED,
    METRIC_KEYS,
    METRICS_FILE,
    OUTCOME_FILE,
    PREEMPTED,
    RUNNING,
    is_done,
    read_metrics,
)
from ...utils.atomic import write_json_atomic, write_text_atomic
from ...utils.damaged import Damaged, describe, read_or_set_aside
from ...utils.imports import export_to_env
from ..planning.d2config import build_detectron2_config, config_hash, norm_label, tune_datasets
from ..planning.job_checks import check_job
from ..planning.parallel import threads_per_worker
from .cluster import resolve_distributed
from .fresh_process import TrainingProcessError, run_in_fresh_process
from .lock import RunLock
from .training_stop import TrainingStop
from .worker import train_worker

logger = logging.getLogger("frn_det")
KEEP_ON_ARCHIVE = {".hydra", ".lock", "events.jsonl"}


def library_versions() -> dict:
    import detectron2
    import hydra
    import torch

    import frn_det

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "detectron2": detectron2.__version__,
        "hydra": hydra.__version__,
        "frn_det": frn_det.__version__,
    }


def archive_stale_run(run_dir: Path, old_hash: str) -> Path:
    """Move a result made with another config into a sub-folder, so nothing is lost."""
    dest = run_dir / f"stale-{old_hash}-{time.strftime('%Y%m%d-%H%M%S')}"
    dest.mkdir()
    for entry in run_dir.iterdir():
        if (
            entry != dest
            and entry.name not in KEEP_ON_ARCHIVE
            and not entry.name.startswith("stale-")
            and entry.suffix != ".log"
        ):
            shutil.move(str(entry), dest / entry.name)
    logger.warning("%s held a result for another config (hash %s); moved it to %s", run_dir, old_hash, dest)
    return dest


def _checkpoints_of_this_config(run_dir: Path, cfg) -> bool:
    """Without a readable metrics.json (missing, or damaged and set aside): whether the
    folder's checkpoints, if any, were trained with `cfg`, by its config.yaml (written at
    every (re)start). Compared after a dump and load on both sides (YAML turns tuples into lists)."""
    from detectron2.config import CfgNode

    if not (run_dir / "last_checkpoint").exists() and not any(run_dir.glob("model_*.pth")):
        return True  # nothing to resume
    try:
        stored = CfgNode.load_cfg((run_dir / "config.yaml").read_text(encoding="utf-8"))
        return config_hash(CfgNode.load_cfg(stored.dump())) == config_hash(CfgNode.load_cfg(cfg.dump()))
    except Exception as e:  # noqa: BLE001  missing or damaged: whose checkpoints they are is unknown
        logger.warning("%s: its config.yaml cannot be read (%s): its checkpoints are not resumed", run_dir, describe(e))
        return False



def run_job(job: DictConfig, run_dir: Path) -> dict:
    """Skip, resume or train one run."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = run_dir.name
    check_job(job)  # the sweep's keys, in its words, before Detectron2 sees their values (imports: imported)
    export_to_env(job.get("imports") or ())  # the training processes import them too (worker.train_worker)
    cfg, sched = build_detectron2_config(job, run_dir)
    check_config(cfg, sched.num_workers)
    digest = config_hash(cfg)
    record = {
        "run": name,
        "norm": norm_label(job),
        "act": job.get("act"),
        "ims_per_gpu": sched.ims_per_gpu,
        "lr_scale": sched.lr_scale,
        "num_gpus": job.num_gpus,
        "num_machines": job.num_machines,
        "total_batch": sched.total_batch,
        "seed": job.seed,
        "model": job.model.name,
        "dataset": job.dataset.name,
        "schedule": job.schedule.name,
        "scaling": sched.as_dict(),
        "config_hash": digest,
        "versions": library_versions(),
        "machine": machine_record(threads_per_worker(job.get("threads", "auto"), job.model.device, job.num_gpus)),
        "deterministic": bool(job.get("deterministic", False)),
        # declared before the run: the report's primary family (None: the report's default)
        "primary": None if job.get("primary") is None else [str(c) for c in job.primary],
    }
    machine_rank, dist_url = resolve_distributed(job.num_machines, job.get("machine_rank"), job.dist_url)
    logger.info("%s: %s", name, sched.describe())
    # Kernels built (or found unavailable) here, before training and outside its timing; a
    # no-op when the sweep process did it. The training processes take this outcome.
    prepare_kernels(cfg.MODEL.DEVICE, logger.info)
    # A stop signal reaches the training, which checkpoints; then this process does what the
    # signal asks (submitit: requeue the job and exit).
    with TrainingStop() as stop:
        if machine_rank != 0:
            # Machine 0 owns the run folder (lock, metrics.json, events); the others decide as
            # it does from the same metrics.json, then train with it.
            existing = read_metrics(run_dir)
            if is_done(existing, digest, job.rerun_failed):
                return existing
            try:
                _launch(job, cfg, run_dir, record, machine_rank, dist_url, stop)
            except Exception as e:
                if stop.received:  # stopped, not failed: machine 0 records the run as resumable
                    raise Preempted(f"stopped by {stop.received.name} ({_error_detail(e)})") from e
                raise
            return record

        with RunLock(run_dir) as lock:
            if not lock.acquire():
                logger.warning("%s: being run by %s; leaving it to that process", name, lock.holder())
                log_event(run_dir, "busy", holder=lock.holder())
                return read_metrics(run_dir) or {**record, "status": RUNNING}
            return _run_locked(job, run_dir, cfg, sched, record, dist_url, stop)


def _launch(job: DictConfig, cfg, run_dir: Path, record: dict, machine_rank: int, dist_url: str,
            stop: TrainingStop) -> None:
    """Training in fresh processes: one for a single worker, else Detectron2's launch (one
    spawned process per worker); `stop` passes stop signals on to them."""
    args = (cfg, str(run_dir), record["run"], bool(job.get("verbose", False)), record["machine"]["torch_threads"],
            record["deterministic"])
    if job.num_gpus * job.num_machines == 1:
        run_in_fresh_process(train_worker, args, started=stop.trains_in)
        return
    launch(
        train_worker,
        job.num_gpus,
        num_machines=job.num_machines,
        machine_rank=machine_rank,
        dist_url=dist_url,
        args=args,
    )


def _run_locked(job: DictConfig, run_dir: Path, cfg, sched, record: dict, dist_url: str, stop: TrainingStop) -> dict:
    name, digest = record["run"], record["config_hash"]
    existing = read_metrics(run_dir, set_aside=True)  # a damaged one is set aside: the run resumes
    if is_done(existing, digest, job.rerun_failed):
        logger.info("%s: already %s (config %s), skipping", name, existing["status"], digest)
        log_event(run_dir, "skip", status=existing["status"])
        return existing
    if existing and existing.get("config_hash") != digest:
        archive_stale_run(run_dir, existing.get("config_hash", "unknown"))
    elif existing:
        keep_thread_layout(job, existing, record)
    elif not _checkpoints_of_this_config(run_dir, cfg):
        archive_stale_run(run_dir, "unknown")  # no record says whose checkpoints these are: not resumed

    write_text_atomic(run_dir / "config.yaml", cfg.dump())
    (run_dir / OUTCOME_FILE).unlink(missing_ok=True)
    write_json_atomic(run_dir / METRICS_FILE, {**record, "status": RUNNING})
    log_event(run_dir, "start", config_hash=digest)
    error = None
    launched = time.perf_counter()
    try:
        _launch(job, cfg, run_dir, record, 0, dist_url, stop)
    except Exception as e:  # noqa: BLE001  a failed run is recorded, the sweep goes on
        error = e
        if not stop.received:
            logger.exception("%s: training raised", name)
    launch_s = time.perf_counter() - launched
    tune = tune_datasets(job)
    fields = _result_fields(run_dir, error, sched, test=cfg.DATASETS.TEST[0], tune=tune[0] if tune else None)
    if stop.received and fields["status"] == FAILED:  # stopped before training began, or before its checkpoint
        fields.update(status=PREEMPTED, status_detail=f"stopped by {stop.received.name} ({fields['status_detail']}); "
                      "re-run to resume from the last checkpoint")
    if fields["time_breakdown_s"] and fields["wall_time_s"] is not None:  # starting the processes, imports, exit
        fields["time_breakdown_s"]["process_start_and_exit"] = max(0.0, launch_s - fields["wall_time_s"])
    if fields["status"] == PREEMPTED:  # metrics.json stays "running" (why: status_detail); the next sweep resumes it
        stopped = {**record, "status": RUNNING, "status_detail": fields["status_detail"]}
        write_json_atomic(run_dir / METRICS_FILE, stopped)
        log_event(run_dir, "preempted", iteration=fields["iterations"], detail=fields["status_detail"])
        raise Preempted(fields["status_detail"])
    record.update(fields)
    write_json_atomic(run_dir / METRICS_FILE, record)
    record_sweep_result(cfg, sched.num_workers, record)  # status and final AP on the chosen trackers
    log_event(run_dir, "end", status=record["status"], resumed_from_iter=record["resumed_from_iter"])
    logger.info("%s: %s %s", name, record["status"], {k: record.get(k) for k in ("AP", "AP50", "AP75")})
    return record


def keep_thread_layout(job: DictConfig, existing: dict, record: dict) -> None:
    """A resumed run keeps the torch threads it started with (they change its numbers):
    threads=auto takes them; an explicit other value wins, with a warning."""
    started = (existing.get("machine") or {}).get("torch_threads")
    now = record["machine"]["torch_threads"]
    if not isinstance(started, int) or started == now:
        return
    if str(job.get("threads", "auto")) == "auto":
        record["machine"]["torch_threads"] = started
        logger.info("%s: resumes with the %d torch thread(s) it started with", record["run"], started)
    else:
        record["machine"]["torch_threads_at_start"] = started  # the report names the run's setting as mixed
        logger.warning("%s: started with %d torch thread(s), resumes with threads=%d: its numbers mix two thread "
                       "layouts (the report flags the setting)", record["run"], started, now)


def _coco_metrics(evaluation: dict, dataset: str, kind: str = "metrics") -> Optional[dict]:
    """The six COCO box metrics (kind "segm_metrics": mask metrics) of one evaluated
    dataset; None when it was not evaluated.

    COCOEvaluator reports NaN when the model made no detection at all: that is AP 0.
    """
    metrics = (evaluation.get(dataset) or {}).get(kind)
    if not metrics:
        return None
    values = {k: metrics.get(k) for k in METRIC_KEYS}
    if all(v is None for v in values.values()):
        return {k: 0.0 for k in METRIC_KEYS}
    return values


def _error_detail(error: BaseException) -> str:
    """'Type: message' of what stopped the training."""
    if isinstance(error, TrainingProcessError):  # a fresh training process reports it so already
        return str(error)
    if isinstance(error, ProcessRaisedException):  # a launch worker's traceback: its last line is the error
        return f"worker {error.error_index}: {str(error).strip().splitlines()[-1]}"
    return f"{type(error).__name__}: {error}"


def _read_outcome(run_dir: Path) -> Optional[dict]:
    def parse(path: Path) -> dict:
        outcome = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(outcome, dict) or not isinstance(outcome.get("status"), str):
            raise Damaged("no status")
        return outcome

    return read_or_set_aside(run_dir / OUTCOME_FILE, parse, "the run is recorded as failed")


def _result_fields(run_dir: Path, error: Optional[BaseException], sched, test: str, tune: Optional[str]) -> dict:
    outcome = _read_outcome(run_dir)
    if outcome is None:
        detail = _error_detail(error) if error else f"the training process wrote no readable {OUTCOME_FILE}"
        outcome = {"status": FAILED, "status_detail": detail}
    evaluation = outcome.pop("evaluation", None) or {}
    status, detail = outcome.get("status", FAILED), outcome.get("status_detail", "")
    metrics = _coco_metrics(evaluation, test)
    if status == FINISHED and metrics is None:
        # Never a number for a model that was not evaluated: a finished run without
        # COCO results on its test set is a failure, not AP 0.
        status, detail = FAILED, f"training finished but no COCO evaluation results for {test!r}"
    elif status == FINISHED and all(v == 0.0 for v in metrics.values()):
        detail = "the model made no detections"
    fields = dict(metrics or {k: None for k in METRIC_KEYS})
    # Box metrics stay at the top level (old runs, box-only models); a mask model adds "segm".
    segm = _coco_metrics(evaluation, test, "segm_metrics") if status == FINISHED else None
    if segm is not None:
        fields["segm"] = segm
    fields.update(
        status=status,
        status_detail=detail,
        test_dataset=test,
        tune_dataset=tune,
        tune=_coco_metrics(evaluation, tune) if tune and status == FINISHED else None,
        evaluation=evaluation if status == FINISHED else {},
        diverged_at_iter=outcome.get("diverged_at_iter"),
        iterations=outcome.get("iterations"),
        images_seen=(outcome.get("iterations") or 0) * sched.total_batch,
        wall_time_s=outcome.get("wall_time_s"),
        time_breakdown_s=outcome.get("time_breakdown_s") or {},
        s_per_iter=outcome.get("s_per_iter"),
        peak_memory_mb=outcome.get("peak_memory_mb"),
        final_losses=outcome.get("final_losses", {}),
        resumed_from_iter=outcome.get("resumed_from_iter", 0),
        implementations=outcome.get("implementations"),  # per kernel-backed layer: what ran, and why
    )
    return fields
