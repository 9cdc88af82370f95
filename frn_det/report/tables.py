"""Render run records and the sweep's results (comparisons.sweep_results) as CSV and as the
Markdown report (string functions, no I/O, no statistics)."""
import csv
import io
import math
from collections import Counter
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..evaluation.intervals import Interval
from ..evaluation.moderation import ERRATIC_ALPHA, SeedNoise
from ..record.metrics import DIVERGED, FAILED, FINISHED, METRIC_KEYS, RUNNING
from .aggregate import (
    Group,
    distinct,
    group_runs,
    ims_in,
    norms_in,
    run_label,
    status_counts,
)
from .comparability import implementation_label, mixed_comparisons, mixed_settings
from .comparisons import ALL, DEFAULT_EFFECT, EXPLORATORY, PRIMARY, fixed_lr_runs, sweep_results
from .convergence import DROP, WINDOW
from .load import MASK_KEYS, has_masks
from .samples import RunSamples

CSV_COLUMNS = (
    "run", "norm", "ims_per_gpu", "lr_scale", "total_batch", "seed", "status",
    *METRIC_KEYS, "AP_lo", "AP_hi", "tune_AP",
    "iterations", "images_seen", "wall_time_s", "s_per_iter", "peak_memory_mb", "config_hash",
)
MASK_CSV_COLUMNS = (*MASK_KEYS, "mask_AP_lo", "mask_AP_hi")  # after AP_hi, for runs with masks
NOT_RUN = "–"
ONE_SEED = "†"  # the interval covers test images only: training noise not included
STILL_FALLING = "↓"  # the loss was still falling at the end of the schedule (convergence.py)
STAR = "*"  # a primary (or whole-table) family's conclusion: the simultaneous interval excludes 0
SIGNAL = "°"  # an exploratory family's difference whose simultaneous interval excludes 0
LOST = "‡"  # a setting of the difference lost runs (failed, diverged or unfinished)
ZERO_VARIANCE = "§"  # the seeds gave identical values: never starred
STATUS_ORDER = (FINISHED, DIVERGED, FAILED, RUNNING)


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


def fmt_difference(interval: Interval, mark: str = "") -> str:
    if not (math.isfinite(interval.lo) and math.isfinite(interval.hi)):
        return fmt_delta(interval.value)
    return f"{fmt_delta(interval.value)} [{fmt_delta(interval.lo)}, {fmt_delta(interval.hi)}]" + (
        f" {mark}" if mark else "")


def difference_mark(d: dict) -> str:
    """The verdict of a difference row (comparisons.differences): star, exploratory mark,
    zero variance; "" otherwise."""
    if d["starred"]:
        return STAR
    if d["signal"]:
        return SIGNAL
    return ZERO_VARIANCE if d["untestable"] == "zero seed variance" else ""


def marks(interval: Optional[Interval], falling: bool = False) -> str:
    """The markers after a value: one seed (no training noise) and a loss still falling."""
    text = f" {ONE_SEED}" if interval is not None and not interval.training_noise else ""
    return text + (f" {STILL_FALLING}" if falling else "")


def main_cell(group: Optional[Group], interval: Optional[Interval] = None, key: str = "AP",
              falling: bool = False) -> str:
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
    return text + marks(interval, falling)


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

def machine_line(machines: Sequence[dict]) -> List[str]:
    """One line naming the machine(s) the runs recorded (metrics.json "machine")."""
    if not machines:
        return []

    def one(m: dict) -> str:
        parts = [str(m.get("cpu") or "CPU ?")]
        if m.get("cores") is not None or m.get("torch_threads") is not None:
            parts[0] += f" ({m.get('cores', '?')} cores, {m.get('torch_threads', '?')} torch threads)"
        if m.get("gpu"):
            parts.append(f"{m['gpu']}" + (f" (driver {m['gpu_driver']})" if m.get("gpu_driver") else ""))
        if m.get("git_commit"):
            parts.append(f"commit {str(m['git_commit'])[:12]}" + (" (dirty tree)" if m.get("git_dirty") else ""))
        return ", ".join(parts) + (f" [{m['runs']} runs]" if len(machines) > 1 else "")

    return ["- Machine: " + "; ".join(_md_escape(one(m)) for m in machines)]


