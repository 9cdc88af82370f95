"""tools/sweep.py ... plan=true (frn_det/sweep/planning/plan.py): the grid, each job's state and the
arithmetic of its cost, on a grid with known figures."""
import json

import pytest
import yaml
from harness import run_tool
from hydra import compose, initialize_config_dir

from frn_det.sweep.planning.d2config import CONFIGS_DIR, build_detectron2_config, config_hash
from frn_det.sweep.planning.plan import REFERENCE_RATIOS, REFERENCE_TIMES, make_plan, price, render

# cpu_short: 150 iterations at a reference batch of 8, so 1 image -> 1200 iterations, 4 -> 300.
GRID = ["norm=bn,frn", "ims_per_gpu=1,4", "seed=0"]  # one seed: the default grid has three


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "s_per_iter.yaml"
    path.write_text(yaml.safe_dump([
        {"model": "tiny_cpu", "device": "cpu", "norm": "bn", "ims_per_gpu": 2, "s_per_iter": 1.0,
         "source": "bn figure"},
        {"model": "tiny_cpu", "device": "cuda", "norm": "bn", "ims_per_gpu": 2, "s_per_iter": 99.0, "source": "gpu"},
    ]))
    return path


@pytest.fixture
def ratios(tmp_path):
    path = tmp_path / "norm_cost_ratios.yaml"
    entry = {"model": "tiny_cpu", "device": "cpu", "ims_per_gpu": 2}
    path.write_text(yaml.safe_dump([
        {**entry, "precision": "fp32", "ratios": {"bn": 1.0, "frn": 3.0, "gn": 1.2}, "source": "ratios fp32 2"},
        {**entry, "precision": "fp32", "ims_per_gpu": 8, "ratios": {"frn": 2.0}, "source": "ratios fp32 8"},
        {**entry, "precision": "amp", "ratios": {"frn": 1.5}, "source": "ratios amp 2"},
        {**entry, "model": "other", "precision": "fp32", "ratios": {"cbn": 9.0}, "source": "another model"},
    ]))
    return path


def _hash(out, *overrides):
    with initialize_config_dir(config_dir=str(CONFIGS_DIR / "sweep"), version_base="1.3"):
        job = compose("sweep", overrides=[f"output_dir={out}", *overrides])
    cfg, _ = build_detectron2_config(job, out / "x")
    return config_hash(cfg)


def test_reference_figures_scale_with_images_per_worker(tmp_path, table, ratios):
    rows = {r.run: r for r in make_plan([f"output_dir={tmp_path}", *GRID], table, ratios)}
    assert sorted(rows) == ["bn_ims1_seed0", "bn_ims4_seed0", "frn_ims1_seed0", "frn_ims4_seed0"]
    bn1, bn4, frn1, frn4 = (rows[k] for k in sorted(rows))
    assert (bn1.total_batch, bn1.max_iter, bn1.images_seen, bn1.lr) == (1, 1200, 1200, pytest.approx(0.0025))
    assert (bn4.total_batch, bn4.max_iter, bn4.images_seen, bn4.lr) == (4, 300, 1200, pytest.approx(0.01))
    # bn: 1.0 s/iter at 2 images -> 0.5 s per image; frn: bn's x its ratio at the nearest
    # images per GPU (1 -> the 2-image entry, 3.0; 4 -> a tie between 2 and 8: the fewer, 3.0)
    assert [r.s_per_iter for r in (bn1, bn4, frn1, frn4)] == pytest.approx([0.5, 2.0, 1.5, 6.0])
    assert [r.hours * 3600 for r in (bn1, bn4, frn1, frn4)] == pytest.approx([600, 600, 1800, 1800])
    assert all(r.state == "new" and r.source == "bn figure" for r in rows.values())
    assert [(r.ratio, r.ratio_source) for r in (bn1, bn4)] == [(None, "")] * 2
    assert [(r.ratio, r.ratio_source) for r in (frn1, frn4)] == [(3.0, "ratios fp32 2")] * 2
    text = render(rows.values())
    assert "total: 1.33 GPU-hours" in text  # 4800 s
    assert "longest job: frn_ims1_seed0, 0.5 hours on 1 workers" in text
    frn_line = next(line for line in text.splitlines() if line.startswith("frn_ims4_seed0"))
    assert frn_line.split()[6:9] == ["6.000", "3.00", "1,2"]  # s/iter, x bn, footnotes
    assert "  [1] bn figure" in text and "  [2] ratios fp32 2" in text


