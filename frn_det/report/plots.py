"""AP vs images per GPU plot, one line per norm; a second panel for mask AP when the
runs recorded one (Mask R-CNN)."""
import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from ..evaluation.intervals import Interval  # noqa: E402
from .aggregate import Stat, distinct, group_runs, ims_in, norms_in  # noqa: E402

SEED_DOT_OFFSET = 2 ** 0.06  # seeds' dots sit this factor right of their mean's x
from .load import has_masks  # noqa: E402

FIXED_COLOURS = {"bn": "tab:blue", "gn": "tab:green", "frn": "tab:red"}
FAIL_Y = 0.04  # axes fraction where diverged/failed settings are marked


def variant_base(norm: str, norms: Sequence[str]) -> Optional[str]:
    """The norm that `norm` is a variant of ("gn" for "gn_tlu" or "gn+tlu"), if it is in `norms`."""
    bases = [b for b in norms if b != norm and norm.startswith((b + "_", b + "+"))]
    return max(bases, key=len) if bases else None


def norm_colours(norms: Sequence[str]) -> Dict[str, str]:
    """Fixed colours for bn/gn/frn so plots compare across sweeps; a variant ("gn+tlu")
    takes its norm's colour (and a dashed line, `norm_linestyles`); others get distinct
    colours from tab10, then tab20."""
    taken = set(FIXED_COLOURS.values())
    palette = [c for c in [f"tab:{n}" for n in ("orange", "purple", "brown", "pink", "gray", "olive", "cyan")]
               + list(plt.get_cmap("tab20").colors[1::2]) if c not in taken]
    colours, i = {}, 0
    for norm in norms:
        if norm in FIXED_COLOURS:
            colours[norm] = FIXED_COLOURS[norm]
    for norm in norms:
        base = variant_base(norm, list(norms) + list(FIXED_COLOURS))
        if norm in colours:
            continue
        if base is not None and (base in colours or base in FIXED_COLOURS):
            colours[norm] = colours.get(base, FIXED_COLOURS.get(base))
        else:
            colours[norm] = palette[i % len(palette)]
            i += 1
    return colours


def norm_linestyles(norms: Sequence[str]) -> Dict[str, str]:
    """Dashed for a variant of another norm, solid otherwise."""
    return {n: "--" if variant_base(n, list(norms) + list(FIXED_COLOURS)) else "-" for n in norms}


def _error_bar(ap: Optional[Stat], interval: Optional[Interval]) -> Tuple[float, float]:
    """(below, above) the point: the interval when known, else +- the std over seeds."""
    if ap is None:
        return 0.0, 0.0
    if interval is not None and math.isfinite(interval.lo) and math.isfinite(interval.hi):
        return max(0.0, ap.mean - interval.lo), max(0.0, interval.hi - ap.mean)
    return ap.std, ap.std


def plot_ap_vs_ims(runs: Sequence[dict], path: Path, references: Sequence[dict] = (),
                   intervals: Optional[Dict[Tuple[str, int], Interval]] = None,
                   mask_intervals: Optional[Dict[Tuple[str, int], Interval]] = None) -> None:
    """Save the plot to ``path`` (PNG)."""
    fig = ap_vs_ims_figure(runs, references, intervals, mask_intervals)
    fig.savefig(path, format="png")
    plt.close(fig)


def ap_vs_ims_figure(runs: Sequence[dict], references: Sequence[dict] = (),
                     intervals: Optional[Dict[Tuple[str, int], Interval]] = None,
                     mask_intervals: Optional[Dict[Tuple[str, int], Interval]] = None):
    """AP against images per GPU, one line per norm. Error bars: the 95% intervals where
    given, else the std over seeds; each seed's AP a small dot beside them. Runs with
    mask AP: box AP left, mask AP right."""
    many = len(norms_in(runs)) > 4
    if not has_masks(runs):
        fig, ax = plt.subplots(figsize=(9, 4.8) if many else (7, 4.5), dpi=120)
        _ap_panel(ax, runs, "AP", intervals or {}, references, legend=True)
        ax.set_ylabel("box AP (%), 95% interval" if intervals else "box AP (%)")
        ax.set_title(f"AP vs images per GPU ({_model_on_dataset(runs)})")
        fig.tight_layout()
        return fig
    fig, (box_ax, mask_ax) = plt.subplots(1, 2, figsize=(15, 4.8) if many else (13, 4.5), dpi=120)
    # A reference's AP is its box AP; its mask_AP, where given, goes on the mask panel.
    _ap_panel(box_ax, runs, "AP", intervals or {}, references, legend=False)
    mask_refs = [{**ref, "AP": ref["mask_AP"]} for ref in references if ref.get("mask_AP") is not None]
    _ap_panel(mask_ax, runs, "mask_AP", mask_intervals or {}, mask_refs, legend=True)
    box_ax.set_ylabel("box AP (%), 95% interval" if intervals else "box AP (%)")
    mask_ax.set_ylabel("mask AP (%), 95% interval" if mask_intervals else "mask AP (%)")
    box_ax.set_title("Box AP vs images per GPU")
    mask_ax.set_title("Mask AP vs images per GPU")
    fig.suptitle(_model_on_dataset(runs), fontsize=10)
    fig.tight_layout()
    return fig


