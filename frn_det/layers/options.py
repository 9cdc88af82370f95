"""The options of the norm layers besides the norm strings: plain dataclasses that
resolve_norm (factory.py) passes to the layers. Their field defaults are the defaults of
the config keys of the same name (frn_det/config/keys.py builds MODEL.FRN etc. from them), and
their checks are those of the config values (the messages name the config keys).

A default that is the layer's own default is read from the layer's signature, so that the
number is written once, in the layer (e.g. BRN's ramp, the paper's 5k / 40k / 25k steps).
"""
import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Tuple

from omegaconf import OmegaConf

from .frn import FRN_IMPLS, FilterResponseNorm2d
from .grammar import RESIDUAL_ACTIVATIONS
from .norms import (
    EVONORM_IMPLS,
    BatchRenorm2d,
    CrossIterationBatchNorm2d,
    EvoNorm2dB0,
    EvoNorm2dS0,
    MABN2d,
    standardize_convs,
)

__all__ = ["FRNOptions", "BRNOptions", "EvoNormOptions", "WSOptions", "CBNOptions", "MABNOptions", "NormOptions"]


def _layer_default(layer, argument: str):
    """The default of `argument` in the signature of `layer`."""
    return inspect.signature(layer).parameters[argument].default


@dataclass(frozen=True)
class FRNOptions:
    """MODEL.FRN.*: see frn_det/config/keys.py and layers/frn/. (eps > 0 is the layer's own check,
    and MODEL.FRN.EPS's in frn_det/config/checks.py.)"""

    eps: float = _layer_default(FilterResponseNorm2d, "eps")
    learnable_eps: bool = _layer_default(FilterResponseNorm2d, "learnable_eps")
    impl: str = _layer_default(FilterResponseNorm2d, "impl")
    residual_activation: str = "TLU"

    def __post_init__(self):
        if self.impl not in FRN_IMPLS:
            raise ValueError(f"MODEL.FRN.IMPL={self.impl!r} is not one of {FRN_IMPLS}")
        if self.residual_activation not in RESIDUAL_ACTIVATIONS:
            raise ValueError(
                f"MODEL.FRN.RESIDUAL_ACTIVATION={self.residual_activation!r} is not one of "
                f"{RESIDUAL_ACTIVATIONS}"
            )


@dataclass(frozen=True)
class BRNOptions:
    """MODEL.BRN.*: see frn_det/config/keys.py and layers/norms/batch_renorm.py."""

    r_max: float = _layer_default(BatchRenorm2d, "r_max")
    d_max: float = _layer_default(BatchRenorm2d, "d_max")
    warmup_start_iter: int = _layer_default(BatchRenorm2d, "warmup_start")
    r_max_end_iter: int = _layer_default(BatchRenorm2d, "r_max_end")
    d_max_end_iter: int = _layer_default(BatchRenorm2d, "d_max_end")
    momentum: float = _layer_default(BatchRenorm2d, "momentum")
    eps: float = _layer_default(BatchRenorm2d, "eps")

    def __post_init__(self):
        if not self.r_max >= 1.0:
            raise ValueError(f"MODEL.BRN.R_MAX must be >= 1, got {self.r_max!r}")
        if not self.d_max >= 0.0:
            raise ValueError(f"MODEL.BRN.D_MAX must be >= 0, got {self.d_max!r}")
        if self.warmup_start_iter < 0 or self.r_max_end_iter < self.warmup_start_iter or \
                self.d_max_end_iter < self.warmup_start_iter:
            raise ValueError(
                "MODEL.BRN needs 0 <= WARMUP_START_ITER <= R_MAX_END_ITER and WARMUP_START_ITER <= D_MAX_END_ITER, "
                f"got {self.warmup_start_iter}, {self.r_max_end_iter}, {self.d_max_end_iter}"
            )
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"MODEL.BRN.MOMENTUM must be in (0, 1], got {self.momentum!r}")
        if not self.eps > 0:
            raise ValueError(f"MODEL.BRN.EPS must be > 0, got {self.eps!r}")

    def layer_kwargs(self) -> dict:
        return dict(eps=self.eps, momentum=self.momentum, r_max=self.r_max, d_max=self.d_max,
                    warmup_start=self.warmup_start_iter, r_max_end=self.r_max_end_iter, d_max_end=self.d_max_end_iter)


@dataclass(frozen=True)
class EvoNormOptions:
    """MODEL.EVONORM.*: groups of EvoNorm-S0, eps, B0's momentum, implementation."""

    groups: int = _layer_default(EvoNorm2dS0, "groups")
    eps: float = _layer_default(EvoNorm2dS0, "eps")
    momentum: float = _layer_default(EvoNorm2dB0, "momentum")
    impl: str = _layer_default(EvoNorm2dS0, "impl")

    def __post_init__(self):
        if self.groups < 1:
            raise ValueError(f"MODEL.EVONORM.GROUPS must be >= 1, got {self.groups!r}")
        if not self.eps > 0:
            raise ValueError(f"MODEL.EVONORM.EPS must be > 0, got {self.eps!r}")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"MODEL.EVONORM.MOMENTUM must be in (0, 1], got {self.momentum!r}")
        if self.impl not in EVONORM_IMPLS:
            raise ValueError(f"MODEL.EVONORM.IMPL={self.impl!r} is not one of {EVONORM_IMPLS}")


@dataclass(frozen=True)
class WSOptions:
    """MODEL.WS.*: the eps of the Weight Standardization of GNWS's convs (NormOptions.ws_eps)."""

    eps: float = _layer_default(standardize_convs, "eps")

    def __post_init__(self):
        if not self.eps > 0:
            raise ValueError(f"MODEL.WS.EPS must be > 0, got {self.eps!r}")