def test_finished_and_resumable_runs_and_measured_figures(tmp_path, table, ratios):
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

    rows = {r.run: r for r in make_plan([f"output_dir={tmp_path}", *GRID], table, ratios)}
    assert rows["bn_ims1_seed0"].state == "finished" and rows["bn_ims1_seed0"].remaining_iter == 0
    assert rows["frn_ims4_seed0"].state == "resumable@100" and rows["frn_ims4_seed0"].remaining_iter == 200
    assert rows["bn_ims4_seed0"].state == "new (replaces a stale result)"
    assert rows["bn_ims4_seed0"].remaining_iter == 300
    # bn now measured here: 0.8 s/iter at 1 image, so 3.2 s/iter at 4 images
    assert rows["bn_ims4_seed0"].s_per_iter == pytest.approx(3.2)
    assert rows["bn_ims4_seed0"].source.startswith("measured")
    # frn: no run of its own; the measured bn figure (0.8 s per image) times frn's ratio 3.0
    assert rows["frn_ims1_seed0"].s_per_iter == pytest.approx(2.4)
    assert rows["frn_ims1_seed0"].source == rows["bn_ims4_seed0"].source
    assert (rows["frn_ims1_seed0"].ratio, rows["frn_ims1_seed0"].ratio_source) == (3.0, "ratios fp32 2")
    left = 300 * 3.2 + 1200 * 2.4 + 200 * 9.6  # bn_ims4, frn_ims1, frn_ims4 (resumed)
    assert sum(r.hours for r in rows.values()) * 3600 == pytest.approx(left)
    assert "3 to train, 1 done or skipped" in render(rows.values())


def test_plan_on_the_command_line_trains_and_submits_nothing(tmp_path):
    proc = run_tool("sweep.py", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                    "model=retinanet_r50_fpn", "dataset=coco2017", "schedule=paper", "num_gpus=8",
                    "norm=bn,frn", "ims_per_gpu=2,8", "seed=0", f"output_dir={tmp_path}", "plan=true")
    lines = proc.stdout.splitlines()
    assert any(line.startswith("bn_ims2_seed0") and "500,000" in line and "8,000,000" in line for line in lines)
    # bn: 0.200 s/iter at 2 images per GPU (model zoo, 8x V100): 500k iterations x 0.2 s = 27.8 h,
    # x 8 GPUs = 222.2 GPU-h, at 2 and at 8 images; frn: bn's times its H200 ratio to bn (1.44 at
    # 2 images, 1.13 at 8, configs/references/norm_cost_ratios.yaml): 320.0 + 251.1 GPU-h
    assert "total: 1,015.6 GPU-hours" in proc.stdout
    assert "longest job: frn_ims2_seed0, 40.0 hours on 8 workers" in proc.stdout
    frn2 = next(line for line in lines if line.startswith("frn_ims2_seed0")).split()
    assert frn2[6:9] == ["0.288", "1.44", "1,2"]
    assert "  [1] Detectron2 MODEL_ZOO.md, RetinaNet R50-FPN 1x: 0.200 s/iter" in proc.stdout
    assert "  [2] H200, RetinaNet R50-FPN 800 px, 2 images/GPU, fp32 (docs/performance.md" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no run folder, no .submitit


def _finished_run(out, name, norm, ims, s_per_iter, device="cpu", amp=False):
    run = out / name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"status": "finished", "model": "tiny_cpu", "norm": norm,
                                                   "ims_per_gpu": ims, "s_per_iter": s_per_iter,
                                                   "config_hash": "0123456789ab"}))
    (run / "config.yaml").write_text(yaml.safe_dump({"MODEL": {"DEVICE": device}, "SOLVER": {"AMP": {"ENABLED": amp}}}))


