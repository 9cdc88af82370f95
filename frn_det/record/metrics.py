"""A sweep run's record on disk: the files of a run folder, the metric keys and statuses of
its metrics.json. Written by the sweep (frn_det/sweep/), read by the report (frn_det/report/)."""
import json
from pathlib import Path
from typing import Optional

from ..utils.damaged import Damaged, read_or_set_aside

METRICS_FILE = "metrics.json"  # the run's result summary (written by sweep/running/runner.py)
OUTCOME_FILE = "outcome.json"  # the training process's outcome, turned into metrics.json by the runner
TRAINING_LOG = "training_metrics.json"  # Detectron2's per-iteration JSON log, under another name
RUN_LOG = "sweep.log"  # the whole log (hydra.job_logging in configs/sweep/sweep.yaml)
DETECTIONS_FILE = "coco_instances_results.json"  # written by Detectron2's COCOEvaluator

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCO's six, box (top level) and mask ("segm")

# Statuses: a diverged run (non-finite loss) is a result; a failed one is not; a running
# one is being trained or was preempted (resumable).
FINISHED, DIVERGED, FAILED, RUNNING = "finished", "diverged", "failed", "running"
STATUSES = (FINISHED, DIVERGED, FAILED, RUNNING)
# An outcome only: metrics.json stays "running" (resumable), its status_detail says why it stopped.
PREEMPTED = "preempted"


def parse_metrics_file(path: Path) -> dict:
    """A metrics.json as the sweep writes it; Damaged (or the JSON error) when it is not."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise Damaged(f"a JSON {type(record).__name__}, not an object")
    if record.get("status") not in STATUSES:
        raise Damaged(f"status {record.get('status')!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(record.get("config_hash"), str):
        raise Damaged(f"config_hash {record.get('config_hash')!r} is not a string")
    return record


def read_metrics(run_dir: Path, set_aside: bool = False) -> Optional[dict]:
    """A run folder's metrics.json, or None when it is missing or damaged (named in a
    warning). set_aside: the caller owns the run (it holds its lock) and re-runs it: a
    damaged file is renamed metrics.json.damaged-<time>, never deleted."""
    then = ("the run is resumed from its last intact checkpoint and its metrics.json written again" if set_aside
            else "read as a run without a result")
    return read_or_set_aside(Path(run_dir) / METRICS_FILE, parse_metrics_file, then, move=set_aside)


def is_done(existing: Optional[dict], config_hash: str, rerun_failed: bool) -> bool:
    """Whether a run with this metrics.json (None: none) is done for a job of `config_hash`:
    finished, or diverged/failed unless `rerun_failed`; any other config is not done."""
    if not existing or existing.get("config_hash") != config_hash:
        return False
    if existing.get("status") == FINISHED:
        return True
    return existing.get("status") in (DIVERGED, FAILED) and not rerun_failed
