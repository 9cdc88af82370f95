"""Hydra callback: a progress bar over the sweep's jobs, the report at the end, and the
list of failed runs that decides the exit status (see app.main)."""
import logging
import math
import time
from pathlib import Path
from typing import List

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ...layers.implementations import prepare as prepare_kernels
from ...record.events import read_events
from ...utils.damaged import describe
from .stop import stop_workers_with_the_sweep

logger = logging.getLogger("frn_det")

# Runs of this process's sweep that failed (not diverged: a diverged run is a result).
FAILED_RUNS: List[str] = []


def sweep_overrides(config: DictConfig) -> List[str]:
    """The sweep's overrides as the basic sweeper sees them: hydra.sweeper.params from the
    config, with the command line winning for a key given in both."""
    task = list(config.hydra.overrides.task)
    given = {o.key_or_group for o in OverridesParser.create().parse_overrides(task)}
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return [f"{k}={v}" for k, v in params.items() if k not in given] + task


def count_sweep_jobs(overrides) -> int:
    """Number of jobs the basic sweeper makes from overrides (product of choices)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return math.prod(len(list(o.sweep_string_iterator())) for o in parsed if o.is_sweep_override())


def report_dir_of_run(config: DictConfig) -> Path:
    """A single run reports with its siblings when it sits in output_dir (the default
    layout), and alone when hydra.run.dir put it elsewhere."""
    run_dir = Path(config.hydra.runtime.output_dir)
    return run_dir.parent if run_dir.parent.resolve() == Path(config.output_dir).resolve() else run_dir


def write_sweep_report(report_dir: Path, config: DictConfig) -> None:
    """The report of the runs in report_dir; a problem is logged, never raised: the runs
    are trained and recorded whatever happens to their report."""
    from ...report import ReportError, write_report

    try:
        power = {} if config.get("effect") is None else {"effect": config.effect}  # None: the report's default
        paths = write_report([report_dir], references=config.references, **power)
        logger.info("report: %s (plot: %s)", paths["md"], paths["png"])
    except ReportError as e:
        logger.warning("no report written: %s", e)
    except Exception as e:  # noqa: BLE001  a bug or a file we did not foresee: the runs' results stay
        logger.exception("no report written for %s: %s (the runs' results are kept; "
                         "`python tools/report.py %s` tries again)", report_dir, describe(e), report_dir)


def failed_runs(run_dirs, since: float) -> List[str]:
    """Runs among run_dirs that this sweep (events at or after `since`) left failed."""
    from ...record.metrics import FAILED, read_metrics

    failed = []
    for run_dir in run_dirs:
        try:
            touched = any(isinstance(e.get("time"), (int, float)) and e["time"] >= since for e in read_events(run_dir))
            metrics = read_metrics(run_dir) or {}
        except OSError as e:  # an unreadable run folder: named, and the others still counted
            logger.warning("%s: cannot read its records (%s)", run_dir, describe(e))
            continue
        if touched and metrics.get("status") == FAILED:
            failed.append(f"{run_dir.name}: {metrics.get('status_detail') or 'failed'}")
    return failed


def _is_machine_zero(config: DictConfig) -> bool:
    from .cluster import resolve_distributed

    try:
        return resolve_distributed(config.num_machines, config.get("machine_rank"), config.dist_url)[0] == 0
    except ValueError:
        return True  # the job itself reported the problem


class SweepCallback(Callback):
    def __init__(self):
        self.bar = None
        self.total = None
        self.started = time.time()

    def __getstate__(self):
        # Launchers such as submitit pickle the callbacks into each job; a bar does not travel.
        return {**self.__dict__, "bar": None}

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()
        try:
            self.total = count_sweep_jobs(sweep_overrides(config))
        except Exception:  # noqa: BLE001  sweeps defined in other ways: a bar without total
            self.total = None
        if "Joblib" in config.hydra.launcher._target_:  # jobs in this machine's worker processes
            stop_workers_with_the_sweep()
        if "submitit" not in config.hydra.launcher._target_:  # jobs on this machine: build the kernels once, now
            prepare_kernels(config.model.device, lambda line: tqdm.write(f"[sweep] {line}"))
        if "SlurmLauncher" in config.hydra.launcher._target_:
            from .slurm_states import watch_slurm_jobs_without_accounting

            watch_slurm_jobs_without_accounting()
        if config.hydra.launcher.get("n_jobs", 1) == 1 and "submitit" not in config.hydra.launcher._target_:
            self.bar = tqdm(total=self.total, desc="sweep", unit="run", position=0, dynamic_ncols=True)
        else:  # jobs run in other processes (several at once, or a cluster): each prints its own line
            tqdm.write(f"[sweep] {self.total or '?'} jobs, "
                       f"{config.hydra.launcher.get('n_jobs') or 'a cluster job each'} at once")

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        record = job_return.return_value if job_return.status.name == "COMPLETED" else None
        result = ""
        if isinstance(record, dict):
            ap = record.get("AP")
            result = f": {record.get('status')}" + (f", AP {ap:.1f}" if isinstance(ap, float) else "")
        if self.bar is not None:
            self.bar.update(1)
            number = self.bar.n
        elif self.total is not None:  # in a launcher's worker process (jobs at once): the job's own number
            number = config.hydra.job.num + 1
        else:  # a single run
            return
        tqdm.write(f"[sweep] job {number}/{self.total or '?'} {Path(config.hydra.runtime.output_dir).name}{result}")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.bar is not None:
            self.bar.close()
        sweep_dir = Path(config.hydra.sweep.dir)
        # The failed runs first: they decide the exit status, whatever the report does.
        FAILED_RUNS.extend(failed_runs(sorted(p.parent for p in sweep_dir.glob("*/metrics.json")), self.started))
        if config.report:
            write_sweep_report(sweep_dir, config)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        if not _is_machine_zero(config):  # machine 0 alone writes the report
            return
        FAILED_RUNS.extend(failed_runs([Path(config.hydra.runtime.output_dir)], self.started))
        if config.report:
            write_sweep_report(report_dir_of_run(config), config)
