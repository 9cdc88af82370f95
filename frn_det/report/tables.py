"""Render run records as CSV and as the Markdown report (pure string functions, no I/O)."""
import csv
import io
import math
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from .aggregate import (
    FINISHED,
    Group,
    distinct,
    group_runs,
    ims_in,
    norms_in,
    run_label,
    status_counts,
)
from .comparisons import differences, fixed_lr, fixed_lr_runs, lr_choices, setting_intervals
from .intervals import Interval, RunSamples
from .load import MASK_KEYS, METRIC_KEYS, has_masks

CSV_COLUMNS = (
    "run", "norm", "ims_per_gpu", "lr_scale", "total_batch", "seed", "status",
    *METRIC_KEYS, "AP_lo", "AP_hi", "tune_AP",
    "iterations", "images_seen", "wall_time_s", "s_per_iter", "peak_memory_mb", "config_hash",
)
MASK_CSV_COLUMNS = (*MASK_KEYS, "mask_AP_lo", "mask_AP_hi")  # after AP_hi, for runs with masks
NOT_RUN = "–"
STATUS_ORDER = (FINISHED, "diverged", "failed", "running")


def csv_columns(runs: Sequence[dict]) -> Tuple[str, ...]:
    """CSV_COLUMNS; with the mask columns after the box AP interval when runs have mask AP."""
    if not has_masks(runs):
        return CSV_COLUMNS
    at = CSV_COLUMNS.index("AP_hi") + 1
    return CSV_COLUMNS[:at] + MASK_CSV_COLUMNS + CSV_COLUMNS[at:]


def runs_to_csv(runs: Sequence[dict]) -> str:
    columns = csv_columns(runs)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for run in runs:
        row = {**run, "tune_AP": (run.get("tune") or {}).get("AP")}
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return buf.getvalue()


# ---------------------------------------------------------------- cell formatting

def fmt_num(value: float, digits: int = 1) -> str:
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def fmt_delta(delta: float) -> str:
    text = f"{delta:+.1f}"
    return "+0.0" if float(text) == 0 else text


def fmt_stat(group: Group, key: str, digits: int = 1) -> str:
    stat = group.stat(key)
    if stat is None:
        return NOT_RUN
    text = fmt_num(stat.mean, digits)
    return f"{text} ± {fmt_num(stat.std, digits)}" if stat.n > 1 else text


def fmt_interval(interval: Interval) -> str:
    if not (math.isfinite(interval.lo) and math.isfinite(interval.hi)):
        return fmt_num(interval.value)
    return f"{fmt_num(interval.value)} [{fmt_num(interval.lo)}, {fmt_num(interval.hi)}]"


def fmt_difference(interval: Interval) -> str:
    if not (math.isfinite(interval.lo) and math.isfinite(interval.hi)):
        return fmt_delta(interval.value)
    mark = " *" if interval.excludes_zero else ""
    return f"{fmt_delta(interval.value)} [{fmt_delta(interval.lo)}, {fmt_delta(interval.hi)}]{mark}"


def main_cell(group: Optional[Group], interval: Optional[Interval] = None, key: str = "AP") -> str:
    """AP cell (key "mask_AP": mask AP) of a main table: value [95% interval], or why
    there is no value."""
    if group is None:
        return NOT_RUN
    labels = [run_label(r) for r in group.unfinished]
    ap = group.stat(key)
    if ap is None:
        # No number to show: say what happened instead of printing a 0 or leaving a blank.
        return ", ".join(labels) if labels else "n/a"
    text = fmt_interval(interval) if interval is not None else fmt_stat(group, key) + " (no interval)"
    if labels:
        counts: Dict[str, int] = {}
        for r in group.unfinished:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        text += " (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"
    return text


def status_summary(group: Group) -> str:
    parts = [f"{len(group.finished)} finished"] if group.finished else []
    parts += [run_label(r) for r in group.unfinished]
    return ", ".join(parts)


