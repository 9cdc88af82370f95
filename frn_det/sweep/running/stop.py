"""Stopping a sweep whose runs train in the local launcher's worker processes.

SIGTERM or SIGUSR1 sent to the sweep's own process (`kill PID`, a scheduler's time limit
on the command) reaches that process alone: the joblib launcher's workers and their
training processes would train on without it, holding their runs' locks. So the sweep
process passes the signal to its workers, which pass it to their training (it
checkpoints and stops: the run stays resumable), and then ends as the signal asks. A
worker that finds its sweep gone starts no further job and ends after the one it runs
(nobody waits for its result; idle, it would linger with the sweep's output pipes open).

Launchers that run jobs elsewhere (submitit, SLURM) keep their own semantics: nothing is
installed for them.
"""
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import List

from ...engine.preemption import STOP_SIGNALS

logger = logging.getLogger("frn_det")
SWEEP_PID_ENV = "FRN_DET_SWEEP_PID"  # the sweep process, as its launcher workers inherit it


def _child_pids(pid: int) -> List[int]:
    """The direct children of `pid` (Linux /proc; none elsewhere)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        except (OSError, IndexError):  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _stop(signum, frame) -> None:
    logger.warning("received %s: the running jobs checkpoint and stop (resumable), no further job starts",
                   signal.Signals(signum).name)
    for child in _child_pids(os.getpid()):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # end as the signal asks (exit status 128 + signum)


def stop_workers_with_the_sweep() -> None:
    """In the sweep process, before the launcher starts its workers."""
    os.environ[SWEEP_PID_ENV] = str(os.getpid())
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, _stop)


def sweep_is_gone() -> bool:
    """In a launcher worker: the sweep process that started this worker has ended."""
    sweep = os.environ.get(SWEEP_PID_ENV)
    return bool(sweep) and int(sweep) != os.getpid() and os.getppid() != int(sweep)


def _end_worker() -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


@contextmanager
def job_of_a_live_sweep(run_name: str):
    """Around a sweep job: in a worker whose sweep has gone, the job does not start, and a
    job under way ends its worker when it returns."""
    if sweep_is_gone():
        logger.warning("%s: not started, the sweep was stopped", run_name)
        _end_worker()
    try:
        yield
    finally:
        if sweep_is_gone():
            _end_worker()
