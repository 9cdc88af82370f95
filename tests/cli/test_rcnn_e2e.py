"""Faster R-CNN and Mask R-CNN with FRN, end to end on the built-in data: tools/train_net.py and the sweep."""
import json
import math
from pathlib import Path

import pytest
import yaml
from harness import REPO, SHORT_SWEEP, run_tool, yacs_small_val

pytestmark = pytest.mark.slow


def test_faster_rcnn_with_frn_after_convs_and_fcs_trains_and_evaluates_boxes(tmp_path):
    proc = run_tool(
        "train_net.py", "--config-file", REPO / "configs" / "tiny_faster_rcnn_cpu.yaml",
        "MODEL.ROI_BOX_HEAD.NORM_FCS", "True", "SOLVER.MAX_ITER", 20, "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.WARMUP_ITERS", 5, "SOLVER.STEPS", "(15,)", "SOLVER.CHECKPOINT_PERIOD", 1000, "OUTPUT_DIR", tmp_path,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,  # 20 iterations: keep the low scores, so that AP is a number
        *yacs_small_val(tmp_path),
    )
    log = proc.stdout + proc.stderr
    events = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    final = events[-1]
    assert 0.0 <= final["bbox/AP"] <= 100.0 and not any(k.startswith("segm/") for k in final)
    losses = [e["total_loss"] for e in events if "total_loss" in e]
    assert losses and all(math.isfinite(loss) for loss in losses)
    saved = (tmp_path / "config.yaml").read_text()
    assert "NAME: FRNFastRCNNConvFCHead" in saved and "NORM_FCS: true" in saved
    assert "fc_norm1" in log  # the model printed at start: FRN after the FC


def test_mask_rcnn_with_frn_through_the_sweep_reports_box_and_mask_ap(tmp_path):
    run_tool(
        "sweep.py",
        "-m",
        "model=tiny_mask_rcnn_cpu",
        "norm=frn,gn",
        "ims_per_gpu=2",
        f"output_dir={tmp_path}",
        *SHORT_SWEEP,
    )
    records = {}
    for norm in ("frn", "gn"):
        run = tmp_path / f"{norm}_ims2_seed0"
        m = json.loads((run / "metrics.json").read_text())
        assert m["status"] == "finished" and m["iterations"] == 24
        assert set(m["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
        assert 0.0 <= m["segm"]["AP"] <= 100.0 and 0.0 <= m["AP"] <= 100.0
        model = yaml.safe_load((run / "config.yaml").read_text())["MODEL"]
        # the norm entry's head went to both ROI heads, the class count to the R-CNN key
        norms = [model[k]["NORM"] for k in ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")]
        assert norms == [norm.upper()] * 4 and model["RETINANET"]["NORM"] == ""
        assert (
            model["ROI_HEADS"]["NUM_CLASSES"] == 4 and model["ROI_MASK_HEAD"]["NAME"] == "FRNMaskRCNNConvUpsampleHead"
        )
        detections = json.loads((run / "inference" / "frn_shapes_val" / "coco_instances_results.json").read_text())
        assert detections and "segmentation" in detections[0]
        records[norm] = m
    md = (tmp_path / "results.md").read_text()
    assert "## Box AP by norm and images per GPU" in md and "## Mask AP by norm and images per GPU" in md
    mask_table = md.split("## Mask AP by norm and images per GPU")[1]
    frn_row = next(line for line in mask_table.splitlines() if line.startswith("| frn |"))
    assert f"{records['frn']['segm']['AP']:.1f} [" in frn_row
    results = {r["norm"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert results["frn"]["mask_AP"] == pytest.approx(records["frn"]["segm"]["AP"])
    assert results["frn"]["mask_AP_lo"] <= results["frn"]["mask_AP"] <= results["frn"]["mask_AP_hi"]
    assert Path(tmp_path / "frn_ims2_seed0" / "bootstrap_frn_shapes_val_segm.npz").is_file()
