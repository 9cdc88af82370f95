"""Stop signals in a sweep job's process while its run trains in child processes.

A run trains in fresh processes (fresh_process.py, or the workers Detectron2's launch
spawns). A stop signal that reaches the job's process (SIGTERM, SIGUSR1, submitit's
SIGUSR2: engine/preemption.py) is passed on to them: they checkpoint at the end of the
current iteration and stop, and this process waits for them, at most CHECKPOINT_WAIT_S
(then it stops them outright; the run resumes from its last checkpoint).

Only then does the handler that the signal found run: submitit's, for its signal, pickles
the job, requeues it (`scontrol requeue`) and exits. Run at once, as submitit installs it,
it would end the job before the checkpoint: the requeued job lost every iteration since
the last periodic one.
"""
import logging
import multiprocessing
import os
import signal
import subprocess
import threading
from typing import List, Optional

from ...engine.preemption import preemption_signals

logger = logging.getLogger("frn_det")
# Schedulers give 30 s (SLURM's KillWait) to 90-120 s (submitit's signal_delay_s) between the
# signal and the kill; a training stops within an iteration and a checkpoint write.
CHECKPOINT_WAIT_S = 60.0


class TrainingStop:
    """Around a run's training in the job's process (main thread; elsewhere it does nothing).

    `received`: the first stop signal that came while it was active, or None."""

    def __init__(self):
        self.received: Optional[signal.Signals] = None
        self._signals: List[signal.Signals] = []  # received, in order, each once
        self._handlers = {}  # the handlers it replaced
        self._fresh: List[subprocess.Popen] = []
        self._watchdog: Optional[threading.Timer] = None

    def trains_in(self, proc: subprocess.Popen) -> None:
        """A training process started with subprocess (Detectron2's workers are found by themselves)."""
        self._fresh.append(proc)

    def _training_pids(self) -> List[int]:
        # multiprocessing's children are launch's workers, not its resource tracker (which
        # SIGUSR1/SIGUSR2 would kill)
        return [p.pid for p in self._fresh if p.returncode is None] + [
            p.pid for p in multiprocessing.active_children()]

    def _pass_on(self, signum: int) -> None:
        for pid in self._training_pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:  # it has just ended
                pass

    def _on_signal(self, signum, frame) -> None:
        sig = signal.Signals(signum)
        if sig in self._signals:
            return
        self._signals.append(sig)
        if self.received is None:
            self.received = sig
            logger.warning("received %s: the training checkpoints and stops (waiting up to %.0f s)", sig.name,
                           CHECKPOINT_WAIT_S)
            self._watchdog = threading.Timer(CHECKPOINT_WAIT_S, self._stop_training)
            self._watchdog.daemon = True
            self._watchdog.start()
        self._pass_on(signum)

    def _stop_training(self) -> None:
        if self._training_pids():
            logger.warning("the training did not stop within %.0f s of %s: ending it (the run resumes from its last "
                           "checkpoint)", CHECKPOINT_WAIT_S, self.received.name)
            self._pass_on(signal.SIGKILL)

    def __enter__(self) -> "TrainingStop":
        if threading.current_thread() is threading.main_thread():
            self._handlers = {sig: signal.signal(sig, self._on_signal) for sig in preemption_signals()}
        return self

    def __exit__(self, *exc) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        # The training has stopped and the run is recorded: now what the signals would have done
        # (submitit: requeue and exit; another sweep handler: end the sweep).
        for sig in self._signals:
            handler = self._handlers.get(sig)
            if callable(handler):
                handler(sig, None)
