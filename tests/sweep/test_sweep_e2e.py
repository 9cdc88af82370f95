"""Real Hydra multiruns of tools/sweep.py on the built-in dataset (tiny model, few iterations)."""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from harness import REPO, SHORT_SWEEP, kill_sweep_at_first_checkpoint, run_tool

from frn_det.data.synthetic import ensure_shapes_dataset

pytestmark = pytest.mark.slow

WITH_TUNE = SHORT_SWEEP[:-1]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def two_point_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    proc = run_tool("sweep.py", "-m", "norm=bn,frn", "ims_per_gpu=2", f"output_dir={out}", *WITH_TUNE)
    return out, proc.stdout + proc.stderr


def test_multirun_trains_evaluates_and_reports_both_rows(two_point_sweep):
    out, log = two_point_sweep
    for norm in ("bn", "frn"):
        m = metrics(out / f"{norm}_ims2_seed0")
        assert m["status"] == "finished" and m["iterations"] == 24 and m["images_seen"] == 48
        assert isinstance(m["AP"], float) and 0.0 <= m["AP"] <= 100.0
        assert m["total_batch"] == 2 and m["scaling"]["lr"] == pytest.approx(0.02)
        # AP on the test split, and the tuning split evaluated too (the lr is chosen on it)
        assert m["test_dataset"] == "frn_shapes_val" and isinstance(m["tune"]["AP"], float)
        assert len(m["config_hash"]) == 12 and m["versions"]["detectron2"]
        assert (out / f"{norm}_ims2_seed0" / "config.yaml").is_file()
        assert (out / f"{norm}_ims2_seed0" / ".hydra" / "overrides.yaml").is_file()
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["norm"] for r in results) == ["bn", "frn"]
    md = (out / "results.md").read_text()
    frn_row = next(line for line in md.splitlines() if line.startswith("| frn |"))
    assert f"{metrics(out / 'frn_ims2_seed0')['AP']:.1f}" in frn_row
    assert (out / "ap_vs_ims_per_gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"\[sweep\] job 2/2 \w+_ims2_seed0: finished, AP \d", log), log[-2000:]


def test_rerunning_the_sweep_trains_nothing(two_point_sweep):
    out, _ = two_point_sweep
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    proc = run_tool("sweep.py", "-m", "norm=bn,frn", "ims_per_gpu=2", f"output_dir={out}", *WITH_TUNE)
    log = proc.stdout + proc.stderr
    assert log.count("already finished") == 2 and "Starting training" not in log
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == before


def test_changed_config_moves_the_old_result_aside(two_point_sweep, tmp_path):
    out, _ = two_point_sweep
    old = metrics(out / "frn_ims2_seed0")
    run_tool(
        "sweep.py",
        "hydra.mode=RUN",
        "norm=frn",
        "ims_per_gpu=2",
        f"output_dir={out}",
        *WITH_TUNE,
        "opts=[MODEL.FRN.EPS,1e-5]",
    )
    new = metrics(out / "frn_ims2_seed0")
    assert new["config_hash"] != old["config_hash"] and new["status"] == "finished"
    stale = list((out / "frn_ims2_seed0").glob(f"stale-{old['config_hash']}-*/metrics.json"))
    assert len(stale) == 1 and json.loads(stale[0].read_text()) == old


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    args = [
        "hydra.mode=RUN",
        "norm=gn",
        f"output_dir={tmp_path}",
        *SHORT_SWEEP,
        "schedule.max_iter=40",
        "schedule.checkpoint_period=10",
        "report=false",
    ]
    run_dir = tmp_path / "gn_ims2_seed0"
    kill_sweep_at_first_checkpoint(args, run_dir)
    assert metrics(run_dir)["status"] == "running"  # the killed run left no result behind
    checkpoint = (run_dir / "last_checkpoint").read_text().strip()
    run_tool("sweep.py", *args)
    m = metrics(run_dir)
    assert m["status"] == "finished" and m["iterations"] == 40
    assert m["resumed_from_iter"] == int(checkpoint.split("_")[1].split(".")[0]) + 1 > 1


def test_diverged_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    run_tool(
        "sweep.py",
        "-m",
        "norm=frn",
        "ims_per_gpu=2",
        "schedule.base_lr=0.02,1e9",
        f"output_dir={tmp_path}",
        *SHORT_SWEEP,
        "hydra.sweep.subdir=lr${schedule.base_lr}",
    )
    diverged, finished = metrics(tmp_path / "lr1000000000.0"), metrics(tmp_path / "lr0.02")
    assert diverged["status"] == "diverged" and diverged["AP"] is None
    assert 0 <= diverged["diverged_at_iter"] < 24 and "non-finite" in diverged["status_detail"].lower() + " non-finite"
    assert finished["status"] == "finished" and isinstance(finished["AP"], float)
    assert f"diverged@{diverged['diverged_at_iter']}" in (tmp_path / "results.md").read_text()


def test_submitit_local_launcher_runs_a_job(tmp_path):
    run_tool("sweep.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15",
             "norm=frn", "ims_per_gpu=2", f"output_dir={tmp_path}", *SHORT_SWEEP)
    m = metrics(tmp_path / "frn_ims2_seed0")
    assert m["status"] == "finished" and isinstance(m["AP"], float)
    assert list((tmp_path / ".submitit").glob("*/*_log.out")), "the job did not run through submitit"


def val_set_without_its_images(tmp_path: Path) -> str:
    """A dataset=custom register entry whose json and folder exist (the sweep's path checks
    pass) but whose image is missing: its run fails in its worker's dataset check."""
    images = tmp_path / "no_images"
    images.mkdir()
    json_file = tmp_path / "instances.json"
    json_file.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "gone.jpg", "width": 32, "height": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8], "area": 64, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "circle"}]}))
    return f"dataset.register=[[missing_val,{json_file},{images}]]"


