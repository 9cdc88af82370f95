"""The report's intervals, paired differences, best-lr view and curves, on real COCO-format
ground truth and detection files (no training)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from report_runs import make_run, write_gt

from frn_det.report import write_report
from frn_det.report.comparisons import lr_choices
from frn_det.report.plots import ap_vs_ims_figure
from frn_det.report.samples import run_samples


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_intervals")
    gt = root / "gt.json"
    anns = write_gt(gt)
    d = root / "sweep"
    make_run(d, gt, anns, "bn", 2, jitter=12.0)   # sloppy boxes
    make_run(d, gt, anns, "gn", 2, jitter=12.0, seed=0)
    make_run(d, gt, anns, "frn", 2, jitter=0.5)   # near-perfect boxes: clearly better
    return d


def test_every_ap_has_an_interval_around_it(sweep):
    paths = write_report([sweep])
    runs = json.loads(paths["json"].read_text())
    for run in runs:
        assert run["AP_lo"] < run["AP"] < run["AP_hi"], run
    md = paths["md"].read_text()
    frn_row = next(line for line in md.splitlines() if line.startswith("| frn |"))
    frn = next(r for r in runs if r["norm"] == "frn")
    assert f"{frn['AP']:.1f} [{frn['AP_lo']:.1f}, {frn['AP_hi']:.1f}]" in frn_row


def test_one_seed_gets_no_star_and_the_table_says_training_noise_is_missing(sweep):
    """Changed with issue 18: a single seed's interval covers test images only, so a clear
    difference is not starred; the table marks it and says why directly under it."""
    paths = write_report([sweep])
    md = paths["md"].read_text()
    section = md.split("## AP difference to BN and GN")[1]
    table, note = section.split("\n\n")[1:3]
    frn_bn = next(line for line in table.splitlines() if line.startswith("| frn − bn (primary) |"))
    assert "*" not in frn_bn and "†" in frn_bn
    assert note.startswith("† one seed") and "training noise is not included" in note
    comparisons = json.loads(paths["comparisons"].read_text())
    d = next(x for x in comparisons["differences"] if x["norm"] == "frn" and x["baseline"] == "bn")
    assert d["excludes_zero"] and d["lo"] > 0 and d["value"] > 5
    assert not d["training_noise"] and not d["significant"] and d["model"] == "images only"


MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "torch_threads": 1, "gpu": None, "gpu_driver": None,
           "git_commit": "0123456789abcdef", "git_dirty": True}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """bn (sloppy boxes) and frn (near-perfect) at 2 images per GPU, 3 seeds each, with a
    machine record and a flat loss at the end of the schedule."""
    root = tmp_path_factory.mktemp("seeded")
    gt = root / "gt.json"
    anns = write_gt(gt, seed=3)
    d = root / "sweep"
    for seed in (0, 1, 2):
        for norm, jitter in (("bn", 12.0), ("frn", 0.5)):
            run = make_run(d, gt, anns, norm, 2, jitter=jitter, seed=seed)
            record = json.loads((run / "metrics.json").read_text())
            (run / "metrics.json").write_text(json.dumps({**record, "machine": MACHINE}))
            flat = [{"iteration": it, "total_loss": 1.0 + 0.01 * ((it // 20) % 2)} for it in range(19, 200, 20)]
            (run / "training_metrics.json").write_text("\n".join(json.dumps(e) for e in flat) + "\n")
    return d


def test_a_clearly_better_norm_with_three_seeds_is_marked_significant(seeded):
    """Two settings: one pair, nothing to borrow, so its own seed variance (df 2); the primary
    family frn − bn is that one comparison, so its critical value is its own t quantile."""
    paths = write_report([seeded])
    md = paths["md"].read_text()
    table = md.split("## AP difference to BN and GN")[1].split("\n\n")[1]
    frn_bn = next(line for line in table.splitlines() if line.startswith("| frn − bn (primary) |"))
    assert frn_bn.rstrip(" |").endswith("*") and "†" not in frn_bn and "↓" not in frn_bn
    comparisons = json.loads(paths["comparisons"].read_text())
    diff = next(x for x in comparisons["differences"] if x["norm"] == "frn" and x["baseline"] == "bn")
    assert diff["significant"] and diff["model"] == "paired, own" and diff["n"] == 3 and diff["family"] == "primary"
    assert (diff["lo"], diff["hi"]) == (diff["lo_unadjusted"], diff["hi_unadjusted"])  # a family of one
    assert diff["p_adjusted"] == pytest.approx(diff["p"], abs=0.002) and diff["p"] < 0.05
    noise = comparisons["noise"]["AP"]
    assert noise["settings"] == 2 and noise["pairs"] == 1 and noise["pair_prior"] is None
    assert "one setting" not in md and "Families: **primary**" in md
    # The power table has the comparison with its minimum detectable difference and seeds needed.
    power = md.split("## AP power per comparison")[1].split("\n\n")[1]
    row = next(line for line in power.splitlines() if line.startswith("| frn − bn |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["2", "3", "primary", f"paired, own (df {math.floor(diff['df'])})"]
    assert float(cells[8]) == pytest.approx(diff["mdd"], abs=0.05) and diff["mdd"] > 0
    assert "seeds for 0.50 AP" in power.splitlines()[0]


def test_machine_is_one_line_in_the_report_and_kept_in_results_json(seeded):
    paths = write_report([seeded])
    lines = [line for line in paths["md"].read_text().splitlines() if line.startswith("- Machine:")]
    assert lines == ["- Machine: Test CPU 9000 (2 cores, 1 torch threads), commit 0123456789ab (dirty tree)"]
    runs = json.loads(paths["json"].read_text())
    assert all(r["machine"] == MACHINE for r in runs)
    assert json.loads(paths["comparisons"].read_text())["machines"] == [{**MACHINE, "runs": 6}]


def test_plot_shows_every_seed_as_a_dot(seeded):
    from frn_det.report.load import load_runs

    runs = load_runs([seeded])
    fig = ap_vs_ims_figure(runs)
    dots = {line.get_label(): line for line in fig.axes[0].lines if line.get_label().endswith("seeds")}
    frn = dots["_frn seeds"]
    assert sorted(frn.get_ydata()) == pytest.approx(sorted(r["AP"] for r in runs if r["norm"] == "frn"))
    assert all(x > 2 for x in frn.get_xdata())  # beside the mean, not on it


def test_plan_seeds_prints_seeds_needed_per_effect(seeded, capsys):
    from frn_det.cli.report import main

    assert main([str(seeded), "--plan-seeds", "--effect", "0.5", "50"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| frn − bn |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["frn − bn", "2", "3", "primary"]
    assert cells[4] == "more test images" and int(cells[5]) >= 2  # 0.5 AP: 60 images are too few; 50 AP: a few seeds
    assert not (seeded / "results_plan.md").exists()
    assert main([str(seeded), "--effect", "-1"]) == 2


def test_a_falling_loss_is_flagged_in_the_tables(sweep):
    """The module fixture's logs fall as 2 / (1 + it / 20): still falling at the end."""
    md = write_report([sweep])["md"].read_text()
    frn_row = next(line for line in md.splitlines() if line.startswith("| frn |"))
    assert frn_row.rstrip(" |").endswith("↓")
    assert "↓ loss still falling over the last 20% of the schedule" in md


