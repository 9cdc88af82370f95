"""Checkpoint and stop on SIGTERM/SIGUSR1, the signals SLURM and submitit send before preemption."""
import logging
import signal
import threading

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger("frn_det")
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


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
        self.signal_received = signum
        logger.warning("received %s: will checkpoint after this iteration and stop", signal.Signals(signum).name)

    def before_train(self):
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPTION_SIGNALS:
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
