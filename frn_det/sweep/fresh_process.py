"""Run a sweep job's training in a fresh process.

A run must be a function of its config and seed alone. Trained inside the sweep process,
a job inherits what the jobs before it left behind there (module caches, RNG and
allocator state, thread pools), and the same setting gave another AP inside a grid than
alone. Each job's training therefore runs in a new interpreter (the "spawn" start method,
as Detectron2's `launch` uses for several workers), which starts from the same state as
`python tools/sweep.py hydra.mode=RUN` would.

The parent forwards SIGTERM/SIGUSR1 to the child (which checkpoints and stops, while the
parent waits and keeps the run's lock). A parent killed outright (SIGKILL) takes the child
with it (Linux), as when training ran inside it: no orphan trains on without the lock.
"""
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
from typing import Callable, Optional, Sequence

from ..engine.preemption import PREEMPTION_SIGNALS

logger = logging.getLogger("frn_det")
_PR_SET_PDEATHSIG = 1


class TrainingProcessError(RuntimeError):
    """The training process failed; the message is its exception ("Type: message") or how it died."""


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's signal forwarding still works
        pass


def _child(fn: Callable, args: Sequence, errors) -> None:
    _die_with_parent()
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001  reported to the parent, which records the run
        logger.exception("training failed")
        errors.send(f"{type(e).__name__}: {e}")
        raise SystemExit(1)
    finally:
        errors.close()


def _forward(proc, signum: int) -> None:
    logger.warning("received %s: the training process checkpoints and stops", signal.Signals(signum).name)
    try:
        os.kill(proc.pid, signum)
    except ProcessLookupError:  # it has just ended
        pass


def run_in_fresh_process(fn: Callable, args: Sequence = ()) -> None:
    """fn(*args) in a new spawned interpreter; raises TrainingProcessError when it fails."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, tuple(args), send), name="frn_det-train")
    proc.start()
    send.close()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda signum, frame: _forward(proc, signum)) for sig in PREEMPTION_SIGNALS}
    try:
        proc.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    message: Optional[str] = None
    try:
        if receive.poll():
            message = receive.recv()
    except EOFError:  # the child closed its end without a message: it succeeded or was killed
        pass
    receive.close()
    if proc.exitcode == 0:
        return
    if message is None:
        how = f"was killed by {signal.Signals(-proc.exitcode).name}" if proc.exitcode < 0 else f"exited with code {proc.exitcode}"
        message = f"the training process {how}" + (" (out of memory?)" if proc.exitcode == -signal.SIGKILL else "")
    raise TrainingProcessError(message)
