"""Find and parse the per-run ``metrics.json`` files of one or more sweep directories."""
import json
import logging
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..record.metrics import METRIC_KEYS, METRICS_FILE
from .aggregate import run_sort_key

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("norm", "ims_per_gpu", "status")
# Mask metrics of a model that predicts masks (metrics.json "segm"), flattened into the record.
MASK_KEYS = tuple(f"mask_{k}" for k in METRIC_KEYS)
# Numeric fields other than AP that may be NaN/garbage; normalised the same way.
NUMBER_KEYS = METRIC_KEYS + ("wall_time_s", "s_per_iter", "peak_memory_mb")


class ReportError(ValueError):
    """Bad input for the report (missing sweep dir, no runs, bad references file)."""


def as_number(value) -> Optional[float]:
    """Float, or None for missing/NaN/non-numeric (COCO writes NaN for empty size ranges)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def find_metrics_files(sweep_dir: Path) -> List[Path]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(
            f"sweep directory {sweep_dir} does not exist or is not a directory "
            "(expected a sweep directory containing <run_name>/metrics.json, or a run directory)"
        )
    if (sweep_dir / METRICS_FILE).is_file():  # a single run's folder (e.g. Hydra's run dir)
        return [sweep_dir / METRICS_FILE]
    files = sorted(p for p in sweep_dir.glob(f"*/{METRICS_FILE}") if p.is_file())
    if not files:
        raise ReportError(
            f"no metrics.json found in {sweep_dir} "
            "(expected one sub-directory per run, each with a metrics.json)"
        )
    return files


def parse_metrics(path: Path) -> Optional[dict]:
    """The run record of one metrics.json, or None (with a warning) when unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("skipping unreadable %s: %s", path, e)
        return None
    if not isinstance(record, dict):
        log.warning("skipping %s: expected a JSON object, got %s", path, type(record).__name__)
        return None
    missing = [k for k in REQUIRED_KEYS if record.get(k) in (None, "")]
    if missing:
        log.warning("skipping %s: missing required key(s) %s", path, ", ".join(missing))
        return None
    try:
        record["ims_per_gpu"] = int(record["ims_per_gpu"])
    except (TypeError, ValueError):
        log.warning("skipping %s: ims_per_gpu=%r is not an integer", path, record["ims_per_gpu"])
        return None
    record["norm"] = str(record["norm"]).strip().lower()
    record["status"] = str(record["status"]).strip().lower()
    record.setdefault("run", path.parent.name)
    for key in NUMBER_KEYS:
        if key in record:
            record[key] = as_number(record[key])
    segm = record.pop("segm", None)
    if isinstance(segm, dict):  # one flat record per run: tables, CSV and JSON read mask_AP like AP
        record.update({f"mask_{k}": as_number(segm.get(k)) for k in METRIC_KEYS})
    # Keep the path as a string so results.json round-trips to the same records.
    record["source"] = str(path)
    return record


def load_runs_and_skipped(sweep_dirs: Sequence[Path]) -> Tuple[List[dict], List[Path]]:
    """All readable run records (sorted by norm, images per GPU, seed) and the skipped files."""
    if isinstance(sweep_dirs, (str, Path)):
        sweep_dirs = [sweep_dirs]
    if not sweep_dirs:
        raise ReportError("no sweep directory given")
    runs, skipped = [], []
    for sweep_dir in sweep_dirs:
        for path in find_metrics_files(Path(sweep_dir)):
            record = parse_metrics(path)
            if record is None:
                skipped.append(path)
            else:
                runs.append(record)
    if not runs:
        names = ", ".join(str(d) for d in sweep_dirs)
        raise ReportError(
            f"no readable metrics.json in {names} ({len(skipped)} skipped as unreadable; "
            f"each needs valid JSON with keys {', '.join(REQUIRED_KEYS)})"
        )
    if has_masks(runs):  # every record has the mask keys, as every record has AP (None: no result)
        for record in runs:
            for key in MASK_KEYS:
                record.setdefault(key, None)
    runs.sort(key=run_sort_key)
    return runs, skipped


def has_masks(runs: Sequence[dict]) -> bool:
    """True when some run recorded mask AP (a Mask R-CNN sweep): the report then shows
    box AP and mask AP; without, it is the box-only report."""
    return any(r.get("mask_AP") is not None for r in runs)


def load_runs(sweep_dirs: Sequence[Path]) -> List[dict]:
    """All readable run records of the sweep dirs; malformed files are skipped with a warning."""
    return load_runs_and_skipped(sweep_dirs)[0]
