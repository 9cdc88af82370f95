"""Was a setting's training loss still falling at the end of its schedule?

Rule (docs/intervals.md): over the last WINDOW of the schedule, fit log(total_loss)
against the iteration by least squares, one common slope for the setting's runs (each
run its own intercept). The setting is *still falling* when the fitted loss drops by more
than DROP across the window and the slope is below 0 with one-sided p < ALPHA. Then a
comparison in that setting measures how fast the norms converge, not where they end.
"""
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from ..evaluation.intervals import t_one_sided
from .curves import read_training_log

WINDOW = 0.2  # the last 20% of the schedule
DROP = 0.05  # relative fall of the fitted loss across the window
ALPHA = 0.05  # one-sided test that the slope is negative


def schedule_end(run: dict, iterations: Sequence[int]) -> Optional[int]:
    """The schedule's length in iterations: the run's max_iter, else its last logged one."""
    max_iter = (run.get("scaling") or {}).get("max_iter") or run.get("iterations")
    if isinstance(max_iter, (int, float)) and max_iter > 0:
        return int(max_iter)
    return max(iterations) + 1 if iterations else None


def _window_points(run: dict):
    """(iteration + 1, log total_loss) of the run's logged points in the last WINDOW."""
    entries = read_training_log(Path(run["source"]).parent)
    points = [(e["iteration"] + 1, e["total_loss"]) for e in entries
              if isinstance(e.get("total_loss"), (int, float)) and math.isfinite(e["total_loss"])
              and e["total_loss"] > 0]
    end = schedule_end(run, [p[0] - 1 for p in points])
    if end is None:
        return None, []
    start = (1 - WINDOW) * end
    return end - start, [(it, math.log(loss)) for it, loss in points if it >= start]


def loss_trend(runs: Sequence[dict]) -> Optional[Dict[str, float]]:
    """{"drop", "t", "df", "points", "still_falling"} for one setting's finished runs (t:
    the slope's t statistic); None when the logs give too few points (no residual df)."""
    xs, ys, width, used = [], [], None, 0
    for run in runs:
        w, points = _window_points(run)
        if len(points) < 2:
            continue
        width = w if width is None else max(width, w)
        x = np.array([p[0] for p in points], float)
        y = np.array([p[1] for p in points], float)
        xs.append(x - x.mean())  # each run its own intercept
        ys.append(y - y.mean())
        used += 1
    if not used:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    df = len(x) - used - 1
    sxx = float((x * x).sum())
    if df < 1 or sxx == 0:
        return None
    slope = float((x * y).sum() / sxx)
    resid = y - slope * x
    se = math.sqrt(float((resid * resid).sum()) / df / sxx)
    drop = 1 - math.exp(slope * width)
    clearly_negative = slope < 0 and (se == 0 or -slope / se > t_one_sided(1 - ALPHA, df))
    return {"drop": drop, "t": slope / se if se > 0 else None, "df": df, "points": int(len(x)),
            "still_falling": bool(clearly_negative and drop > DROP)}
