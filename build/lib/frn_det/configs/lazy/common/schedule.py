"""Learning-rate multipliers: a linear warm-up, then a step decay (yacs' WarmupMultiStepLR).

As in Detectron2's common/coco_schedule.py the schedule is scale-invariant: milestones
and warm-up are fractions of the last milestone (= max_iter), so `train.max_iter=N`
alone shortens or lengthens the whole schedule proportionally.
"""
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler


def multistep_with_warmup(max_iter, steps, warmup_iters, warmup_factor=0.001, gamma=0.1):
    """The lr multiplier of SOLVER.MAX_ITER / STEPS / WARMUP_ITERS / WARMUP_FACTOR / GAMMA
    (WARMUP_METHOD "linear"), as a LazyCall."""
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[gamma**k for k in range(len(steps) + 1)],
            milestones=[*steps, max_iter],
        ),
        warmup_length=min(warmup_iters / max_iter, 1.0),
        warmup_method="linear",
        warmup_factor=warmup_factor,
    )


# The FRN paper's detection protocol: 125k steps at a total batch of 64, decays at 2/3 and
# 8/9 of training, 2k warm-up steps (configs/Base-RetinaNet-FRN.yaml).
lr_multiplier_paper = multistep_with_warmup(max_iter=125000, steps=(83333, 111111), warmup_iters=2000)

# Detectron2's from-scratch Mask R-CNN protocol (Misc/scratch_mask_rcnn_R_50_FPN_9x_{gn,syncbn}.yaml,
# configs/Base-RCNN-FPN-scratch.yaml): 202.5k steps at a total batch of 64 (90k x 9 / 4),
# decays at 187.5k and 197.5k, 1k warm-up steps.
lr_multiplier_scratch_9x = multistep_with_warmup(max_iter=202500, steps=(187500, 197500), warmup_iters=1000)
