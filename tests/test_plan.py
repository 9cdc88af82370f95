"""tools/sweep.py ... plan=true (frn_det/sweep/plan.py): the grid, each job's state and the
arithmetic of its cost, on a grid with known figures."""
import json

import pytest
import yaml
from conftest import run_tool
from hydra import compose, initialize_config_dir

from frn_det.sweep.d2config import CONFIGS_DIR, build_detectron2_config, config_hash
from frn_det.sweep.plan import make_plan, render

# cpu_short: 150 iterations at a reference batch of 8, so 1 image -> 1200 iterations, 4 -> 300.
GRID = ["norm=bn,frn", "ims_per_gpu=1,4", "seed=0"]  # one seed: the default grid has three


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "s_per_iter.yaml"
    path.write_text(yaml.safe_dump([
        {"model": "tiny_cpu", "device": "cpu", "norm": "bn", "ims_per_gpu": 2, "s_per_iter": 1.0,
         "source": "bn figure"},
        {"model": "tiny_cpu", "device": "cpu", "norm": "*", "ims_per_gpu": 2, "s_per_iter": 3.0, "source": "any norm"},
        {"model": "tiny_cpu", "device": "cuda", "norm": "*", "ims_per_gpu": 2, "s_per_iter": 99.0, "source": "gpu"},
    ]))
    return path


def _hash(out, *overrides):
    with initialize_config_dir(config_dir=str(CONFIGS_DIR / "sweep"), version_base="1.3"):
        job = compose("sweep", overrides=[f"output_dir={out}", *overrides])
    cfg, _ = build_detectron2_config(job, out / "x")
    return config_hash(cfg)


def test_reference_figures_scale_with_images_per_worker(tmp_path, table):
    rows = {r.run: r for r in make_plan([f"output_dir={tmp_path}", *GRID], table)}
    assert sorted(rows) == ["bn_ims1_seed0", "bn_ims4_seed0", "frn_ims1_seed0", "frn_ims4_seed0"]
    bn1, bn4, frn1, frn4 = (rows[k] for k in sorted(rows))
    assert (bn1.total_batch, bn1.max_iter, bn1.images_seen, bn1.lr) == (1, 1200, 1200, pytest.approx(0.0025))
    assert (bn4.total_batch, bn4.max_iter, bn4.images_seen, bn4.lr) == (4, 300, 1200, pytest.approx(0.01))
    # bn: 1.0 s/iter at 2 images -> 0.5 s per image; frn takes the "*" line: 1.5 s per image
    assert [r.s_per_iter for r in (bn1, bn4, frn1, frn4)] == pytest.approx([0.5, 2.0, 1.5, 6.0])
    assert [r.hours * 3600 for r in (bn1, bn4, frn1, frn4)] == pytest.approx([600, 600, 1800, 1800])
    assert all(r.state == "new" and r.source in ("bn figure", "any norm") for r in rows.values())
    text = render(rows.values())
    assert "total: 1.33 GPU-hours" in text  # 4800 s
    assert "longest job: frn_ims1_seed0, 0.5 hours on 1 workers" in text


def test_finished_and_resumable_runs_and_measured_figures(tmp_path, table):
    bn1 = tmp_path / "bn_ims1_seed0"
    bn1.mkdir()
    (bn1 / "metrics.json").write_text(json.dumps({
        "status": "finished", "config_hash": _hash(tmp_path, "norm=bn", "ims_per_gpu=1"), "model": "tiny_cpu",
        "norm": "bn", "ims_per_gpu": 1, "s_per_iter": 0.8}))
    (bn1 / "config.yaml").write_text("MODEL:\n  DEVICE: cpu\n")
    frn4 = tmp_path / "frn_ims4_seed0"
    frn4.mkdir()
    (frn4 / "metrics.json").write_text(json.dumps({
        "status": "running", "config_hash": _hash(tmp_path, "norm=frn", "ims_per_gpu=4")}))
    (frn4 / "last_checkpoint").write_text("model_0000099.pth")
    gn = tmp_path / "bn_ims4_seed0"  # a result of another config: trained anew
    gn.mkdir()
    (gn / "metrics.json").write_text(json.dumps({"status": "finished", "config_hash": "0123456789ab"}))
    (gn / "last_checkpoint").write_text("model_0000099.pth")

    rows = {r.run: r for r in make_plan([f"output_dir={tmp_path}", *GRID], table)}
    assert rows["bn_ims1_seed0"].state == "finished" and rows["bn_ims1_seed0"].remaining_iter == 0
    assert rows["frn_ims4_seed0"].state == "resumable@100" and rows["frn_ims4_seed0"].remaining_iter == 200
    assert rows["bn_ims4_seed0"].state == "new (replaces a stale result)"
    assert rows["bn_ims4_seed0"].remaining_iter == 300
    # bn now measured here: 0.8 s/iter at 1 image, so 3.2 s/iter at 4 images
    assert rows["bn_ims4_seed0"].s_per_iter == pytest.approx(3.2)
    assert rows["bn_ims4_seed0"].source.startswith("measured")
    left = 300 * 3.2 + 1200 * 1.5 + 200 * 6.0  # bn_ims4, frn_ims1, frn_ims4 (resumed)
    assert sum(r.hours for r in rows.values()) * 3600 == pytest.approx(left)
    assert "3 to train, 1 done or skipped" in render(rows.values())


def test_plan_on_the_command_line_trains_and_submits_nothing(tmp_path):
    proc = run_tool("sweep.py", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                    "model=retinanet_r50_fpn", "dataset=coco2017", "schedule=paper", "num_gpus=8",
                    "norm=bn,frn", "ims_per_gpu=2,8", "seed=0", f"output_dir={tmp_path}", "plan=true")
    lines = proc.stdout.splitlines()
    assert any(line.startswith("bn_ims2_seed0") and "500,000" in line and "8,000,000" in line for line in lines)
    # 0.200 s/iter at 2 images per GPU (model zoo, 8x V100): 500k iterations x 0.2 s = 27.8 h, x 8 GPUs
    assert "total: 888.9 GPU-hours" in proc.stdout
    assert "longest job: bn_ims2_seed0, 27.8 hours on 8 workers" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no run folder, no .submitit
