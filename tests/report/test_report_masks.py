"""Mask AP from the sweep worker to the report, on real COCO-format files: ground truth with
polygon masks, detections with RLE masks (as Detectron2's COCOEvaluator writes them), and
metrics.json made by the worker's and the runner's own code (no training)."""
import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mask_runs import DATASET, cocoeval, make_run, recorded

from frn_det.evaluation import PerImageEval
from frn_det.record.metrics import DETECTIONS_FILE, METRIC_KEYS, OUTCOME_FILE
from frn_det.report import write_report
from frn_det.report.load import MASK_KEYS, load_runs
from frn_det.report.plots import ap_vs_ims_figure
from frn_det.report.samples import run_samples
from frn_det.report.tables import CSV_COLUMNS
from frn_det.sweep.running.runner import _result_fields
from frn_det.sweep.running.worker import evaluation_records


@pytest.fixture(scope="module")
def box_sweep(files):
    """The same kind of detections from box-only models (no "segm" results)."""
    root, gt, anns = files
    d = root / "box_sweep"
    for norm, shift in (("bn", 6), ("gn", 6), ("frn", 1)):
        make_run(d, gt, anns, norm, 2, shift=shift, masks=False)
    return d


def table(md: str, heading: str) -> dict:
    """The table under a '## heading...' line of results.md as {first cell: [other cells]}."""
    section = md.split("## " + heading, 1)[1].split("\n\n")[1]
    rows = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


# ------------------------------------------------------------------ sweep worker, runner

def test_evaluation_records_keep_the_mask_metrics_next_to_the_box_metrics(files, tmp_path):
    _, gt, _ = files
    cfg = SimpleNamespace(DATASETS=SimpleNamespace(TEST=(DATASET,)), OUTPUT_DIR=str(tmp_path))
    box = {"AP": 40.0, "AP50": 60.0, "AP75": 41.0, "APs": float("nan"), "APm": 39.0, "APl": 44.0, "AP-a": 1.0}
    segm = {"AP": 35.0, "AP50": 58.0, "AP75": 33.0, "APs": 20.0, "APm": float("nan"), "APl": 41.0, "AP-a": 2.0}
    records = evaluation_records(cfg, {DATASET: {"bbox": box, "segm": segm}})
    entry = records[DATASET]
    assert entry["metrics"] == {"AP": 40.0, "AP50": 60.0, "AP75": 41.0, "APs": None, "APm": 39.0, "APl": 44.0}
    assert entry["segm_metrics"] == {"AP": 35.0, "AP50": 58.0, "AP75": 33.0, "APs": 20.0, "APm": None, "APl": 41.0}
    assert entry["gt_json"] == str(gt.resolve())
    # A box-only model: the record is as before, with no mask key.
    assert set(evaluation_records(cfg, {"bbox": box})[DATASET]) == {"metrics", "gt_json", "detections"}


def test_metrics_json_has_the_mask_metrics_as_segm(mask_sweep, box_sweep, files):
    _, gt, _ = files
    run_dir = mask_sweep / "frn_ims2_seed0"
    record = json.loads((run_dir / "metrics.json").read_text())
    dets = run_dir / "inference" / DATASET / DETECTIONS_FILE
    box, segm = cocoeval(gt, dets, "bbox"), cocoeval(gt, dets, "segm")
    assert record["status"] == "finished"
    assert {k: record[k] for k in METRIC_KEYS} == recorded(box)  # box AP stays top-level
    assert record["segm"] == recorded(segm)
    assert record["segm"]["APl"] is None  # no large objects: COCO's NaN, as for boxes
    assert record["segm"]["AP"] != record["AP"]
    assert list(record).index("segm") == list(record).index("APl") + 1
    assert record["evaluation"][DATASET]["segm_metrics"] == record["segm"]
    # Box-only models: no "segm" at all.
    assert "segm" not in json.loads((box_sweep / "frn_ims2_seed0" / "metrics.json").read_text())


