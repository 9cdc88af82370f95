"""Linear scaling rule: a run at any total batch sees the same number of images.

lr = lr_scale x base_lr x total_batch / reference_batch (Goyal et al. 2017; lr_scale is
the sweep's learning-rate axis, 1 by default); every iteration count (max_iter, LR steps,
warm-up, eval and checkpoint periods) scales by the inverse of the batch factor.
"""
import math
from dataclasses import asdict, dataclass
from typing import Sequence, Tuple


@dataclass(frozen=True)
class ScaledSchedule:
    ims_per_gpu: int
    num_workers: int
    total_batch: int
    reference_batch: int
    base_lr: float
    lr_scale: float
    lr: float
    max_iter: int
    steps: Tuple[int, ...]
    warmup_iters: int
    eval_period: int
    checkpoint_period: int
    images_seen: int

    def as_dict(self):
        return asdict(self)

    def describe(self) -> str:
        return (
            f"total batch {self.total_batch} = {self.ims_per_gpu} images x {self.num_workers} workers; "
            f"lr {self.base_lr:g} x {self.total_batch}/{self.reference_batch}"
            + (f" x lr_scale {self.lr_scale:g}" if self.lr_scale != 1 else "")
            + f" = {self.lr:g}; "
            f"{self.max_iter} iterations (steps {list(self.steps)}, warm-up {self.warmup_iters}) "
            f"= {self.images_seen} images"
        )


def _scaled_iters(n: int, factor: float, minimum: int = 0) -> int:
    return 0 if n == 0 else max(minimum, int(round(n / factor)))


def scale_schedule(
    *,
    ims_per_gpu: int,
    num_gpus: int,
    num_machines: int,
    reference_batch: int,
    base_lr: float,
    max_iter: int,
    steps: Sequence[int],
    warmup_iters: int,
    eval_period: int = 0,
    checkpoint_period: int = 0,
    lr_scale: float = 1.0,
) -> ScaledSchedule:
    for name, value in (("ims_per_gpu", ims_per_gpu), ("num_gpus", num_gpus), ("num_machines", num_machines)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if (
        isinstance(lr_scale, bool)
        or not isinstance(lr_scale, (int, float))
        or not math.isfinite(lr_scale)
        or lr_scale <= 0
    ):
        raise ValueError(f"lr_scale must be a finite number > 0 (it multiplies the scaled lr), got {lr_scale!r}")
    if reference_batch < 1 or max_iter < 1:
        raise ValueError(f"schedule needs reference_batch >= 1 and max_iter >= 1, got {reference_batch}, {max_iter}")
    workers = num_gpus * num_machines
    total = ims_per_gpu * workers
    factor = total / reference_batch
    new_max = _scaled_iters(max_iter, factor, minimum=1)
    return ScaledSchedule(
        ims_per_gpu=ims_per_gpu,
        num_workers=workers,
        total_batch=total,
        reference_batch=reference_batch,
        base_lr=base_lr,
        lr_scale=float(lr_scale),
        lr=base_lr * factor * lr_scale,
        max_iter=new_max,
        # LR steps at or past the end never happen (and Detectron2's scheduler rejects them).
        steps=tuple(n for n in (_scaled_iters(s, factor, 1) for s in steps) if n < new_max),
        warmup_iters=_scaled_iters(warmup_iters, factor),
        eval_period=_scaled_iters(eval_period, factor, 1),
        checkpoint_period=_scaled_iters(checkpoint_period, factor, 1),
        images_seen=new_max * total,
    )
