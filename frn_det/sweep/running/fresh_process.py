"""Run a sweep job's training in a fresh process.

A run must be a function of its config and seed alone. Trained inside the sweep process,
a job inherits what the jobs before it left behind there (module caches, RNG and
allocator state, thread pools), and the same setting gave another AP inside a grid than
alone. Each job's training therefore runs in a new interpreter, which starts from the
same state as `python tools/sweep.py hydra.mode=RUN` would. It is started as a plain
subprocess (`python -m frn_det.sweep.running.fresh_process`), not through multiprocessing, so it
works from any launcher's worker (joblib's loky workers set a start method that a
multiprocessing child cannot find).

The parent passes stop signals on to the child (training_stop.py: it checkpoints and stops,
while the parent waits and keeps the run's lock). A parent killed outright (SIGKILL) takes
the child with it (Linux), as when training ran inside it: no orphan trains on without the
lock.
"""
import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

_PR_SET_PDEATHSIG = 1


class TrainingProcessError(RuntimeError):
    """The training process failed; the message is its exception ("Type: message") or how it died."""


def run_in_fresh_process(fn: Callable, args: Sequence = (),
                         started: Optional[Callable[[subprocess.Popen], None]] = None) -> None:
    """fn(*args) in a new interpreter (fn and args must pickle); raises TrainingProcessError
    when it fails. `started(proc)` is called once the process runs."""
    with tempfile.TemporaryDirectory(prefix="frn_det_job_") as tmp:
        job, error = Path(tmp) / "job.pkl", Path(tmp) / "error.txt"
        job.write_bytes(pickle.dumps((fn, tuple(args), os.getpid())))
        # the child imports what this process imports, from the same places
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.Popen([sys.executable, "-m", __name__, str(job), str(error)], env=env)
        if started is not None:
            started(proc)
        proc.wait()
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
