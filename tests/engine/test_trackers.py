"""Trackers (frn_det/engine/trackers.py) with the real libraries: wandb offline, read back
from its run files, and MLflow on a SQLite store, read back through mlflow.search_runs."""
import json
import os
import subprocess
import sys

import pytest
from detectron2.utils.events import EventStorage
from harness import REPO, TINY_CONFIG, kill_sweep_at_first_checkpoint, run_tool
from lazy_testing import TINY_LAZY, small_val_set
from tracker_readback import mlflow_metric_history, mlflow_runs, wandb_offline_runs

from frn_det.config.build import build_config
from frn_det.config.checks import ConfigError, check_config
from frn_det.config.keys import config_hash
from frn_det.engine.trackers import TRACKER_IDS_FILE, TrackerWriter, TrackingOptions, record_result

pytest.importorskip("wandb")
pytest.importorskip("mlflow")

OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.fixture(autouse=True)
def tracker_env(monkeypatch):
    """W&B offline, and nothing a test leaves in the environment for the tools started by
    later tests: mlflow.set_tracking_uri (the read-back) exports MLFLOW_TRACKING_URI, and
    an in-process wandb.init exports WANDB_SERVICE, its service process, which a tool
    would then share (a killed tool's run would stay "in use" there)."""
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.setenv("WANDB_SERVICE", "")  # records "not set" to restore after the test
    monkeypatch.delenv("WANDB_SERVICE")


def test_unknown_logger_and_missing_library_fail_before_training(monkeypatch):
    cfg = build_config(TINY_CONFIG, ["TRACKING.LOGGERS", ["tensorboard", "wandbb"]], announce=False)
    with pytest.raises(ConfigError, match=r"TRACKING.LOGGERS=\['tensorboard', 'wandbb'\]: unknown logger 'wandbb'; "
                                          r"choose from \['tensorboard', 'wandb', 'mlflow'\]"):
        check_config(cfg, 1)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without mlflow shows importlib
    cfg = build_config(TINY_CONFIG, ["TRACKING.LOGGERS", ["mlflow"]], announce=False)
    with pytest.raises(ImportError, match=r'pip install "frn-det\[mlflow\]"'):
        check_config(cfg, 1)