@dataclass(frozen=True)
class CBNOptions:
    """MODEL.CBN.*: Cross-Iteration BN (layers/norms/cross_iteration_bn.py)."""

    buffer_size: int = _layer_default(CrossIterationBatchNorm2d, "buffer_size")
    # The layer starts pooling at once; detection configs burn in with plain BN first (the
    # public config's 8 of 12 epochs of a 90k schedule).
    burnin_iter: int = 60000
    momentum: float = _layer_default(CrossIterationBatchNorm2d, "momentum")
    eps: float = _layer_default(CrossIterationBatchNorm2d, "eps")

    def __post_init__(self):
        if self.buffer_size < 1:
            raise ValueError(f"MODEL.CBN.BUFFER_SIZE must be >= 1 (1 is BN), got {self.buffer_size!r}")
        if self.burnin_iter < 0:
            raise ValueError(f"MODEL.CBN.BURNIN_ITER must be >= 0, got {self.burnin_iter!r}")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"MODEL.CBN.MOMENTUM must be in (0, 1], got {self.momentum!r}")
        if not self.eps > 0:
            raise ValueError(f"MODEL.CBN.EPS must be > 0, got {self.eps!r}")

    def layer_kwargs(self) -> dict:
        return dict(buffer_size=self.buffer_size, burnin=self.burnin_iter, momentum=self.momentum, eps=self.eps)


@dataclass(frozen=True)
class MABNOptions:
    """MODEL.MABN.*: Moving Average BN (layers/norms/mabn.py)."""

    buffer_size: int = _layer_default(MABN2d, "buffer_size")
    warmup_iter: int = _layer_default(MABN2d, "warmup_iters")
    renorm_start_iter: int = _layer_default(MABN2d, "renorm_start")
    r_max: float = _layer_default(MABN2d, "r_max")
    momentum: float = _layer_default(MABN2d, "momentum")
    eps: float = _layer_default(MABN2d, "eps")

    def __post_init__(self):
        if self.buffer_size < 1:
            raise ValueError(f"MODEL.MABN.BUFFER_SIZE must be >= 1, got {self.buffer_size!r}")
        if self.warmup_iter < 0 or self.renorm_start_iter < 0:
            raise ValueError(f"MODEL.MABN.WARMUP_ITER and RENORM_START_ITER must be >= 0, got "
                             f"{self.warmup_iter!r}, {self.renorm_start_iter!r}")
        if not self.r_max >= 1.0:
            raise ValueError(f"MODEL.MABN.R_MAX must be >= 1, got {self.r_max!r}")
        if not 0.0 < self.momentum <= 1.0:
            raise ValueError(f"MODEL.MABN.MOMENTUM must be in (0, 1], got {self.momentum!r}")
        if not self.eps > 0:
            raise ValueError(f"MODEL.MABN.EPS must be > 0, got {self.eps!r}")

    def layer_kwargs(self) -> dict:
        return dict(buffer_size=self.buffer_size, warmup_iters=self.warmup_iter, renorm_start=self.renorm_start_iter,
                    r_max=self.r_max, momentum=self.momentum, eps=self.eps)


@dataclass(frozen=True)
class NormOptions:
    """Everything the norm strings need from the config besides the strings themselves.

    One field per built-in section (MODEL.FRN -> frn, ..., MODEL.WS.EPS -> ws_eps); `extra`
    holds the options of registered norms from elsewhere (frn_det.register_norm with
    options=...), one instance per options dataclass; a norm whose options are not there
    takes its dataclass's defaults (`for_section`)."""

    frn: FRNOptions = field(default_factory=FRNOptions)
    brn: BRNOptions = field(default_factory=BRNOptions)
    evonorm: EvoNormOptions = field(default_factory=EvoNormOptions)
    ws_eps: float = WSOptions.eps
    cbn: CBNOptions = field(default_factory=CBNOptions)
    mabn: MABNOptions = field(default_factory=MABNOptions)
    extra: Tuple[Any, ...] = ()

    def __post_init__(self):
        if not self.ws_eps > 0:
            raise ValueError(f"MODEL.WS.EPS must be > 0, got {self.ws_eps!r}")
        # a LazyConfig gives a list, which Detectron2's instantiate makes a ListConfig of
        # structured configs: back to the dataclass instances
        extra = tuple(OmegaConf.to_object(o) if OmegaConf.is_config(o) else o for o in self.extra)
        types = [type(o) for o in extra]
        if not all(dataclasses.is_dataclass(o) and not isinstance(o, type) for o in extra) or \
                len(set(types)) != len(types):
            raise ValueError(f"NormOptions.extra={self.extra!r}: expected options dataclass instances, at most one "
                             "of each dataclass")
        object.__setattr__(self, "extra", extra)

    def for_section(self, section: str, options: type):
        """The `options` instance of MODEL.<section>: a built-in section's field, else the
        instance in `extra`, else the dataclass's defaults."""
        if section == "WS":
            return WSOptions(eps=self.ws_eps)
        if section in BUILTIN_SECTIONS:
            return getattr(self, section.lower())
        found = [o for o in self.extra if isinstance(o, options)]
        return found[0] if found else options()


# The sections NormOptions holds in fields of its own (MODEL.FRN -> NormOptions.frn, ...,
# MODEL.WS.EPS -> ws_eps); the options of any other section go into NormOptions.extra.
BUILTIN_SECTIONS = ("FRN", "BRN", "EVONORM", "WS", "CBN", "MABN")
