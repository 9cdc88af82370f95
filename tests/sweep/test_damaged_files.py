"""The project's own files, damaged (cut short, overwritten, another version): each is named
in a warning, set aside as <name>.damaged-<time> (never deleted) and rebuilt; a torn
JSON-lines log is repaired; a damaged checkpoint is skipped. Real files, no training."""
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import REPO
from omegaconf import OmegaConf
from PIL import Image
from report_runs import make_run, write_gt

from frn_det.engine.checkpoint import SafeDetectionCheckpointer
from frn_det.record.events import log_event, read_events
from frn_det.record.metrics import read_metrics


@pytest.fixture
def warnings_log(caplog):
    """frn-det's warnings, even where a logger above stops propagation (Detectron2's setup_logger)."""
    log = logging.getLogger("frn_det")
    log.addHandler(caplog.handler)
    old = log.propagate
    log.propagate = False  # else the root logger's caplog handler sees each record again
    caplog.set_level(logging.WARNING, logger="frn_det")
    yield caplog
    log.propagate = old
    log.removeHandler(caplog.handler)


def warned(log, *parts) -> str:
    """The one warning that holds every part (AssertionError naming what was logged if none)."""
    lines = [r.getMessage() for r in log.records if r.levelno >= logging.WARNING]
    found = [line for line in lines if all(str(p) in line for p in parts)]
    assert found, f"no warning with {parts}; got {lines}"
    return found[0]


def set_aside(path: Path) -> list:
    return sorted(path.parent.glob(f"{path.name}.damaged-*"))