def test_neither_library_is_imported_unless_chosen():
    code = ("import sys, frn_det.sweep.running.runner, frn_det.engine.lazy_training, frn_det.cli.train;"
            "print(sorted(m for m in ('wandb', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_tracking_keys_leave_the_config_hash_alone():
    plain = build_config(TINY_CONFIG, announce=False)
    tracked = build_config(TINY_CONFIG, ["TRACKING.LOGGERS", ["wandb", "mlflow"], "TRACKING.GROUP", "g"],
                           announce=False)
    assert config_hash(plain) == config_hash(tracked)
    # the hash of a config from before TRACKING existed: finished runs stay finished
    before = plain.clone()
    before.pop("TRACKING")
    before.OUTPUT_DIR = ""
    import hashlib

    assert config_hash(plain) == hashlib.sha256(before.dump().encode()).hexdigest()[:12]


def _write_scalars(writer, steps):
    with EventStorage(steps[0]) as storage:
        for it in steps:
            storage.iter = it
            storage.put_scalar("total_loss", 10.0 - it, smoothing_hint=False)
            storage.put_scalar("lr", 0.01)
            writer.write()


def test_writer_and_result_on_wandb_and_mlflow_resume_the_same_runs(tmp_path):
    run_dir = tmp_path / "frn_ims2_seed0"
    run_dir.mkdir()
    opts = TrackingOptions(("wandb", "mlflow"), str(run_dir), project="p", group="sweep_a")
    params = {"norm": "frn", "ims_per_gpu": 2, "lr": 0.02, "config_hash": "abc"}
    writer = TrackerWriter(opts, params)
    _write_scalars(writer, [0, 1, 2])
    writer.close()
    ids = json.loads((run_dir / TRACKER_IDS_FILE).read_text())
    writer = TrackerWriter(opts, params)  # the resumed run
    _write_scalars(writer, [3, 4])
    writer.close()
    record_result(opts, params, "diverged@4", box={"AP": 1.5, "AP50": None, "APs": float("nan")})
    assert "WANDB_SERVICE" not in os.environ  # each session stopped the service it started
    assert json.loads((run_dir / TRACKER_IDS_FILE).read_text()) == ids

    (run,) = mlflow_runs(tmp_path / "mlflow.db", "sweep_a")
    assert run.info.run_id == ids["mlflow"] and run.info.run_name == "frn_ims2_seed0"
    assert run.data.params == {"norm": "frn", "ims_per_gpu": "2", "lr": "0.02", "config_hash": "abc"}
    assert run.data.tags["status"] == "diverged@4" and run.info.status == "FINISHED"
    assert run.data.metrics["box/AP"] == 1.5
    assert "box/AP50" not in run.data.metrics and "box/APs" not in run.data.metrics  # None, NaN: left out
    assert mlflow_metric_history(tmp_path / "mlflow.db", ids["mlflow"], "total_loss") == [
        (0, 10.0), (1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0)]

    sessions = wandb_offline_runs(run_dir)
    assert len(sessions) == 3 and {s["run_id"] for s in sessions} == {ids["wandb"]}
    assert {s["group"] for s in sessions} == {"sweep_a"} and sessions[0]["name"] == "frn_ims2_seed0"
    assert sessions[0]["config"] == params
    steps = {step: row["total_loss"] for s in sessions for step, row in s["history"].items()}
    assert steps == {0: 10.0, 1: 9.0, 2: 8.0, 3: 7.0, 4: 6.0}
    assert sessions[-1]["summary"]["status"] == "diverged@4" and sessions[-1]["summary"]["box/AP"] == 1.5


@pytest.mark.slow
def test_sweep_logs_to_both_trackers_and_a_killed_run_resumes_its_tracker_runs(tmp_path):
    args = ["hydra.mode=RUN", "norm=gn", f"output_dir={tmp_path}",
            "logger=[wandb,mlflow]", "schedule.reference_batch=2", "schedule.max_iter=30", "schedule.steps=[25]",
            "schedule.warmup_iters=5", "schedule.checkpoint_period=10", "dataset.tune=[]", "report=false"]
    run_dir = tmp_path / "gn_ims2_seed0"
    kill_sweep_at_first_checkpoint(args, run_dir, env=OFFLINE)
    ids = json.loads((run_dir / TRACKER_IDS_FILE).read_text())
    run_tool("sweep.py", *args, env=OFFLINE)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["resumed_from_iter"] > 1
    assert json.loads((run_dir / TRACKER_IDS_FILE).read_text()) == ids

    (run,) = mlflow_runs(tmp_path / "mlflow.db", tmp_path.name)  # the sweep is the experiment
    assert run.info.run_id == ids["mlflow"] and run.data.tags["status"] == "finished"
    assert run.data.params["norm"] == "gn" and run.data.params["total_batch"] == "2"
    assert run.data.params["config_hash"] == metrics["config_hash"] and run.data.params["schedule"] == "cpu_short"
    assert run.data.metrics["box/AP"] == pytest.approx(metrics["AP"])
    sessions = wandb_offline_runs(run_dir)  # killed, resumed, result
    assert {s["folder_id"] for s in sessions} == {ids["wandb"]}
    recorded = [s for s in sessions if s["run_id"]]  # the killed session may have written no record
    assert len(recorded) >= 2 and {s["run_id"] for s in recorded} == {ids["wandb"]}
    assert sessions[-1]["summary"]["box/AP"] == pytest.approx(metrics["AP"])
    assert sessions[-1]["summary"]["status"] == "finished"


@pytest.mark.slow
def test_train_net_logs_its_result_to_mlflow(tmp_path):
    out = tmp_path / "run"
    run_tool("train_net.py", "--config-file", TINY_CONFIG, "SOLVER.MAX_ITER", 4, "SOLVER.IMS_PER_BATCH", 2,
             "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", "(3,)", "OUTPUT_DIR", out, "TRACKING.LOGGERS", "['mlflow']",
             "TRACKING.GROUP", "tools")
    (run,) = mlflow_runs(tmp_path / "mlflow.db", "tools")
    assert run.data.tags["status"] == "finished" and run.data.params["total_batch"] == "2"
    assert 0 <= run.data.metrics["box/AP"] <= 100 and "total_loss" in run.data.metrics
    assert not (out / "wandb").exists() and not list(out.glob("events.out.tfevents*"))  # only the chosen logger


@pytest.mark.slow
def test_lazyconfig_tool_logs_its_run_to_wandb_and_mlflow(tmp_path):

    out = tmp_path / "run"
    run_tool("lazyconfig_train_net.py", "--config-file", TINY_LAZY, f"train.output_dir={out}",
             f"dataloader.prepare.register_coco={small_val_set(tmp_path)}", "dataloader.test.dataset.names=small_val",
             "train.max_iter=4", "dataloader.train.total_batch_size=2", "train.log_period=1",
             "train.tracking.loggers=[wandb,mlflow]", "train.tracking.group=lazy", env=OFFLINE)
    (run,) = mlflow_runs(tmp_path / "mlflow.db", "lazy")
    assert run.data.tags["status"] == "finished" and run.data.params["total_batch"] == "2"
    assert run.data.params["norm"] == "FRN" and "box/AP" in run.data.metrics
    steps = [s for s, _ in mlflow_metric_history(tmp_path / "mlflow.db", run.info.run_id, "total_loss")]
    assert steps == [0, 1, 2, 3]
    (session, result) = wandb_offline_runs(out)
    assert session["run_id"] == result["run_id"] and sorted(session["history"])[:4] == [0, 1, 2, 3]
    assert result["summary"]["status"] == "finished" and result["summary"]["box/AP"] == run.data.metrics["box/AP"]
