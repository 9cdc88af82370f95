"""The built-in norms: one `register_norm` call each (the public API a user calls too,
docs/own_norm.md), in the order the grammar lists them. A new built-in norm is its layer's
file plus one line here. The builders that do more than call a layer are below the table."""
from typing import Callable

import torch
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm
from detectron2.layers.batch_norm import LayerNorm
from torch import nn

from .frn import FilterResponseNorm2d
from .norms import (
    BatchRenorm2d,
    CrossIterationBatchNorm2d,
    EvalNorm2d,
    EvoNorm2dB0,
    EvoNorm2dS0,
    InstanceNorm2d,
    MABN2d,
    NaiveSyncBatchRenorm2d,
    WNBias2d,
    centralize_layers,
    link_cbn_layers,
    weight_normalize_layers,
)
from .options import BRNOptions, CBNOptions, EvoNormOptions, FRNOptions, MABNOptions, WSOptions
from .registry import BuildRequest, register_norm

__all__ = ["GN_GROUPS"]

GN_GROUPS = 32  # Detectron2's "GN" is GroupNorm(32, C)
D2 = dict(family="detectron2")
BN_LIKE = dict(batch_stats=True, per_level=True)
SYNCED = dict(batch_stats=True, synchronized=True)
D2_BATCH_NORM = "https://github.com/facebookresearch/detectron2/blob/main/detectron2/layers/batch_norm.py"
# The reference schedules (SOLVER.MAX_ITER) that the iteration-count defaults of a section
# were written for, and those keys: BRN's ramp is the paper's, for the 125k-step protocol of
# configs/Base-RetinaNet-FRN.yaml; CBN's burn-in the public config's (8 of 12 epochs of 90k);
# MABN's warm-up and renormalization start the public 2x schedule's (of 180k).
BRN = dict(options=BRNOptions, section="BRN", family="comparator", reference="https://arxiv.org/abs/1702.03275",
           reference_schedule=(125000, ("WARMUP_START_ITER", "R_MAX_END_ITER", "D_MAX_END_ITER")))
EVONORM = dict(options=EvoNormOptions, section="EVONORM", includes_activation=True, family="comparator",
               reference="https://arxiv.org/abs/2004.02967")


def _sync_bn(request: BuildRequest) -> Callable[[int], nn.Module]:
    # torch's SyncBatchNorm needs CUDA; Detectron2's NaiveSyncBatchNorm computes the same
    # statistics with all_reduce and also runs on GLOO/CPU workers.
    return nn.SyncBatchNorm if torch.cuda.is_available() else NaiveSyncBatchNorm


def _divisible(key: str, value: str, groups: int, what: str) -> Callable[[int], None]:
    def check(channels: int) -> None:
        if channels % groups != 0:
            raise ValueError(
                f"{key}={value!r} uses {what}, but a layer has C={channels} channels, "
                f"which is not divisible by {groups}. Use channel counts that are multiples of "
                f"{groups} or another norm."
            )

    return check


def _group_norm(request: BuildRequest) -> Callable[[int], nn.Module]:
    check = _divisible(request.key, request.value, GN_GROUPS, f"GroupNorm({GN_GROUPS}, C)")

    def build(channels: int) -> nn.Module:
        check(channels)
        return nn.GroupNorm(GN_GROUPS, channels)

    return build


def _naive_sync_bn_n(request: BuildRequest) -> Callable[[int], nn.Module]:
    return lambda c: NaiveSyncBatchNorm(c, stats_mode="N")


def _frn(request: BuildRequest) -> Callable[[int], nn.Module]:
    """FRN; with_activation: with its TLU fused into the module ("FRN" = "FRN+TLU")."""
    f = request.options
    return lambda c: FilterResponseNorm2d(c, eps=f.eps, learnable_eps=f.learnable_eps, tlu=request.with_activation,
                                          impl=f.impl)


