"""The package works installed from a wheel, away from the checkout: configs ship inside it."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from harness import REPO

pytestmark = pytest.mark.slow


def _run(cmd, cwd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=900, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_a_wheel_installed_in_a_fresh_venv_sweeps_and_trains_from_another_folder(tmp_path):
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            tmp_path / "dist",
            REPO,
        ],
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("frn_det-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    # torch, Detectron2, Hydra, ... from this environment (behind the venv's own packages),
    # but not its editable frn_det
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "reuse_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheel],
         cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": ""}
    where = _run([venv / "bin" / "python", "-c", "import frn_det; print(frn_det.__file__)"], cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout  # the wheel's copy, not the checkout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    short = ["seed=0", "ims_per_gpu=2", "schedule.reference_batch=2", "schedule.max_iter=4", "schedule.steps=[3]",
             "schedule.warmup_iters=1", "dataset.tune=[]", "threads=1"]
    _run([venv / "bin" / "frn-det-sweep", "hydra.mode=RUN", "norm=gn", f"output_dir={elsewhere / 'sweep'}", *short],
         cwd=elsewhere, env=env)
    m = json.loads((elsewhere / "sweep" / "gn_ims2_seed0" / "metrics.json").read_text())
    assert m["status"] == "finished" and m["iterations"] == 4 and isinstance(m["AP"], float)
    assert (elsewhere / "sweep" / "results.md").is_file()
    _run([venv / "bin" / "frn-det-train", "--config-file", "tiny_retinanet_cpu.yaml", "SOLVER.MAX_ITER", 2,
          "SOLVER.IMS_PER_BATCH", 2, "DATASETS.TEST", "()", "OUTPUT_DIR", elsewhere / "train"], cwd=elsewhere, env=env)
    assert (elsewhere / "train" / "model_final.pth").is_file()
