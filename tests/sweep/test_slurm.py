"""The sweep on a real SLURM cluster (tests/helpers/slurm_cluster.py: slurmctld and two slurmd
nodes on this machine): README's submitit commands scaled down to the tiny model, and what
a cluster does to jobs: preemption, a time limit, a lost node, scancel.

Requeued jobs: SLURM holds a requeued job for two minutes before it may start again
(BeginTime); the tests let it start at once (scontrol update StartTime=now).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from harness import ONE_THREAD, REPO

from frn_det.record.events import read_events

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

# README's SLURM form (docs/sweep.md), scaled down: no GPUs, one core per task, the tiny
# CPU model, 2 images per iteration.
LAUNCHER = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=cpu", "hydra.launcher.tasks_per_node=1",
            "hydra.launcher.cpus_per_task=1"]
TINY = ["seed=0", "schedule.reference_batch=2", "schedule.warmup_iters=5", "schedule.checkpoint_period=1000",
        "dataset.tune=[]", "threads=1"]
LOG_PERIOD = 20  # Detectron2 writes training_metrics.json every 20 iterations


def start_sweep(cluster, log: Path, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "tools" / "sweep.py"), *map(str, args)], cwd=REPO,
                            env={**cluster.env, **ONE_THREAD, **(env or {})}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def last_iteration(run_dir: Path) -> int:
    last = -1
    try:
        for line in (run_dir / "training_metrics.json").read_text().splitlines():
            try:  # the writer may be mid-line
                last = max(last, json.loads(line).get("iteration", -1))
            except ValueError:
                pass
    except OSError:
        pass
    return last


def wait_until(cluster, condition, what: str, sweep=None, timeout: float = 300, time_limit=None) -> None:
    """Poll `condition`, letting requeued jobs start at once meanwhile (with `time_limit`
    minutes: the requeued job's new time limit)."""
    deadline = time.time() + timeout
    while not condition():
        assert sweep is None or sweep.poll() is None, f"the sweep ended (exit {sweep.returncode}) before: {what}"
        assert time.time() < deadline, f"timed out waiting for: {what}\n{cluster.logs()}"
        cluster.start_requeued_now(time_limit)
        time.sleep(0.3)


def job_id(run_dir: Path) -> str:
    """The SLURM job (123_4 in an array) that runs a run: submitit's id, in Hydra's record of the job."""
    return str(yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


def events(run_dir: Path, name: str) -> list:
    return [e for e in read_events(run_dir) if e["event"] == name]


def signal_iterations(run_dir: Path, signal: str) -> list:
    """(rank, iteration) of each "received SIG..." line in the run's log."""
    text = (run_dir / "sweep.log").read_text()
    return [(int(r), int(i)) for r, i in re.findall(rf"\[rank (\d)\] received {signal} at iteration (\d+)", text)]


def requeue_times(run_dir: Path) -> list:
    """When submitit requeued the job of a run (its "Requeued job" lines in the run's log)."""
    stamps = re.findall(r"\[(\S+ \S+)\]\[submitit\]\[INFO\] - Requeued job", (run_dir / "sweep.log").read_text())
    return [datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp() for t in stamps]


def no_job_left(cluster, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while cluster.jobs(states="PENDING,RUNNING,COMPLETING,SUSPENDED") or cluster.job_processes():
        assert time.time() < deadline, f"still there: {cluster.jobs()} {cluster.job_processes()}"
        time.sleep(0.5)


def test_one_node_sweep_preempted_then_cancelled_resumes_and_loses_nothing(slurm_cluster, tmp_path):
    args = [*LAUNCHER, "hydra.launcher.timeout_min=60", "norm=bn,gn", "ims_per_gpu=2", *TINY,
            "schedule.max_iter=44", "schedule.steps=[40]", f"output_dir={tmp_path}"]
    bn, gn = tmp_path / "bn_ims2_seed0", tmp_path / "gn_ims2_seed0"
    sweep = start_sweep(slurm_cluster, tmp_path / "sweep1.log", *args)
    try:
        # Preemption as submitit signals it (SLURM sends the same before a time limit)
        wait_until(slurm_cluster, lambda: last_iteration(gn) >= LOG_PERIOD - 1, "gn at iteration 19", sweep)
        array = job_id(gn).split("_")[0]
        slurm_cluster.run("scancel", "--signal=USR2", job_id(gn))
        wait_until(slurm_cluster, lambda: events(gn, "preempted"), "gn preempted", sweep)
        # submitit requeued it: it resumes; then the whole sweep is cancelled
        wait_until(slurm_cluster, lambda: last_iteration(gn) >= 2 * LOG_PERIOD - 1 and events(bn, "end"),
                   "gn resumed to iteration 39, bn finished", sweep)
        slurm_cluster.run("scancel", array)
        sweep.wait(timeout=120)  # not waiting for jobs that will never write a result
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode != 0
    no_job_left(slurm_cluster)

    [(_, received)], (stopped, cancelled) = signal_iterations(gn, "SIGUSR2"), events(gn, "preempted")
    # the checkpoint was written at the iteration the signal arrived at, before the requeue
    assert stopped["iteration"] - 1 - received <= 1, (received, stopped)
    [requeued] = requeue_times(gn)
    assert (gn / f"model_{stopped['iteration'] - 1:07d}.pth").stat().st_mtime <= requeued
    assert f"resuming from iteration {stopped['iteration']}" in (gn / "sweep.log").read_text()
    assert (gn / f"model_{cancelled['iteration'] - 1:07d}.pth").is_file()
    assert cancelled["iteration"] > 2 * LOG_PERIOD - 1
    assert json.loads((gn / "metrics.json").read_text())["status"] == "running"  # resumable, not failed
    finished_bn = (bn / "metrics.json").read_text()
    assert json.loads(finished_bn)["status"] == "finished"

    # Re-running the sweep keeps what finished and resumes the rest, from its last iteration
    sweep = start_sweep(slurm_cluster, tmp_path / "sweep2.log", *args)
    wait_until(slurm_cluster, lambda: sweep.poll() is not None, "the second sweep to end", timeout=300)
    console = (tmp_path / "sweep2.log").read_text()
    assert sweep.returncode == 0, console[-3000:]
    assert (bn / "metrics.json").read_text() == finished_bn and events(bn, "skip")
    metrics = json.loads((gn / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["resumed_from_iter"] == cancelled["iteration"]
    assert {e["config_hash"] for e in events(gn, "start")} == {metrics["config_hash"]}
    assert "| gn |" in (tmp_path / "results.md").read_text() and "| bn |" in (tmp_path / "results.md").read_text()
    # without accounting: one line, not submitit's warning at every poll
    assert console.count("job states come from squeue instead") == 1 and "Bypassing sacct" not in console
    no_job_left(slurm_cluster)


def training_processes(cluster) -> list:
    """The cluster's training processes (Detectron2's launch workers), not the jobs' own processes."""
    def cmdline(pid):
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""
    return [pid for pid in cluster.job_processes() if b"spawn_main" in cmdline(pid)]


def test_two_node_run_survives_a_lost_node_and_its_time_limit(slurm_cluster, tmp_path):
    # README's multi-node form: one task per node, machine rank and rendezvous from SLURM;
    # submitit's signal named by SUBMITIT_PREEMPT_SIGNAL.
    env = {"SUBMITIT_PREEMPT_SIGNAL": "HUP"}
    args = [*LAUNCHER, "hydra.launcher.nodes=2", "hydra.launcher.timeout_min=3", "hydra.launcher.signal_delay_s=60",
            "hydra.launcher.max_num_timeout=1", "num_machines=2", "num_gpus=1", "norm=gn", "ims_per_gpu=1", *TINY,
            "schedule.checkpoint_period=10", "schedule.max_iter=44", "schedule.steps=[40]", f"output_dir={tmp_path}"]
    run_dir, log = tmp_path / "gn_ims1_seed0", tmp_path / "gn_ims1_seed0" / "sweep.log"
    sweep = start_sweep(slurm_cluster, tmp_path / "sweep1.log", *args, env=env)
    try:
        # A node lost: the job's processes on n2 killed mid-run, after the checkpoint at iteration 19
        wait_until(slurm_cluster, lambda: last_iteration(run_dir) >= LOG_PERIOD - 1, "iteration 19", sweep)
        lost = slurm_cluster.job_processes("n2")
        assert lost
        for pid in lost:
            os.kill(pid, signal.SIGKILL)
        sweep.wait(timeout=120)  # bounded: nothing waits for the lost node
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode != 0
    no_job_left(slurm_cluster)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # resumable, with the reason (issue 31): "running" until a sweep resumes it
    assert metrics["status"] == "running" and "by peer" in metrics["status_detail"], metrics["status_detail"]
    checkpoint = (run_dir / "last_checkpoint").read_text()
    assert checkpoint == f"model_{LOG_PERIOD - 1:07d}.pth", checkpoint

    sweep = start_sweep(slurm_cluster, tmp_path / "sweep2.log", *args, env=env)
    try:
        # the re-run resumes it on both nodes
        wait_until(slurm_cluster, lambda: log.read_text().count(f"resuming from iteration {LOG_PERIOD}") == 2,
                   "both nodes resumed from the checkpoint", sweep)
        # Its time limit ends mid-run: shortened so that SLURM signals at its next 30 s timer,
        # the training paused meanwhile (SIGSTOP: the signal waits for it).
        wait_until(slurm_cluster, lambda: last_iteration(run_dir) >= 2 * LOG_PERIOD - 1, "iteration 39", sweep)
        workers = training_processes(slurm_cluster)
        assert len(workers) == 2, workers  # one per node
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        slurm_cluster.end_time_limit_soon(job_id(run_dir))
        wait_until(slurm_cluster, lambda: log.read_text().count("received SIGHUP:") == 2,
                   "SLURM's time-limit signal on both nodes", sweep, timeout=120)
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        # submitit requeues it, once the checkpoint is written; the requeued job (a new time
        # limit: the test's) resumes on both nodes and finishes
        wait_until(slurm_cluster, lambda: sweep.poll() is not None, "the second sweep to end", time_limit=10)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    console = (tmp_path / "sweep2.log").read_text()
    assert sweep.returncode == 0, console[-3000:]
    stopped = events(run_dir, "preempted")[-1]["iteration"]  # the time limit's (the lost node's came first)
    # both nodes got the signal and stopped at the same iteration, the one it came at
    received = signal_iterations(run_dir, "SIGHUP")
    assert {rank for rank, _ in received} == {0, 1} and stopped - 1 - max(i for _, i in received) <= 1, received
    assert log.read_text().count(f"resuming from iteration {stopped}") == 2
    [requeued] = requeue_times(run_dir)
    assert (run_dir / f"model_{stopped - 1:07d}.pth").stat().st_mtime <= requeued
    submitit_log = "".join(p.read_text() for p in tmp_path.glob(".submitit/*/*_0_log.out"))
    assert "this job is timed-out" in submitit_log and "Requeued job" in submitit_log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["num_machines"] == 2 and metrics["total_batch"] == 2
    assert metrics["resumed_from_iter"] == stopped
    assert {e["config_hash"] for e in events(run_dir, "start")} == {metrics["config_hash"]}
    assert "| gn |" in (tmp_path / "results.md").read_text()
    no_job_left(slurm_cluster)
