"""Write every report file for a set of sweep dirs (the one entry point that does I/O)."""
import json
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..utils.atomic import write_atomic, write_text_atomic
from .load import ReportError, load_runs_and_skipped
from .plots import plot_ap_vs_ims
from .references import load_references
from .tables import runs_to_csv, runs_to_markdown

PLOT_NAME = "ap_vs_ims_per_gpu.png"


def write_report(sweep_dirs: Sequence[Path], out_dir: Optional[Path] = None,
                 references: Optional[Path] = None) -> Dict[str, Path]:
    """Write results.json/.csv/.md and the AP plot; return {"json"|"csv"|"md"|"png": path}.

    ``out_dir`` defaults to the first sweep dir, so the report sits next to its runs.
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

    paths = {
        "json": write_text_atomic(out_dir / "results.json", json.dumps(runs, indent=2) + "\n"),
        "csv": write_text_atomic(out_dir / "results.csv", runs_to_csv(runs)),
        "png": write_atomic(out_dir / PLOT_NAME, lambda tmp: plot_ap_vs_ims(runs, tmp, refs)),
    }
    md = runs_to_markdown(runs, sweep_dirs, skipped=len(skipped), references=refs,
                          plot_name=PLOT_NAME)
    paths["md"] = write_text_atomic(out_dir / "results.md", md)
    return paths
