"""The options of the norm layers besides the norm strings: plain dataclasses that
resolve_norm (factory.py) passes to the layers. Their field defaults are the defaults of
the config keys of the same name (frn_det/config.py builds MODEL.FRN etc. from them), and
their checks are those of the config values (the messages name the config keys).
"""
from dataclasses import dataclass, field

from .frn import FRN_IMPLS
from .grammar import RESIDUAL_ACTIVATIONS
from .norms import EVONORM_IMPLS

__all__ = ["FRNOptions", "BRNOptions", "EvoNormOptions", "CBNOptions", "MABNOptions", "NormOptions"]


@dataclass(frozen=True)
class FRNOptions:
    """MODEL.FRN.*: see frn_det/config.py and layers/frn/. (eps > 0 is the layer's own check,
    and MODEL.FRN.EPS's in frn_det/config_checks.py.)"""

    eps: float = 1e-6
    learnable_eps: bool = False
    impl: str = "auto"
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
    """MODEL.BRN.*: see frn_det/config.py and layers/norms/batch_renorm.py."""

    r_max: float = 3.0
    d_max: float = 5.0
    warmup_start_iter: int = 5000
    r_max_end_iter: int = 40000
    d_max_end_iter: int = 25000
    momentum: float = 0.1
    eps: float = 1e-5

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

    groups: int = 32
    eps: float = 1e-5
    momentum: float = 0.1
    impl: str = "auto"

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
class CBNOptions:
    """MODEL.CBN.*: Cross-Iteration BN (layers/norms/cross_iteration_bn.py)."""

    buffer_size: int = 4
    burnin_iter: int = 60000
    momentum: float = 0.1
    eps: float = 1e-5

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

    buffer_size: int = 16
    warmup_iter: int = 100
    renorm_start_iter: int = 1000
    r_max: float = 5.0
    momentum: float = 0.02
    eps: float = 1e-5

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
    """Everything the norm strings need from the config besides the strings themselves."""

    frn: FRNOptions = field(default_factory=FRNOptions)
    brn: BRNOptions = field(default_factory=BRNOptions)
    evonorm: EvoNormOptions = field(default_factory=EvoNormOptions)
    ws_eps: float = 1e-5
    cbn: CBNOptions = field(default_factory=CBNOptions)
    mabn: MABNOptions = field(default_factory=MABNOptions)

    def __post_init__(self):
        if not self.ws_eps > 0:
            raise ValueError(f"MODEL.WS.EPS must be > 0, got {self.ws_eps!r}")
