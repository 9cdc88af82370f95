"""Box-detection sweep folders written without training: a ground truth, jittered
detections and each run's metrics.json and training log (report tests)."""
import json
import zlib
from pathlib import Path

import numpy as np

N_IMAGES = 60


def write_gt(path: Path, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, N_IMAGES + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200})
        for _ in range(int(rng.integers(1, 4))):
            x, y, w, h = (float(v) for v in (*rng.uniform(0, 120, 2), *rng.uniform(15, 70, 2)))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, 3)),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return anns


def write_dets(path: Path, anns: list, jitter: float, seed: int) -> None:
    """Detections: each ground truth box moved by up to `jitter` px, plus a false positive per image."""
    rng = np.random.default_rng(seed)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.uniform(0.3, 1)),
             "bbox": [v + float(rng.uniform(-jitter, jitter)) for v in a["bbox"][:2]] + a["bbox"][2:]} for a in anns]
    dets += [{"image_id": i, "category_id": 1, "score": float(rng.uniform(0, 0.5)), "bbox": [150.0, 150.0, 20.0, 20.0]}
             for i in range(1, N_IMAGES + 1)]
    path.write_text(json.dumps(dets))


def make_run(sweep: Path, gt: Path, anns: list, norm: str, ims: int, jitter: float, seed: int = 0,
             lr_scale: float = 1.0, tune_ap=None) -> Path:
    from frn_det.evaluation import PerImageEval

    name = f"{norm}_ims{ims}" + (f"_lr{lr_scale:g}" if lr_scale != 1 else "") + f"_seed{seed}"
    run_dir = sweep / name
    run_dir.mkdir(parents=True)
    dets = run_dir / "dets.json"
    write_dets(
        dets, anns, jitter, seed=zlib.crc32(repr((norm, ims, seed, lr_scale)).encode()) % 1000
    )  # the same in every process
    ap = PerImageEval.from_coco(str(gt), str(dets)).metrics()["AP"]
    record = {"run": name, "norm": norm, "ims_per_gpu": ims, "total_batch": ims, "seed": seed, "lr_scale": lr_scale,
              "status": "finished", "AP": ap, "test_dataset": "val",
              "tune": {"AP": tune_ap} if tune_ap is not None else None,
              "evaluation": {"val": {"gt_json": str(gt), "detections": str(dets)}}}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    # Detectron2's JSON log: a falling loss every 20 iterations.
    log = [{"iteration": it, "total_loss": 2.0 / (1 + it / 20)} for it in range(19, 200, 20)]
    (run_dir / "training_metrics.json").write_text("\n".join(json.dumps(e) for e in log) + "\n")
    return run_dir
