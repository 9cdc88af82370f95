"""Tests for frn_det.report on small hand-written sweep dirs (no training needed)."""
import csv
import json
import logging
import math
import statistics
from pathlib import Path

import pytest

from frn_det.cli.report import main
from frn_det.report import ReportError, load_runs, write_report
from frn_det.report.tables import CSV_COLUMNS

REPO = Path(__file__).resolve().parents[2]
ZOO_REFS = REPO / "configs" / "references" / "detectron2_model_zoo.yaml"


def make_run(sweep: Path, norm: str, ims: int, seed: int = 0, status: str = "finished",
             ap=None, diverged_at=None, **extra) -> Path:
    name = f"{norm}_ims{ims}_seed{seed}"
    finished = status == "finished"
    record = {
        "run": name, "norm": norm, "ims_per_gpu": ims, "num_gpus": 1, "num_machines": 1,
        "total_batch": ims, "seed": seed, "model": "tiny_r18_fpn", "dataset": "shapes",
        "status": status,
        "status_detail": f"loss became non-finite at iteration {diverged_at}" if diverged_at
        else "",
        "diverged_at_iter": diverged_at,
        "iterations": 600 if finished else (diverged_at or 0), "images_seen": 600 * ims,
        "wall_time_s": 95.2, "s_per_iter": 0.14, "peak_memory_mb": 812.0,
        "final_losses": {"loss_cls": 0.3, "loss_box_reg": 0.2},
        "config_hash": "ab12cd34", "versions": {"torch": "2.14.1", "detectron2": "0.7.2"},
    }
    for key, offset in (("AP", 0.0), ("AP50", 20.0), ("AP75", 5.0), ("APs", -10.0),
                        ("APm", 1.0), ("APl", 8.0)):
        record[key] = ap + offset if finished and ap is not None else None
    record.update(extra)
    (sweep / name).mkdir(parents=True)
    path = sweep / name / "metrics.json"
    path.write_text(json.dumps(record))
    return path


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """bn/gn/frn at 2 and 8 ims/GPU; frn@2 has 3 seeds; gn@2 diverged; bn@8 has a failed seed."""
    d = tmp_path / "sweep"
    make_run(d, "bn", 2, ap=28.5)
    make_run(d, "bn", 8, ap=31.0)
    make_run(d, "bn", 8, seed=1, status="failed", status_detail="ValueError: boom")
    make_run(d, "frn", 2, seed=0, ap=30.0)
    make_run(d, "frn", 2, seed=1, ap=31.0)
    make_run(d, "frn", 2, seed=2, ap=32.5)
    make_run(d, "frn", 8, ap=30.4)
    make_run(d, "gn", 2, status="diverged", diverged_at=37)
    make_run(d, "gn", 8, ap=29.9, APs=float("nan"))  # COCO NaN for an empty size range
    return d


def md_rows(md: str) -> dict:
    """Main-table rows of results.md as {norm: [cells...]}."""
    section = md.split("## Box AP by norm and images per GPU")[1].split("\n\n")[1]
    rows = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_runs_without_detections_say_they_have_no_interval(tmp_path):
    d = tmp_path / "sweep"
    make_run(d, "bn", 2, ap=28.5)
    make_run(d, "frn", 2, ap=30.0)
    make_run(d, "gn", 2, ap=27.0)
    md = write_report([d])["md"].read_text()
    rows = md_rows(md)
    # No detections file recorded: the value, never an invented interval, and no difference table.
    assert rows["frn"] == ["30.0 (no interval)"]
    assert rows["bn"] == ["28.5 (no interval)"]
    assert "## AP difference" not in md
    assert list(rows) == ["bn", "gn", "frn"]  # report order, not alphabetical


def test_mask_ap_without_detections_is_reported_as_values_in_md_and_tex(tmp_path):
    d = tmp_path / "sweep"
    make_run(d, "bn", 2, ap=28.5, mask_AP=25.0)
    make_run(d, "frn", 2, ap=30.0, mask_AP=26.0)
    make_run(d, "frn", 2, seed=1, ap=31.0, mask_AP=27.5)
    paths = write_report([d])
    tex = paths["tex"].read_text()
    # the mask table has the recorded values (frn: mean of 2 seeds); no difference table without intervals
    assert "\\label{tab:mask-ap}" in tex and "26.8" in tex and "25.0" in tex
    assert "tab:mask-ap-diff" not in tex
    assert "## All COCO mask (segm) metrics per setting" in paths["md"].read_text()


