"""Comparator norms: Batch Renormalization, EvoNorm-B0/S0, Weight Standardization (for GNWS),
EvalNorm, Cross-Iteration BN, MABN (with weight centralization), Instance Normalization and
Weight Normalization."""
from .batch_renorm import BatchRenorm2d, CycleBatchRenormList, NaiveSyncBatchRenorm2d, brn_limits
from .cross_iteration_bn import CrossIterationBatchNorm2d, link_cbn_layers
from .eval_norm import EvalNorm2d
from .evonorm import EVONORM_IMPLS, EvoNorm2dB0, EvoNorm2dS0, evonorm_b0_reference, evonorm_s0_reference
from .instance_norm import InstanceNorm2d
from .mabn import MABN2d, WCConv2d, WCLinear, centralize_layers, centralize_weight
from .normalized_layers import normalized_layers
from .weight_norm import WNBias2d, weight_normalize_layers
from .weight_std import (
    WSConv2d,
    WSLinear,
    standardize_convs,
    standardize_weight,
    standardized_once,
    to_ws_conv,
    to_ws_linear,
)

__all__ = [
    "BatchRenorm2d",
    "NaiveSyncBatchRenorm2d",
    "CycleBatchRenormList",
    "brn_limits",
    "EvoNorm2dB0",
    "EvoNorm2dS0",
    "evonorm_b0_reference",
    "evonorm_s0_reference",
    "EVONORM_IMPLS",
    "WSConv2d",
    "standardize_convs",
    "standardize_weight",
    "standardized_once",
    "to_ws_conv",
    "WSLinear",
    "to_ws_linear",
    "EvalNorm2d",
    "CrossIterationBatchNorm2d",
    "link_cbn_layers",
    "MABN2d",
    "WCConv2d",
    "WCLinear",
    "centralize_layers",
    "centralize_weight",
    "InstanceNorm2d",
    "WNBias2d",
    "weight_normalize_layers",
    "normalized_layers",
]