def _ordered_counts(runs: Sequence[dict]) -> List[Tuple[str, int]]:
    counts = status_counts(runs)
    order = list(STATUS_ORDER) + sorted(s for s in counts if s not in STATUS_ORDER)
    return [(s, counts[s]) for s in order if counts.get(s)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _md_escape(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- sections

def header_section(runs, skipped: int, sweep_dirs) -> List[str]:
    counts = ", ".join(f"{s} {n}" for s, n in _ordered_counts(runs))
    # Any detector (RetinaNet, Faster/Mask R-CNN): the "Model" line below names it.
    title = ("# Normalization sweep: box AP and mask AP vs images per GPU" if has_masks(runs)
             else "# Normalization sweep: box AP vs images per GPU")
    lines = [
        title,
        "",
        "- Sweep dir(s): " + ", ".join(f"`{d}`" for d in sweep_dirs),
        f"- Model: {', '.join(distinct(runs, 'model')) or 'unknown'}; "
        f"dataset: {', '.join(distinct(runs, 'dataset')) or 'unknown'}",
        f"- Runs: {len(runs)} ({counts}); skipped (unreadable): {skipped}",
    ]
    versions = {}
    for run in runs:
        for lib, ver in (run.get("versions") or {}).items():
            versions.setdefault(lib, set()).add(str(ver))
    if versions:
        lines.append("- Versions: " + ", ".join(
            f"{lib} {'/'.join(sorted(v))}" for lib, v in sorted(versions.items())))
    return lines


def _main_table(runs, groups: Dict[Tuple[str, int], Group], intervals: Dict[Tuple[str, int], Interval],
                key: str, title: str) -> List[str]:
    ims = ims_in(runs)
    rows = [[norm] + [main_cell(groups.get((norm, i)), intervals.get((norm, i)), key) for i in ims]
            for norm in norms_in(runs)]
    lines = ["", f"## {title} by norm and images per GPU (95% confidence intervals)", ""]
    return lines + _table(["norm / images per GPU"] + [str(i) for i in ims], rows, [":---"] + ["---:"] * len(ims))


def main_table_section(runs, groups: Dict[Tuple[str, int], Group], intervals: Dict[Tuple[str, int], Interval],
                       lr_scale: float) -> List[str]:
    lines = _main_table(runs, groups, intervals, "AP", "Box AP")
    # Say how many seeds are behind each number: the common n, plus the exceptions.
    ns = {key: g.stat("AP").n for key, g in groups.items() if g.stat("AP") is not None}
    common = Counter(ns.values()).most_common(1)[0][0] if ns else 0
    exceptions = [f"n={n} for {norm}@{i}" for (norm, i), n in ns.items() if n != common]
    seeds = f"n={common} finished seed(s) per setting"
    if exceptions:
        seeds = "; ".join(exceptions) + f"; n={common} elsewhere"
    lr_note = f" All at lr_scale {lr_scale:g} (see the best-lr table for the others)." if len({
        r.get("lr_scale") for r in runs}) > 1 or lr_scale != 1 else ""
    lines += [
        "",
        "AP in %, COCO style, on the test split. `AP [lo, hi]`: the value and its 95% interval: with one "
        "seed a bootstrap over the test images (1,000 resamples), with several the seed mean with a t "
        "interval that adds the seed and image variances (README, 'Intervals'). "
        f"{seeds}. `diverged@N`: the loss became non-finite at iteration N; "
        "`(k diverged)` / `(k failed)`: k seeds of that setting ended without a result; "
        f"`{NOT_RUN}`: not run; `(no interval)`: the run's detections were not found.{lr_note}",
    ]
    return lines


def mask_table_section(runs, groups: Dict[Tuple[str, int], Group],
                       intervals: Dict[Tuple[str, int], Interval]) -> List[str]:
    """The main table for mask AP (COCO "segm"), read like the box AP table above it."""
    lines = _main_table(runs, groups, intervals, "mask_AP", "Mask AP")
    return lines + ["", "Mask AP in %, COCO segm style, on the test split, from the same detections as the box AP; "
                        "intervals, seeds and labels as in the box AP table."]


def differences_section(runs, diffs: Sequence[dict], title: str = "AP") -> List[str]:
    """Paired differences to BN and GN; title "Box AP" / "Mask AP" in a report with masks."""
    if not diffs:
        return []
    ims = ims_in(runs)
    cells = {(d["norm"], d["baseline"], d["ims_per_gpu"]): fmt_difference(d["interval"]) for d in diffs}
    rows = []
    for norm in norms_in(runs):
        for base in ("bn", "gn"):
            if any((norm, base, i) in cells for i in ims):
                rows.append([f"{norm} − {base}"] + [cells.get((norm, base, i), NOT_RUN) for i in ims])
    lines = ["", f"## {title} difference to BN and GN (paired, 95% intervals)", ""]
    lines += _table(["comparison / images per GPU"] + [str(i) for i in ims], rows, [":---"] + ["---:"] * len(ims))
    lines += ["", "Difference in AP points at the same images per GPU, both runs scored on the same bootstrap "
                  "resamples of the test images. `*`: the interval excludes 0 (the difference is unlikely to be "
                  "image-sampling noise alone)."]
    return lines


def best_lr_section(choices: Sequence[dict], masks: bool = False) -> List[str]:
    if not choices or all(len(c["lr_scales"]) < 2 for c in choices):
        return []
    rows = []
    for c in choices:
        scores = ", ".join(f"{lr:g}: {NOT_RUN if v is None else fmt_num(v)}" for lr, v in c["scores"].items())
        if c["lr_scale"] is None:
            rows.append([c["norm"], str(c["ims_per_gpu"]), NOT_RUN, NOT_RUN, scores])
            continue
        ap = fmt_interval(c["interval"]) if c["interval"] is not None else fmt_num(c["AP"])
        chosen = f"{c['lr_scale']:g}" + (" (chosen on test)" if c["chosen_on"] == "test" else "")
        rows.append([c["norm"], str(c["ims_per_gpu"]), chosen, ap, scores])
    on_test = any(c["chosen_on"] == "test" for c in choices)
    lines = ["", "## Best learning rate per norm", ""]
    lines += _table(["norm", "ims/GPU", "best lr_scale", "test AP at that lr", "AP per lr_scale (where chosen)"],
                    rows, [":---", "---:", "---:", "---:", ":---"])
    lines += ["", "Each norm gets its own learning rate: the lr_scale (times the linearly scaled lr) with the "
                  "best mean AP on the tuning split, reported with its AP on the test split."
              + (" Where marked *chosen on test*, no tuning split was given and the value is optimistic."
                 if on_test else "")
              + (" The choice and the AP shown are box AP, also for the runs with masks." if masks else "")]
    return lines


def detail_table_section(groups: Dict[Tuple[str, int], Group], keys: Sequence[str] = METRIC_KEYS,
                         title: str = "All COCO metrics per setting") -> List[str]:
    rows = []
    for g in groups.values():
        batches = "/".join(str(b) for b in g.total_batches()) or NOT_RUN
        rows.append([g.norm, str(g.ims_per_gpu), batches, f"{len(g.finished)}/{len(g.runs)}"]
                    + [fmt_stat(g, k) for k in keys] + [status_summary(g)])
    lines = ["", f"## {title}", ""]
    lines += _table(["norm", "ims/GPU", "total batch", "finished/runs", *METRIC_KEYS, "status"],
                    rows, [":---", "---:", "---:", "---:"] + ["---:"] * len(keys) + [":---"])
    return lines


def cost_table_section(groups: Dict[Tuple[str, int], Group]) -> List[str]:
    def mean(g: Group, key: str, digits: int) -> str:
        # Unfinished runs cost time too, so they count here.
        stat = g.stat(key, finished_only=False)
        return NOT_RUN if stat is None else fmt_num(stat.mean, digits)

    rows = [[g.norm, str(g.ims_per_gpu), str(len(g.runs)), mean(g, "s_per_iter", 3),
             mean(g, "wall_time_s", 1), mean(g, "peak_memory_mb", 0)] for g in groups.values()]
    lines = ["", "## Run cost (mean over runs)", ""]
    lines += _table(["norm", "ims/GPU", "runs", "s/iter", "wall time (s)", "peak memory (MB)"],
                    rows, [":---", "---:", "---:", "---:", "---:", "---:"])
    return lines


def unfinished_section(runs) -> List[str]:
    bad = [r for r in runs if r["status"] != FINISHED]
    if not bad:
        return []
    rows = [[_md_escape(r.get("run", "")), run_label(r), _md_escape(r.get("status_detail") or "")]
            for r in bad]
    return ["", "## Runs without a result", ""] + _table(["run", "status", "detail"], rows,
                                                           [":---", ":---", ":---"])


def references_section(references: Sequence[dict]) -> List[str]:
    if not references:
        return []
    with_masks = any(ref.get("mask_AP") is not None for ref in references)
    rows = [[_md_escape(ref["label"]), fmt_num(ref["AP"])]
            + ([fmt_num(ref["mask_AP"]) if ref.get("mask_AP") is not None else NOT_RUN] if with_masks else [])
            + [str(ref.get("norm") or NOT_RUN), str(ref.get("ims_per_gpu") or NOT_RUN),
               str(ref.get("total_batch") or NOT_RUN), _md_escape(ref.get("source") or "")]
            for ref in references]
    lines = ["", "## Reference values", ""]
    headers = ["reference", "box AP", "mask AP"] if with_masks else ["reference", "AP"]
    lines += _table(headers + ["norm", "ims/GPU", "total batch", "source"], rows,
                    [":---"] + ["---:"] * (len(headers) - 1) + [":---", "---:", "---:", ":---"])
    lines += ["", "For context only: published numbers may use a different protocol "
                  "(schedule, pretraining, dataset) than this sweep."]
    return lines


def runs_to_markdown(runs: Sequence[dict], sweep_dirs: Sequence, skipped: int = 0,
                     references: Sequence[dict] = (), plot_name: Optional[str] = None,
                     samples: Optional[Dict[str, RunSamples]] = None, curves_name: Optional[str] = None,
                     mask_samples: Optional[Dict[str, RunSamples]] = None) -> str:
    """The Markdown report; with box AP and mask AP tables when runs recorded mask AP
    (mask_samples: their "segm" bootstrap samples)."""
    samples, mask_samples = samples or {}, mask_samples or {}
    masks = has_masks(runs)
    fixed = fixed_lr_runs(runs)
    groups = group_runs(fixed)
    lines = header_section(runs, skipped, sweep_dirs)
    lines += main_table_section(fixed, groups, setting_intervals(fixed, samples), fixed_lr(runs))
    if masks:
        lines += mask_table_section(fixed, groups, setting_intervals(fixed, mask_samples))
    if plot_name:
        lines += ["", f"![AP vs images per GPU]({plot_name})"]
    if masks:
        lines += differences_section(fixed, differences(fixed, samples), "Box AP")
        lines += differences_section(fixed, differences(fixed, mask_samples), "Mask AP")
    else:
        lines += differences_section(fixed, differences(fixed, samples))
    lines += best_lr_section(lr_choices(runs, samples), masks)
    if curves_name:
        lines += ["", "## Training curves", "", f"![training curves]({curves_name})"]
    if masks:
        lines += detail_table_section(groups, METRIC_KEYS, "All COCO box metrics per setting")
        lines += detail_table_section(groups, MASK_KEYS, "All COCO mask (segm) metrics per setting")
    else:
        lines += detail_table_section(groups)
    lines += cost_table_section(group_runs(runs))
    lines += unfinished_section(runs)
    lines += references_section(references)
    return "\n".join(lines) + "\n"