def test_a_failed_run_fails_the_sweep_after_the_others_and_the_report(tmp_path):
    """Exit status policy: the other runs finish and the report is written, then exit 1.
    The report follows hydra.sweep.dir, not output_dir."""
    sweep_dir = tmp_path / "elsewhere"
    proc = run_tool("sweep.py", "-m", "norm=frn", "ims_per_gpu=2", f"output_dir={tmp_path / 'unused'}",
                    f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${dataset.test.0}",
                    val_set_without_its_images(tmp_path), "dataset.test=[frn_shapes_val],[missing_val]", *SHORT_SWEEP,
                    check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    assert metrics(sweep_dir / "frn_shapes_val")["status"] == "finished"
    failed = metrics(sweep_dir / "missing_val")
    assert failed["status"] == "failed" and failed["AP"] is None
    assert "gone.jpg" in failed["status_detail"]
    assert "1 run(s) failed" in log and "missing_val" in log
    results = json.loads((sweep_dir / "results.json").read_text())
    assert sorted(r["status"] for r in results) == ["failed", "finished"]
    assert not (tmp_path / "unused").exists()


def test_single_run_reports_in_its_own_hydra_run_dir(tmp_path):
    run_dir = tmp_path / "my_run"
    proc = run_tool("sweep.py", "hydra.mode=RUN", f"hydra.run.dir={run_dir}", f"output_dir={tmp_path / 'unused'}",
                    val_set_without_its_images(tmp_path), "dataset.test=[missing_val]", *SHORT_SWEEP, check=False)
    assert proc.returncode == 1
    assert metrics(run_dir)["status"] == "failed"
    assert "failed" in (run_dir / "results.md").read_text()


def stripped_copy(tmp_path: Path, split: str, num: int) -> tuple:
    """The first `num` images of a built-in split, with every optional COCO field removed."""
    from frn_det.data.synthetic import ShapesSpec, ensure_shapes_dataset

    json_file, image_root = ensure_shapes_dataset(ShapesSpec())[split]
    data = json.loads(Path(json_file).read_text())
    images = data["images"][:num]
    keep = {i["id"] for i in images}
    out_images = tmp_path / split
    out_images.mkdir()
    for image in images:
        (out_images / image["file_name"]).write_bytes((Path(image_root) / image["file_name"]).read_bytes())
    stripped = {
        "images": [{k: i[k] for k in ("id", "file_name", "width", "height")} for i in images],
        "annotations": [{k: a[k] for k in ("id", "image_id", "category_id", "bbox")}
                        for a in data["annotations"] if a["image_id"] in keep],
        "categories": [{k: c[k] for k in ("id", "name")} for c in data["categories"]],
    }
    out_json = tmp_path / f"{split}.json"
    out_json.write_text(json.dumps(stripped))
    return str(out_json), str(out_images)


def custom_dataset_args(train, val):
    return ["dataset=custom", "dataset.num_classes=4", "dataset.train=[mine_train]", "dataset.test=[mine_val]",
            f"dataset.register=[[mine_train,{train[0]},{train[1]}],[mine_val,{val[0]},{val[1]}]]"]


def test_dataset_without_optional_fields_trains_and_evaluates(tmp_path):
    """No iscrowd, area, segmentation, info, licenses or supercategory: filled where COCO needs them."""
    (train_json, train_images), (val_json, val_images) = (
        stripped_copy(tmp_path, "train", 40),
        stripped_copy(tmp_path, "val", 20),
    )
    # Given by path: the class count (4) comes from the json.
    args = ["dataset=coco_json", f"dataset.train_json={train_json}", f"dataset.train_images={train_images}",
            f"dataset.test_json={val_json}", f"dataset.test_images={val_images}"]
    proc = run_tool(
        "sweep.py", "hydra.mode=RUN", f"output_dir={tmp_path / 'out'}", *args, *WITH_TUNE
    )  # coco_json: no tune split given
    assert "NUM_CLASSES: 4" in (tmp_path / "out" / "frn_ims2_seed0" / "config.yaml").read_text()
    m = metrics(tmp_path / "out" / "frn_ims2_seed0")
    assert m["status"] == "finished" and isinstance(m["AP"], float)
    assert "filled iscrowd on" in proc.stdout + proc.stderr


def test_unreadable_image_mid_run_names_the_file_and_the_run_reruns(tmp_path):
    train, val = stripped_copy(tmp_path, "train", 8), stripped_copy(tmp_path, "val", 8)
    originals = {p: p.read_bytes() for p in Path(train[1]).glob("*.jpg")}
    for path, data in originals.items():  # corrupt after the (switched off) check would have run
        path.write_bytes(data[: len(data) // 3])
    args = ["hydra.mode=RUN", f"output_dir={tmp_path / 'out'}", *custom_dataset_args(train, val), *SHORT_SWEEP,
            "opts=[DATASETS.CHECK_IMAGES,False]"]
    proc = run_tool("sweep.py", *args, check=False)
    run_dir = tmp_path / "out" / "frn_ims2_seed0"
    failed = metrics(run_dir)
    assert proc.returncode == 1 and failed["status"] == "failed" and failed["AP"] is None
    assert "Could not read image" in failed["status_detail"] and train[1] in failed["status_detail"]
    for path, data in originals.items():
        path.write_bytes(data)
    run_tool("sweep.py", *args, "rerun_failed=true")
    assert metrics(run_dir)["status"] == "finished"


def test_model_zoo_config_with_frn_trains_through_the_sweep(tmp_path):
    run_tool(
        "sweep.py",
        "hydra.mode=RUN",
        "norm=frn",
        f"output_dir={tmp_path}",
        "model.config_file=COCO-Detection/retinanet_R_50_FPN_1x.yaml",
        "schedule.reference_batch=2",
        "schedule.max_iter=3",
        "schedule.steps=[2]",
        "schedule.warmup_iters=1",
        "dataset.tune=[]",
        # The zoo's R50 made R18 to keep the test short; what is tested is the stock builder switch.
        "opts=[MODEL.WEIGHTS,'',MODEL.RESNETS.DEPTH,18,MODEL.RESNETS.RES2_OUT_CHANNELS,64,"
        "INPUT.MIN_SIZE_TRAIN,[160],INPUT.MAX_SIZE_TRAIN,160,INPUT.MIN_SIZE_TEST,160,INPUT.MAX_SIZE_TEST,160]",
    )
    m = metrics(tmp_path / "frn_ims2_seed0")
    assert m["status"] == "finished" and m["iterations"] == 3
    assert "META_ARCHITECTURE: FRNRetinaNet" in (tmp_path / "frn_ims2_seed0" / "config.yaml").read_text()


def cut_short(path: Path) -> bytes:
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return data


def test_a_finished_run_whose_files_were_damaged_is_named_and_recovered(two_point_sweep, tmp_path):
    """Its metrics.json and its bootstrap cache cut short, its two logs torn: the re-run names
    each file, sets the record aside (never deletes it), repairs the logs, resumes from the
    intact last checkpoint (evaluating it again: no training) and rebuilds the cache.
    (Damaged checkpoints: tests/sweep/test_damaged_files.py.)"""
    out = tmp_path / "copy"
    shutil.copytree(two_point_sweep[0], out)
    run_dir = out / "bn_ims2_seed0"  # (frn_ims2_seed0 holds another config after the test above)
    record = cut_short(run_dir / "metrics.json")
    [npz] = run_dir.glob("bootstrap_*.npz")
    cut_short(npz)  # a BadZipFile stopped the report (and with it the end of the sweep) before
    for log in ("events.jsonl", "training_metrics.json"):
        with open(run_dir / log, "a") as f:
            f.write('{"time": 17')  # a write cut short: the next line was glued to it

    proc = run_tool("sweep.py", "hydra.mode=RUN", "norm=bn", "ims_per_gpu=2", f"output_dir={out}", *WITH_TUNE)
    text = proc.stdout + proc.stderr
    [moved] = run_dir.glob("metrics.json.damaged-*")
    assert moved.read_bytes() == record and f"{run_dir / 'metrics.json'} is damaged" in text and moved.name in text
    assert f"{npz} is damaged" in text and "rebuilding it" in text
    for log in ("events.jsonl", "training_metrics.json"):
        assert f"{run_dir / log} ended in a partial line" in text + (run_dir / "sweep.log").read_text()
        assert all(json.loads(line) for line in (run_dir / log).read_text().splitlines())  # every line parses
    m = metrics(run_dir)
    assert m["status"] == "finished" and m["resumed_from_iter"] == 24 and m["iterations"] == 24
    assert isinstance(m["AP"], float) and (out / "results.md").is_file()
    with np.load(npz) as data:  # rebuilt whole
        assert data["samples_AP"].shape == (1000,)


def file_size_limit(max_bytes: int):
    """In the child before exec: no file over max_bytes can be written (EFBIG), as on a full disk."""
    def apply():
        os.setsid()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Python ignores it too; a shell would not
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_a_disk_that_fills_up_fails_the_run_with_the_path_and_keeps_finished_results(two_point_sweep, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(two_point_sweep[0], out)
    ensure_shapes_dataset()  # its files are over the limit below: generated before it
    finished = {p: p.read_bytes() for p in out.glob("*_seed0/*") if p.is_file()
                and p.name not in ("sweep.log", "events.jsonl", ".lock")}
    # 8 MB: logs, records and the report fit; the tiny model's checkpoints (26 MB) do not.
    args = ["hydra.mode=RUN", "norm=bn", "ims_per_gpu=2", *(a for a in WITH_TUNE if a != "seed=0"), "seed=1",
            "schedule.checkpoint_period=10"]
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "sweep.py"), *args, f"output_dir={out}"], cwd=REPO,
                          capture_output=True, text=True, timeout=900, preexec_fn=file_size_limit(8 << 20))
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]  # the run failed
    failed = metrics(out / "bn_ims2_seed1")
    path = out / "bn_ims2_seed1" / "model_0000009.pth"
    assert failed["status"] == "failed" and failed["AP"] is None
    assert failed["status_detail"].startswith(f"CheckpointError: could not write checkpoint {path} (File too large)")
    assert not list((out / "bn_ims2_seed1").glob("*.pth")) and not list((out / "bn_ims2_seed1").glob(".*.tmp"))
    assert {p: p.read_bytes() for p in finished} == finished  # the finished runs, as they were
    assert "bn_ims2_seed1" in (out / "results.md").read_text()  # and the report lists the failure with them