DAMAGE = {
    "cut short": lambda data: data[: len(data) // 2],
    "garbage": lambda data: bytes(range(256)) * 4,
    "emptied": lambda data: b"",
}


def damage(path: Path, how: str) -> bytes:
    data = DAMAGE[how](path.read_bytes())
    path.write_bytes(data)
    return data


# ------------------------------------------------------------------ run records

RECORD = {"run": "gn_ims2_seed0", "status": "finished", "config_hash": "0123456789ab", "AP": 12.5}


@pytest.mark.parametrize("content,problem", [
    ('{"run": "gn_ims2_seed0", "status": "fini', "JSONDecodeError"),
    (b"\xff\xfe\x00garbage", "UnicodeDecodeError"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"config_hash": "0123456789ab"}', "status None is not one of finished"),
    ('{"status": "finished", "config_hash": 7}', "config_hash 7 is not a string"),
])
def test_a_damaged_metrics_json_is_named_and_set_aside_by_its_owner(tmp_path, warnings_log, content, problem):
    path = tmp_path / "metrics.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert read_metrics(tmp_path) is None  # a reader that does not own the run: named, left in place
    assert path.exists() and warned(warnings_log, path, problem, "read as a run without a result")
    assert read_metrics(tmp_path, set_aside=True) is None  # the run's owner (it re-runs it)
    [moved] = set_aside(path)
    assert not path.exists()
    assert moved.read_bytes() == (content if isinstance(content, bytes) else content.encode())  # kept, byte for byte
    assert warned(warnings_log, path, problem, f"set aside as {moved.name}", "resumed from its last intact checkpoint")
    path.write_text(json.dumps(RECORD))
    assert read_metrics(tmp_path) == RECORD


def test_checkpoints_without_a_record_are_resumed_only_for_the_config_that_wrote_them(tmp_path, warnings_log):
    """metrics.json missing or set aside: the run folder's config.yaml says whose checkpoints
    these are; another config's (or an unknown one's) are moved aside, not resumed."""
    from harness import tiny_cfg

    from frn_det.sweep.running.runner import _checkpoints_of_this_config

    frn, gn = tiny_cfg("FRN"), tiny_cfg("GN", "OUTPUT_DIR", "/elsewhere")
    assert _checkpoints_of_this_config(tmp_path, gn)  # no checkpoint: nothing to resume
    (tmp_path / "config.yaml").write_text(frn.dump())
    (tmp_path / "model_final.pth").write_bytes(b"")
    assert _checkpoints_of_this_config(tmp_path, tiny_cfg("FRN", "OUTPUT_DIR", "/moved"))  # the folder may move
    assert not _checkpoints_of_this_config(tmp_path, gn)
    (tmp_path / "config.yaml").write_text("MODEL: [unclosed")
    assert not _checkpoints_of_this_config(tmp_path, frn)
    assert warned(warnings_log, tmp_path, "config.yaml cannot be read", "not resumed")


def test_a_damaged_outcome_json_fails_the_run_naming_the_file(tmp_path, warnings_log):
    from frn_det.sweep.planning.scaling import scale_schedule
    from frn_det.sweep.running.runner import _result_fields

    outcome = tmp_path / "outcome.json"
    outcome.write_text('{"status": "finished", "evaluation": {"frn_shap')
    sched = scale_schedule(ims_per_gpu=2, num_gpus=1, num_machines=1, reference_batch=2, base_lr=0.01, max_iter=10,
                           steps=[8], warmup_iters=1, eval_period=0, checkpoint_period=5, lr_scale=1.0)
    fields = _result_fields(tmp_path, None, sched, test="frn_shapes_val", tune=None)
    assert fields["status"] == "failed" and fields["AP"] is None
    assert fields["status_detail"] == "the training process wrote no readable outcome.json"
    [moved] = set_aside(outcome)
    assert warned(warnings_log, outcome, "JSONDecodeError", moved.name, "recorded as failed")


def test_a_damaged_trackers_json_is_set_aside_and_new_tracker_runs_start(tmp_path, warnings_log):
    from frn_det.engine.trackers import TrackerRuns, TrackingOptions

    ids = tmp_path / "trackers.json"
    ids.write_text('{"wandb": "abc", "mlfl')
    TrackerRuns(TrackingOptions(("tensorboard",), str(tmp_path)), {})
    [moved] = set_aside(ids)
    assert moved.read_text() == '{"wandb": "abc", "mlfl'
    assert warned(warnings_log, ids, "JSONDecodeError", "new tracker runs are started")


# ------------------------------------------------------------------ append-only logs

def test_events_log_repairs_a_torn_last_line_and_skips_damaged_lines(tmp_path, warnings_log):
    log_event(tmp_path, "start", config_hash="abc")
    events = tmp_path / "events.jsonl"
    with open(events, "a") as f:
        f.write('{"time": 1.0, "event": "en')  # a write cut short
    assert [e["event"] for e in read_events(tmp_path)] == ["start"]  # the torn line is skipped ...
    assert warned(warnings_log, events, "skipped line(s) 2")  # ... and named
    log_event(tmp_path, "end", status="finished")  # the next append repairs the tail first
    assert [e["event"] for e in read_events(tmp_path)] == ["start", "end"]
    assert all(json.loads(line) for line in events.read_text().splitlines())  # every line parses again
    [fragment] = set_aside(events)
    assert fragment.read_text() == '{"time": 1.0, "event": "en'
    assert warned(warnings_log, events, "partial line", fragment.name)

    with open(events, "a") as f:  # garbage in the middle (an overwritten block) is skipped, not fatal
        f.write("\x00\x00garbage\n")
    log_event(tmp_path, "skip", status="finished")
    assert [e["event"] for e in read_events(tmp_path)] == ["start", "end", "skip"]
    assert warned(warnings_log, events, "skipped line(s) 3")


def test_failed_runs_are_counted_whatever_their_events_log_holds(tmp_path):
    from frn_det.sweep.running.callbacks import failed_runs

    run = tmp_path / "frn_ims2_seed0"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({**RECORD, "status": "failed", "status_detail": "boom"}))
    log_event(run, "start")
    with open(run / "events.jsonl", "a") as f:
        f.write('{"time": "yesterday", "event": "x"}\n{"time": 1')  # a wrong type, then a torn line
    assert failed_runs([run], since=0.0) == ["frn_ims2_seed0: boom"]


