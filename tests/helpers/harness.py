"""The project as the tests use it: its paths, the tiny config, tools/ scripts run in a fresh
interpreter as a user would, and a sweep killed outright."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny_retinanet_cpu.yaml"


# The user's kernel cache (conftest.py gives the test session its own).
USER_CACHE = Path(os.environ.get("FRN_DET_CACHE") or Path.home() / ".cache" / "frn_det")


def tiny_cfg(norm="FRN", *opts):
    """The tiny CPU config with `norm` in backbone, FPN and head, plus KEY VALUE overrides."""
    from frn_det.config.build import build_config

    norms = ["MODEL.RESNETS.NORM", norm, "MODEL.FPN.NORM", norm, "MODEL.RETINANET.NORM", norm]
    return build_config(str(TINY_CONFIG), norms + list(opts))


# A sweep run for end-to-end tests: 2 images per worker, 24 iterations, evaluation at the
# end, one seed, no tuning split (one evaluation per run instead of two).
SHORT_SWEEP = ["seed=0", "schedule.reference_batch=2", "schedule.max_iter=24", "schedule.steps=[20]",
               "schedule.warmup_iters=5", "dataset.tune=[]"]


# For tests that run several training processes at once on the 2 cores: torch's default of
# one OpenMP thread per core in every process makes them spin against each other (seen
# here: 1.1 s per iteration instead of 0.09).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def run_tool(script, *args, timeout=900, check=True, env=None):
    """Run a tools/ script in a fresh interpreter, as a user would; returns CompletedProcess."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / script), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def kill_sweep_at_first_checkpoint(args, run_dir: Path, env=None) -> None:
    """Start `tools/sweep.py args` and SIGKILL its whole process group once `run_dir` has
    its first checkpoint: a run killed outright, with no chance to save or record anything."""
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "sweep.py"), *map(str, args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        deadline = time.time() + 600
        while not (run_dir / "last_checkpoint").exists():
            assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


def compose_job(*overrides):
    """One sweep job's config, composed by Hydra from configs/sweep/ with `overrides`."""
    from hydra import compose, initialize_config_dir

    from frn_det.utils.paths import CONFIGS_DIR

    with initialize_config_dir(config_dir=str(CONFIGS_DIR / "sweep"), version_base="1.3"):
        return compose(config_name="sweep", overrides=list(overrides))


def write_small_val(tmp_path: Path, n: int = 12) -> tuple:
    """The first n images of frn_shapes_val as their own COCO json (a quick evaluation):
    (json path, image root), to register as "small_val"."""
    import json

    from detectron2.data import DatasetCatalog, MetadataCatalog

    import frn_det  # noqa: F401  (registers the built-in dataset)

    DatasetCatalog.get("frn_shapes_val")  # generates the built-in set
    meta = MetadataCatalog.get("frn_shapes_val")
    data = json.loads(Path(meta.json_file).read_text())
    keep = {im["id"] for im in data["images"][:n]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = tmp_path / "small_val.json"
    path.write_text(json.dumps(data))
    return path, meta.image_root


def yacs_small_val(tmp_path: Path, n: int = 12) -> list:
    """KEY VALUE overrides that register write_small_val's set and evaluate on it."""
    path, image_root = write_small_val(tmp_path, n)
    return ["DATASETS.REGISTER_COCO", f"[('small_val','{path}','{image_root}')]", "DATASETS.TEST", "('small_val',)"]
