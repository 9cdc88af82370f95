"""Run a sweep job's training in a fresh process.

A run must be a function of its config and seed alone. Trained inside the sweep process,
a job inherits what the jobs before it left behind there (module caches, RNG and
allocator state, thread pools), and the same setting gave another AP inside a grid than
alone. Each job's training therefore runs in a new interpreter, which starts from the
same state as `python tools/sweep.py hydra.mode=RUN` would. It is started as a plain
subprocess (`python -m frn_det.sweep.fresh_process`), not through multiprocessing, so it
works from any launcher's worker (joblib's loky workers set a start method that a
multiprocessing child cannot find).

The parent forwards SIGTERM/SIGUSR1 to the child (which checkpoints and stops, while the
parent waits and keeps the run's lock). A parent killed outright (SIGKILL) takes the child
with it (Linux), as when training ran inside it: no orphan trains on without the lock.
"""
import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Sequence

from ..engine.preemption import PREEMPTION_SIGNALS

logger = logging.getLogger("frn_det")
_PR_SET_PDEATHSIG = 1


class TrainingProcessError(RuntimeError):
    """The training process failed; the message is its exception ("Type: message") or how it died."""


def _forward(proc: subprocess.Popen, signum: int) -> None:
    logger.warning("received %s: the training process checkpoints and stops", signal.Signals(signum).name)
    try:
        proc.send_signal(signum)
    except ProcessLookupError:  # it has just ended
        pass


def run_in_fresh_process(fn: Callable, args: Sequence = ()) -> None:
    """fn(*args) in a new interpreter (fn and args must pickle); raises TrainingProcessError
    when it fails."""
    with tempfile.TemporaryDirectory(prefix="frn_det_job_") as tmp:
        job, error = Path(tmp) / "job.pkl", Path(tmp) / "error.txt"
        job.write_bytes(pickle.dumps((fn, tuple(args), os.getpid())))
        # the child imports what this process imports, from the same places
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.Popen([sys.executable, "-m", __name__, str(job), str(error)], env=env)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {
                sig: signal.signal(sig, lambda signum, frame: _forward(proc, signum)) for sig in PREEMPTION_SIGNALS
            }
        try:
            proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if proc.returncode == 0:
            return
        message = error.read_text() if error.is_file() else None
    if not message:
        code = proc.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        message = f"the training process {how}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
    raise TrainingProcessError(message)


def _child(job: str, error: str) -> int:
    fn, args, parent = pickle.loads(Path(job).read_bytes())
    try:  # die with the parent (Linux); it may already be gone
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        return 1
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001  reported to the parent, which records the run
        logging.getLogger("frn_det").exception("training failed")
        Path(error).write_text(f"{type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:3]))
