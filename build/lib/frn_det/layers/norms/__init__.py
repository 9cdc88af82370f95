"""Comparator norms: Batch Renormalization, EvoNorm-B0/S0, Weight Standardization (for GNWS)."""
from .batch_renorm import BatchRenorm2d, CycleBatchRenormList, NaiveSyncBatchRenorm2d, brn_limits
from .evonorm import EVONORM_IMPLS, EvoNorm2dB0, EvoNorm2dS0, evonorm_b0_reference, evonorm_s0_reference
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
]
