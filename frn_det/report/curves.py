"""Training curves from the runs' own Detectron2 JSON logs: smoothed total loss against
images seen, one line per run, one panel per images-per-GPU setting; and AP against
images seen where the runs evaluated during training (eval_period > 0)."""
import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..record.metrics import TRAINING_LOG  # noqa: E402
from .aggregate import ims_in, norms_in, run_sort_key  # noqa: E402
from .plots import norm_colours, norm_linestyles  # noqa: E402

log = logging.getLogger(__name__)
SMOOTHING = 0.9  # exponential moving average weight of the previous value


def read_training_log(run_dir: Path) -> List[dict]:
    """Detectron2's JSONWriter lines; a half-written last line is skipped."""
    path = Path(run_dir) / TRAINING_LOG
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("iteration"), int):
            entries.append(entry)
    return entries


def smooth(values: Sequence[float], weight: float = SMOOTHING) -> List[float]:
    """Bias-corrected exponential moving average (as TensorBoard draws it)."""
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(avg / norm)
    return out


def run_curves(run: dict) -> Tuple[List[Tuple[int, float]], List[Tuple[int, float]]]:
    """(loss points, AP points) of one run as (images seen, value)."""
    batch = run.get("total_batch") or run.get("ims_per_gpu") or 1
    entries = read_training_log(Path(run["source"]).parent)
    loss = [((e["iteration"] + 1) * batch, e["total_loss"]) for e in entries
            if isinstance(e.get("total_loss"), (int, float)) and math.isfinite(e["total_loss"])]
    test = run.get("test_dataset")
    keys = [f"{test}/bbox/AP", "bbox/AP"] if test else ["bbox/AP"]
    ap = []
    for e in entries:
        value = next((e[k] for k in keys if isinstance(e.get(k), (int, float))), None)
        if value is not None and math.isfinite(value):
            ap.append(((e["iteration"] + 1) * batch, value))
    return loss, ap


def has_training_logs(runs: Sequence[dict]) -> bool:
    return any((Path(r["source"]).parent / TRAINING_LOG).is_file() for r in runs)


def plot_training_curves(runs: Sequence[dict], path: Path) -> None:
    """Save the curves to ``path`` (PNG); runs without a log are left out."""
    curves: Dict[str, tuple] = {r["source"]: run_curves(r) for r in runs}
    with_loss = [r for r in runs if curves[r["source"]][0]]
    # AP over training only when runs evaluated during it (eval_period > 0): the final
    # evaluation alone is one point, already in the main plot.
    any_ap = any(len(curves[r["source"]][1]) > 1 for r in with_loss)
    ims, colours, styles = ims_in(with_loss), norm_colours(norms_in(with_loss)), norm_linestyles(norms_in(with_loss))
    rows = 2 if any_ap else 1
    fig, axes = plt.subplots(
        rows, max(1, len(ims)), figsize=(4.2 * max(1, len(ims)), 3.4 * rows), dpi=110, squeeze=False
    )
    for col, i in enumerate(ims):
        ax_loss = axes[0][col]
        ax_ap: Optional[plt.Axes] = axes[1][col] if any_ap else None
        seen_labels = set()
        for run in sorted((r for r in with_loss if r["ims_per_gpu"] == i), key=run_sort_key):
            loss, ap = curves[run["source"]]
            label = run["norm"] if run["norm"] not in seen_labels else None  # one legend entry per norm
            seen_labels.add(run["norm"])
            style = styles[run["norm"]] if run["status"] == "finished" else ":"
            x, y = zip(*loss)
            ax_loss.plot(x, smooth(y), style, color=colours[run["norm"]], linewidth=1.3, label=label)
            if ax_ap is not None and ap:
                ax_ap.plot(*zip(*ap), "o-", color=colours[run["norm"]], markersize=3, linewidth=1.2, label=label)
        ax_loss.set_title(f"{i} image{'s' if i != 1 else ''} per GPU")
        ax_loss.set_xlabel("images seen")
        ax_loss.set_yscale("log")
        ax_loss.grid(True, alpha=0.3)
        ax_loss.legend(fontsize=7)
        if col == 0:
            ax_loss.set_ylabel(f"total loss (EMA {SMOOTHING:g})")
        if ax_ap is not None:
            ax_ap.set_xlabel("images seen")
            ax_ap.grid(True, alpha=0.3)
            if col == 0:
                ax_ap.set_ylabel("box AP (%) on the test split")
    fig.suptitle("Training curves (dotted: run without a result)", fontsize=10)
    fig.tight_layout()
    if not with_loss:
        fig.text(0.5, 0.5, "no loss values logged yet", ha="center")
    fig.savefig(path, format="png")
    plt.close(fig)
