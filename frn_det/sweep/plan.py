"""`tools/sweep.py ... plan=true`: every job of the grid, its state and estimated cost,
without training (and without submitting anything to a launcher).

The grid is expanded as Hydra's basic sweeper does (the config's hydra.sweeper.params,
the command line winning per key) and each job composed with Hydra's compose API. Per
job: run folder, total batch, lr, iterations, images seen; finished / resumable / new
(the runner's own rules: same config hash in metrics.json, a checkpoint in the folder);
and the time left at a measured s/iter: finished runs of the same model, norm and device
in the output folder, else configs/references/s_per_iter.yaml. s/iter is taken as linear
in images per worker (each data-parallel worker processes its own images).
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
    source: str
    workers: int

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
    """(state, iterations done) by the runner's rules (runner._should_skip, resume_or_load)."""
    from .runner import _should_skip, read_metrics

    existing = read_metrics(run_dir)
    if existing and existing.get("config_hash") == digest and _should_skip(existing, digest, rerun_failed):
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


def measured_s_per_iter(output_dir: Path, model: str, norm: str, device: str) -> Optional[float]:
    """Median seconds per iteration per image per worker of the finished runs in output_dir
    with this model, norm and device (metrics.json s_per_iter, config.yaml MODEL.DEVICE)."""
    from .runner import read_metrics

    rates = []
    for metrics_file in sorted(Path(output_dir).glob("*/metrics.json")):
        m = read_metrics(metrics_file.parent) or {}
        if m.get("status") != "finished" or not m.get("s_per_iter") or (m.get("model"), m.get("norm")) != (model, norm):
            continue
        if _device(metrics_file.parent) != device:
            continue
        rates.append(m["s_per_iter"] / m["ims_per_gpu"])
    return statistics.median(rates) if rates else None


def _device(run_dir: Path) -> Optional[str]:
    try:
        return str(yaml.safe_load((run_dir / "config.yaml").read_text())["MODEL"]["DEVICE"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):  # damaged: the plan does without
        return None


def reference_s_per_iter(model: str, norm: str, device: str, table: Path = REFERENCE_TIMES) -> tuple:
    """(s/iter per image per worker, source) from the reference table: the line for this
    norm, else the model's "*" line; (None, "") when the table has neither."""
    entries = [e for e in yaml.safe_load(Path(table).read_text()) if (e["model"], e["device"]) == (model, device)]
    for wanted in (norm, "*"):
        for e in entries:
            if e["norm"] == wanted:
                return e["s_per_iter"] / e["ims_per_gpu"], e["source"]
    return None, ""


def plan_row(job: DictConfig, run_dir: Path, table: Path = REFERENCE_TIMES) -> PlanRow:
    sched = schedule_from(job)
    cfg, _ = build_detectron2_config(job, run_dir)
    state, done = run_state(run_dir, config_hash(cfg), bool(job.rerun_failed))
    remaining = 0 if done is None else max(sched.max_iter - done, 0)
    device = job.model.device.split(":")[0]  # as configured (the plan may be made on another machine)
    norm = norm_label(job)
    rate = measured_s_per_iter(Path(job.output_dir), job.model.name, norm, device)
    source = f"measured: finished {job.model.name} {norm} runs in {job.output_dir}" if rate else ""
    if rate is None:
        rate, source = reference_s_per_iter(job.model.name, norm.split("+")[0], device, table)
    return PlanRow(
        run=run_dir.name, total_batch=sched.total_batch, lr=sched.lr, max_iter=sched.max_iter,
        images_seen=sched.images_seen, state=state, remaining_iter=remaining,
        s_per_iter=None if rate is None else rate * sched.ims_per_gpu, source=source, workers=sched.num_workers,
    )


def make_plan(cli_overrides: Sequence[str], table: Path = REFERENCE_TIMES) -> List[PlanRow]:
    from . import app  # noqa: F401  registers the run-name resolver of the folder names

    overrides = [o for o in cli_overrides if o.split("=")[0] != "plan"]
    # Building each job's config logs per job ("CUDA is not available", fvcore's yaml note).
    quiet = [logging.getLogger(name) for name in ("frn_det", "fvcore")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with initialize_config_dir(config_dir=str(CONFIGS_DIR / "sweep"), version_base="1.3", job_name="sweep"):
            jobs, multirun = grid_overrides(overrides)
            return [plan_row(job, _run_dir(job, multirun), table)
                    for job in (compose("sweep", overrides=o, return_hydra_config=True) for o in jobs)]
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def _fmt_hours(h: Optional[float]) -> str:
    """Hours with three significant digits below 10 (a CPU job of minutes is not 0.0)."""
    if h is None:
        return "?"
    return f"{h:,.1f}" if h >= 10 else f"{h:.3g}"


def render(rows: Sequence[PlanRow]) -> str:
    """The plan as a text table, then GPU-hours left and the longest single job."""
    header = ("run", "batch", "lr", "iters", "images", "state", "s/iter", "hours", "GPU-h")
    table = [header] + [
        (r.run, str(r.total_batch), f"{r.lr:g}", f"{r.max_iter:,}", f"{r.images_seen:,}", r.state,
         "?" if r.s_per_iter is None else f"{r.s_per_iter:.3f}", _fmt_hours(r.hours), _fmt_hours(r.gpu_hours))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i in (0, 5) else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
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
    sources = sorted({r.source for r in rows if r.source and r.remaining_iter})
    lines += [f"s/iter from: {s}" for s in sources]
    return "\n".join(lines)
