"""`tools/sweep.py ... plan=true`: every job of the grid, its state and estimated cost,
without training (and without submitting anything to a launcher).

The grid is expanded as Hydra's basic sweeper does (the config's hydra.sweeper.params,
the command line winning per key) and each job composed with Hydra's compose API. Per
job: run folder, total batch, lr, iterations, images seen; finished / resumable / new
(the runner's own rules: same config hash in metrics.json, a checkpoint in the folder);
and the time left at a measured s/iter. s/iter is taken as linear in images per worker
(each data-parallel worker processes its own images). Where it comes from, in order:

1. finished runs of the same model, norm, device and precision in the output folder;
2. the norm's own line in configs/references/s_per_iter.yaml;
3. BN's s/iter (finished bn runs in the folder, else the table's bn line) times the norm's
   cost ratio to BN from configs/references/norm_cost_ratios.yaml (same model and device,
   the job's precision if there is an entry for it, the nearest images per GPU);
4. BN's s/iter alone where no ratio is known for the norm, flagged as a lower bound.

The plan names each figure's source (footnotes) and the ratio it applied.
"""
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .d2config import CONFIGS_DIR, build_detectron2_config, config_hash, norm_label, run_name, schedule_from

REFERENCE_TIMES = CONFIGS_DIR / "references" / "s_per_iter.yaml"
REFERENCE_RATIOS = CONFIGS_DIR / "references" / "norm_cost_ratios.yaml"
BASE_NORM = "bn"  # the norm the ratios are relative to


@dataclass
class PlanRow:
    run: str
    total_batch: int
    lr: float
    max_iter: int
    images_seen: int
    state: str  # finished, resumable@<iter>, new, or the recorded diverged / failed
    remaining_iter: int
    s_per_iter: Optional[float]  # at this job's images per worker; None: no figure known
    source: str  # where s_per_iter (or, with a ratio, BN's s/iter) comes from
    workers: int
    ratio: Optional[float] = None  # the cost ratio to BN applied (or measured), if any
    ratio_source: str = ""

    @property
    def hours(self) -> Optional[float]:
        """Wall-clock hours left."""
        return None if self.s_per_iter is None else self.remaining_iter * self.s_per_iter / 3600

    @property
    def gpu_hours(self) -> Optional[float]:
        return None if self.hours is None else self.hours * self.workers


def grid_overrides(cli_overrides: Sequence[str]) -> Tuple[List[List[str]], bool]:
    """(the override list of every job, multirun?) as Hydra would run the command line:
    one job for hydra.mode=RUN, else the basic sweeper's product."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(cli_overrides))
    base = compose("sweep", overrides=[o.input_line for o in parsed if not o.is_sweep_override()],
                   return_hydra_config=True)
    if base.hydra.mode == RunMode.RUN:
        return [list(cli_overrides)], False
    given = {o.key_or_group for o in parsed}
    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    overrides = [f"{k}={v}" for k, v in params.items() if k not in given] + list(cli_overrides)
    (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(overrides), None)
    return jobs, True


def _run_dir(job: DictConfig, multirun: bool) -> Path:
    key = "hydra.sweep.subdir" if multirun else "hydra.run.dir"
    try:
        sub = OmegaConf.select(job, key, throw_on_resolution_failure=True)
    except Exception:  # noqa: BLE001  a folder naming that needs Hydra's runtime: the default name
        sub = run_name(job.norm.name, job.get("act"), job.ims_per_gpu, job.lr_scale, job.seed)
    return Path(job.output_dir) / sub if multirun else Path(sub)


def run_state(run_dir: Path, digest: str, rerun_failed: bool) -> tuple:
    """(state, iterations done) by the runner's rules (record.metrics.is_done, resume_or_load)."""
    from ...record.metrics import is_done, read_metrics

    existing = read_metrics(run_dir)
    if existing and existing.get("config_hash") == digest and is_done(existing, digest, rerun_failed):
        status = existing["status"]
        label = f"diverged@{existing.get('diverged_at_iter')}" if status == "diverged" else status
        return label, None
    stale = existing is not None and existing.get("config_hash") not in (None, digest)
    checkpoint = run_dir / "last_checkpoint"
    if checkpoint.is_file() and not stale:
        name = checkpoint.read_text(errors="replace").strip()  # model_0004999.pth: iterations 0..4999 done
        digits = "".join(c for c in Path(name).stem if c.isdigit())
        if digits:
            return f"resumable@{int(digits) + 1}", int(digits) + 1
    return ("new (replaces a stale result)" if stale else "new"), 0