def _model_on_dataset(runs: Sequence[dict]) -> str:
    model = ", ".join(distinct(runs, "model")) or "model"
    dataset = ", ".join(distinct(runs, "dataset")) or "dataset"
    return f"{model} on {dataset}"


def _ap_panel(ax, runs: Sequence[dict], key: str, intervals: Dict[Tuple[str, int], Interval],
              references: Sequence[dict], legend: bool) -> None:
    """One panel: `key` ("AP" or "mask_AP") against images per GPU, one line per norm."""
    groups = group_runs(runs)
    norms, ims = norms_in(runs), ims_in(runs)
    colours, styles = norm_colours(norms), norm_linestyles(norms)
    many = len(norms) > 4
    at_bottom = blended_transform_factory(ax.transData, ax.transAxes)
    any_fail = any_seeds = False
    for k, norm in enumerate(norms):
        xs, ys, lows, highs = [], [], [], []
        for i in ims:
            g = groups.get((norm, i))
            if g is None:
                continue
            ap = g.stat(key)
            # NaN breaks the line, so a failed setting is not bridged by its neighbours.
            # With many norms the points are dodged sideways so their error bars stay apart.
            xs.append(i * (2 ** (0.025 * (k - (len(norms) - 1) / 2)) if many else 1))
            ys.append(ap.mean if ap is not None else math.nan)
            lo, hi = _error_bar(ap, intervals.get((norm, i)))
            lows.append(lo)
            highs.append(hi)
            if g.has_failure:
                # Nudge markers sideways per norm so several failures at one x stay visible.
                nudge = 2 ** (0.06 * (k - (len(norms) - 1) / 2))
                ax.plot(i * nudge, FAIL_Y, "x", color=colours[norm], markersize=9,
                        markeredgewidth=2, transform=at_bottom, clip_on=False)
                any_fail = True
        seed_x, seed_y = [], []
        for x, i in zip(xs, [i for i in ims if groups.get((norm, i)) is not None]):
            values = [r[key] for r in groups[(norm, i)].finished if r.get(key) is not None]
            if len(values) > 1:  # one seed is the mean itself
                seed_x += [x * SEED_DOT_OFFSET] * len(values)
                seed_y += values
        if seed_x:
            any_seeds = True
            ax.plot(seed_x, seed_y, ".", color=colours[norm], markersize=4, alpha=0.6,
                    label=f"_{norm} seeds")  # "_": no legend entry
        if any(math.isfinite(y) for y in ys):
            ax.errorbar(xs, ys, yerr=[lows, highs] if any(lows + highs) else None, color=colours[norm],
                        linestyle=styles[norm], marker="o", capsize=3, linewidth=1.5, label=norm)
        else:
            ax.plot([], [], "o-", color=colours[norm], label=f"{norm} (no result)")

    for ref in references:
        ax.axhline(ref["AP"], color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"{ref['label']} ({ref['AP']:.1f})", (0.01, ref["AP"]),
                    xycoords=blended_transform_factory(ax.transAxes, ax.transData),
                    xytext=(0, 2), textcoords="offset points", fontsize=7, color="dimgrey",
                    va="bottom")

    if references or any(g.stat(key) for g in groups.values()):
        # Leave room under the lowest point for the diverged/failed markers.
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo - 0.08 * (hi - lo), hi)
    else:
        ax.set_ylim(0, 100)  # nothing finished: the full AP range, not -0.06..0.06

    ax.set_xscale("log", base=2)
    ax.set_xlim(min(ims) / 1.5, max(ims) * 1.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ims))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(round(v))}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("images per GPU")
    ax.grid(True, alpha=0.3)
    if not legend:
        return
    handles, labels = ax.get_legend_handles_labels()
    if any_seeds:
        handles.append(Line2D([], [], linestyle="none", marker=".", color="grey", markersize=6))
        labels.append("one seed each")
    if any_fail:
        handles.append(Line2D([], [], linestyle="none", marker="x", color="black",
                              markersize=8, markeredgewidth=2))
        labels.append("diverged/failed")
    if many:  # outside the axes, where it hides no line
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(handles, labels, fontsize=8, loc="best")