def test_a_report_that_fails_does_not_lose_the_failed_runs(tmp_path, warnings_log):
    """The callback counts failed runs (the exit status) before the report, and a report that
    raises something unforeseen is logged, not raised (Hydra would only print a warning)."""
    from frn_det.sweep.running import callbacks

    gt = tmp_path / "gt.json"
    anns = write_gt(gt)
    make_run(tmp_path / "sweep", gt, anns, "gn", 2, jitter=2.0)
    failed = tmp_path / "sweep" / "frn_ims2_seed0"
    failed.mkdir()
    (failed / "metrics.json").write_text(json.dumps({**RECORD, "norm": "frn", "ims_per_gpu": 2, "status": "failed",
                                                      "status_detail": "CheckpointError: disk full"}))
    callback = callbacks.SweepCallback()  # the sweep starts
    log_event(failed, "end", status="failed")
    (tmp_path / "sweep" / "results.md").mkdir()  # the report cannot be written there (IsADirectoryError)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}, "report": True,
                               "references": None, "effect": None})
    callbacks.FAILED_RUNS.clear()
    try:
        callback.on_multirun_end(config)
        assert callbacks.FAILED_RUNS == ["frn_ims2_seed0: CheckpointError: disk full"]
    finally:
        callbacks.FAILED_RUNS.clear()
    assert warned(warnings_log, "no report written", "results.md", "the runs' results are kept")


# ------------------------------------------------------------------ caches

@pytest.fixture
def finished_run(tmp_path):
    gt = tmp_path / "gt.json"
    run = make_run(tmp_path / "sweep", gt, write_gt(gt), "gn", 2, jitter=3.0)
    return json.loads((run / "metrics.json").read_text()) | {"source": str(run / "metrics.json")}


@pytest.mark.parametrize("how", ["cut short", "garbage", "another version"])
def test_a_damaged_bootstrap_cache_is_set_aside_and_rebuilt(finished_run, warnings_log, how):
    from frn_det.report.samples import cache_path, run_samples

    first = run_samples(finished_run)
    cache = cache_path(finished_run, "val")
    if how == "another version":
        with np.load(cache) as data:
            fields = {k: data[k] for k in data.files}
        with open(cache, "wb") as f:
            np.savez(f, **{**fields, "key": "v0|" + str(fields["key"]).split("|", 1)[1]})
        problem = "written by another version (v0"
    else:
        damage(cache, how)
        problem = "BadZipFile" if how == "cut short" else "Error"
    again = run_samples(finished_run)
    assert again.images == first.images and np.array_equal(again.samples["AP"], first.samples["AP"])
    [moved] = set_aside(cache)
    assert warned(warnings_log, cache, problem, moved.name, "rebuilding it")
    with np.load(cache) as data:  # rebuilt whole
        assert np.array_equal(data["samples_AP"], first.samples["AP"])


def test_an_unreadable_detections_file_is_named_and_the_report_goes_on(finished_run, warnings_log):
    from frn_det.report import write_report

    dets = Path(finished_run["evaluation"]["val"]["detections"])
    dets.write_text(dets.read_text()[:100])
    paths = write_report([Path(finished_run["source"]).parent.parent])
    assert paths["md"].is_file()
    assert warned(warnings_log, "no interval for gn_ims2_seed0", str(dets), "cannot be read", "JSONDecodeError")


def tiny_images(folder: Path, n: int):
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(n):
        Image.new("RGB", (16, 12), (i, 0, 0)).save(folder / f"{i}.png")
        images.append((i, str(folder / f"{i}.png"), 16, 12))
    return images


@pytest.mark.parametrize("how", ["cut short", "garbage", "another version"])
def test_a_damaged_image_check_cache_is_set_aside_and_the_images_checked_again(tmp_path, warnings_log, how):
    from frn_det.data.image_check import check_images

    images = tiny_images(tmp_path / "images", 3)
    cache = tmp_path / "cache.json"
    assert check_images(images, "d", "d.json", cache_file=cache, progress=False).opened == 3
    if how == "another version":
        data = json.loads(cache.read_text())
        cache.write_text(json.dumps({**data, "header": {**data["header"], "version": 99}}))
        problem = "written by another version (cache version 99"
    else:
        damage(cache, how)
        problem = "Error"
    stats = check_images(images, "d", "d.json", cache_file=cache, progress=False)
    assert stats.opened == 3 and stats.cached == 0  # checked again, not trusted
    [moved] = set_aside(cache)
    assert warned(warnings_log, cache, problem, moved.name, "checking the images again")
    assert check_images(images, "d", "d.json", cache_file=cache, progress=False).cached == 3  # written whole


