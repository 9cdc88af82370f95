"""Write every report file for a set of sweep dirs (the one entry point that does I/O)."""
import json
from collections import Counter
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..evaluation.intervals import one_seed_setting
from ..utils.atomic import write_atomic, write_text_atomic
from .comparisons import DEFAULT_EFFECT, DEFAULT_PRIMARY, fixed_lr_runs, results_json, sweep_results
from .curves import has_training_logs, plot_training_curves
from .latex import runs_to_latex
from .load import ReportError, has_masks, load_runs, load_runs_and_skipped
from .plots import plot_ap_vs_ims
from .references import load_references
from .samples import attach_samples
from .tables import plan_table, runs_to_csv, runs_to_markdown

PLOT_NAME = "ap_vs_ims_per_gpu.png"
CURVES_NAME = "training_curves.png"


def _with_interval(run: dict, samples, prefix: str = "") -> dict:
    """The run record plus its own AP interval (one run, bootstrap over test images);
    prefix "mask_": its mask AP interval (mask_AP_lo, mask_AP_hi)."""
    s = samples.get(run["source"])
    interval = one_seed_setting(s.point["AP"], s.samples["AP"][None]) if s is not None else None
    return {**run, f"{prefix}AP_lo": interval.lo if interval else None,
            f"{prefix}AP_hi": interval.hi if interval else None}


def recorded_primary(runs: Sequence[dict]) -> Sequence[str]:
    """The primary comparisons the sweep declared (metrics.json "primary", the most common
    record), else DEFAULT_PRIMARY."""
    declared = Counter(tuple(r["primary"]) for r in runs if isinstance(r.get("primary"), list))
    return list(declared.most_common(1)[0][0]) if declared else list(DEFAULT_PRIMARY)


def write_report(sweep_dirs: Sequence[Path], out_dir: Optional[Path] = None,
                 references: Optional[Path] = None, effect: float = DEFAULT_EFFECT,
                 primary: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """Write results.json/.csv/.md/.tex, comparisons.json and the plots; return {"json"|"csv"|"md"|"tex"|
    "png"|"comparisons"|"curves": path} ("curves" only when some run has a training log).

    ``out_dir`` defaults to the first sweep dir, so the report sits next to its runs.
    ``effect``: the difference (AP points) the power columns ask seeds for. ``primary``: the
    primary comparisons ("frn-gn", ...); None: what the runs recorded (the sweep's
    `primary`), else DEFAULT_PRIMARY.
    """
    if isinstance(sweep_dirs, (str, Path)):
        sweep_dirs = [sweep_dirs]
    sweep_dirs = [Path(d) for d in sweep_dirs]
    runs, skipped = load_runs_and_skipped(sweep_dirs)
    refs = load_references(references)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dirs[0]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create output directory {out_dir}: {e}") from e

    samples = attach_samples(runs)
    runs = [_with_interval(r, samples) for r in runs]
    # Mask AP (Mask R-CNN): its own bootstrap of the same detections; None keeps the box-only report.
    mask_samples = attach_samples(runs, "segm") if has_masks(runs) else None
    if mask_samples is not None:
        runs = [_with_interval(r, mask_samples, "mask_") for r in runs]
    primary = recorded_primary(runs) if primary is None else primary
    results = sweep_results(runs, samples, mask_samples, effect, primary)  # the one place the answer is computed
    fixed = fixed_lr_runs(runs)
    paths = {
        "json": write_text_atomic(out_dir / "results.json", json.dumps(runs, indent=2) + "\n"),
        "csv": write_text_atomic(out_dir / "results.csv", runs_to_csv(runs)),
        "comparisons": write_text_atomic(out_dir / "comparisons.json",
                                         json.dumps(results_json(results), indent=2) + "\n"),
        "png": write_atomic(out_dir / PLOT_NAME, lambda tmp: plot_ap_vs_ims(
            fixed, tmp, refs, results["settings"]["AP"], results["settings"].get("mask_AP"))),
    }
    has_curves = has_training_logs(runs)
    if has_curves:
        paths["curves"] = write_atomic(out_dir / CURVES_NAME, lambda tmp: plot_training_curves(runs, tmp))
    md = runs_to_markdown(runs, sweep_dirs, skipped=len(skipped), references=refs, plot_name=PLOT_NAME,
                          curves_name=CURVES_NAME if has_curves else None, results=results)
    paths["md"] = write_text_atomic(out_dir / "results.md", md)
    paths["tex"] = write_text_atomic(out_dir / "results.tex", runs_to_latex(runs, results))
    return paths


def plan_seeds(sweep_dirs, effects, primary=None) -> str:
    """The planning table of a finished sweep (tables.plan_table of its box AP differences)."""
    runs = load_runs(sweep_dirs)
    results = sweep_results(runs, attach_samples(runs), primary=recorded_primary(runs) if primary is None else primary)
    return plan_table(results, effects)
