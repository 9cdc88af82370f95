"""Hydra callback: a progress bar over the sweep's jobs and the report at the end."""
import logging
import math
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from tqdm import tqdm

logger = logging.getLogger("frn_det")


def count_sweep_jobs(task_overrides) -> int:
    """Number of jobs the basic sweeper makes from command-line overrides (product of choices)."""
    overrides = OverridesParser.create().parse_overrides(list(task_overrides))
    return math.prod(len(list(o.sweep_string_iterator())) for o in overrides if o.is_sweep_override())


def write_sweep_report(config: DictConfig) -> None:
    from ..report import ReportError, write_report

    try:
        paths = write_report([Path(config.output_dir)], references=config.references)
        logger.info("report: %s (plot: %s)", paths["md"], paths["png"])
    except ReportError as e:
        logger.warning("no report written: %s", e)


class SweepCallback(Callback):
    def __init__(self):
        self.bar = None

    def __getstate__(self):
        # Launchers such as submitit pickle the callbacks into each job; a bar does not travel.
        return {**self.__dict__, "bar": None}

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            total = count_sweep_jobs(config.hydra.overrides.task)
        except Exception:  # noqa: BLE001  sweeps defined in other ways: a bar without total
            total = None
        self.bar = tqdm(total=total, desc="sweep", unit="run", position=0, dynamic_ncols=True)

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.write(f"[sweep] finished job {self.bar.n}/{self.bar.total or '?'}: {Path(config.hydra.runtime.output_dir).name}")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.bar is not None:
            self.bar.close()
        if config.report:
            write_sweep_report(config)

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        if config.report:
            write_sweep_report(config)