def test_a_tampered_image_check_entry_is_checked_again_not_trusted(tmp_path):
    from frn_det.data.image_check import check_images

    images = tiny_images(tmp_path / "images", 2)
    cache = tmp_path / "cache.json"
    check_images(images, "d", "d.json", cache_file=cache, progress=False)
    data = json.loads(cache.read_text())
    for entry in data["entries"].values():
        entry[2] = "sixteen"  # a width that is no number
    cache.write_text(json.dumps(data))
    stats = check_images(images, "d", "d.json", cache_file=cache, progress=False)  # no false "size" failure
    assert stats.opened == 2


def coco_without_iscrowd(path: Path, n: int = 3) -> Path:
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.png", "width": 16, "height": 12} for i in range(n)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5]} for i in range(n)],
        "categories": [{"id": 1, "name": "a"}]}))
    return path


@pytest.mark.parametrize("how", ["cut short", "garbage", "emptied"])
def test_a_damaged_fixed_json_copy_is_set_aside_and_written_again(tmp_path, monkeypatch, warnings_log, how):
    from frn_det.data.coco_repair import write_fixed_json

    monkeypatch.setenv("FRN_DET_CACHE", str(tmp_path / "cache"))
    source = coco_without_iscrowd(tmp_path / "train.json")
    fixed = Path(write_fixed_json(str(source)))
    good = fixed.read_bytes()
    damage(fixed, how)
    assert write_fixed_json(str(source)) == str(fixed)
    assert fixed.read_bytes() == good and json.loads(good)["annotations"][0]["iscrowd"] == 0
    [moved] = set_aside(fixed)
    assert warned(warnings_log, fixed, moved.name, "writing it again from the source json")


TINY = dict(num_train=3, num_val=2, num_tune=2, image_size=48, max_objects=1)


@pytest.mark.parametrize("how", ["json cut short", "json overwritten in place", "image deleted", "marker garbage"])
def test_a_damaged_generated_dataset_is_set_aside_and_generated_again(tmp_path, warnings_log, how):
    from frn_det.data.synthetic import ShapesSpec, ensure_shapes_dataset

    spec = ShapesSpec(**TINY)
    paths = ensure_shapes_dataset(spec, cache_dir=tmp_path)
    root, train_json = paths["root"], Path(paths["train"][0])
    good = train_json.read_bytes()
    if how == "json cut short":
        damage(train_json, "cut short")
    elif how == "json overwritten in place":  # same size: only parsing finds it
        train_json.write_bytes(b"\x00" * len(good))
    elif how == "image deleted":
        next((root / "val").glob("*.jpg")).unlink()
    else:
        (root / "DONE").write_bytes(b"\xff" * 10)
    again = ensure_shapes_dataset(spec, cache_dir=tmp_path)
    assert again["root"] == root and train_json.read_bytes() == good  # the same files, generated anew
    [moved] = set_aside(root)
    assert warned(warnings_log, root, moved.name, "generating the dataset again")
    assert ensure_shapes_dataset(spec, cache_dir=tmp_path)["root"] == root and len(set_aside(root)) == 1


