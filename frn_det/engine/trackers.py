"""Experiment trackers: TensorBoard, Weights & Biases and MLflow, chosen per run.

A run logs its parameters once (when its tracker run is created), Detectron2's scalars as
training goes (`TrackerWriter`, an EventWriter), and at the end its final COCO metrics
(box/AP..., mask/AP...) and its status: finished, diverged@<iter> or failed.

One tracker run per run folder: its id is kept in <output dir>/trackers.json, so a resumed
run (and the sweep runner that records the result after training) continues the same
tracker run. A sweep is one W&B group and one MLflow experiment, so the tracker's own run
table compares its runs. wandb and mlflow are imported only when chosen.
"""
import contextlib
import importlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from detectron2.utils import comm
from detectron2.utils.events import EventWriter, TensorboardXWriter, get_event_storage

from ..config.tracking import DEFAULT_LOGGERS, DEFAULT_PROJECT, check_loggers, missing_tracker_message
from ..record.metrics import METRIC_KEYS
from ..utils.atomic import write_json_atomic
from ..utils.damaged import Damaged, read_or_set_aside

TRACKER_IDS_FILE = "trackers.json"


@dataclass(frozen=True)
class TrackingOptions:
    """What to log where, read from a yacs config (TRACKING.*) or a LazyConfig (train.tracking)."""

    loggers: tuple
    output_dir: str
    project: str = DEFAULT_PROJECT
    group: str = ""  # the W&B group and MLflow experiment (the sweep); "": none / the project
    mlflow_uri: str = ""  # "": $MLFLOW_TRACKING_URI, else sqlite:///<output dir's parent>/mlflow.db

    def __post_init__(self):
        check_loggers(self.loggers)

    @property
    def remote(self) -> tuple:
        """The loggers that keep a tracker run (all but TensorBoard's event files)."""
        return tuple(name for name in self.loggers if name != "tensorboard")

    @classmethod
    def from_yacs(cls, cfg) -> "TrackingOptions":
        t = cfg.TRACKING
        return cls(tuple(t.LOGGERS), cfg.OUTPUT_DIR, t.PROJECT, t.GROUP, t.MLFLOW_URI)

    @classmethod
    def from_lazy(cls, cfg) -> "TrackingOptions":
        t = dict(cfg.train.get("tracking") or {})
        return cls(tuple(t.get("loggers", DEFAULT_LOGGERS)), cfg.train.output_dir, t.get("project", DEFAULT_PROJECT),
                   t.get("group", ""), t.get("mlflow_uri", ""))



def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(missing_tracker_message(module.split(".")[0])) from None


def final_metrics(box: Optional[dict], mask: Optional[dict]) -> Dict[str, float]:
    """The six COCO numbers of the box and mask evaluations as box/AP, ..., mask/APl.

    As in metrics.json (runner._coco_metrics): all NaN means the model made no detection,
    AP 0; a single NaN (an empty size range) is left out."""
    out = {}
    for prefix, metrics in (("box", box), ("mask", mask)):
        values = {k: float(metrics[k]) for k in METRIC_KEYS if metrics and metrics.get(k) is not None}
        if values and all(math.isnan(v) for v in values.values()):
            values = dict.fromkeys(values, 0.0)
        out.update({f"{prefix}/{k}": v for k, v in values.items() if not math.isnan(v)})
    return out


class _Wandb:
    def __init__(self, opts: TrackingOptions, name: str, run_id: Optional[str], params: dict):
        wandb = _require("wandb")
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_save_requirements=False)
        # wandb.init starts a service process and exports WANDB_SERVICE to children; a session
        # that started it also stops it (finish), so a later job's process, killed or not,
        # never shares it (a killed job's run id would stay "in use" there).
        self.owns_service = "WANDB_SERVICE" not in os.environ
        self.wandb = wandb
        self.run = wandb.init(project=opts.project, group=opts.group or None, name=name, id=run_id, resume="allow",
                              dir=opts.output_dir, config=params if run_id is None else None, settings=settings)
        self.id = self.run.id

    def log(self, scalars: dict, step: int):
        self.run.log(scalars, step=step)

    def finish(self, metrics: dict, status: Optional[str]):
        if status is not None:
            self.run.summary.update({**metrics, "status": status})
        self.run.finish(exit_code=1 if status == "failed" else 0)
        if self.owns_service:
            self.wandb.teardown()
            os.environ.pop("WANDB_SERVICE", None)