def measured_s_per_iter(output_dir: Path, model: str, norm: str, device: str, amp: bool = False) -> Optional[float]:
    """Median seconds per iteration per image per worker of the finished runs in output_dir
    with this model, norm, device and precision (metrics.json s_per_iter; config.yaml
    MODEL.DEVICE and SOLVER.AMP.ENABLED)."""
    from ...record.metrics import read_metrics

    rates = []
    for metrics_file in sorted(Path(output_dir).glob("*/metrics.json")):
        m = read_metrics(metrics_file.parent) or {}
        if m.get("status") != "finished" or not m.get("s_per_iter") or (m.get("model"), m.get("norm")) != (model, norm):
            continue
        if _device_and_amp(metrics_file.parent) != (device, amp):
            continue
        rates.append(m["s_per_iter"] / m["ims_per_gpu"])
    return statistics.median(rates) if rates else None


def _device_and_amp(run_dir: Path) -> Optional[tuple]:
    try:
        solver = yaml.safe_load((run_dir / "config.yaml").read_text())
        return str(solver["MODEL"]["DEVICE"]), bool((solver.get("SOLVER") or {}).get("AMP", {}).get("ENABLED", False))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):  # damaged: the plan does without
        return None


def reference_s_per_iter(model: str, norm: str, device: str, table: Path = REFERENCE_TIMES) -> tuple:
    """(s/iter per image per worker, source) from the table's line for this model, norm and
    device; (None, "") when it has none."""
    for e in yaml.safe_load(Path(table).read_text()):
        if (e["model"], e["device"], e["norm"]) == (model, device, norm):
            return e["s_per_iter"] / e["ims_per_gpu"], e["source"]
    return None, ""


def reference_ratio(model: str, norm: str, device: str, amp: bool, ims_per_gpu: int,
                    table: Path = REFERENCE_RATIOS) -> tuple:
    """(norm's s/iter / BN's, source) from the ratio table: among its entries for this model
    and device that list the norm, the job's precision first, then the nearest images per
    GPU (the fewer at a tie); (None, "") when none lists it."""
    precision = "amp" if amp else "fp32"
    entries = [e for e in yaml.safe_load(Path(table).read_text())
               if (e["model"], e["device"]) == (model, device) and norm in e["ratios"]]
    if not entries:
        return None, ""
    best = min(entries, key=lambda e: (e["precision"] != precision, abs(e["ims_per_gpu"] - ims_per_gpu),
                                       e["ims_per_gpu"]))
    note = "" if best["precision"] == precision else f"; no {precision} figure, the {best['precision']} one"
    return float(best["ratios"][norm]), best["source"] + note


def price(model: str, norm: str, device: str, amp: bool, ims_per_gpu: int, output_dir: Path,
          table: Path = REFERENCE_TIMES, ratios: Path = REFERENCE_RATIOS) -> tuple:
    """(s/iter per image per worker or None, its source, ratio to BN or None, the ratio's
    source) for one job, by the order of the module docstring. `norm` is the run's label
    (e.g. "gn+relu"): its entry name (before "+") keys the reference tables."""
    entry = norm.split("+")[0]
    where = f"finished {model} {{}} runs in {output_dir}" + (" (AMP)" if amp else "")
    rate = measured_s_per_iter(output_dir, model, norm, device, amp)
    bn_rate = measured_s_per_iter(output_dir, model, BASE_NORM, device, amp)
    if rate is not None:  # the norm's own cost; its ratio to BN shown where BN was measured too
        ratio = rate / bn_rate if bn_rate and entry != BASE_NORM else None
        return rate, "measured: " + where.format(norm), ratio, "measured: " + where.format(f"{norm} and bn")
    rate, source = reference_s_per_iter(model, entry, device, table)
    if rate is not None:
        return rate, source, None, ""
    if bn_rate is not None:
        base, base_source = bn_rate, "measured: " + where.format(BASE_NORM)
    else:
        base, base_source = reference_s_per_iter(model, BASE_NORM, device, table)
    if base is None or entry == BASE_NORM:
        return base, base_source, None, ""
    ratio, ratio_source = reference_ratio(model, entry, device, amp, ims_per_gpu, ratios)
    if ratio is None:
        return base, base_source, None, f"no cost ratio known for {entry} on {model} ({device}): priced at bn's " \
                                        "s/iter, a lower bound"
    return base * ratio, base_source, ratio, ratio_source


