"""results.tex: the report's main AP tables and paired differences as booktabs tables for a
paper (pure string functions, no I/O). The same groups, intervals and differences as the
Markdown tables (tables.py); `\\input{results.tex}` needs only \\usepackage{booktabs}.

Cells: `value {\\scriptsize [lo, hi]}` (95% interval; for a difference, simultaneous in its
family); marks as in results.md (`$^{*}$` primary star, `$^{\\circ}$` exploratory,
`$^{\\dagger}$` one seed, `$^{\\ddagger}$` lost runs); a setting without a number names
what happened (diverged@k, failed).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

from ..evaluation.intervals import Interval
from .aggregate import Group, group_runs, ims_in, norms_in, run_label
from .comparisons import fixed_lr_runs
from .load import has_masks
from .tables import SIGNAL, STAR, ZERO_VARIANCE, difference_mark, fmt_delta, fmt_num, fmt_stat

TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
DASH = "--"


def tex_escape(text) -> str:
    return "".join(TEX_SPECIALS.get(c, c) for c in str(text))


def _minus(number: str) -> str:
    """A typeset minus sign instead of the hyphen."""
    return number.replace("-", "$-$", 1) if number.startswith("-") else number


def _with_interval(value: str, lo: str, hi: str) -> str:
    return f"{_minus(value)} {{\\scriptsize [{_minus(lo)}, {_minus(hi)}]}}"


def main_cell(group: Optional[Group], interval: Optional[Interval], key: str) -> str:
    if group is None:
        return DASH
    stat = group.stat(key)
    if stat is None:
        labels = [run_label(r) for r in group.unfinished]
        return tex_escape(", ".join(labels)) if labels else "n/a"
    if interval is not None and math.isfinite(interval.lo) and math.isfinite(interval.hi):
        text = _with_interval(fmt_num(interval.value), fmt_num(interval.lo), fmt_num(interval.hi))
    else:
        text = _minus(fmt_stat(group, key)).replace(" ± ", r" $\pm$ ")
    if group.unfinished:
        counts: Dict[str, int] = {}
        for r in group.unfinished:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        text += " {\\scriptsize (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")}"
    return text


MARKS = {STAR: "$^{*}$", SIGNAL: "$^{\\circ}$", ZERO_VARIANCE: "$^{\\S}$"}


def difference_cell(d: dict) -> str:
    """A difference row (comparisons.differences) with the marks results.md gives it."""
    interval = d["adjusted"] or d["interval"]
    if not (math.isfinite(interval.lo) and math.isfinite(interval.hi)):
        return _minus(fmt_delta(interval.value))
    text = _with_interval(fmt_delta(interval.value), fmt_delta(interval.lo), fmt_delta(interval.hi))
    text += MARKS.get(difference_mark(d), "") + ("" if interval.training_noise else "$^{\\dagger}$")
    return text + ("$^{\\ddagger}$" if d["lost"] else "")


def tabular(first: str, ims: Sequence[int], rows: Sequence[Sequence[str]], caption: str, label: str) -> List[str]:
    n = len(ims)
    return [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        r"\begin{tabular}{l" + "r" * n + "}",
        r"\toprule",
        f"{first} & \\multicolumn{{{n}}}{{c}}{{Images per GPU}} \\\\",
        f"\\cmidrule(lr){{2-{n + 1}}}",
        " & " + " & ".join(str(i) for i in ims) + r" \\",
        r"\midrule",
        *[" & ".join(row) + r" \\" for row in rows],
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        "",
    ]


def main_table(runs, groups: Dict[Tuple[str, int], Group], intervals, key: str, what: str, label: str) -> List[str]:
    ims = ims_in(runs)
    rows = [[tex_escape(norm)] + [main_cell(groups.get((norm, i)), intervals.get((norm, i)), key) for i in ims]
            for norm in norms_in(runs)]
    caption = (f"{what} (\\%) by norm and images per GPU, on the test split, with 95\\% intervals that add "
               "the seeds' training noise to the test images' bootstrap noise (test images only for one seed).")
    return tabular("Norm", ims, rows, caption, label)


def differences_table(runs, diffs: Sequence[dict], what: str, label: str) -> List[str]:
    if not diffs:
        return []
    ims = ims_in(runs)
    cells = {(d["norm"], d["baseline"], d["ims_per_gpu"]): difference_cell(d) for d in diffs}
    rows = [[f"{tex_escape(norm)} $-$ {base}"] + [cells.get((norm, base, i), DASH) for i in ims]
            for norm in norms_in(runs) for base in ("bn", "gn") if any((norm, base, i) in cells for i in ims)]
    caption = (f"{what} difference to BN and GN (AP points, paired by seed and on the same bootstrap resamples "
               "of the test images; simultaneous 95\\% intervals within each family of comparisons). $^{*}$: a "
               "primary comparison whose simultaneous interval excludes 0 (family-wise error 5\\%); "
               "$^{\\circ}$: an exploratory one; $^{\\dagger}$: one seed, training noise not included; "
               "$^{\\ddagger}$: a setting lost runs; $^{\\S}$: identical seeds, never starred.")
    return tabular("Comparison", ims, rows, caption, label)


def runs_to_latex(runs: Sequence[dict], results: dict) -> str:
    """results.tex: box AP (and mask AP) main tables and their paired differences, at the
    fixed lr_scale, from the same computed results (comparisons.sweep_results) as results.md."""
    fixed = fixed_lr_runs(runs)
    groups = group_runs(fixed)
    lr = results["fixed_lr_scale"]
    lines = [
        "% Written by frn-det's report (frn_det/report/latex.py) from the runs of results.md.",
        "% \\input it in a document with \\usepackage{booktabs}."
        + (f" All runs at lr_scale {lr:g}." if lr != 1 else ""),
        "",
    ]
    shown = [("", "Box AP", "box")] + ([("mask_", "Mask AP", "mask")] if has_masks(runs) else [])
    # a metric without intervals (e.g. runs with masks whose detections were not found) gets
    # its values without intervals, as in results.md, and no difference table
    for prefix, what, tag in shown:
        intervals = results["settings"].get(prefix + "AP", {})
        lines += main_table(fixed, groups, intervals, prefix + "AP", what, f"tab:{tag}-ap")
    for prefix, what, tag in shown:
        lines += differences_table(fixed, results["differences"].get(prefix + "AP", []), what, f"tab:{tag}-ap-diff")
    return "\n".join(lines)