def _evonorm_b0(request: BuildRequest) -> Callable[[int], nn.Module]:
    o = request.options
    return lambda c: EvoNorm2dB0(c, apply_act=request.with_activation, momentum=o.momentum, eps=o.eps, impl=o.impl)


def _evonorm_s0(request: BuildRequest) -> Callable[[int], nn.Module]:
    o, apply_act = request.options, request.with_activation
    what = f"EvoNorm-S0 with {o.groups} groups (MODEL.EVONORM.GROUPS)"
    check = _divisible(request.key, request.value, o.groups, what)

    def build(channels: int) -> nn.Module:
        if apply_act:  # the linear variant (no activation follows) has no groups
            check(channels)
        return EvoNorm2dS0(channels, groups=o.groups, apply_act=apply_act, eps=o.eps, impl=o.impl)

    return build


# Detectron2's own norms (its get_norm strings)
register_norm("BN", layer=nn.BatchNorm2d, **D2, **BN_LIKE, reference="https://arxiv.org/abs/1502.03167")
register_norm("SyncBN", _sync_bn, **D2, **BN_LIKE, synchronized=True, reference="https://arxiv.org/abs/1711.07240")
register_norm("FrozenBN", layer=FrozenBatchNorm2d, **D2, reference=D2_BATCH_NORM)
register_norm("GN", _group_norm, **D2, reference="https://arxiv.org/abs/1803.08494")
register_norm("nnSyncBN", layer=nn.SyncBatchNorm, **D2, **SYNCED,
              reference="https://pytorch.org/docs/stable/generated/torch.nn.SyncBatchNorm.html")
register_norm("naiveSyncBN", layer=NaiveSyncBatchNorm, **D2, **SYNCED, reference=D2_BATCH_NORM)
register_norm("naiveSyncBN_N", _naive_sync_bn_n, **D2, **SYNCED, reference=D2_BATCH_NORM)
register_norm("LN", layer=LayerNorm, **D2, reference="https://arxiv.org/abs/1607.06450")
# Filter Response Normalization, with its TLU by default
register_norm("FRN", _frn, options=FRNOptions, section="FRN", activation="TLU", fused_activations=("TLU",),
              family="frn", reference="https://arxiv.org/abs/1911.09737")
# The comparators
register_norm("BRN", layer=BatchRenorm2d, **BRN, **BN_LIKE)
register_norm("naiveSyncBRN", layer=NaiveSyncBatchRenorm2d, **BRN, **SYNCED, per_level=True)
register_norm("SyncBRN", layer=NaiveSyncBatchRenorm2d, **BRN, **SYNCED, per_level=True)
register_norm("GNWS", _group_norm, options=WSOptions, section="WS", weight_standardization=True, family="comparator",
              reference="https://arxiv.org/abs/1903.10520")
register_norm("EvalNorm", layer=EvalNorm2d, **BN_LIKE, family="comparator", reference="https://arxiv.org/abs/1904.06031")
register_norm("CBN", layer=CrossIterationBatchNorm2d, options=CBNOptions, section="CBN", **BN_LIKE,
              adapter=link_cbn_layers, reference_schedule=(90000, ("BURNIN_ITER",)), family="comparator",
              reference="https://arxiv.org/abs/2002.05712")
register_norm("MABN", layer=MABN2d, options=MABNOptions, section="MABN", **BN_LIKE, adapter=centralize_layers,
              reference_schedule=(180000, ("WARMUP_ITER", "RENORM_START_ITER")), family="comparator",
              reference="https://arxiv.org/abs/2001.06838")
register_norm("IN", layer=InstanceNorm2d, family="comparator", reference="https://arxiv.org/abs/1607.08022")
register_norm("WN", layer=WNBias2d, adapter=weight_normalize_layers, family="comparator",
              reference="https://arxiv.org/abs/1602.07868")
# Norm+activation layers (no "+ACT")
register_norm("EvoNormB0", _evonorm_b0, **EVONORM, batch_stats=True)
register_norm("EvoNormS0", _evonorm_s0, **EVONORM)