def header_section(runs, skipped: int, sweep_dirs, machines: Sequence[dict] = ()) -> List[str]:
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
    return lines + machine_line(machines)


def _falling(results: dict, key) -> bool:
    return bool((results["convergence"].get(key) or {}).get("still_falling"))


def _markers_note(intervals, falling: bool) -> List[str]:
    """The note lines directly under a table for the markers it uses."""
    lines = []
    if any(iv is not None and not iv.training_noise for iv in intervals):
        lines.append(f"{ONE_SEED} one seed: the interval covers the test images only; training noise is not "
                     "included, so no `*` is given (docs/intervals.md).")
    if falling:
        lines.append(f"{STILL_FALLING} loss still falling over the last {WINDOW:.0%} of the schedule (fitted drop > "
                     f"{DROP:.0%}): this measures speed of convergence, not final accuracy.")
    return [part for line in lines for part in ("", line)]  # a paragraph each


def _main_table(runs, groups: Dict[Tuple[str, int], Group], intervals: Dict[Tuple[str, int], Interval],
                key: str, title: str, results: dict) -> List[str]:
    ims = ims_in(runs)
    rows = [[norm] + [main_cell(groups.get((norm, i)), intervals.get((norm, i)), key, _falling(results, (norm, i)))
                      for i in ims] for norm in norms_in(runs)]
    lines = ["", f"## {title} by norm and images per GPU (95% confidence intervals)", ""]
    lines += _table(["norm / images per GPU"] + [str(i) for i in ims], rows, [":---"] + ["---:"] * len(ims))
    return lines + _markers_note(intervals.values(), any(_falling(results, k) for k in groups))


def main_table_section(runs, groups: Dict[Tuple[str, int], Group], results: dict) -> List[str]:
    lines = _main_table(runs, groups, results["settings"]["AP"], "AP", "Box AP", results)
    # Say how many seeds are behind each number: the common n, plus the exceptions.
    ns = {key: g.stat("AP").n for key, g in groups.items() if g.stat("AP") is not None}
    common = Counter(ns.values()).most_common(1)[0][0] if ns else 0
    exceptions = [f"n={n} for {norm}@{i}" for (norm, i), n in ns.items() if n != common]
    seeds = f"n={common} finished seed(s) per setting"
    if exceptions:
        seeds = "; ".join(exceptions) + f"; n={common} elsewhere"
    lr_scale = results["fixed_lr_scale"]
    lr_note = f" All at lr_scale {lr_scale:g} (see the best-lr table for the others)." if len({
        r.get("lr_scale") for r in runs}) > 1 or lr_scale != 1 else ""
    lines += [
        "",
        "AP in %, COCO style, on the test split. `AP [lo, hi]`: the seed mean and its 95% interval, which adds "
        "the seeds' training noise and the test-image noise (bootstrap, 1,000 resamples; docs/intervals.md). "
        f"{seeds}. `diverged@N`: the loss became non-finite at iteration N; "
        "`(k diverged)` / `(k failed)`: k seeds of that setting ended without a result; "
        f"`{NOT_RUN}`: not run; `(no interval)`: the run's detections were not found.{lr_note}",
    ]
    return lines + finished_line(groups) + comparability_note(groups, results["differences"]["AP"])


