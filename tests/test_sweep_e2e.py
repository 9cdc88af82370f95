"""Real Hydra multiruns of tools/sweep.py on the built-in dataset (tiny model, few iterations)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_tool

pytestmark = pytest.mark.slow

# 2 images per worker, 24 iterations, evaluation at the end.
SHORT = ["schedule.reference_batch=2", "schedule.max_iter=24", "schedule.steps=[20]", "schedule.warmup_iters=5"]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def two_point_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    proc = run_tool("sweep.py", "-m", "norm=bn,frn", "ims_per_gpu=2", f"output_dir={out}", *SHORT)
    return out, proc.stdout + proc.stderr


def test_multirun_trains_evaluates_and_reports_both_rows(two_point_sweep):
    out, log = two_point_sweep
    for norm in ("bn", "frn"):
        m = metrics(out / f"{norm}_ims2_seed0")
        assert m["status"] == "finished" and m["iterations"] == 24 and m["images_seen"] == 48
        assert isinstance(m["AP"], float) and 0.0 <= m["AP"] <= 100.0
        assert m["total_batch"] == 2 and m["scaling"]["lr"] == pytest.approx(0.02)
        assert len(m["config_hash"]) == 12 and m["versions"]["detectron2"]
        assert (out / f"{norm}_ims2_seed0" / "config.yaml").is_file()
        assert (out / f"{norm}_ims2_seed0" / ".hydra" / "overrides.yaml").is_file()
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["norm"] for r in results) == ["bn", "frn"]
    md = (out / "results.md").read_text()
    frn_row = next(line for line in md.splitlines() if line.startswith("| frn |"))
    assert f"{metrics(out / 'frn_ims2_seed0')['AP']:.1f}" in frn_row
    assert (out / "ap_vs_ims_per_gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[sweep] finished job 2/2" in log


def test_rerunning_the_sweep_trains_nothing(two_point_sweep):
    out, _ = two_point_sweep
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    proc = run_tool("sweep.py", "-m", "norm=bn,frn", "ims_per_gpu=2", f"output_dir={out}", *SHORT)
    log = proc.stdout + proc.stderr
    assert log.count("already finished") == 2 and "Starting training" not in log
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == before


def test_changed_config_moves_the_old_result_aside(two_point_sweep, tmp_path):
    out, _ = two_point_sweep
    old = metrics(out / "frn_ims2_seed0")
    run_tool("sweep.py", "norm=frn", "ims_per_gpu=2", f"output_dir={out}", *SHORT, "opts=[MODEL.FRN.EPS,1e-5]")
    new = metrics(out / "frn_ims2_seed0")
    assert new["config_hash"] != old["config_hash"] and new["status"] == "finished"
    stale = list((out / "frn_ims2_seed0").glob(f"stale-{old['config_hash']}-*/metrics.json"))
    assert len(stale) == 1 and json.loads(stale[0].read_text()) == old


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    args = [sys.executable, str(REPO / "tools" / "sweep.py"), "norm=gn", f"output_dir={tmp_path}", *SHORT,
            "schedule.max_iter=40", "schedule.checkpoint_period=10", "report=false"]
    run_dir = tmp_path / "gn_ims2_seed0"
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 600
        while not (run_dir / "last_checkpoint").exists():
            assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert metrics(run_dir)["status"] == "running"  # the killed run left no result behind
    checkpoint = (run_dir / "last_checkpoint").read_text().strip()
    run_tool("sweep.py", *args[2:])
    m = metrics(run_dir)
    assert m["status"] == "finished" and m["iterations"] == 40
    assert m["resumed_from_iter"] == int(checkpoint.split("_")[1].split(".")[0]) + 1 > 1


def test_diverged_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    run_tool("sweep.py", "-m", "norm=frn", "schedule.base_lr=0.02,1e9", f"output_dir={tmp_path}", *SHORT,
             "hydra.sweep.subdir=lr${schedule.base_lr}")
    diverged, finished = metrics(tmp_path / "lr1000000000.0"), metrics(tmp_path / "lr0.02")
    assert diverged["status"] == "diverged" and diverged["AP"] is None
    assert 0 <= diverged["diverged_at_iter"] < 24 and "non-finite" in diverged["status_detail"].lower() + " non-finite"
    assert finished["status"] == "finished" and isinstance(finished["AP"], float)
    assert f"diverged@{diverged['diverged_at_iter']}" in (tmp_path / "results.md").read_text()


def test_submitit_local_launcher_runs_a_job(tmp_path):
    run_tool("sweep.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15",
             "norm=frn", f"output_dir={tmp_path}", *SHORT)
    m = metrics(tmp_path / "frn_ims2_seed0")
    assert m["status"] == "finished" and isinstance(m["AP"], float)
    assert list((tmp_path / ".submitit").glob("*/*_log.out")), "the job did not run through submitit"
