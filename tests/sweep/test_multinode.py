"""Two machines simulated on one: two sweep processes with SLURM-like environments (node 0
and 1, one master address on 127.0.0.1) train one run together over GLOO."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from harness import ONE_THREAD, REPO

from frn_det.record.events import read_events
from frn_det.sweep.running.cluster import resolve_distributed

SHORT = [
    "schedule.reference_batch=2",
    "schedule.steps=[30]",
    "schedule.warmup_iters=5",
    "schedule.checkpoint_period=10",
    "dataset.tune=[]",
]


def test_machine_rank_and_address_come_from_slurm_and_explicit_values_win(monkeypatch):
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    rank, url = resolve_distributed(2, None, "auto")
    assert rank == 1 and url.startswith("tcp://gpu07:")
    assert resolve_distributed(2, None, "auto") == (rank, url)  # every node derives the same port
    assert resolve_distributed(2, 0, "tcp://10.0.0.1:1234") == (0, "tcp://10.0.0.1:1234")
    monkeypatch.setenv("MASTER_PORT", "29555")
    assert resolve_distributed(2, None, "auto")[1] == "tcp://gpu07:29555"
    with pytest.raises(ValueError, match="num_machines=3 but the scheduler job has 2 nodes"):
        resolve_distributed(3, None, "auto")


def test_several_machines_without_a_scheduler_is_a_clear_error(monkeypatch):
    for var in ("SLURM_NODEID", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match=r"num_machines=2 needs machine_rank \(0..1\) and dist_url"):
        resolve_distributed(2, None, "auto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nodes(out, port, *extra):
    procs = []
    for node in (0, 1):
        env = {
            **os.environ,
            **ONE_THREAD,
            "SLURM_NODEID": str(node),
            "SLURM_JOB_NUM_NODES": "2",
            "SLURM_JOB_NODELIST": "127.0.0.1",
            "SLURM_JOB_ID": "1",
            "MASTER_PORT": str(port),
        }
        procs.append(subprocess.Popen(
            [sys.executable, str(REPO / "tools" / "sweep.py"), "hydra.mode=RUN", "num_machines=2", "norm=gn",
             f"output_dir={out}", "threads=1", *SHORT, *extra],  # two "machines" share these 2 cores
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True))
    return procs


@pytest.mark.slow
def test_two_machines_train_one_run_and_resume_together_after_a_signal(tmp_path):
    run_dir = tmp_path / "gn_ims2_seed0"
    procs = start_nodes(tmp_path, free_port(), "schedule.max_iter=80")
    log = run_dir / "training_metrics.json"
    deadline = time.time() + 600
    while not (
        log.exists()
        and any(
            json.loads(l).get("iteration", 0) >= 19 for l in log.read_text().splitlines() if l.strip().endswith("}")
        )
    ):
        assert all(p.poll() is None for p in procs) and time.time() < deadline, [p.stdout.read()[-2000:] for p in procs]
        time.sleep(0.5)
    for p in procs:  # SLURM signals every node of a job
        os.killpg(p.pid, signal.SIGUSR1)
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert procs[0].returncode != 0, logs[0][-2000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "running"  # resumable, not failed
    stopped = read_events(run_dir)[-1]
    assert stopped["event"] == "preempted"

    procs = start_nodes(tmp_path, free_port(), "schedule.max_iter=80")
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["num_machines"] == 2 and metrics["total_batch"] == 4
    assert metrics["resumed_from_iter"] == stopped["iteration"] > 1
    assert len(list(tmp_path.glob("*/metrics.json"))) == 1 and (tmp_path / "results.md").is_file()
    assert [e["event"] for e in read_events(run_dir)].count("end") == 1  # machine 1 wrote no result
    # Both machines' workers logged into the shared run folder, each with its global rank.
    text = (run_dir / "sweep.log").read_text()
    assert "[rank 0]" in text and "[rank 1]" in text


@pytest.mark.slow
def test_a_lost_machine_stops_the_other_promptly_and_the_run_resumes_from_its_checkpoint(tmp_path):
    """Machine 1 is killed outright (its whole process group) in the middle of training:
    machine 0 must not wait for it (bounded), records the run as stopped with the reason,
    and both machines' next sweep resumes it from its last checkpoint; nothing written is lost."""
    run_dir = tmp_path / "gn_ims2_seed0"
    procs = start_nodes(tmp_path, free_port(), "schedule.max_iter=24")
    deadline = time.time() + 600
    while not (run_dir / "last_checkpoint").exists():  # iteration 9 is saved: training goes on
        assert all(p.poll() is None for p in procs) and time.time() < deadline, [p.stdout.read()[-2000:] for p in procs]
        time.sleep(0.2)
    first = {p.name: p.read_bytes() for p in run_dir.glob("model_*.pth")}
    os.killpg(procs[1].pid, signal.SIGKILL)
    killed = time.time()
    log = procs[0].communicate(timeout=180)[0]  # bounded: far below the process group's 30-minute timeout
    procs[1].wait()
    assert procs[0].returncode != 0 and time.time() - killed < 180, log[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "running"  # resumable, not failed
    detail = metrics["status_detail"]
    assert detail.startswith("lost contact with another worker at iteration ") and "Connection" in detail, detail
    resume_from = re.search(r"resume from model_(\d{7})\.pth$", detail)
    assert resume_from, detail
    stopped = read_events(run_dir)[-1]
    assert stopped["event"] == "preempted" and stopped["detail"] == detail
    assert "lost contact with another worker" in log

    procs = start_nodes(tmp_path, free_port(), "schedule.max_iter=24")
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["resumed_from_iter"] == int(resume_from.group(1)) + 1
    assert all((run_dir / name).read_bytes() == data for name, data in first.items())  # nothing written was lost