def test_cache_writes_cut_by_a_full_disk_leave_no_partial_file(tmp_path, finished_run):
    """A real failed write: the kernel refuses files over RLIMIT_FSIZE (EFBIG), as it refuses
    writes on a full disk (ENOSPC). Each cache is complete or absent, never half written."""
    script = textwrap.dedent(f"""
        import json, os, resource
        from pathlib import Path
        from frn_det.report.samples import cache_path, run_samples
        from frn_det.data.coco_repair import fixed_json_path, write_fixed_json
        run = json.loads({json.dumps(json.dumps(finished_run))})
        resource.setrlimit(resource.RLIMIT_FSIZE, (8000, resource.RLIM_INFINITY))
        assert run_samples(run) is not None  # the report still gets its samples
        print("bootstrap cache:", cache_path(run, "val").exists())
        os.environ["FRN_DET_CACHE"] = {str(tmp_path / "cache")!r}
        source = Path({str(tmp_path / "big.json")!r})
        try:
            write_fixed_json(str(source))
        except OSError as e:
            print("fixed json:", fixed_json_path(str(source)).exists(), e.strerror)
        print("left:", sorted(p.name for p in Path(fixed_json_path(str(source))).parent.iterdir()))
    """)
    coco_without_iscrowd(tmp_path / "big.json", n=300)  # its fixed copy is over 8000 bytes
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "bootstrap cache: False" in out.stdout, out.stdout + out.stderr[-3000:]
    assert "fixed json: False File too large" in out.stdout and "left: []" in out.stdout, out.stderr[-3000:]


# ------------------------------------------------------------------ checkpoints

def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.BatchNorm2d(64))


def saved(tmp_path, *iterations) -> SafeDetectionCheckpointer:
    ckpt = SafeDetectionCheckpointer(small_model(), str(tmp_path))
    for it in iterations:
        ckpt.save(f"model_{it:07d}" if it != "final" else "model_final", iteration=99 if it == "final" else it)
    return SafeDetectionCheckpointer(small_model(), str(tmp_path))


def flip_middle(path: Path) -> None:
    """Bytes changed inside the archive: its zip directory is intact, torch.load would load them."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how,problem", [
    ("flipped", "fails its CRC check"),
    ("cut short", "no zip directory at the end"),
    ("emptied", "empty: 0 bytes"),
])
def test_resume_skips_a_damaged_last_checkpoint_naming_it(tmp_path, warnings_log, how, problem):
    ckpt = saved(tmp_path, 4, 9)
    last = tmp_path / "model_0000009.pth"
    flip_middle(last) if how == "flipped" else damage(last, how)
    assert ckpt.resume_or_load("", resume=True)["iteration"] == 4 and ckpt.has_checkpoint()
    assert warned(warnings_log, "resuming from", "model_0000004.pth", last, problem, "named by last_checkpoint")


def test_resume_with_no_intact_checkpoint_starts_over_and_says_so(tmp_path, warnings_log):
    ckpt = saved(tmp_path, "final")
    damage(tmp_path / "model_final.pth", "cut short")
    assert ckpt.resume_or_load("", resume=True) == {}
    assert not ckpt.has_checkpoint()  # DefaultTrainer then starts at iteration 0, not 1
    assert warned(warnings_log, "no intact checkpoint to resume from", tmp_path / "model_final.pth",
                  "training starts over from iteration 0")


@pytest.mark.parametrize("tag", [None, "garbage \x00\x01", "model_0000042.pth"])
def test_resume_without_a_usable_last_checkpoint_takes_the_newest_intact_one(tmp_path, tag):
    ckpt = saved(tmp_path, 4, 9, 19)
    if tag is None:
        (tmp_path / "last_checkpoint").unlink()
    else:
        (tmp_path / "last_checkpoint").write_text(tag)
    flip_middle(tmp_path / "model_0000019.pth")
    assert ckpt.resume_or_load("", resume=True)["iteration"] == 9


# ------------------------------------------------------------------ a lost worker

def test_only_a_lost_peer_counts_as_a_lost_worker():
    """The classification that keeps a run resumable (a killed machine: tests/sweep/test_multinode.py);
    other errors still fail the run."""
    from frn_det.sweep.running.worker import lost_worker

    gloo = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:35250. "
            "This is typically caused by a remote worker crashing.")
    assert lost_worker(RuntimeError(gloo))
    assert not lost_worker(RuntimeError("DataLoader worker (pid 7) exited unexpectedly"))
    assert not lost_worker(ValueError("Connection closed by peer"))  # not from a collective
