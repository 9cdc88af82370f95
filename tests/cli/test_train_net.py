"""End to end: tools/train_net.py trains, evaluates with COCOEvaluator, resumes, runs DDP."""
import json
import math
import re

import pytest
from harness import ONE_THREAD, TINY_CONFIG, run_tool, yacs_small_val

pytestmark = pytest.mark.slow

AP_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def copypaste_ap(log: str):
    """The last 'copypaste: AP,...' block Detectron2 prints after COCO evaluation."""
    values = re.findall(r"copypaste: ((?:\d[\d.]*|nan)(?:,(?:\d[\d.]*|nan))+)", log)
    assert values, "no COCO evaluation results in the log"
    return dict(zip(AP_KEYS, (float(v) for v in values[-1].split(","))))


def tiny_args(out, *extra, iters=30):
    return [
        "--config-file", TINY_CONFIG, "SOLVER.MAX_ITER", iters, "SOLVER.IMS_PER_BATCH", 4,
        "SOLVER.WARMUP_ITERS", 10, "SOLVER.STEPS", "(25,)", "SOLVER.CHECKPOINT_PERIOD", 1000,
        "SEED", 1, "OUTPUT_DIR", out, *extra,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_frn")
    proc = run_tool("train_net.py", *tiny_args(out))
    return out, proc.stdout + proc.stderr


def test_tiny_run_trains_evaluates_and_writes_outputs(trained):
    out, log = trained
    ap = copypaste_ap(log)
    assert all(math.isfinite(ap[k]) and 0 <= ap[k] <= 100 for k in ("AP", "AP50", "AP75"))
    assert ap["AP50"] > 0.5, f"the tiny FRN model learned nothing in 30 iterations: {ap}"
    assert (out / "model_final.pth").is_file() and (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    detections = json.loads((out / "inference" / "frn_shapes_val" / "coco_instances_results.json").read_text())
    assert detections and {"image_id", "category_id", "bbox", "score"} <= set(detections[0])
    saved = (out / "config.yaml").read_text()
    assert saved.count("NORM: FRN") == 3 and "META_ARCHITECTURE: FRNRetinaNet" in saved


def test_eval_only_resume_reproduces_ap(trained):
    out, log = trained
    proc = run_tool("train_net.py", "--eval-only", "--resume", *tiny_args(out))
    assert "Loading from" in proc.stdout + proc.stderr or "model_final.pth" in proc.stdout + proc.stderr
    again = copypaste_ap(proc.stdout + proc.stderr)
    first = copypaste_ap(log)
    for key in ("AP", "AP50", "AP75"):
        assert again[key] == pytest.approx(first[key], abs=1e-3)


def test_two_gloo_workers_with_naive_sync_bn(tmp_path):
    norm = "naiveSyncBN"
    proc = run_tool(
        "train_net.py", "--num-gpus", 2, "--dist-url", "auto",
        *tiny_args(tmp_path, "MODEL.RESNETS.NORM", norm, "MODEL.FPN.NORM", norm, "MODEL.RETINANET.NORM", norm, iters=6),
        env=ONE_THREAD,
    )
    log = proc.stdout + proc.stderr
    assert "World size: 2" in log
    assert set(copypaste_ap(log)) == set(AP_KEYS)  # evaluated (AP may be nan: 6 iterations can detect nothing)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 5  # iterations 0..5


def test_detectron2_model_zoo_config_runs_unchanged(tmp_path):
    proc = run_tool(
        "train_net.py", "--config-file", "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
        "MODEL.WEIGHTS", "", "MODEL.RETINANET.NUM_CLASSES", 4,
        "DATASETS.TRAIN", "('frn_shapes_train',)", *yacs_small_val(tmp_path),
        "SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0,
        "INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", 160,
        "INPUT.MIN_SIZE_TEST", 160, "INPUT.MAX_SIZE_TEST", 160, "OUTPUT_DIR", tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert "running on CPU" in log  # the zoo config asks for CUDA
    assert "META_ARCHITECTURE: RetinaNet" in (tmp_path / "config.yaml").read_text()
    assert set(copypaste_ap(log)) == set(AP_KEYS)


ZOO_SMALL = [
    "MODEL.WEIGHTS",
    "",
    "MODEL.RETINANET.NUM_CLASSES",
    4,
    "DATASETS.TRAIN",
    "('frn_shapes_train',)",
    "SOLVER.IMS_PER_BATCH",
    2,
    "DATALOADER.NUM_WORKERS",
    0,
    "INPUT.MIN_SIZE_TRAIN",
    "(160,)",
    "INPUT.MAX_SIZE_TRAIN",
    160,
    "INPUT.MIN_SIZE_TEST",
    160,
    "INPUT.MAX_SIZE_TEST",
    160,
]


def test_model_zoo_config_with_frn_norms_trains(tmp_path):
    proc = run_tool(
        "train_net.py", "--config-file", "COCO-Detection/retinanet_R_50_FPN_1x.yaml",
        *ZOO_SMALL, *yacs_small_val(tmp_path),
        "MODEL.RESNETS.NORM", "FRN", "MODEL.FPN.NORM", "FRN", "MODEL.RETINANET.NORM", "FRN",
        "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert "using frn-det's builders" in log and "RetinaNet -> FRNRetinaNet" in log
    saved = (tmp_path / "config.yaml").read_text()
    assert "META_ARCHITECTURE: FRNRetinaNet" in saved and "NAME: build_frn_retinanet_resnet_fpn_backbone" in saved
    assert set(copypaste_ap(log)) == set(AP_KEYS)
