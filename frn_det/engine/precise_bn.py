"""PreciseBN for every batch-statistics norm: Detectron2's PreciseBN hook (TEST.PRECISE_BN:
population statistics recomputed on NUM_ITER training batches before each evaluation and
at the end of training), extended from BatchNorm to the norms whose eval statistics are
moving averages of training-batch statistics.

fvcore's update_bn_stats (what Detectron2's hook runs) covers BatchNorm modules (BN,
SyncBN, NaiveSyncBN, and frn-det's BatchNorm2d subclasses BRN, EvalNorm, CBN): it sets
their momentum to 1 (running statistics := the batch's), runs the model on training batches
in training mode without gradients, and puts the average of the per-batch values in
running_mean / running_var. Here the variance is the population's, E[x^2] - E[x]^2 over
all batches (the per-batch variances' average leaves out the spread of the batch means,
which dominates at 1-2 images per batch: "Rethinking 'Batch' in BatchNorm", Wu & Johnson
2021, section 3). `update_population_stats` does the same for every module that
`population_stats` names buffers of (BatchNorm's running_mean/var, EvoNorm-B0's and MABN's
running_var), and also puts every other buffer of those modules back as it was (BRN's and
CBN's iteration counters, MABN's moving-average windows, EvalNorm's batch size), so that the
recomputation changes nothing but the population statistics. Each module sees only its own
inputs, so RetinaNet's per-level head norms (CycleBatchNormList) keep per-level statistics.
"""
import itertools
import logging
from typing import Dict, List, Tuple

import torch
from detectron2.engine import HookBase
from detectron2.utils.events import EventStorage
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers.norms import EvoNorm2dB0, MABN2d

__all__ = ["population_stats", "batch_stat_modules", "update_population_stats", "PrecisePopulationStats"]


def population_stats(module: nn.Module) -> Tuple[str, ...]:
    """The buffers that hold `module`'s population statistics (eval uses them, training
    updates them from batch statistics with `module.momentum`); () for other modules."""
    if isinstance(module, _BatchNorm) and module.track_running_stats and module.running_mean is not None:
        return ("running_mean", "running_var")
    if isinstance(module, EvoNorm2dB0) and module.v is not None:  # (the linear variant has no statistics)
        return ("running_var",)
    if isinstance(module, MABN2d):
        return ("running_var",)
    return ()


def batch_stat_modules(model: nn.Module) -> List[nn.Module]:
    """The modules in training mode that have population statistics (fvcore's
    get_bn_modules, for every batch-statistics norm)."""
    return [m for m in model.modules() if m.training and population_stats(m)]


def update_population_stats(model: nn.Module, data_loader, num_iter: int = 200) -> None:
    """fvcore's update_bn_stats for every batch-statistics norm (see the module docstring).
    Raises ValueError when `data_loader` has fewer than `num_iter` batches."""
    modules = batch_stat_modules(model)
    if not modules:
        return
    saved: List[Dict[str, torch.Tensor]] = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in modules]
    momenta = [m.momentum for m in modules]
    averages = [{k: torch.zeros_like(getattr(m, k)) for k in population_stats(m)} for m in modules]
    for m in modules:
        m.momentum = 1.0
    seen = 0
    try:
        for seen, inputs in enumerate(itertools.islice(data_loader, num_iter), start=1):
            with torch.no_grad():
                model(inputs)
            for m, avg in zip(modules, averages):
                batch = {k: getattr(m, k) for k in avg}
                if "running_mean" in batch:
                    # average E[x^2], not the batches' variances: the population variance also holds
                    # the spread of the batch means, which the average of per-batch variances (fvcore's
                    # update_bn_stats) misses; at 1-2 images per batch that spread is large
                    batch["running_var"] = batch["running_var"] + batch["running_mean"] ** 2
                for k, a in avg.items():
                    a += (batch[k] - a) / seen
        if seen != num_iter:
            raise ValueError(f"PreciseBN: the data loader ran out after {seen} batches, {num_iter} are needed "
                             "(TEST.PRECISE_BN.NUM_ITER)")
        for avg in averages:
            if "running_mean" in avg:  # Var[x] = E[x^2] - E[x]^2 over the whole population
                avg["running_var"] = (avg["running_var"] - avg["running_mean"] ** 2).clamp_(min=0)
    finally:
        for m, before, avg, momentum in zip(modules, saved, averages, momenta):
            m.momentum = momentum
            for k, b in before.items():
                getattr(m, k).copy_(avg[k] if k in avg and seen == num_iter else b)


class PrecisePopulationStats(HookBase):
    """Detectron2's hooks.PreciseBN (same arguments, period and place among the hooks) with
    update_population_stats: every batch-statistics norm, not only BatchNorm."""

    def __init__(self, period: int, model: nn.Module, data_loader, num_iter: int):
        self._logger = logging.getLogger(__name__)
        self._disabled = not batch_stat_modules(model)
        if self._disabled:
            self._logger.info("PreciseBN is disabled: the model has no batch-statistics norm in training mode.")
            return
        self._model, self._data_loader, self._num_iter, self._period = model, data_loader, num_iter, period
        self._data_iter = None

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter == self.trainer.max_iter or (self._period > 0 and next_iter % self._period == 0):
            self.update_stats()

    def update_stats(self):
        """Recompute the population statistics now (on the next NUM_ITER training batches)."""
        if self._disabled:
            return
        if self._data_iter is None:
            self._data_iter = iter(self._data_loader)
        batches = (next(self._data_iter) for _ in itertools.count())
        with EventStorage():  # discard the events of these forwards
            self._logger.info("Running PreciseBN for %d iterations...", self._num_iter)
            update_population_stats(self._model, batches, self._num_iter)