def finished_line(groups: Dict[Tuple[str, int], Group]) -> List[str]:
    """How many runs finished, the share that did not, and the settings that lost runs."""
    runs = sum(len(g.runs) for g in groups.values())
    finished = sum(len(g.finished) for g in groups.values())
    if finished == runs:
        return []
    lost = ", ".join(f"{g.norm}@{g.ims_per_gpu} {len(g.finished)} of {len(g.runs)}" for g in groups.values()
                     if len(g.finished) < len(g.runs))
    return ["", f"**Finished:** {finished} of {runs} runs ({(runs - finished) / runs:.0%} did not finish: {lost}). "
                "A mean over the runs that finished is conditional on success, which flatters an unstable norm."]


def mask_table_section(runs, groups: Dict[Tuple[str, int], Group], results: dict) -> List[str]:
    """The main table for mask AP (COCO "segm"), read like the box AP table above it."""
    lines = _main_table(runs, groups, results["settings"]["mask_AP"], "mask_AP", "Mask AP", results)
    return lines + ["", "Mask AP in %, COCO segm style, on the test split, from the same detections as the box AP; "
                        "intervals, seeds and labels as in the box AP table."]


def seed_variance_section(results: dict, metric: str = "AP") -> List[str]:
    """One paragraph: the training noise the intervals used, how much it was shared between
    settings, and the settings it was not shared with (erratic, identical seeds)."""
    noise: SeedNoise = results["noise"][metric]
    name = metric.replace("_", " ")
    if not noise.settings:
        if metric != "AP":
            return []  # said once, under the box AP table
        return ["", "**Training noise:** no setting has two finished seeds, so no interval includes it "
                    f"(every interval is marked {ONE_SEED}). Run `seed=0,1,2` to measure it."]
    prior = noise.setting_prior
    if prior is None:
        text = (f"**Training noise** ({name}): one setting with seeds, so nothing is shared: its own seed "
                "variance")
    else:
        text = (f"**Training noise** ({name}): seed std {fmt_num(math.sqrt(prior.scale), 2)} AP per run over "
                f"{prior.units} settings, {_shared(prior.df)}")
    pair = noise.pair_prior
    if pair is not None:
        text += (f"; seed-wise differences (paired) std {fmt_num(math.sqrt(pair.scale), 2)} AP over {pair.units} "
                 f"pairs, {_shared(pair.df)}")
    text += (". Each setting's and pair's own seed variance is shrunk toward these by how much the sweep's "
             "variances agree (empirical Bayes; docs/intervals.md).")
    lines = ["", text]
    if noise.erratic:
        names = ", ".join(f"{_setting_name(k)} (p = {p:.2g})" for k, p in noise.erratic.items())
        lines += ["", f"Erratic (seed variance above the others', F test p < {ERRATIC_ALPHA:g}): {names}. "
                      "Their intervals and differences use their own seed variance only."]
    if noise.zero:
        names = ", ".join(_setting_name(k) for k in noise.zero)
        lines += ["", f"{ZERO_VARIANCE} Identical {name} in every seed: {names}. A seed that never reached the "
                      "training, or a copied or cached result? Their differences get no star."]
    return lines


def _shared(df: float) -> str:
    return "equal within noise: fully shared" if not math.isfinite(df) else f"prior df {fmt_num(df, 1)}"


def _setting_name(key) -> str:
    norm, ims = key[0], key[1]
    lr = key[2] if len(key) > 2 else 1.0
    return f"{norm}@{ims}" + ("" if lr == 1 else f" (lr_scale {lr:g})")