def test_seeds_aggregate_to_mean_and_std(sweep):
    md = write_report([sweep])["md"].read_text()
    rows = md_rows(md)
    aps = [30.0, 31.0, 32.5]
    mean, std = statistics.mean(aps), statistics.stdev(aps)  # stdev is ddof=1
    assert (round(mean, 1), round(std, 1)) == (31.2, 1.3)
    assert rows["frn"][0] == "31.2 ± 1.3 (no interval)"
    assert "n=3" in md
    # Per-setting table: AP50 is AP + 20 for every seed, so same std.
    frn2 = next(l for l in md.splitlines() if l.startswith("| frn | 2 |"))
    assert "| 3/3 |" in frn2 and "| 51.2 ± 1.3 |" in frn2 and "3 finished" in frn2


def test_diverged_and_failed_are_labelled_never_zero(sweep):
    md = write_report([sweep])["md"].read_text()
    rows = md_rows(md)
    assert rows["gn"][0] == "diverged@37"
    assert "0.0" not in rows["gn"][0]
    # bn@8: one seed finished, one failed -> mean of the finished one plus a marker.
    assert rows["bn"][1] == "31.0 (no interval) (1 failed)"
    assert rows["gn"][1] == "29.9 (no interval)"
    assert "## Runs without a result" in md and "ValueError: boom" in md
    assert "- Runs: 9 (finished 7, diverged 1, failed 1); skipped (unreadable): 0" in md


def test_csv_header_rows_and_numbers(sweep):
    path = write_report([sweep])["csv"]
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0][:7] == ["run", "norm", "ims_per_gpu", "lr_scale", "total_batch", "seed", "status"]
    body = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert len(body) == 9
    frn = next(r for r in body if r["run"] == "frn_ims2_seed1")
    assert float(frn["AP"]) == 31.0 and float(frn["AP50"]) == 51.0
    assert frn["ims_per_gpu"] == "2" and frn["config_hash"] == "ab12cd34"
    gn = next(r for r in body if r["run"] == "gn_ims2_seed0")
    assert gn["status"] == "diverged" and gn["AP"] == "" and gn["APl"] == ""
    gn8 = next(r for r in body if r["run"] == "gn_ims8_seed0")
    assert gn8["APs"] == ""  # NaN -> empty cell


def test_results_json_round_trips_and_is_sorted(sweep):
    paths = write_report([sweep])
    data = json.loads(paths["json"].read_text())
    # The loaded records plus each run's own interval (None here: no detections were recorded).
    assert data == [{**r, "AP_lo": None, "AP_hi": None} for r in load_runs([sweep])]
    assert [(r["norm"], r["ims_per_gpu"], r["seed"]) for r in data] == [
        ("bn", 2, 0), ("bn", 8, 0), ("bn", 8, 1), ("gn", 2, 0), ("gn", 8, 0),
        ("frn", 2, 0), ("frn", 2, 1), ("frn", 2, 2), ("frn", 8, 0)]
    assert all(Path(r["source"]).name == "metrics.json" for r in data)
    gn8 = next(r for r in data if r["run"] == "gn_ims8_seed0")
    assert gn8["APs"] is None  # NaN is not valid JSON; stored as null


def test_plot_is_a_readable_png(sweep):
    import matplotlib.image

    path = write_report([sweep], references=ZOO_REFS)["png"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    assert img.shape[1] > 300 and img.shape[0] > 200


def test_references_appear_in_md(sweep):
    md = write_report([sweep], references=ZOO_REFS)["md"].read_text()
    assert "## Reference values" in md
    assert "D2 zoo RetinaNet R50-FPN 1x | 37.4" in md
    assert "D2 zoo RetinaNet R50-FPN 3x | 38.7" in md
    assert "Detectron2 MODEL_ZOO.md" in md


def test_out_dir_and_default_location(sweep, tmp_path):
    paths = write_report([sweep])
    assert {p.parent for p in paths.values()} == {sweep}
    out = tmp_path / "out" / "nested"
    paths = write_report([sweep], out_dir=out)
    assert set(paths) == {"json", "csv", "md", "tex", "png", "comparisons"}
    assert all(p.parent == out and p.is_file() for p in paths.values())
    assert not list(out.glob(".*.tmp"))  # temp files were renamed into place


def test_several_sweep_dirs_are_merged(sweep, tmp_path):
    other = tmp_path / "other"
    make_run(other, "frn", 4, ap=29.0)
    runs = load_runs([sweep, other])
    assert len(runs) == 10
    md = write_report([sweep, other], out_dir=tmp_path / "o")["md"].read_text()
    assert f"`{sweep}`" in md and f"`{other}`" in md
    assert md_rows(md)["bn"] == ["28.5 (no interval)", "–", "31.0 (no interval) (1 failed)"]  # bn was not run at 4


def test_missing_dir_raises_report_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ReportError, match="nope") as err:
        load_runs([missing])
    assert str(missing) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_dir_without_metrics_raises(tmp_path):
    (tmp_path / "empty" / "run_without_metrics").mkdir(parents=True)
    with pytest.raises(ReportError, match="metrics.json") as err:
        write_report([tmp_path / "empty"])
    assert str(tmp_path / "empty") in str(err.value)


