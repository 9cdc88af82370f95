"""Was a setting's training loss still falling at the end of its schedule? (docs/intervals.md)

Detectron2's JSONWriter logs the median of the last 20 iterations' losses every 20
iterations: neighbouring points are smoothed and autocorrelated, and a learning-rate step
drops the loss at once. So, over the last WINDOW of the schedule:

- the points are cut where the logged lr changes, and the first point after a change
  (its median straddles the change) is dropped;
- each run's segment is cut into at most BATCHES consecutive batches whose means are the
  fitted points (batch means: a fixed number of batches keeps the test honest under
  autocorrelation however long the window);
- log(block mean loss) is fitted against the iteration with one common slope and an
  intercept per run and segment (a step's drop goes into the intercepts, not the slope);
- the setting is *still falling* when the fitted slope drops the loss by more than DROP
  across the window and is below 0 with one-sided p < ALPHA (t on the blocks' residual df).
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import stats

from .curves import read_training_log

WINDOW = 0.2  # the last 20% of the schedule
BATCHES = 5  # batch means per run and lr segment
DROP = 0.05  # fall of the fitted loss across the window, beyond the learning-rate steps
ALPHA = 0.05  # one-sided test that the slope is negative
LR_CHANGE = 1e-6  # relative change of the logged lr that starts a new segment


@dataclass(frozen=True)
class LossLog:
    """One run's logged points: iteration + 1, total loss, lr (nan when not logged)."""

    iterations: np.ndarray
    losses: np.ndarray
    lrs: np.ndarray


def schedule_end(run: dict, iterations: Sequence[int]) -> Optional[int]:
    """The schedule's length in iterations: the run's max_iter, else its last logged one."""
    max_iter = (run.get("scaling") or {}).get("max_iter") or run.get("iterations")
    if isinstance(max_iter, (int, float)) and max_iter > 0:
        return int(max_iter)
    return max(iterations) + 1 if iterations else None


def read_loss_log(run: dict) -> Optional[LossLog]:
    entries = read_training_log(Path(run["source"]).parent)
    points = [(e["iteration"] + 1, e["total_loss"], e.get("lr", math.nan)) for e in entries
              if isinstance(e.get("total_loss"), (int, float)) and math.isfinite(e["total_loss"])
              and e["total_loss"] > 0]
    if not points:
        return None
    it, loss, lr = (np.array(v, float) for v in zip(*points))
    return LossLog(it, loss, np.array([x if isinstance(x, (int, float)) else math.nan for x in lr], float))


def _blocks(log: LossLog, start: float) -> List[List[tuple]]:
    """Per lr segment in [start, end]: its (mean iteration, log mean loss) blocks."""
    keep = log.iterations >= start
    it, loss, lr = log.iterations[keep], log.losses[keep], log.lrs[keep]
    segments, current = [], []
    for k in range(len(it)):
        if k and np.isfinite(lr[k]) and np.isfinite(lr[k - 1]) and \
                abs(lr[k] - lr[k - 1]) > LR_CHANGE * max(abs(lr[k - 1]), 1e-12):
            segments.append(current)
            current = []  # the point after a change straddles it: dropped
            continue
        current.append(k)
    segments.append(current)
    out = []
    for seg in segments:
        groups = np.array_split(np.array(seg, int), min(BATCHES, len(seg))) if seg else []
        blocks = [(float(it[g].mean()), math.log(float(loss[g].mean()))) for g in groups if len(g)]
        if blocks:
            out.append(blocks)
    return out


def trend(logs: Sequence[LossLog], end: int) -> Optional[Dict[str, float]]:
    """{"drop", "t", "df", "points", "still_falling"} of one setting's runs over the last
    WINDOW of a schedule of `end` iterations; None when too few blocks leave no df."""
    start = (1 - WINDOW) * end
    xs, ys, points = [], [], 0
    for log in logs:
        for blocks in _blocks(log, start):
            x = np.array([b[0] for b in blocks])
            y = np.array([b[1] for b in blocks])
            xs.append(x - x.mean())  # its own intercept
            ys.append(y - y.mean())
            points += len(blocks)
    if not xs:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    df = points - len(xs) - 1
    sxx = float((x * x).sum())
    if df < 1 or sxx == 0:
        return None
    slope = float((x * y).sum() / sxx)
    resid = y - slope * x
    se = math.sqrt(float((resid * resid).sum()) / df / sxx)
    drop = 1 - math.exp(slope * (end - start))
    clearly_negative = slope < 0 and (se == 0 or float(stats.t.sf(-slope / se, df)) < ALPHA)
    return {"drop": drop, "t": slope / se if se > 0 else None, "df": df, "points": int(points),
            "still_falling": bool(clearly_negative and drop > DROP)}


def loss_trend(runs: Sequence[dict]) -> Optional[Dict[str, float]]:
    """trend() of one setting's finished runs, from their Detectron2 logs."""
    logs, ends = [], []
    for run in runs:
        log = read_loss_log(run)
        if log is None:
            continue
        end = schedule_end(run, [int(i) - 1 for i in log.iterations])
        if end is not None:
            logs.append(log)
            ends.append(end)
    return trend(logs, max(ends)) if logs else None