def plan_row(job: DictConfig, run_dir: Path, table: Path = REFERENCE_TIMES,
             ratios: Path = REFERENCE_RATIOS) -> PlanRow:
    sched = schedule_from(job)
    cfg, _ = build_detectron2_config(job, run_dir)
    state, done = run_state(run_dir, config_hash(cfg), bool(job.rerun_failed))
    remaining = 0 if done is None else max(sched.max_iter - done, 0)
    device = job.model.device.split(":")[0]  # as configured (the plan may be made on another machine)
    rate, source, ratio, ratio_source = price(job.model.name, norm_label(job), device, bool(job.get("amp", False)),
                                              sched.ims_per_gpu, Path(job.output_dir), table, ratios)
    return PlanRow(
        run=run_dir.name, total_batch=sched.total_batch, lr=sched.lr, max_iter=sched.max_iter,
        images_seen=sched.images_seen, state=state, remaining_iter=remaining,
        s_per_iter=None if rate is None else rate * sched.ims_per_gpu, source=source, workers=sched.num_workers,
        ratio=ratio, ratio_source=ratio_source,
    )


def make_plan(cli_overrides: Sequence[str], table: Path = REFERENCE_TIMES,
              ratios: Path = REFERENCE_RATIOS) -> List[PlanRow]:

    overrides = [o for o in cli_overrides if o.split("=")[0] != "plan"]
    # Building each job's config logs per job ("CUDA is not available", fvcore's yaml note).
    quiet = [logging.getLogger(name) for name in ("frn_det", "fvcore")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with initialize_config_dir(config_dir=str(CONFIGS_DIR / "sweep"), version_base="1.3", job_name="sweep"):
            jobs, multirun = grid_overrides(overrides)
            return [plan_row(job, _run_dir(job, multirun), table, ratios)
                    for job in (compose("sweep", overrides=o, return_hydra_config=True) for o in jobs)]
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _fmt_hours(h: Optional[float]) -> str:
    """Hours with three significant digits below 10 (a CPU job of minutes is not 0.0)."""
    if h is None:
        return "?"
    return f"{h:,.1f}" if h >= 10 else f"{h:.3g}"


def _footnotes(rows: Sequence[PlanRow]) -> dict:
    """source text -> its footnote number, in the order the rows first name them."""
    notes: dict = {}
    for r in rows:
        for text in (r.source, r.ratio_source):
            if text and text not in notes:
                notes[text] = len(notes) + 1
    return notes


def _ratio_cell(r: PlanRow) -> str:
    if r.ratio is not None:
        return f"{r.ratio:.2f}"
    return "?" if r.ratio_source else ""  # a norm priced at bn's s/iter for lack of a ratio


def render(rows: Sequence[PlanRow]) -> str:
    """The plan as a text table, then GPU-hours left, the longest single job, and where each
    s/iter figure and cost ratio came from (the "from" column's footnotes)."""
    notes = _footnotes(rows)
    header = ("run", "batch", "lr", "iters", "images", "state", "s/iter", "x bn", "from", "hours", "GPU-h")
    table = [header] + [
        (r.run, str(r.total_batch), f"{r.lr:g}", f"{r.max_iter:,}", f"{r.images_seen:,}", r.state,
         "?" if r.s_per_iter is None else f"{r.s_per_iter:.3f}", _ratio_cell(r),
         ",".join(str(notes[t]) for t in (r.source, r.ratio_source) if t), _fmt_hours(r.hours), _fmt_hours(r.gpu_hours))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i in (0, 5, 8) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(line, widths)))
             for line in table]
    lines.insert(1, "-" * len(lines[0]))
    known = [r for r in rows if r.gpu_hours is not None]
    unknown = [r.run for r in rows if r.gpu_hours is None and r.remaining_iter]
    todo = [r for r in rows if r.remaining_iter]
    lines.append("")
    lines.append(f"{len(rows)} jobs: {len(todo)} to train, {len(rows) - len(todo)} done or skipped")
    lines.append(f"total: {_fmt_hours(sum(r.gpu_hours for r in known))} GPU-hours "
                 f"({_fmt_hours(sum(r.hours for r in known))} hours if the jobs ran one after another)")
    if known and todo:
        longest = max(known, key=lambda r: r.hours)
        lines.append(f"longest job: {longest.run}, {_fmt_hours(longest.hours)} hours on {longest.workers} workers")
    if unknown:
        lines.append(f"no s/iter figure for {len(unknown)} job(s), left out of the totals: {', '.join(unknown)}")
    if notes:
        lines.append("s/iter and cost ratios to bn from (column \"from\"; with a ratio, s/iter = bn's s/iter x it):")
        lines += [f"  [{k}] {text}" for text, k in notes.items()]
    return "\n".join(lines)