def test_identical_detections_give_an_interval_that_covers_zero(tmp_path):
    gt = tmp_path / "gt.json"
    anns = write_gt(gt, seed=1)
    d = tmp_path / "sweep"
    bn = make_run(d, gt, anns, "bn", 4, jitter=6.0)
    gn = make_run(d, gt, anns, "gn", 4, jitter=6.0)
    (gn / "dets.json").write_text((bn / "dets.json").read_text())
    record = json.loads((gn / "metrics.json").read_text())
    record["AP"] = json.loads((bn / "metrics.json").read_text())["AP"]
    (gn / "metrics.json").write_text(json.dumps(record))
    comparisons = json.loads(write_report([d])["comparisons"].read_text())
    d = next(x for x in comparisons["differences"] if x["norm"] == "gn" and x["baseline"] == "bn")
    assert d["value"] == 0 and d["lo"] <= 0 <= d["hi"] and not d["excludes_zero"]


def test_samples_are_cached_and_files_changed_after_the_run_are_refused(sweep, tmp_path):
    run = json.loads((sweep / "bn_ims2_seed0" / "metrics.json").read_text())
    run["source"] = str(sweep / "bn_ims2_seed0" / "metrics.json")
    first = run_samples(run)
    assert (sweep / "bn_ims2_seed0" / "bootstrap_val.npz").is_file()
    again = run_samples(run)
    assert np.array_equal(first.samples["AP"], again.samples["AP"]) and first.point == again.point
    run["AP"] += 3.0  # the record no longer matches its detections file
    (sweep / "bn_ims2_seed0" / "bootstrap_val.npz").unlink()
    with pytest.raises(ValueError, match="re-evaluating its detections gives AP"):
        run_samples(run)