def _fields(run_dir: Path, outcome: dict) -> dict:
    (run_dir / OUTCOME_FILE).write_text(json.dumps(outcome))
    return _result_fields(run_dir, None, SimpleNamespace(total_batch=2), test=DATASET, tune=None)


def test_segm_only_for_finished_runs_with_mask_results(tmp_path):
    nan = {k: None for k in METRIC_KEYS}  # what the worker writes for COCO's NaN
    some = {k: 10.0 for k in METRIC_KEYS}
    # No detection at all: COCOEvaluator's NaNs are AP 0, for masks as for boxes.
    fields = _fields(tmp_path, {"status": "finished", "evaluation": {DATASET: {"metrics": nan, "segm_metrics": nan}}})
    assert fields["status"] == "finished" and fields["AP"] == 0.0
    assert fields["segm"] == {k: 0.0 for k in METRIC_KEYS}
    # Mask results without box results: a failure, and no mask numbers either.
    fields = _fields(tmp_path, {"status": "finished", "evaluation": {DATASET: {"segm_metrics": some}}})
    assert fields["status"] == "failed" and "segm" not in fields
    # A diverged run (the worker records no evaluation for it): no numbers, no "segm".
    fields = _fields(tmp_path, {"status": "diverged", "diverged_at_iter": 7})
    assert fields["status"] == "diverged" and fields["AP"] is None and "segm" not in fields


# ------------------------------------------------------------------------------ report

def test_tables_show_box_ap_and_mask_ap_with_intervals(mask_sweep, files):
    _, gt, _ = files
    paths = write_report([mask_sweep])
    md = paths["md"].read_text()
    runs = {r["run"]: r for r in json.loads(paths["json"].read_text())}
    frn = runs["frn_ims2_seed0"]
    dets = mask_sweep / "frn_ims2_seed0" / "inference" / DATASET / DETECTIONS_FILE
    assert frn["mask_AP"] == pytest.approx(cocoeval(gt, dets, "segm")["AP"], abs=1e-9)
    assert frn["AP"] == pytest.approx(cocoeval(gt, dets, "bbox")["AP"], abs=1e-9)
    assert frn["mask_AP_lo"] < frn["mask_AP"] < frn["mask_AP_hi"]
    assert frn["AP_lo"] < frn["AP"] < frn["AP_hi"]

    box_rows, mask_rows = table(md, "Box AP by norm"), table(md, "Mask AP by norm")
    # One seed: the interval is marked as covering the test images only (issue 18).
    assert box_rows["frn"][0] == f"{frn['AP']:.1f} [{frn['AP_lo']:.1f}, {frn['AP_hi']:.1f}] †"
    assert mask_rows["frn"][0] == f"{frn['mask_AP']:.1f} [{frn['mask_AP_lo']:.1f}, {frn['mask_AP_hi']:.1f}] †"
    assert mask_rows["gn"][1] == box_rows["gn"][1] == "diverged@37"
    assert list(mask_rows) == ["bn", "gn", "frn"]

    # Differences for both; frn's better masks exclude 0 against bn, but with one seed get no star (issue 18).
    box_diffs, mask_diffs = table(md, "Box AP difference to BN and GN"), table(md, "Mask AP difference to BN and GN")
    assert list(box_diffs) == list(mask_diffs) == ["gn − bn", "frn − bn (primary)", "frn − gn (primary)"]
    assert mask_diffs["frn − bn (primary)"][0].endswith("] †") and "*" not in mask_diffs["frn − bn (primary)"][0]
    assert "## AP difference" not in md
    assert md.startswith("# Normalization sweep: box AP and mask AP vs images per GPU")
    detail = table(md, "All COCO mask (segm) metrics per setting")
    assert detail["frn"][3] == f"{frn['mask_AP']:.1f}" and detail["frn"][5] == f"{frn['mask_AP75']:.1f}"


