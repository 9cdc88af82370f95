"""Norm and activation layers for Detectron2 models, and the norm-string factory.

    registry.py     the norm table: one NormSpec per norm, register_norm (the public API)
    builtin_norms.py  the built-in norms, one register_norm call each
    grammar.py      the norm strings ("FRN", "GN+TLU", "EvoNormS0", ...) and the names they use
    options.py      the norm layers' options (FRNOptions, BRNOptions, ..., NormOptions)
    factory.py      a norm string and its options -> NormFactory (Detectron2's get_norm table)
    frn/            Filter Response Normalization: the layer and its reference, fused
                    PyTorch, C++ (CPU) and Triton (CUDA) backends
    norms/          comparator norms: Batch Renormalization (+ synced), EvoNorm-B0/S0,
                    Weight Standardization (for GNWS), EvalNorm, Cross-Iteration BN, MABN
                    (+ weight centralization), Instance Norm, Weight Norm; one file each
    activations/    TLU
    cpu_ops.py      builds and loads the C++ CPU library of csrc/ (FRN, TLU, EvoNorm kernels)
    autograd_utils.py  shared autograd helpers of the fused functions

Dependencies point one way: factory -> options, grammar -> registry; builtin_norms ->
registry, options, frn, norms; frn, norms, activations -> cpu_ops, autograd_utils. Nothing
here reads a config: frn_det/config/keys.py turns one into these arguments.
"""
from . import builtin_norms, cpu_ops  # noqa: F401  (builtin_norms fills the norm table)
from . import grammar as _grammar
from .activations import TLU
from .factory import NormFactory, activation_after, residual_activation, resolve_norm
from .frn import FRN_IMPLS, FilterResponseNorm2d, frn_fused, frn_reference
from .grammar import ACTIVATIONS, parse_norm
from .norms import (
    EVONORM_IMPLS,
    BatchRenorm2d,
    CycleBatchRenormList,
    EvoNorm2dB0,
    EvoNorm2dS0,
    NaiveSyncBatchRenorm2d,
    WSConv2d,
    brn_limits,
    standardize_convs,
    standardize_weight,
)
from .options import BRNOptions, CBNOptions, EvoNormOptions, FRNOptions, MABNOptions, NormOptions, WSOptions
from .registry import BuildRequest, NormSpec, norm_spec, norm_specs, register_norm, unregister_norm


def __getattr__(name: str):
    """ACCEPTED_NORMS, PER_LEVEL_NORMS, BATCH_STAT_NORMS, ...: grammar.py's, read from the norm
    table when asked for (so they include norms registered since)."""
    if name in _grammar._DERIVED:
        return _grammar._DERIVED[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FilterResponseNorm2d",
    "TLU",
    "FRN_IMPLS",
    "frn_reference",
    "frn_fused",
    "BatchRenorm2d",
    "NaiveSyncBatchRenorm2d",
    "CycleBatchRenormList",
    "brn_limits",
    "EvoNorm2dB0",
    "EvoNorm2dS0",
    "EVONORM_IMPLS",
    "WSConv2d",
    "standardize_convs",
    "standardize_weight",
    "ACCEPTED_NORMS",
    "ACTIVATIONS",
    "BATCH_STAT_NORMS",
    "COMPARATOR_NORMS",
    "DETECTRON2_NORMS",
    "FRN_NORMS",
    "NORM_ACT_LAYERS",
    "PER_LEVEL_NORMS",
    "SYNC_NORMS",
    "FRNOptions",
    "BRNOptions",
    "EvoNormOptions",
    "CBNOptions",
    "MABNOptions",
    "WSOptions",
    "NormOptions",
    "NormSpec",
    "BuildRequest",
    "register_norm",
    "unregister_norm",
    "norm_spec",
    "norm_specs",
    "NormFactory",
    "parse_norm",
    "resolve_norm",
    "activation_after",
    "residual_activation",
    "cpu_ops",
]
