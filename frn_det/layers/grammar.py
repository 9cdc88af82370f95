"""The grammar of frn-det's norm strings and the names it knows.

    NORM            NORM with its default activation: TLU for "FRN", ReLU for the others
    NORM+ACT        ACT in ACTIVATIONS ("ReLU", "TLU"): e.g. "GN+TLU", "FRN+ReLU", "BN+ReLU" (= "BN")
    EvoNormB0 / EvoNormS0
                    norm+activation layers: no "+ACT" (they are their own activation)
    ""              no norm (Detectron2's convention); no "+ACT"

NORM is one of ACCEPTED_NORMS: Detectron2's own ("BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN",
"naiveSyncBN", "naiveSyncBN_N", "LN"), "FRN", and the comparators "BRN" (Batch
Renormalization), "naiveSyncBRN" / "SyncBRN" (BRN with statistics over all workers), "GNWS"
(GN with Weight Standardization of the convs it normalizes), "EvoNormB0", "EvoNormS0",
"EvalNorm" (BN with evaluation statistics estimated to match training's), "CBN"
(Cross-Iteration BN, linked to the layer it follows), "MABN" (Moving Average BN, with
weight-centralized convs), "IN" (Instance Normalization), "WN" (Weight Normalization of the
convs; the norm slot holds only their bias). factory.py turns a parsed string into layers.
"""
from typing import Optional, Tuple

__all__ = [
    "DETECTRON2_NORMS",
    "FRN_NORMS",
    "COMPARATOR_NORMS",
    "NORM_ACT_LAYERS",
    "ACCEPTED_NORMS",
    "ACTIVATIONS",
    "PER_LEVEL_NORMS",
    "BATCH_STAT_NORMS",
    "RESIDUAL_ACTIVATIONS",
    "parse_norm",
]

DETECTRON2_NORMS = ("", "BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN")
FRN_NORMS = ("FRN",)
COMPARATOR_NORMS = ("BRN", "naiveSyncBRN", "SyncBRN", "GNWS", "EvalNorm", "CBN", "MABN", "IN", "WN")
NORM_ACT_LAYERS = ("EvoNormB0", "EvoNormS0")  # norm+activation layers: no "+ACT"
ACCEPTED_NORMS = DETECTRON2_NORMS + FRN_NORMS + COMPARATOR_NORMS + NORM_ACT_LAYERS
ACTIVATIONS = ("ReLU", "TLU")
# RetinaNet's head keeps per-level statistics for these (Detectron2 does for BN and SyncBN)
PER_LEVEL_NORMS = ("BN", "SyncBN", "BRN", "naiveSyncBRN", "SyncBRN", "EvalNorm", "CBN", "MABN")
# Norms that normalize with statistics of the training batch (and keep population
# statistics for eval): what PreciseBN (TEST.PRECISE_BN) recomputes.
BATCH_STAT_NORMS = ("BN", "SyncBN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "BRN", "naiveSyncBRN", "SyncBRN",
                    "EvoNormB0", "EvalNorm", "CBN", "MABN")
# The activations after a residual add (FRNOptions.residual_activation)
RESIDUAL_ACTIVATIONS = ("TLU", "ReLU")


def _choices() -> str:
    norms = ", ".join(repr(n) for n in ACCEPTED_NORMS)
    acts = ", ".join(repr(a) for a in ACTIVATIONS)
    layers = ", ".join(repr(n) for n in NORM_ACT_LAYERS)
    return (
        f"Accepted: NORM or NORM+ACT, NORM one of {norms}; ACT one of {acts} (default 'TLU' for 'FRN', "
        f"'ReLU' otherwise); the norm+activation layers {layers} and '' (no norm) take no +ACT"
    )


def parse_norm(value, key: str = "norm") -> Tuple[str, Optional[str]]:
    """Split a config norm string into (norm, activation).

    activation is "ReLU" or "TLU", or None for "" (no norm) and the norm+activation layers.
    Raises ValueError naming `key`, the value and the choices for anything else."""
    if not isinstance(value, str):
        raise ValueError(f"{key}={value!r} is not a known norm (a string is expected). {_choices()}")
    norm, plus, act = value.partition("+")
    if norm not in ACCEPTED_NORMS or (plus and act not in ACTIVATIONS):
        raise ValueError(f"{key}={value!r} is not a known norm. {_choices()}")
    if plus and (norm == "" or norm in NORM_ACT_LAYERS):
        what = "no norm" if norm == "" else f"{norm!r} is a norm+activation layer and"
        raise ValueError(f"{key}={value!r}: {what} takes no +ACT; use {norm!r}. {_choices()}")
    if norm == "" or norm in NORM_ACT_LAYERS:
        return norm, None
    return norm, act or ("TLU" if norm in FRN_NORMS else "ReLU")