def test_csv_json_and_comparisons_carry_mask_ap(mask_sweep):
    paths = write_report([mask_sweep])
    with open(paths["csv"], newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    assert header[header.index("AP_hi") + 1:header.index("tune_AP")] == [*MASK_KEYS, "mask_AP_lo", "mask_AP_hi"]
    body = {r["run"]: r for r in (dict(zip(header, row)) for row in rows[1:])}
    runs = {r["run"]: r for r in json.loads(paths["json"].read_text())}
    bn = runs["bn_ims2_seed0"]
    assert bn["mask_APl"] is None and body["bn_ims2_seed0"]["mask_APl"] == ""  # no large objects
    for key in ("mask_AP", "mask_AP50", "mask_AP75", "mask_APs", "mask_APm", "mask_AP_lo", "mask_AP_hi"):
        assert float(body["bn_ims2_seed0"][key]) == pytest.approx(bn[key])
    assert body["gn_ims4_seed0"]["mask_AP"] == "" and runs["gn_ims4_seed0"]["mask_AP"] is None
    assert "segm" not in runs["bn_ims2_seed0"]  # flattened into mask_*, one name per number

    comparisons = json.loads(paths["comparisons"].read_text())
    metrics = {s["metric"] for s in comparisons["settings"]}
    assert metrics == {"AP", "AP50", "AP75", "mask_AP", "mask_AP50", "mask_AP75"}
    frn = next(s for s in comparisons["settings"] if s["norm"] == "frn" and s["metric"] == "mask_AP")
    assert frn["value"] == pytest.approx(runs["frn_ims2_seed0"]["mask_AP"])
    assert (frn["lo"], frn["hi"]) == pytest.approx((runs["frn_ims2_seed0"]["mask_AP_lo"],
                                                    runs["frn_ims2_seed0"]["mask_AP_hi"]))
    d = next(x for x in comparisons["differences"]
             if x["norm"] == "frn" and x["baseline"] == "bn" and x["metric"] == "mask_AP")
    assert d["value"] == pytest.approx(runs["frn_ims2_seed0"]["mask_AP"] - runs["bn_ims2_seed0"]["mask_AP"])
    assert d["excludes_zero"] and d["lo"] > 0


def test_mask_samples_are_cached_apart_and_checked_against_the_record(mask_sweep):
    write_report([mask_sweep])
    run_dir = mask_sweep / "bn_ims2_seed0"
    assert sorted(p.name for p in run_dir.glob("bootstrap_*.npz")) == [
        f"bootstrap_{DATASET}.npz", f"bootstrap_{DATASET}_segm.npz"]
    run = load_runs([mask_sweep])[0]
    assert run["run"] == "bn_ims2_seed0"
    with np.load(run_dir / f"bootstrap_{DATASET}_segm.npz") as data:
        assert float(data["point_AP"]) == pytest.approx(run["mask_AP"], abs=1e-6)
    with np.load(run_dir / f"bootstrap_{DATASET}.npz") as data:
        assert float(data["point_AP"]) == pytest.approx(run["AP"], abs=1e-6)
    run["mask_AP"] += 2.0  # the record no longer matches its detections' masks
    (run_dir / f"bootstrap_{DATASET}_segm.npz").unlink()
    with pytest.raises(ValueError, match="re-evaluating its detections gives mask AP"):
        run_samples(run, iou_type="segm")


def test_box_only_runs_give_exactly_the_box_report(box_sweep):
    paths = write_report([box_sweep])
    md = paths["md"].read_text()
    assert "Mask AP" not in md and "mask AP" not in md and "mask_" not in md
    assert md.startswith("# Normalization sweep: box AP vs images per GPU\n")
    assert "## AP difference to BN and GN" in md
    with open(paths["csv"], newline="") as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    runs = json.loads(paths["json"].read_text())
    assert not any(k.startswith("mask_") for r in runs for k in r)
    comparisons = json.loads(paths["comparisons"].read_text())
    assert {s["metric"] for s in comparisons["settings"]} == {"AP", "AP50", "AP75"}
    assert {d["metric"] for d in comparisons["differences"]} == {"AP"}
    assert not list(box_sweep.glob(f"*/bootstrap_{DATASET}_segm.npz"))
    assert len(list(box_sweep.glob(f"*/bootstrap_{DATASET}.npz"))) == 3


def test_plot_has_a_mask_ap_panel_only_for_runs_with_masks(mask_sweep, box_sweep):
    from frn_det.report.comparisons import setting_intervals
    from frn_det.report.samples import attach_samples

    runs = load_runs([box_sweep])
    fig = ap_vs_ims_figure(runs, intervals=setting_intervals(runs, attach_samples(runs)))
    assert len(fig.axes) == 1 and fig.axes[0].get_ylabel() == "box AP (%), 95% interval"

    runs = load_runs([mask_sweep])
    box, masks = setting_intervals(runs, attach_samples(runs)), setting_intervals(runs, attach_samples(runs, "segm"))
    fig = ap_vs_ims_figure(runs, intervals=box, mask_intervals=masks)
    assert len(fig.axes) == 2
    box_ax, mask_ax = fig.axes
    assert box_ax.get_ylabel().startswith("box AP") and mask_ax.get_ylabel() == "mask AP (%), 95% interval"
    for ax, intervals in ((box_ax, box), (mask_ax, masks)):
        bars = {c.get_label(): c for c in ax.containers}
        (x0, lo), (x1, hi) = bars["frn"].lines[2][0].get_segments()[0]
        assert x0 == x1 == 2
        assert (lo, hi) == pytest.approx((intervals[("frn", 2)].lo, intervals[("frn", 2)].hi))
    frn_mask = next(r for r in runs if r["norm"] == "frn")["mask_AP"]
    assert bars["frn"].lines[0].get_ydata()[0] == pytest.approx(frn_mask)


def test_mask_ap_by_size_uses_the_mask_area_as_detectron2_does(mask_sweep, files):
    """PerImageEval drops the boxes for segm: the size ranges then use the mask area (with the
    boxes, loadRes would take the box area and APs would differ from Detectron2's)."""
    _, gt, _ = files
    dets = mask_sweep / "bn_ims2_seed0" / "inference" / DATASET / DETECTIONS_FILE
    expected = cocoeval(gt, dets, "segm")
    for backend in ("pycocotools", "faster_coco_eval"):
        small = PerImageEval.from_coco(str(gt), str(dets), "segm", area="small", backend=backend).metrics()
        assert small["AP"] == pytest.approx(expected["APs"], abs=1e-9)


MASK_REFS = Path(__file__).resolve().parents[2] / "configs" / "references" / "detectron2_mask_rcnn_zoo.yaml"


def test_references_with_mask_ap_go_to_the_mask_table_column_and_panel(mask_sweep, tmp_path):
    from frn_det.report.references import load_references

    refs = load_references(MASK_REFS)
    gn_9x = next(r for r in refs if "GN, from scratch 9x" in r["label"])
    assert (gn_9x["AP"], gn_9x["mask_AP"], gn_9x["total_batch"]) == (43.7, 39.6, 64)
    md = write_report([mask_sweep], out_dir=tmp_path, references=MASK_REFS)["md"].read_text()
    assert "| reference | box AP | mask AP |" in md
    assert "| D2 zoo Mask R-CNN R50-FPN GN, from scratch 9x | 43.7 | 39.6 | gn |" in md
    fig = ap_vs_ims_figure(load_runs([mask_sweep]), refs)
    box_ax, mask_ax = fig.axes
    lines = lambda ax: sorted(round(line.get_ydata()[0], 1) for line in ax.get_lines()  # noqa: E731
                              if line.get_linestyle() == "--" and line.get_color() == "grey")
    assert lines(box_ax) == sorted(r["AP"] for r in refs)
    assert lines(mask_ax) == sorted(r["mask_AP"] for r in refs)


def test_a_non_numeric_reference_mask_ap_is_an_error(tmp_path):
    from frn_det.report.load import ReportError
    from frn_det.report.references import load_references

    bad = tmp_path / "refs.yaml"
    bad.write_text("- {label: x, AP: 40.0, mask_AP: high}\n")
    with pytest.raises(ReportError, match=r"refs.yaml: entry 0 has a non-numeric 'mask_AP' \('high'\)"):
        load_references(bad)
