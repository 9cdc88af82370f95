"""Checkpoint and stop on the signals a scheduler sends before it ends a job.

SIGTERM and SIGUSR1: plain `sbatch` scripts, SLURM's own preemption and time limit,
other schedulers, `kill PID`. submitit's preemption/timeout signal: SIGUSR2, or the
signal SUBMITIT_PREEMPT_SIGNAL names (submitit submits with `--signal=<it>@<delay>`).
On any of them the training saves a checkpoint at the end of the current iteration and
stops; the process that started it requeues the job (sweep/running/training_stop.py).
"""
import logging
import os
import signal
import threading
from typing import Tuple

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger("frn_det")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
SUBMITIT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"  # read by submitit too, with the same default


def submitit_signal() -> signal.Signals:
    name = os.environ.get(SUBMITIT_SIGNAL_ENV, "USR2")
    try:
        return signal.Signals["SIG" + name]  # as submitit reads it
    except KeyError:
        raise ValueError(f"{SUBMITIT_SIGNAL_ENV}={name!r} is not a signal name: expected e.g. USR2 (submitit's "
                         "default), USR1 or TERM") from None


def preemption_signals() -> Tuple[signal.Signals, ...]:
    """Every signal the training checkpoints and stops on."""
    return tuple(dict.fromkeys((*STOP_SIGNALS, submitit_signal())))


class Preempted(BaseException):
    """Raised after the preemption checkpoint is saved.

    A BaseException, like KeyboardInterrupt, so that code recording failed runs does not
    take a preempted run for a failed one: it stays resumable.
    """


class PreemptionHook(HookBase):
    def __init__(self):
        self.signal_received = 0
        self._previous = {}

    def _on_signal(self, signum, frame):
        first, self.signal_received = not self.signal_received, signum
        if first:  # the scheduler's signal and the job process's copy of it
            logger.warning("received %s at iteration %d: will checkpoint after this iteration and stop",
                           signal.Signals(signum).name, self.trainer.iter)

    def before_train(self):
        if threading.current_thread() is threading.main_thread():
            for sig in preemption_signals():
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def after_step(self):
        received = self.signal_received
        if comm.get_world_size() > 1:  # every worker must stop at the same iteration
            flag = torch.tensor([received], dtype=torch.int64)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            received = int(flag.item())
        if not received:
            return
        it = self.trainer.iter
        self.trainer.checkpointer.save(f"model_{it:07d}", iteration=it)
        comm.synchronize()
        raise Preempted(f"stopped by {signal.Signals(received).name} at iteration {it}; checkpoint saved, re-run to "
                        "resume")

    def after_train(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