def _family_note(diffs: Sequence[dict], results: dict) -> List[str]:
    families = {}
    for d in diffs:
        if d["family"] is not None and not d["untestable"]:
            families.setdefault(d["family"], []).append(d)
    if not families:
        return []
    parts = []
    for family in (PRIMARY, ALL, EXPLORATORY):
        members = families.get(family)
        if not members:
            continue
        names = sorted({f"{d['norm']} − {d['baseline']}" for d in members})
        critical = members[0]["adjusted"].se and (members[0]["adjusted"].hi - members[0]["adjusted"].value) / \
            members[0]["adjusted"].se
        what = {PRIMARY: f"**primary** (declared: `primary={','.join(results['primary'])}`)",
                ALL: "**one family**: every difference of this table",
                EXPLORATORY: "**exploratory**"}[family]
        parts.append(f"{what}: {len(members)} comparison(s) ({', '.join(names)}), critical value "
                     f"{fmt_num(critical, 2)}")
    return ["", "Families: " + "; ".join(parts) + ". Each family's intervals are simultaneous 95% intervals "
                "(max-t over its comparisons, which share baselines, seeds and test images), so a family's marks "
                f"are all right together 95% of the time. `{STAR}`: the simultaneous interval of a "
                + ("primary" if PRIMARY in families else "") + " difference excludes 0"
                + (f"; `{SIGNAL}`: an exploratory one does (a lead to confirm in a sweep that declares it "
                   "primary, not a conclusion)" if EXPLORATORY in families else "")
                + ". The intervals alone and the p values are in the power table and comparisons.json."]


def differences_section(runs, diffs: Sequence[dict], results: dict, title: str) -> List[str]:
    """Differences to BN and GN with family-wise marks; title "Box AP" / "Mask AP"."""
    if not diffs:
        return []
    ims = ims_in(runs)

    def cell(d: dict) -> str:
        ims = d["ims_per_gpu"]
        falling = _falling(results, (d["norm"], ims)) or _falling(results, (d["baseline"], ims))
        text = fmt_difference(d["adjusted"] or d["interval"], difference_mark(d)) + marks(d["interval"], falling)
        return text + (f" {LOST}" if d["lost"] else "")

    cells = {(d["norm"], d["baseline"], d["ims_per_gpu"]): cell(d) for d in diffs}
    declared = {(d["norm"], d["baseline"]) for d in diffs if d["declared"]}
    rows = []
    for norm in norms_in(runs):
        for base in ("bn", "gn"):
            if any((norm, base, i) in cells for i in ims):
                label = f"{norm} − {base}" + (" (primary)" if (norm, base) in declared else "")
                rows.append([label] + [cells.get((norm, base, i), NOT_RUN) for i in ims])
    lines = ["", f"## {title} difference to BN and GN (simultaneous 95% intervals per family)", ""]
    lines += _table(["comparison / images per GPU"] + [str(i) for i in ims], rows, [":---"] + ["---:"] * len(ims))
    lines += _markers_note([d["interval"] for d in diffs], any(STILL_FALLING in c for c in cells.values()))
    lines += _family_note(diffs, results)
    lost = {k: v for d in diffs for k, v in d["lost"].items()}
    if lost:
        lines += ["", f"{LOST} A setting lost runs: " + ", ".join(f"{k} {f} of {n} finished" for k, (f, n) in
                                                                   sorted(lost.items()))
                  + ". Its mean is over the runs that finished (conditional on success, which flatters an "
                    "unstable norm), and its differences pair the seeds both settings finished."]
    lines += ["", "Difference in AP points at the same images per GPU: the seeds' training noise (paired by seed "
                  "on the seeds both settings finished) plus the test-image noise, both settings scored on the "
                  "same bootstrap resamples."]
    return lines