class _Mlflow:
    def __init__(self, opts: TrackingOptions, name: str, run_id: Optional[str], params: dict):
        tracking = _require("mlflow.tracking")
        self.entities = _require("mlflow.entities")
        self.client = tracking.MlflowClient(tracking_uri=mlflow_uri(opts))
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.id = run_id
            return
        experiment = opts.group or opts.project
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        run = self.client.create_run(experiment_id, run_name=name, tags={"group": opts.group} if opts.group else None)
        self.id = run.info.run_id
        params = [self.entities.Param(k, str(v)) for k, v in params.items()]
        self.client.log_batch(self.id, params=params)

    def log(self, scalars: dict, step: int):
        now = int(time.time() * 1000)
        metrics = [self.entities.Metric(k, float(v), now, step) for k, v in scalars.items()]
        self.client.log_batch(self.id, metrics=metrics)

    def finish(self, metrics: dict, status: Optional[str]):
        if status is not None:
            if metrics:
                self.log(metrics, step=0)
            self.client.set_tag(self.id, "status", status)
        self.client.set_terminated(self.id, "FAILED" if status == "failed" else "FINISHED")


BACKENDS = {"wandb": _Wandb, "mlflow": _Mlflow}


def mlflow_uri(opts: TrackingOptions) -> str:
    if opts.mlflow_uri:
        return opts.mlflow_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(opts.output_dir).resolve().parent / 'mlflow.db'}"


def _parse_ids(path: Path) -> dict:
    """trackers.json: {logger: run id} as TrackerRuns writes it."""
    ids = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(ids, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ids.items()):
        raise Damaged("expected an object of tracker name -> run id strings")
    return ids


class TrackerRuns:
    """The tracker runs of one run folder, created or continued (ids in trackers.json)."""

    def __init__(self, opts: TrackingOptions, params: dict):
        self.opts = opts
        self.path = Path(opts.output_dir) / TRACKER_IDS_FILE
        ids = read_or_set_aside(self.path, _parse_ids, "new tracker runs are started for this run") or {}
        name = Path(opts.output_dir).resolve().name
        self.backends = {}
        for logger in opts.remote:
            self.backends[logger] = BACKENDS[logger](opts, name, ids.get(logger), params)
            ids[logger] = self.backends[logger].id
            write_json_atomic(self.path, ids)  # kept at once: a crash later still resumes this run

    def log(self, scalars: dict, step: int) -> None:
        for backend in self.backends.values():
            backend.log(scalars, step)

    def close(self, metrics: Optional[dict] = None, status: Optional[str] = None) -> None:
        """End the session; with a status, the run's result (final metrics, status) too."""
        for backend in self.backends.values():
            backend.finish(metrics or {}, status)
        self.backends = {}


class TrackerWriter(EventWriter):
    """Detectron2's scalars (losses, lr, time, evaluation results) to the tracker runs,
    the latest value of each since the last write, as TensorboardXWriter does."""

    def __init__(self, opts: TrackingOptions, params: dict, window_size: int = 20):
        self.runs = TrackerRuns(opts, params)
        self._window_size = window_size
        self._last_write = -1

    def write(self):
        storage = get_event_storage()
        by_iter: Dict[int, dict] = {}
        for key, (value, it) in storage.latest_with_smoothing_hint(self._window_size).items():
            if it > self._last_write:
                by_iter.setdefault(it, {})[key] = value
        for it in sorted(by_iter):
            self.runs.log(by_iter[it], step=it)
        if by_iter:
            self._last_write = max(by_iter)

    def close(self):
        self.runs.close()


def tracking_writers(opts: TrackingOptions, params: dict) -> List[EventWriter]:
    """The EventWriters of the chosen loggers (Detectron2's TensorBoard writer for "tensorboard")."""
    writers: List[EventWriter] = []
    if "tensorboard" in opts.loggers:
        writers.append(TensorboardXWriter(opts.output_dir))
    if opts.remote:
        writers.append(TrackerWriter(opts, params))
    return writers


