"""Preemption signals and concurrent sweeps on the same folder (real processes and signals)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import ONE_THREAD, REPO, SHORT_SWEEP, TINY_CONFIG, run_tool

from frn_det.record.events import read_events

pytestmark = pytest.mark.slow


def start(script, *args):
    return subprocess.Popen([sys.executable, str(REPO / "tools" / script), *map(str, args)], cwd=REPO,
                            env={**os.environ, **ONE_THREAD},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_iteration(proc, json_log: Path, iteration: int, timeout=600):
    """Block until Detectron2's JSON log has reached `iteration` (it writes every 20 iterations)."""
    deadline = time.time() + timeout
    while True:
        assert proc.poll() is None, f"process ended early:\n{proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, "timed out"
        if json_log.exists():
            for line in json_log.read_text().splitlines():
                try:  # the writer may be mid-line
                    if json.loads(line).get("iteration", -1) >= iteration:
                        return
                except ValueError:
                    pass
        time.sleep(0.3)


def test_sigterm_checkpoints_and_resume_continues_from_that_iteration(tmp_path):
    common = ["--config-file", TINY_CONFIG, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.CHECKPOINT_PERIOD", 10000,
              "SOLVER.STEPS", "(400,)", "OUTPUT_DIR", tmp_path, "SEED", 3]
    proc = start("train_net.py", *common, "SOLVER.MAX_ITER", 500, "TEST.EVAL_PERIOD", 0)
    wait_for_iteration(proc, tmp_path / "metrics.json", 19)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "stopped by SIGTERM at iteration" in log
    stopped_at = int(log.split("stopped by SIGTERM at iteration ")[1].split(";")[0])
    assert 19 <= stopped_at < 500
    assert (tmp_path / "last_checkpoint").read_text() == f"model_{stopped_at:07d}.pth"
    # resume: training continues at the next iteration, not from zero
    resumed = run_tool("train_net.py", "--resume", *common, "SOLVER.MAX_ITER", stopped_at + 3, "DATASETS.TEST", "()")
    out = resumed.stdout + resumed.stderr
    assert f"Starting training from iteration {stopped_at + 1}" in out


def test_sweep_preempted_by_sigusr1_resumes(tmp_path):
    args = [
        "hydra.mode=RUN",
        "norm=frn",
        f"output_dir={tmp_path}",
        *SHORT_SWEEP,
        "schedule.max_iter=60",
        "report=false",
    ]
    run_dir = tmp_path / "frn_ims2_seed0"
    proc = start("sweep.py", *args)
    wait_for_iteration(proc, run_dir / "training_metrics.json", 19)
    proc.send_signal(signal.SIGUSR1)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, log[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "running"  # not failed: resumable
    events = [e["event"] for e in read_events(run_dir)]
    assert events == ["start", "preempted"]
    stopped_at = read_events(run_dir)[-1]["iteration"] - 1
    # Same config (same hash) -> resumed, not restarted.
    run_tool("sweep.py", *args)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["resumed_from_iter"] == stopped_at + 1


def test_two_sweeps_on_one_folder_train_each_run_once(tmp_path):
    args = ["-m", "norm=bn,frn", "ims_per_gpu=2", f"output_dir={tmp_path}", *SHORT_SWEEP]
    first, second = start("sweep.py", *args), start("sweep.py", *args)
    logs = [p.communicate(timeout=900)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, logs[0][-2000:] + logs[1][-2000:]
    for norm in ("bn", "frn"):
        run_dir = tmp_path / f"{norm}_ims2_seed0"
        events = read_events(run_dir)
        assert [e["event"] for e in events].count("end") == 1, events
        assert [e["event"] for e in events].count("start") == 1, events
        assert len({e["pid"] for e in events}) == 2  # the other sweep saw it busy or finished
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "finished"
    assert (tmp_path / "results.md").is_file()


def _processes_of_sweep(sweep_pid: int) -> list:
    """Processes started under the sweep process (they inherit FRN_DET_SWEEP_PID from it)."""
    mark = f"FRN_DET_SWEEP_PID={sweep_pid}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0") and int(environ.parent.name) != sweep_pid:
                found.append(int(environ.parent.name))
        except OSError:  # ended meanwhile
            pass
    return found


def test_sigterm_to_a_parallel_sweep_stops_its_runs_resumably_and_starts_no_other(tmp_path):
    # 3 runs, 2 at once: the signal goes to the sweep process alone, as `kill PID` sends it
    proc = start("sweep.py", "-m", "norm=bn,gn,frn", "ims_per_gpu=2", "jobs=2", f"output_dir={tmp_path}",
                 *SHORT_SWEEP, "schedule.max_iter=400", "report=false")
    for norm in ("bn", "gn"):
        wait_for_iteration(proc, tmp_path / f"{norm}_ims2_seed0" / "training_metrics.json", 19)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == -signal.SIGTERM, log[-2000:]
    deadline = time.time() + 120
    while _processes_of_sweep(proc.pid):  # the workers stop their training and end: no orphan trains on
        assert time.time() < deadline, f"still running: {_processes_of_sweep(proc.pid)}"
        time.sleep(0.5)
    for norm in ("bn", "gn"):
        run_dir = tmp_path / f"{norm}_ims2_seed0"
        events = read_events(run_dir)
        assert [e["event"] for e in events] == ["start", "preempted"], events
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "running"  # resumable
        stopped_at = events[-1]["iteration"] - 1
        assert 19 <= stopped_at < 399
        assert (run_dir / "last_checkpoint").read_text() == f"model_{stopped_at:07d}.pth"
    assert not (tmp_path / "frn_ims2_seed0" / "metrics.json").exists()  # the third run never started
