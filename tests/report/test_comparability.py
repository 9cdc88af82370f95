"""report/comparability.py and the report's lines for runs that were not computed alike
(hand-written metrics.json files, no training)."""
import json
from pathlib import Path

from frn_det.report import write_report
from frn_det.report.aggregate import Group
from frn_det.report.comparability import (
    differing_fields,
    implementation_label,
    layout_fields,
    mixed_comparisons,
    mixed_settings,
)
from frn_det.report.tables import comparability_note

CPP = {"implementation": "C++", "reason": None}
TORCH = {"implementation": "PyTorch", "reason": "C++ build failed: RuntimeError: Error building extension ..."}


def run(norm, ims, seed, ap, impls=None, status="finished"):
    record = {"run": f"{norm}_ims{ims}_seed{seed}", "norm": norm, "ims_per_gpu": ims, "seed": seed,
              "status": status, "AP": ap if status == "finished" else None, "total_batch": ims}
    if impls is not None:
        record["implementations"] = impls
    return record


def test_fields_that_differ_between_a_settings_runs():
    frn = [run("frn", 1, 0, 8.1, {"FRN": CPP, "TLU": CPP}), run("frn", 1, 1, 8.5, {"FRN": TORCH, "TLU": TORCH})]
    assert layout_fields(frn[0]) == {"FRN implementation": "C++", "TLU implementation": "C++"}
    assert differing_fields(frn) == ["FRN implementation", "TLU implementation"]
    # the reason does not count, the implementation does
    other_reason = {"implementation": "PyTorch", "reason": "C++ kernels disabled by FRN_DET_NO_CPP"}
    assert differing_fields([frn[1], run("frn", 1, 2, 8.4, {"FRN": other_reason, "TLU": TORCH})]) == []
    # layers a run does not have, runs without a record (older runs) and runs without a
    # result are not compared
    assert differing_fields([frn[0], run("frn", 1, 2, 8.0, {})]) == []
    assert differing_fields([frn[0], run("frn", 1, 2, 8.0)]) == []
    assert differing_fields([frn[0], run("frn", 1, 3, None, {"FRN": TORCH, "TLU": TORCH}, status="failed")]) == []
    assert differing_fields([frn[0], run("bn", 1, 0, 1.2, {})]) == []


def test_mixed_settings_and_comparisons():
    groups = {
        ("frn", 1): [run("frn", 1, 0, 8.1, {"FRN": CPP, "TLU": CPP}),
                     run("frn", 1, 1, 8.5, {"FRN": TORCH, "TLU": TORCH})],
        ("frn", 4): [run("frn", 4, 0, 8.2, {"FRN": CPP, "TLU": CPP})],
        ("gn_tlu", 4): [run("gn_tlu", 4, 0, 9.0, {"TLU": TORCH})],
        ("gn", 1): [run("gn", 1, 0, 11.2, {})],
        ("gn", 4): [run("gn", 4, 0, 10.6, {})],
    }
    assert mixed_settings(groups) == {("frn", 1): ["FRN implementation", "TLU implementation"]}
    pairs = [(("frn", 1), ("gn", 1)), (("frn", 4), ("gn", 4)), (("frn", 4), ("gn_tlu", 4)), (("gn", 4), ("gn", 1))]
    assert mixed_comparisons(groups, pairs) == {
        (("frn", 1), ("gn", 1)): ["FRN implementation", "TLU implementation"],  # frn@1 is mixed itself
        (("frn", 4), ("gn_tlu", 4)): ["TLU implementation"],  # each setting alike, the two not
    }
    assert implementation_label(groups[("frn", 1)]) == "FRN C++, TLU C++ / FRN PyTorch, TLU PyTorch"
    assert implementation_label(groups[("gn", 1)]) == ""
    # the report's note (under the main table) names both
    report_groups = {key: Group(*key, runs=runs) for key, runs in groups.items()}
    diffs = [{"norm": a[0], "baseline": b[0], "ims_per_gpu": a[1]} for a, b in pairs[:3]]
    note = comparability_note(report_groups, diffs)
    assert note[1] == ("**Mixed runs:** frn@1 (FRN implementation, TLU implementation); frn − gn_tlu@4. Their runs "
                       "were not computed the same way (see the implementation column below), which changes the "
                       "numbers after training: rerun them alike (docs/performance.md).")
    assert comparability_note({k: g for k, g in report_groups.items() if k != ("frn", 1)}, diffs[1:2]) == []


def test_report_names_mixed_settings_and_shows_the_implementation(tmp_path):
    sweep = tmp_path / "sweep"
    records = [run("gn", 1, s, 11.0 + s, {}) for s in range(2)]
    records += [run("frn", 1, 0, 8.1, {"FRN": CPP, "TLU": CPP}), run("frn", 1, 1, 8.5, {"FRN": TORCH, "TLU": TORCH})]
    records += [run("frn", 4, s, 8.0 + s, {"FRN": CPP, "TLU": CPP}) for s in range(2)]
    for record in records:
        folder = sweep / f"{record['run']}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(record))
    md = Path(write_report([sweep])["md"]).read_text()
    main_table = md.split("## Box AP by norm and images per GPU")[1].split("\n## ")[0]
    assert ("**Mixed runs:** frn@1 (FRN implementation, TLU implementation). Their runs were not computed the "
            "same way") in main_table
    assert "frn@4" not in main_table.split("**Mixed runs:**")[1]
    details = md.split("## All COCO metrics per setting")[1].split("\n## ")[0]
    assert "| implementation |" in details
    assert "| FRN C++, TLU C++ / FRN PyTorch, TLU PyTorch |" in details
    assert "| FRN C++, TLU C++ |" in details and "| none |" in details
    results = json.loads((sweep / "results.json").read_text())
    assert {r["run"]: r.get("implementations") for r in results}["frn_ims1_seed1"] == {"FRN": TORCH, "TLU": TORCH}


def test_report_of_alike_runs_has_no_mixed_note(tmp_path):
    sweep = tmp_path / "sweep"
    for s in range(2):
        for norm, impls in (("gn", {}), ("frn", {"FRN": CPP, "TLU": CPP})):
            record = run(norm, 2, s, 9.0 + s, impls)
            (sweep / record["run"]).mkdir(parents=True)
            (sweep / record["run"] / "metrics.json").write_text(json.dumps(record))
    assert "Mixed runs" not in Path(write_report([sweep])["md"]).read_text()


def test_seeds_run_with_other_torch_thread_counts_are_mixed():
    """Issue 28: the thread count changes a run's numbers (6.706 vs 7.093 AP, same config hash)."""
    one, two = ({**run("frn", 1, s, 7.0), "machine": {"torch_threads": t}} for s, t in ((0, 1), (1, 2)))
    assert layout_fields(one) == {"torch threads": "1"}
    assert differing_fields([one, two]) == ["torch threads"]
    assert differing_fields([one, {**two, "machine": {"torch_threads": 1}}]) == []
    resumed = {**two, "machine": {"torch_threads": 1, "torch_threads_at_start": 2}}  # resumed with threads=1
    assert layout_fields(resumed) == {"torch threads": "2 then 1"} and differing_fields([one, resumed])
