"""A quiet console for sweeps: progress bars and frn-det's own lines; the rest goes to the run's log.

Hydra's job logging (configs/sweep/sweep.yaml, hydra.job_logging) sends every record to
<run dir>/sweep.log and only what `ConsoleFilter` lets through to the terminal:
frn-det's INFO lines and everybody's warnings and errors. `verbose=true` lets
Detectron2's per-iteration log through too. Console lines go through tqdm.write, so
they do not tear the progress bars.
"""
import logging

from tqdm import tqdm

# Third-party warnings that say nothing about the run and cannot be fixed from here:
# fvcore warns on every config it loads that yaml.unsafe_load is used (Detectron2's
# configs need it for !!python tags).
_NOISE = (("fvcore.common.config", "Loading config"),)


class ConsoleFilter(logging.Filter):
    def __init__(self, verbose: bool = False):
        super().__init__()
        self.verbose = bool(verbose)

    def filter(self, record: logging.LogRecord) -> bool:
        if any(record.name == name and str(record.msg).startswith(start) for name, start in _NOISE):
            return False
        if self.verbose or record.levelno >= logging.WARNING:
            return True
        return record.name == "frn_det" or record.name.startswith("frn_det.")


class TqdmHandler(logging.StreamHandler):
    """Writes above the progress bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001  logging must never raise
            self.handleError(record)


def configure_worker_logging(log_file: str, rank: int, verbose: bool) -> None:
    """Logging in a spawned DDP worker, which Hydra did not configure: the run's log file for
    every rank, the quiet console for rank 0 only."""
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - [rank %(rank)s] %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    add_rank = _RankFilter(rank)
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(fmt)
    file_handler.addFilter(add_rank)
    root.addHandler(file_handler)
    if rank == 0:
        console = TqdmHandler()
        console.setFormatter(fmt)
        console.addFilter(add_rank)
        console.addFilter(ConsoleFilter(verbose))
        root.addHandler(console)


class _RankFilter(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True
