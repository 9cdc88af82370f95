"""The grammar of frn-det's norm strings and the names it knows.

    NORM            NORM with its default activation: TLU for "FRN", ReLU for the others
    NORM+ACT        ACT in ACTIVATIONS ("ReLU", "TLU"): e.g. "GN+TLU", "FRN+ReLU", "BN+ReLU" (= "BN")
    EvoNormB0 / EvoNormS0
                    norm+activation layers: no "+ACT" (they are their own activation)
    ""              no norm (Detectron2's convention); no "+ACT"

NORM is a registered norm (registry.py; the built-ins in builtin_norms.py): Detectron2's own
("BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN"), "FRN",
and the comparators "BRN" (Batch Renormalization), "naiveSyncBRN" / "SyncBRN" (BRN with
statistics over all workers), "GNWS" (GN with Weight Standardization of the convs it
normalizes), "EvoNormB0", "EvoNormS0", "EvalNorm" (BN with evaluation statistics estimated to
match training's), "CBN" (Cross-Iteration BN, linked to the layer it follows), "MABN" (Moving
Average BN, with weight-centralized convs), "IN" (Instance Normalization), "WN" (Weight
Normalization of the convs; the norm slot holds only their bias); and any norm registered
with frn_det.register_norm (docs/own_norm.md). factory.py turns a parsed string into layers.

The lists of norm names below (ACCEPTED_NORMS, PER_LEVEL_NORMS, ...) are read from the
norm table when asked for, so they include the norms registered since.
"""
from typing import Optional, Tuple

from .registry import ACTIVATIONS, is_registered, norm_names, norm_spec

# The activations after a residual add (FRNOptions.residual_activation)
RESIDUAL_ACTIVATIONS = ("TLU", "ReLU")

# name -> the norm names it stands for, from the norm table ("" is no norm)
_DERIVED = {
    # Detectron2's get_norm strings
    "DETECTRON2_NORMS": lambda: ("",) + norm_names(family="detectron2"),
    "FRN_NORMS": lambda: norm_names(family="frn"),
    "COMPARATOR_NORMS": lambda: norm_names(family="comparator", includes_activation=False),
    # norm+activation layers: no "+ACT"
    "NORM_ACT_LAYERS": lambda: norm_names(includes_activation=True),
    "ACCEPTED_NORMS": lambda: ("",) + norm_names(),
    # RetinaNet's head keeps per-level statistics for these (Detectron2 does for BN and SyncBN)
    "PER_LEVEL_NORMS": lambda: norm_names(per_level=True),
    # Norms that normalize with statistics of the training batch (and keep population
    # statistics for eval): what PreciseBN (TEST.PRECISE_BN) recomputes.
    "BATCH_STAT_NORMS": lambda: norm_names(batch_stats=True),
    # Norms whose statistics are over all workers
    "SYNC_NORMS": lambda: norm_names(synchronized=True),
}

__all__ = ["ACTIVATIONS", "RESIDUAL_ACTIVATIONS", "parse_norm", *_DERIVED]


def __getattr__(name: str) -> Tuple[str, ...]:
    """ACCEPTED_NORMS, PER_LEVEL_NORMS, ...: the norm table's names now (PEP 562)."""
    if name in _DERIVED:
        return _DERIVED[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _choices() -> str:
    norms = ", ".join(repr(n) for n in ("",) + norm_names())
    acts = ", ".join(repr(a) for a in ACTIVATIONS)
    layers = ", ".join(repr(n) for n in norm_names(includes_activation=True))
    defaults = ", ".join(repr(n) for n in norm_names(activation="TLU"))
    return (
        f"Accepted: NORM or NORM+ACT, NORM one of {norms}; ACT one of {acts} (default 'TLU' for {defaults}, "
        f"'ReLU' otherwise); the norm+activation layers {layers} and '' (no norm) take no +ACT"
    )


def parse_norm(value, key: str = "norm") -> Tuple[str, Optional[str]]:
    """Split a config norm string into (norm, activation).

    activation is "ReLU" or "TLU", or None for "" (no norm) and the norm+activation layers.
    Raises ValueError naming `key`, the value and the choices for anything else."""
    if not isinstance(value, str):
        raise ValueError(f"{key}={value!r} is not a known norm (a string is expected). {_choices()}")
    norm, plus, act = value.partition("+")
    if not (norm == "" or is_registered(norm)) or (plus and act not in ACTIVATIONS):
        raise ValueError(f"{key}={value!r} is not a known norm. {_choices()}")
    norm_act = norm != "" and norm_spec(norm).includes_activation
    if plus and (norm == "" or norm_act):
        what = "no norm" if norm == "" else f"{norm!r} is a norm+activation layer and"
        raise ValueError(f"{key}={value!r}: {what} takes no +ACT; use {norm!r}. {_choices()}")
    if norm == "" or norm_act:
        return norm, None
    return norm, act or norm_spec(norm).activation