def test_plot_draws_the_intervals_as_error_bars(sweep):
    from frn_det.report.comparisons import setting_intervals
    from frn_det.report.load import load_runs
    from frn_det.report.samples import attach_samples

    runs = load_runs([sweep])
    intervals = setting_intervals(runs, attach_samples(runs))
    fig = ap_vs_ims_figure(runs, intervals=intervals)
    ax = fig.axes[0]
    bars = {c.get_label(): c for c in ax.containers}
    segments = bars["frn"].lines[2][0].get_segments()
    (x0, lo), (x1, hi) = segments[0]
    assert x0 == x1 == 2
    assert (lo, hi) == pytest.approx((intervals[("frn", 2)].lo, intervals[("frn", 2)].hi))


def test_lr_is_chosen_on_the_tuning_split_not_on_test(tmp_path):
    gt = tmp_path / "gt.json"
    anns = write_gt(gt, seed=2)
    d = tmp_path / "sweep"
    # lr 0.5 has the better tuning AP; lr 2 has the better test AP (sharper boxes).
    make_run(d, gt, anns, "frn", 1, jitter=8.0, lr_scale=0.5, tune_ap=40.0)
    make_run(d, gt, anns, "frn", 1, jitter=1.0, lr_scale=2.0, tune_ap=30.0)
    make_run(d, gt, anns, "frn", 1, jitter=4.0, lr_scale=1.0, tune_ap=35.0)
    from frn_det.report.load import load_runs

    (choice,) = lr_choices(load_runs([d]), {})
    assert choice["chosen_on"] == "tune" and choice["lr_scale"] == 0.5
    md = write_report([d])["md"].read_text()
    row = next(
        line for line in md.split("## Best learning rate per norm")[1].splitlines() if line.startswith("| frn |")
    )
    assert "| 0.5 |" in row and "chosen on test" not in row
    # Without tuning APs the choice falls back to test, and the report says so.
    for run_dir in (p.parent for p in d.glob("*/metrics.json")):
        record = json.loads((run_dir / "metrics.json").read_text())
        record["tune"] = None
        (run_dir / "metrics.json").write_text(json.dumps(record))
    (choice,) = lr_choices(load_runs([d]), {})
    assert choice["chosen_on"] == "test" and choice["lr_scale"] == 2.0
    assert "chosen on test" in write_report([d])["md"].read_text()


def test_training_curves_plot_is_written_from_the_logs(sweep):
    import matplotlib.image

    paths = write_report([sweep])
    image = matplotlib.image.imread(paths["curves"])
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert "![training curves](training_curves.png)" in paths["md"].read_text()
    assert not math.isnan(float(image.mean()))


def test_the_baselines_difference_is_shown_once(sweep):
    md = write_report([sweep])["md"].read_text()
    diffs = md.split("## AP difference to BN and GN")[1].split("\n\n")[1]
    rows = [line.split("|")[1].strip() for line in diffs.splitlines()[2:]]
    assert rows == ["gn − bn", "frn − bn (primary)", "frn − gn (primary)"]


def test_no_ap_panel_without_evaluations_during_training(sweep, tmp_path):
    """One final evaluation is one point: the curves plot then has only the loss row."""
    import shutil

    import matplotlib.image

    from frn_det.report.curves import plot_training_curves
    from frn_det.report.load import load_runs

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)  # the fixture is shared: change a copy
    runs = load_runs([copy])
    plot_training_curves(runs, tmp_path / "loss_only.png")
    for run in runs:  # add AP at three iterations to every run's log
        log = Path(run["source"]).parent / "training_metrics.json"
        log.write_text(log.read_text() + "".join(json.dumps({"iteration": it, "val/bbox/AP": 5.0 + it / 100}) + "\n"
                                                 for it in (49, 99, 199)))
    plot_training_curves(runs, tmp_path / "with_ap.png")
    loss_only, with_ap = (matplotlib.image.imread(tmp_path / n) for n in ("loss_only.png", "with_ap.png"))
    assert with_ap.shape[0] > 1.5 * loss_only.shape[0]  # a second row of panels


