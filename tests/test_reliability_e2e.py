"""A finished sweep run whose files are damaged afterwards, and a disk that fills up during
training: real sweeps of the tiny model (tools/sweep.py), real file damage, a real file-size
limit (the kernel refuses the write as it would on a full disk)."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SHORT_SWEEP, run_tool

from frn_det.data.synthetic import ensure_shapes_dataset
from frn_det.sweep.events import read_events

pytestmark = pytest.mark.slow

RUN = "gn_ims2_seed0"
ARGS = ["hydra.mode=RUN", "norm=gn", *SHORT_SWEEP, "schedule.checkpoint_period=10"]  # checkpoints 9, 19, final


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run (checkpoints at 9, 19 and final; its report and bootstrap cache)."""
    out = tmp_path_factory.mktemp("finished")
    run_tool("sweep.py", *ARGS, f"output_dir={out}")
    return out


def cut(path, keep: float = 0.5) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return data[: int(len(data) * keep)]


def test_a_finished_run_whose_files_were_damaged_is_named_and_recovered(finished, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    run_dir = out / RUN
    metrics = cut(run_dir / "metrics.json")  # the result summary
    cut(run_dir / "model_final.pth")  # the last checkpoint (no zip directory left)
    [npz] = run_dir.glob("bootstrap_*.npz")
    cut(npz)  # the report's cache: a BadZipFile stopped the report before
    for log in ("events.jsonl", "training_metrics.json"):  # append-only logs with a torn last line
        with open(run_dir / log, "a") as f:
            f.write('{"time": 17')

    proc = run_tool("sweep.py", *ARGS, f"output_dir={out}")
    text = proc.stdout + proc.stderr + (run_dir / "sweep.log").read_text()
    [moved] = run_dir.glob("metrics.json.damaged-*")
    assert moved.read_bytes() == metrics  # set aside, not deleted
    assert f"{run_dir / 'metrics.json'} is damaged" in text and moved.name in text
    assert f"resuming from {run_dir / 'model_0000019.pth'}" in text and f"{run_dir / 'model_final.pth'} (" in text
    assert f"{npz} is damaged" in text and "rebuilding it" in text
    assert f"{run_dir / 'events.jsonl'} ended in a partial line" in text
    assert f"{run_dir / 'training_metrics.json'} ended in a partial line" in text

    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "finished" and record["resumed_from_iter"] == 20 and record["iterations"] == 24
    assert isinstance(record["AP"], float)
    for log in ("events.jsonl", "training_metrics.json"):  # every line parses again
        assert all(json.loads(line) for line in (run_dir / log).read_text().splitlines())
    assert [e["event"] for e in read_events(run_dir)][-2:] == ["start", "end"]
    with np.load(npz) as data:  # rebuilt whole
        assert data["samples_AP"].shape == (1000,)
    assert (out / "results.md").is_file()


def limited(max_bytes: int):
    """In the child, before exec: files over max_bytes cannot be written (EFBIG), like a full disk."""
    def apply():
        os.setsid()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Python ignores it too; the shell would not
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_a_disk_that_fills_up_fails_the_run_with_the_path_and_keeps_finished_results(finished, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    ensure_shapes_dataset()  # the dataset's files are over the limit: generated before it
    before = {p: p.read_bytes() for p in (out / RUN).iterdir()
              if p.is_file() and p.name not in ("sweep.log", "events.jsonl", ".lock")}
    # 8 MB: logs, records and the report fit; the tiny model's checkpoints (26 MB) do not.
    grid = ["-m", "ims_per_gpu=2", "seed=0,1", *[a for a in ARGS if a not in ("hydra.mode=RUN", "seed=0")]]
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "sweep.py"), *grid, f"output_dir={out}"], cwd=REPO,
                          capture_output=True, text=True, timeout=900, preexec_fn=limited(8 << 20))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]  # a failed run fails the sweep, after the others
    failed = json.loads((out / "gn_ims2_seed1" / "metrics.json").read_text())
    assert failed["status"] == "failed" and failed["AP"] is None
    path = out / "gn_ims2_seed1" / "model_0000009.pth"
    assert failed["status_detail"].startswith(f"CheckpointError: could not write checkpoint {path} (File too large)")
    assert "1 run(s) failed" in log and "gn_ims2_seed1: CheckpointError" in log
    assert not list((out / "gn_ims2_seed1").glob("*.pth")) and not list((out / "gn_ims2_seed1").glob(".*.tmp"))
    # the finished run: skipped, every file as it was
    assert {p: p.read_bytes() for p in before} == before
    assert json.loads((out / RUN / "metrics.json").read_text())["status"] == "finished"