def test_malformed_metrics_are_skipped_and_counted(sweep, caplog):
    (sweep / "broken").mkdir()
    (sweep / "broken" / "metrics.json").write_text("{not json")
    (sweep / "no_norm").mkdir()
    no_norm = {"ims_per_gpu": 2, "status": "finished"}
    (sweep / "no_norm" / "metrics.json").write_text(json.dumps(no_norm))
    (sweep / "no_metrics_here").mkdir()  # ignored silently
    with caplog.at_level(logging.WARNING):
        paths = write_report([sweep])
    assert "broken" in caplog.text and "no_norm" in caplog.text and "norm" in caplog.text
    md = paths["md"].read_text()
    assert "skipped (unreadable): 2" in md
    assert len(json.loads(paths["json"].read_text())) == 9


def test_cli_writes_files_and_returns_0(sweep, tmp_path, capsys):
    out = tmp_path / "cli_out"
    rc = main([str(sweep), "--out", str(out), "--references", str(ZOO_REFS)])
    assert rc == 0
    for name in ("results.json", "results.csv", "results.md", "ap_vs_ims_per_gpu.png"):
        assert (out / name).is_file()
    assert str(out / "results.md") in capsys.readouterr().out


def test_cli_missing_dir_returns_2(tmp_path, capsys):
    missing = tmp_path / "missing_sweep"
    assert main([str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and str(missing) in err and "\n" not in err


def test_zoo_reference_file_values():
    from frn_det.report.references import load_references

    refs = {r["label"]: r for r in load_references(ZOO_REFS)}
    assert [r["AP"] for r in refs.values()] == [37.4, 38.7]
    assert all(r["ims_per_gpu"] == 2 and r["total_batch"] == 16 for r in refs.values())
    assert not math.isnan(sum(r["AP"] for r in refs.values()))


def test_single_setting_all_diverged_still_reports(tmp_path):
    d = tmp_path / "sweep"
    make_run(d, "frn", 1, status="diverged", diverged_at=5)
    make_run(d, "frn", 1, seed=1, status="diverged", diverged_at=9)
    make_run(d, "ln", 1, status="running", seed=None)  # unknown norm sorts after frn
    paths = write_report([d], references=ZOO_REFS)
    rows = md_rows(paths["md"].read_text())
    assert rows == {"frn": ["diverged@5, diverged@9"], "ln": ["running"]}
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_norm_variants_follow_their_norm_in_the_report_order():
    from frn_det.report.aggregate import norm_sort_key

    norms = [
        "frn_relu",
        "gn+tlu",
        "evonorm_s0",
        "bn_tlu",
        "frn",
        "gnws",
        "gn",
        "bn",
        "brn",
        "syncbn_tlu",
        "syncbn",
        "zzz",
    ]
    assert sorted(norms, key=norm_sort_key) == [
        "bn", "bn_tlu", "syncbn", "syncbn_tlu", "brn", "gn", "gn+tlu", "gnws", "evonorm_s0", "frn", "frn_relu", "zzz"]


def test_many_norms_get_distinct_colours_and_variants_their_norms_dashed():
    from frn_det.report.plots import norm_colours, norm_linestyles

    norms = ["bn", "bn_tlu", "frozenbn", "brn", "gn", "gn+tlu", "gnws", "evonorm_b0", "evonorm_s0", "frn", "frn_relu"]
    colours, styles = norm_colours(norms), norm_linestyles(norms)
    assert (colours["bn"], colours["gn"], colours["frn"]) == ("tab:blue", "tab:green", "tab:red")
    assert (
        colours["bn_tlu"] == colours["bn"]
        and colours["gn+tlu"] == colours["gn"]
        and colours["frn_relu"] == colours["frn"]
    )
    solid = [n for n in norms if styles[n] == "-"]
    assert len({colours[n] for n in solid}) == len(solid) == 8
    assert {n for n in norms if styles[n] == "--"} == {"bn_tlu", "gn+tlu", "frn_relu"}