@pytest.fixture(scope="module")
def lost_run(tmp_path_factory):
    """bn, gn, frn at 2 images per GPU, 3 seeds; bn's seed 1 failed."""
    root = tmp_path_factory.mktemp("lost")
    gt = root / "gt.json"
    anns = write_gt(gt, seed=4)
    d = root / "sweep"
    for seed in (0, 1, 2):
        for norm, jitter in (("bn", 12.0), ("gn", 6.0), ("frn", 0.5)):
            run = make_run(d, gt, anns, norm, 2, jitter=jitter, seed=seed)
            if (norm, seed) == ("bn", 1):
                record = json.loads((run / "metrics.json").read_text())
                record.update(status="failed", AP=None, status_detail="RuntimeError: boom")
                (run / "metrics.json").write_text(json.dumps(record))
    return d


def test_a_setting_that_lost_runs_is_counted_paired_on_the_rest_and_marked(lost_run):
    paths = write_report([lost_run])
    md = paths["md"].read_text()
    assert "**Finished:** 8 of 9 runs (11% did not finish: bn@2 2 of 3)" in md
    table = md.split("## AP difference to BN and GN")[1].split("\n\n")[1]
    frn_bn = next(line for line in table.splitlines() if line.startswith("| frn − bn (primary) |"))
    frn_gn = next(line for line in table.splitlines() if line.startswith("| frn − gn (primary) |"))
    assert "‡" in frn_bn and "‡" not in frn_gn
    assert "‡ A setting lost runs: bn@2 2 of 3 finished" in md
    comparisons = json.loads(paths["comparisons"].read_text())
    d = next(x for x in comparisons["differences"] if (x["norm"], x["baseline"]) == ("frn", "bn"))
    assert d["n"] == 2 and d["lost_runs"] == {"bn@2": {"finished": 2, "runs": 3}}
    assert d["model"].startswith("paired")  # on seeds 0 and 2, which both finished


def test_primary_comparisons_from_the_cli_and_a_whole_table_family(lost_run, tmp_path, capsys):
    from frn_det.cli.report import main

    assert main([str(lost_run), "--out", str(tmp_path / "one"), "--primary"]) == 0  # no primary: one family
    comparisons = json.loads((tmp_path / "one" / "comparisons.json").read_text())
    assert {d["family"] for d in comparisons["differences"]} == {"all"} and comparisons["primary"] == []
    assert "**one family**: every difference of this table" in (tmp_path / "one" / "results.md").read_text()
    assert main([str(lost_run), "--out", str(tmp_path / "gn"), "--primary", "gn-bn"]) == 0
    comparisons = json.loads((tmp_path / "gn" / "comparisons.json").read_text())
    families = {(d["norm"], d["baseline"]): d["family"] for d in comparisons["differences"]}
    assert families == {("gn", "bn"): "primary", ("frn", "bn"): "exploratory", ("frn", "gn"): "exploratory"}
    assert main([str(lost_run), "--primary", "frn-in"]) == 2
    assert "--primary: primary comparison 'frn-in': expected <norm>-<baseline> with a baseline in bn, gn" in \
        capsys.readouterr().err


def test_identical_seeds_are_named_and_get_no_star(tmp_path):
    gt = tmp_path / "gt.json"
    anns = write_gt(gt, seed=5)
    d = tmp_path / "sweep"
    for seed in (0, 1, 2):
        make_run(d, gt, anns, "bn", 2, jitter=12.0, seed=seed)
        frn = make_run(d, gt, anns, "frn", 2, jitter=0.5, seed=seed)
        if seed:  # frn's seeds 1 and 2 are copies of seed 0: a seed that never reached the training
            (frn / "dets.json").write_text((d / "frn_ims2_seed0" / "dets.json").read_text())
            record = json.loads((frn / "metrics.json").read_text())
            record["AP"] = json.loads((d / "frn_ims2_seed0" / "metrics.json").read_text())["AP"]
            (frn / "metrics.json").write_text(json.dumps(record))
    paths = write_report([d])
    md = paths["md"].read_text()
    assert "§ Identical AP in every seed: frn@2." in md
    diff = next(x for x in json.loads(paths["comparisons"].read_text())["differences"] if x["norm"] == "frn")
    assert diff["excludes_zero"] and not diff["significant"] and diff["untestable"] == "zero seed variance"
    row = next(line for line in md.splitlines() if line.startswith("| frn − bn (primary) |"))
    assert "] §" in row and "*" not in row
