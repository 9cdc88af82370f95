"""A run is a function of its config and seed: the same data for every norm at a seed, the
same numbers inside a sweep as alone, bit-identical reruns with deterministic=true."""
import hashlib
import json
from pathlib import Path

import pytest
import torch
from harness import run_tool, tiny_cfg


def _first_batches(norm: str, seed: int, out: Path, *opts, n: int = 3):
    """(file name, hash of the augmented image) of the first n training batches' images."""
    from detectron2.utils.env import seed_all_rng

    from frn_det.data import prepare_datasets
    from frn_det.engine import Trainer

    cfg = tiny_cfg(norm, "SEED", seed, "SOLVER.IMS_PER_BATCH", 2, "DATASETS.TEST", "()",
                  "DATALOADER.NUM_WORKERS", 1, *opts)  # flips drawn in a worker seeded from torch's RNG
    cfg.OUTPUT_DIR = str(out)
    prepare_datasets(cfg)
    seed_all_rng(seed)
    loader = iter(Trainer(cfg).data_loader)
    return [
        (d["file_name"], hashlib.sha1(d["image"].numpy().tobytes()).hexdigest()) for _ in range(n) for d in next(loader)
    ]


def test_a_seed_gives_every_norm_the_same_images_in_the_same_order(tmp_path):
    bn = _first_batches("BN", 3, tmp_path)
    assert _first_batches("FRN", 3, tmp_path) == bn  # FRN's model draws other random numbers than BN's
    assert _first_batches("GN", 3, tmp_path) == bn
    # a model that draws more random numbers at init (one more head conv) still sees the same data
    assert _first_batches("BN", 3, tmp_path, "MODEL.RETINANET.NUM_CONVS", 3) == bn
    assert _first_batches("BN", 4, tmp_path) != bn


SHORT = ["seed=0", "ims_per_gpu=2", "schedule.reference_batch=2", "schedule.max_iter=8", "schedule.steps=[6]",
         "schedule.warmup_iters=2", "schedule.checkpoint_period=100", "dataset.tune=[]", "report=false", "jobs=1"]


def _result(run_dir: Path):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "finished", m.get("status_detail")
    return {k: m[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "final_losses", "config_hash")}


@pytest.mark.slow
def test_a_run_in_a_sweep_equals_the_same_run_alone(tmp_path):
    """bn then frn in one sweep process, and frn then bn: each run is the same, bit for bit,
    whichever job ran before it in the process (before: frn 7.377 AP after bn, 7.840 alone)."""
    run_tool("sweep.py", "norm=bn,frn", f"output_dir={tmp_path / 'bn_first'}", *SHORT)
    run_tool("sweep.py", "norm=frn,bn", f"output_dir={tmp_path / 'frn_first'}", *SHORT)
    for run in ("frn_ims2_seed0", "bn_ims2_seed0"):
        first, second = _result(tmp_path / "bn_first" / run), _result(tmp_path / "frn_first" / run)
        assert first == second, run
    assert _result(tmp_path / "bn_first" / "frn_ims2_seed0")["final_losses"]["total_loss"] > 0


@pytest.mark.slow
def test_deterministic_runs_repeat_bit_for_bit_and_record_the_machine(tmp_path):
    for out in ("a", "b"):
        run_tool("sweep.py", "hydra.mode=RUN", "norm=gn", "deterministic=true", "threads=1",
                 f"output_dir={tmp_path / out}", *SHORT)
    a, b = (tmp_path / out / "gn_ims2_seed0" for out in ("a", "b"))
    assert _result(a) == _result(b)
    m = json.loads((a / "metrics.json").read_text())
    assert m["deterministic"] is True and m["machine"]["torch_threads"] == 1
    assert m["machine"]["cores"] >= 1 and m["machine"]["cpu"]
    assert m["machine"]["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    assert len(m["machine"]["git_commit"] or "0" * 40) == 40
    breakdown = m["time_breakdown_s"]
    assert set(breakdown) >= {"dataset_checks", "model_and_data_build", "training", "evaluation",
                              "checkpoint_writes", "process_start_and_exit"}
    assert breakdown["evaluation"] > 0 and breakdown["training"] > 0
    assert sum(v for k, v in breakdown.items() if k != "process_start_and_exit") == pytest.approx(
        m["wall_time_s"], rel=1e-6
    )