def record_result(opts: TrackingOptions, params: dict, status: str, box: Optional[dict] = None,
                  mask: Optional[dict] = None) -> None:
    """The run's final COCO metrics and status, on the tracker run of its folder (created
    with `params` if training never opened one, e.g. when it failed to start)."""
    if opts.remote:
        TrackerRuns(opts, params).close(final_metrics(box, mask), status)


def status_label(status: str, diverged_at_iter: Optional[int] = None) -> str:
    return f"diverged@{diverged_at_iter}" if status == "diverged" and diverged_at_iter is not None else status


def yacs_params(cfg, world_size: int) -> dict:
    """The parameters of a yacs-config run: the sweep's own labels (TRACKING.PARAMS) over
    what the config says (norms, batch, lr, seed, datasets, schedule) and its hash."""
    from ..config.keys import config_hash

    params = {
        "norm": cfg.MODEL.RESNETS.NORM,
        "ims_per_gpu": cfg.SOLVER.IMS_PER_BATCH // max(world_size, 1),
        "total_batch": cfg.SOLVER.IMS_PER_BATCH,
        "lr": cfg.SOLVER.BASE_LR,
        "seed": cfg.SEED,
        "model": cfg.MODEL.LAZY_CONFIG or cfg.MODEL.META_ARCHITECTURE,
        "dataset": ",".join(cfg.DATASETS.TRAIN),
        "schedule": f"{cfg.SOLVER.MAX_ITER} iterations",
        "config_hash": config_hash(cfg),
    }
    params.update(json.loads(cfg.TRACKING.PARAMS or "{}"))
    return params


def lazy_params(cfg, world_size: int) -> dict:
    """The parameters of a LazyConfig run, where the config has them."""
    from omegaconf import OmegaConf

    def get(key):
        return OmegaConf.select(cfg, key, default=None)

    total = get("dataloader.train.total_batch_size")
    params = {
        "norm": get("model.backbone.bottom_up.stages.norm"),
        "ims_per_gpu": total // max(world_size, 1) if isinstance(total, int) else None,
        "total_batch": total,
        "lr": get("optimizer.lr"),
        "seed": get("train.seed"),
        "model": get("model._target_"),
        "dataset": get("dataloader.train.dataset.names"),
        "schedule": f"{get('train.max_iter')} iterations",
    }
    params.update(dict(get("train.tracking.params") or {}))
    return {k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for k, v in params.items()}


def coco_results(results) -> tuple:
    """(box, mask) metrics from Detectron2's evaluation results: {"bbox": ..., "segm": ...},
    or per dataset (the first one, the test set) when there are several."""
    if not results:
        return None, None
    if "bbox" not in results:
        results = next(iter(results.values()))
    return results.get("bbox"), results.get("segm")


@contextlib.contextmanager
def recorded_result(opts: TrackingOptions, params: dict, iteration: Callable[[], int]):
    """Around training (tools/train_net.py, the LazyConfig tool): the run's status and final
    COCO metrics on its tracker runs. The caller puts the evaluation results in the yielded
    dict under "results". A preemption leaves the tracker run open for the resumed run."""
    from .preemption import Preempted

    outcome: dict = {}
    record = opts.remote and comm.is_main_process()
    try:
        yield outcome
    except (Preempted, KeyboardInterrupt):
        raise
    except FloatingPointError:  # Detectron2 raises it when the loss is not finite
        if record:
            record_result(opts, params, status_label("diverged", iteration()))
        raise
    except Exception:
        if record:
            record_result(opts, params, "failed")
        raise
    if record:
        record_result(opts, params, "finished", *coco_results(outcome.get("results")))


def record_sweep_result(cfg, world_size: int, record: dict) -> None:
    """A sweep run's result (its metrics.json record) on its tracker runs. A tracker that
    cannot take it costs a warning, not the run: metrics.json already holds the result."""
    opts = TrackingOptions.from_yacs(cfg)
    if not opts.remote:
        return
    try:
        status = status_label(record["status"], record.get("diverged_at_iter"))
        record_result(opts, yacs_params(cfg, world_size), status, box={k: record.get(k) for k in METRIC_KEYS},
                      mask=record.get("segm"))
    except Exception:  # noqa: BLE001  a tracker that fails costs a warning, not the run
        logging.getLogger("frn_det").exception("%s: could not record the result on %s", cfg.OUTPUT_DIR, opts.remote)