def test_each_norm_priced_at_bn_times_its_ratio_with_the_source_named(tmp_path, table, ratios):
    def priced(norm, amp=False, ims=2, out=tmp_path / "empty", t=table):
        rate, source, ratio, ratio_source = price("tiny_cpu", norm, "cpu", amp, ims, out, t, ratios)
        return round(rate, 6), source, ratio, ratio_source

    assert priced("bn") == (0.5, "bn figure", None, "")
    # the job's precision first, then the nearest images per GPU (the fewer at a tie)
    assert priced("frn") == (1.5, "bn figure", 3.0, "ratios fp32 2")
    assert priced("frn", ims=6) == (1.0, "bn figure", 2.0, "ratios fp32 8")
    assert priced("frn", ims=5) == (1.5, "bn figure", 3.0, "ratios fp32 2")
    assert priced("frn", amp=True, ims=8) == (0.75, "bn figure", 1.5, "ratios amp 2")
    assert priced("gn", amp=True) == (0.6, "bn figure", 1.2, "ratios fp32 2; no amp figure, the fp32 one")
    assert priced("gn+relu") == (0.6, "bn figure", 1.2, "ratios fp32 2")  # the activation axis: its norm's ratio
    # no ratio for this model and device (only another model's): bn's figure, said to be a lower bound
    assert priced("cbn") == (0.5, "bn figure", None,
                             "no cost ratio known for cbn on tiny_cpu (cpu): priced at bn's s/iter, a lower bound")
    # a line of the norm's own in s_per_iter.yaml wins over bn x ratio
    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump(yaml.safe_load(table.read_text()) + [
        {"model": "tiny_cpu", "device": "cpu", "norm": "frn", "ims_per_gpu": 4, "s_per_iter": 8.0, "source": "frn's"}]))
    assert priced("frn", t=own) == (2.0, "frn's", None, "")

    # finished runs in the folder: bn's measured figure is the base; frn's own run is its price,
    # with its measured ratio to bn; runs of another precision or device do not count
    out = tmp_path / "out"
    _finished_run(out, "bn_a", "bn", 2, 0.4)
    _finished_run(out, "bn_b", "bn", 4, 1.2)  # median of 0.2 and 0.3 s per image: 0.25
    _finished_run(out, "frn_gpu", "frn", 2, 0.1, device="cuda")
    _finished_run(out, "gn_amp", "gn", 2, 0.1, amp=True)
    where = f"finished tiny_cpu {{}} runs in {out}"
    assert priced("frn", out=out) == (0.75, "measured: " + where.format("bn"), 3.0, "ratios fp32 2")
    assert priced("gn", out=out) == (0.3, "measured: " + where.format("bn"), 1.2, "ratios fp32 2")
    assert priced("gn", amp=True, out=out) == (0.05, "measured: " + where.format("gn") + " (AMP)", None,
                                               "measured: " + where.format("gn and bn") + " (AMP)")
    _finished_run(out, "frn_a", "frn", 2, 0.8)
    rate, source, ratio, ratio_source = priced("frn", out=out)
    assert (rate, source, ratio_source) == (0.4, "measured: " + where.format("frn"),
                                            "measured: " + where.format("frn and bn"))
    assert ratio == pytest.approx(1.6)  # 0.4 / 0.25


@pytest.mark.parametrize("model, amp, ims, ratio, source", [
    ("retinanet_r50_fpn", False, 2, 1.44, "H200, RetinaNet R50-FPN 800 px, 2 images/GPU, fp32"),
    ("retinanet_r50_fpn", True, 2, 1.47, "H200, RetinaNet R50-FPN 800 px, 2 images/GPU, AMP"),
    ("retinanet_r50_fpn", True, 16, 1.06, "H200, RetinaNet R50-FPN 800 px, 8 images/GPU, AMP"),
    ("mask_rcnn_r50_fpn", False, 2, 1.49, "H200, Mask R-CNN R50-FPN 800 px, 2 images/GPU, fp32"),
    ("mask_rcnn_r50_fpn", True, 8, 1.59, "H200, Mask R-CNN R50-FPN 800 px, 2 images/GPU, AMP"),
])
def test_shipped_tables_price_frn_at_its_measured_h200_ratio(tmp_path, model, amp, ims, ratio, source):
    zoo = {"retinanet_r50_fpn": 0.100, "mask_rcnn_r50_fpn": 0.1305}[model]  # per image, 8x V100
    rate, base_source, got_ratio, ratio_source = price(model, "frn", "cuda", amp, ims, tmp_path,
                                                       REFERENCE_TIMES, REFERENCE_RATIOS)
    assert base_source.startswith("Detectron2 MODEL_ZOO.md")
    assert (got_ratio, rate) == (ratio, pytest.approx(zoo * ratio))
    assert ratio_source.startswith(source) and "docs/performance.md" in ratio_source