def power_section(diffs: Sequence[dict], results: dict, title: str) -> List[str]:
    """Per comparison: family, noise model, the interval alone with its p values, the
    minimum detectable difference and the seeds needed."""
    if not diffs:
        return []
    effect = results["effect"]
    rows = []
    order = {norm: k for k, norm in enumerate(dict.fromkeys(d["norm"] for d in diffs))}
    for d in sorted(diffs, key=lambda d: (order[d["norm"]], d["baseline"], d["ims_per_gpu"])):
        iv = d["interval"]
        noise = (f"{iv.model} (df {int(iv.df)})" if math.isfinite(iv.df) else iv.model) \
            if iv.training_noise else f"not included {ONE_SEED}"
        mdd = NOT_RUN if d["mdd"] is None or not math.isfinite(d["mdd"]) else fmt_num(d["mdd"])
        need = (str(d["seeds_needed"]) if d["seeds_needed"] is not None
                else "more test images" if d["design"] else NOT_RUN)
        p = NOT_RUN if d["p"] is None else f"{d['p']:.2g}"
        p_adj = NOT_RUN if d["p_adjusted"] is None else f"{d['p_adjusted']:.2g}"
        family = d["family"] or NOT_RUN
        if d["untestable"]:
            family += f" ({d['untestable']})"
        rows.append([f"{d['norm']} − {d['baseline']}", str(d["ims_per_gpu"]), str(iv.n), family, noise,
                     fmt_difference(iv), p, p_adj, mdd, need])
    test = f"{results['power']:.0%} power at the family's level"
    lines = ["", f"## {title} power per comparison ({test})", ""]
    lines += _table(["comparison", "ims/GPU", "seeds", "family", "training noise", "interval alone (95%)", "p alone",
                     "p family-adjusted", "min. detectable difference", f"seeds for {fmt_num(effect, 2)} AP"],
                    rows, [":---", "---:", "---:", ":---", ":---", "---:", "---:", "---:", "---:", "---:"])
    lines += _markers_note([d["interval"] for d in diffs], False)
    lines += ["", "Interval alone: this comparison's 95% interval as if it were the only one made (not the "
                  "star's). Minimum detectable difference: the true difference its family's test finds with "
                  f"{results['power']:.0%} power (noncentral t at the interval's df). Seeds needed: per setting, "
                  f"to find {fmt_num(effect, 2)} AP with the same test images, the same noise model and the same "
                  "family (`--effect`); `more test images`: the test-image noise alone is too large for any "
                  "number of seeds. `tools/report.py --plan-seeds DIR` prints it for other effects."]
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


def detail_table_section(groups: Dict[Tuple[str, int], Group], keys: Sequence[str], title: str) -> List[str]:
    rows = []
    for g in groups.values():
        batches = "/".join(str(b) for b in g.total_batches()) or NOT_RUN
        rows.append([g.norm, str(g.ims_per_gpu), batches, f"{len(g.finished)}/{len(g.runs)}"]
                    + [fmt_stat(g, k) for k in keys] + [status_summary(g)]
                    + [_md_escape(implementation_label(g.runs)) or "none"])
    lines = ["", f"## {title}", ""]
    lines += _table(["norm", "ims/GPU", "total batch", "finished/runs", *METRIC_KEYS, "status", "implementation"],
                    rows, [":---", "---:", "---:", "---:"] + ["---:"] * len(keys) + [":---", ":---"])
    return lines


def comparability_note(groups: Dict[Tuple[str, int], Group], diffs: Sequence[dict]) -> List[str]:
    """A paragraph naming the settings and comparisons whose runs differ in layout
    (comparability.py: e.g. FRN's C++ kernels in some seeds, its PyTorch ops in others)."""
    runs = {key: g.runs for key, g in groups.items()}
    settings = mixed_settings(runs)
    pairs = [((d["norm"], d["ims_per_gpu"]), (d["baseline"], d["ims_per_gpu"])) for d in diffs]
    comparisons = mixed_comparisons(runs, pairs)
    if not settings and not comparisons:
        return []
    named = [f"{n}@{i} ({', '.join(f)})" for (n, i), f in settings.items()]
    named += [f"{a[0]} − {b[0]}@{a[1]}" for a, b in comparisons if a not in settings and b not in settings]
    return ["", "**Mixed runs:** " + "; ".join(named) + ". Their runs were not computed the same way (see the "
            "implementation column below), which changes the numbers after training: rerun them alike "
            "(docs/performance.md)."]


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


