"""A sweep run's record on disk: the files of a run folder, the metric keys and statuses of
its metrics.json. Written by the sweep (frn_det/sweep/), read by the report (frn_det/report/)."""
import json
from pathlib import Path
from typing import Optional

METRICS_FILE = "metrics.json"  # the run's result summary (written by sweep/runner.py)
OUTCOME_FILE = "outcome.json"  # the training process's outcome, turned into metrics.json by the runner
TRAINING_LOG = "training_metrics.json"  # Detectron2's per-iteration JSON log, under another name
RUN_LOG = "sweep.log"  # the whole log (hydra.job_logging in configs/sweep/sweep.yaml)
DETECTIONS_FILE = "coco_instances_results.json"  # written by Detectron2's COCOEvaluator

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCO's six, box (top level) and mask ("segm")

# Statuses: a diverged run (non-finite loss) is a result; a failed one is not; a running
# one is being trained or was preempted (resumable).
FINISHED, DIVERGED, FAILED, RUNNING = "finished", "diverged", "failed", "running"
PREEMPTED = "preempted"  # an outcome only: metrics.json stays "running"


def read_metrics(run_dir: Path) -> Optional[dict]:
    """A run folder's metrics.json, or None when it is missing or unreadable."""
    try:
        return json.loads((Path(run_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
