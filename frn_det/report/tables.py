"""Render run records as CSV and as the Markdown report (pure string functions, no I/O)."""
import csv
import io
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
from .load import METRIC_KEYS

CSV_COLUMNS = (
    "run", "norm", "ims_per_gpu", "total_batch", "seed", "status",
    *METRIC_KEYS,
    "iterations", "images_seen", "wall_time_s", "s_per_iter", "peak_memory_mb", "config_hash",
)
BASELINE = "bn"
NOT_RUN = "–"
STATUS_ORDER = (FINISHED, "diverged", "failed", "running")


def runs_to_csv(runs: Sequence[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in runs:
        writer.writerow(["" if run.get(c) is None else run[c] for c in CSV_COLUMNS])
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


def main_cell(group: Optional[Group], baseline: Optional[Group]) -> str:
    """AP cell of the main table: value (delta to BN), or why there is no value."""
    if group is None:
        return NOT_RUN
    labels = [run_label(r) for r in group.unfinished]
    ap = group.stat("AP")
    if ap is None:
        # No number to show: say what happened instead of printing a 0 or leaving a blank.
        return ", ".join(labels) if labels else "n/a"
    text = fmt_stat(group, "AP")
    base = baseline.stat("AP") if baseline is not None else None
    if group.norm != BASELINE and base is not None:
        text += f" ({fmt_delta(ap.mean - base.mean)})"
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
    lines = [
        "# RetinaNet normalization sweep: box AP vs images per GPU",
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


def main_table_section(runs, groups: Dict[Tuple[str, int], Group]) -> List[str]:
    ims = ims_in(runs)
    rows = []
    for norm in norms_in(runs):
        cells = [main_cell(groups.get((norm, i)), groups.get((BASELINE, i))) for i in ims]
        rows.append([norm] + cells)
    lines = ["", "## Box AP by norm and images per GPU", ""]
    lines += _table(["norm / images per GPU"] + [str(i) for i in ims], rows,
                    [":---"] + ["---:"] * len(ims))
    # Say how many seeds are behind each number: the common n, plus the exceptions.
    ns = {key: g.stat("AP").n for key, g in groups.items() if g.stat("AP") is not None}
    common = Counter(ns.values()).most_common(1)[0][0] if ns else 0
    exceptions = [f"n={n} for {norm}@{i}" for (norm, i), n in ns.items() if n != common]
    seeds = f"n={common} finished seed(s) per setting"
    if exceptions:
        seeds = "; ".join(exceptions) + f"; n={common} elsewhere"
    lines += [
        "",
        "AP in %, COCO style. In parentheses: difference to BN at the same images per GPU "
        "(computed from means). `mean ± std` is over finished seeds (sample std, ddof=1); "
        f"{seeds}. `diverged@N`: the loss became non-finite at iteration N; "
        "`(k diverged)` / `(k failed)`: k seeds of that setting ended without a result; "
        f"`{NOT_RUN}`: not run.",
    ]
    return lines


def detail_table_section(groups: Dict[Tuple[str, int], Group]) -> List[str]:
    rows = []
    for g in groups.values():
        batches = "/".join(str(b) for b in g.total_batches()) or NOT_RUN
        rows.append([g.norm, str(g.ims_per_gpu), batches, f"{len(g.finished)}/{len(g.runs)}"]
                    + [fmt_stat(g, k) for k in METRIC_KEYS] + [status_summary(g)])
    lines = ["", "## All COCO metrics per setting", ""]
    lines += _table(["norm", "ims/GPU", "total batch", "finished/runs", *METRIC_KEYS, "status"],
                    rows, [":---", "---:", "---:", "---:"] + ["---:"] * len(METRIC_KEYS) + [":---"])
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
    rows = [[_md_escape(ref["label"]), fmt_num(ref["AP"]),
             str(ref.get("norm") or NOT_RUN), str(ref.get("ims_per_gpu") or NOT_RUN),
             str(ref.get("total_batch") or NOT_RUN), _md_escape(ref.get("source") or "")]
            for ref in references]
    lines = ["", "## Reference values", ""]
    lines += _table(["reference", "AP", "norm", "ims/GPU", "total batch", "source"], rows,
                    [":---", "---:", ":---", "---:", "---:", ":---"])
    lines += ["", "For context only: published numbers may use a different protocol "
                  "(schedule, pretraining, dataset) than this sweep."]
    return lines


def runs_to_markdown(runs: Sequence[dict], sweep_dirs: Sequence, skipped: int = 0,
                     references: Sequence[dict] = (), plot_name: Optional[str] = None) -> str:
    groups = group_runs(runs)
    lines = header_section(runs, skipped, sweep_dirs)
    lines += main_table_section(runs, groups)
    if plot_name:
        lines += ["", f"![AP vs images per GPU]({plot_name})"]
    lines += detail_table_section(groups)
    lines += cost_table_section(groups)
    lines += unfinished_section(runs)
    lines += references_section(references)
    return "\n".join(lines) + "\n"