class APKind(NamedTuple):
    """Box AP or mask AP, as the Markdown report shows it."""

    metric: str  # its key in the results and the run records
    title: str  # of its difference and power sections
    table: Callable[..., List[str]]  # its main table section
    keys: Tuple[str, ...]  # its COCO metrics
    detail_title: str  # of its table of all COCO metrics


BOX_AP = APKind("AP", "Box AP", main_table_section, METRIC_KEYS, "All COCO box metrics per setting")
MASK_AP = APKind("mask_AP", "Mask AP", mask_table_section, MASK_KEYS, "All COCO mask (segm) metrics per setting")
BOX_ONLY = BOX_AP._replace(title="AP", detail_title="All COCO metrics per setting")  # a report without masks


def runs_to_markdown(runs: Sequence[dict], sweep_dirs: Sequence, skipped: int = 0,
                     references: Sequence[dict] = (), plot_name: Optional[str] = None,
                     samples: Optional[Dict[str, RunSamples]] = None, curves_name: Optional[str] = None,
                     mask_samples: Optional[Dict[str, RunSamples]] = None, results: Optional[dict] = None,
                     effect: float = DEFAULT_EFFECT) -> str:
    """The Markdown report of `results` (comparisons.sweep_results; computed here from the
    samples when not given); box AP and mask AP tables when runs recorded mask AP."""
    masks = has_masks(runs)
    if results is None:
        results = sweep_results(runs, samples or {}, mask_samples if masks else None, effect)
    fixed = fixed_lr_runs(runs)
    groups = group_runs(fixed)
    kinds = (BOX_AP, MASK_AP) if masks else (BOX_ONLY,)
    # Mask AP gets intervals only where its detections were found and bootstrapped.
    shown = (BOX_AP, MASK_AP) if masks and "mask_AP" in results["settings"] else (BOX_ONLY,)
    lines = header_section(runs, skipped, sweep_dirs, results["machines"])
    for kind in shown:
        lines += kind.table(fixed, groups, results)
        lines += seed_variance_section(results, kind.metric)
    if plot_name:
        lines += ["", f"![AP vs images per GPU]({plot_name})"]
    diffs = results["differences"]
    for kind in shown:
        lines += differences_section(fixed, diffs[kind.metric], results, kind.title)
    for kind in shown:
        lines += power_section(diffs[kind.metric], results, kind.title)
    lines += best_lr_section(results["best_lr"], masks)
    if curves_name:
        lines += ["", "## Training curves", "", f"![training curves]({curves_name})"]
    for kind in kinds:
        lines += detail_table_section(groups, kind.keys, kind.detail_title)
    lines += cost_table_section(group_runs(runs))
    lines += unfinished_section(runs)
    lines += references_section(references)
    return "\n".join(lines) + "\n"


def plan_table(results: dict, effects: Sequence[float]) -> str:
    """Seeds per setting needed to detect each effect, per box AP comparison (--plan-seeds)."""
    pair = results["noise"]["AP"].pair_prior or results["noise"]["AP"].setting_prior
    head = (f"Seed std {fmt_num(math.sqrt(pair.scale), 2)} AP ({_shared(pair.df)}; docs/intervals.md)"
            if pair is not None else "No two settings with two finished seeds: the seed variance is not shared.")
    rows = []
    for d in results["differences"]["AP"]:
        design = d["design"]
        cells = [NOT_RUN if design is None else str(design.seeds_needed(e) or "more test images") for e in effects]
        rows.append([f"{d['norm']} − {d['baseline']}", str(d["ims_per_gpu"]), str(d["interval"].n),
                     d["family"] or NOT_RUN] + cells)
    lines = [head, f"Seeds per setting for {results['power']:.0%} power at each comparison's family level "
                   "(docs/intervals.md):", ""]
    lines += _table(["comparison", "ims/GPU", "seeds now", "family"] + [f"{fmt_num(e, 2)} AP" for e in effects],
                    rows, [":---", "---:", "---:", ":---"] + ["---:"] * len(effects))
    return "\n".join(lines)
