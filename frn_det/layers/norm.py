"""Turn the norm strings of a Detectron2 config into norm factories.

Detectron2's `get_norm` knows a fixed set of strings and otherwise calls its argument
with the channel count. We resolve every string here (FRN included) into such a
callable, so the stock Detectron2 modules build our norms without any monkeypatching.
"""
from dataclasses import dataclass
from typing import Callable, Union

import torch
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm
from detectron2.layers.batch_norm import LayerNorm
from torch import nn

from .frn import FRN_IMPLS, FilterResponseNorm2d, TLU

__all__ = [
    "DETECTRON2_NORMS",
    "FRN_NORMS",
    "ACCEPTED_NORMS",
    "FRNOptions",
    "NormFactory",
    "resolve_norm",
    "activation_after",
    "residual_activation",
]

DETECTRON2_NORMS = ("", "BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN")
FRN_NORMS = ("FRN",)
ACCEPTED_NORMS = DETECTRON2_NORMS + FRN_NORMS
GN_GROUPS = 32  # Detectron2's "GN" is GroupNorm(32, C)
RESIDUAL_ACTIVATIONS = ("TLU", "ReLU")


@dataclass(frozen=True)
class FRNOptions:
    eps: float = 1e-6
    learnable_eps: bool = False
    impl: str = "auto"
    residual_activation: str = "TLU"

    def __post_init__(self):
        if not self.eps > 0:
            raise ValueError(f"MODEL.FRN.EPS must be > 0 (the paper uses 1e-6), got {self.eps!r}")
        if self.impl not in FRN_IMPLS:
            raise ValueError(f"MODEL.FRN.IMPL={self.impl!r} is not one of {FRN_IMPLS}")
        if self.residual_activation not in RESIDUAL_ACTIVATIONS:
            raise ValueError(
                f"MODEL.FRN.RESIDUAL_ACTIVATION={self.residual_activation!r} is not one of "
                f"{RESIDUAL_ACTIVATIONS}"
            )

    @classmethod
    def from_config(cls, cfg) -> "FRNOptions":
        frn = cfg.MODEL.FRN
        return cls(
            eps=frn.EPS,
            learnable_eps=frn.LEARNABLE_EPS,
            impl=frn.IMPL,
            residual_activation=frn.RESIDUAL_ACTIVATION,
        )


class NormFactory:
    """A callable `channels -> nn.Module` that also tells whether it ends in an activation.

    `includes_activation` is True for FRN with TLU: the TLU replaces the ReLU that
    would otherwise follow the norm.
    """

    def __init__(
        self,
        name: str,
        build: Callable[[int], nn.Module],
        includes_activation: bool = False,
        without_activation: "NormFactory" = None,
    ):
        self.name = name
        self.build = build
        self.includes_activation = includes_activation
        self._without_activation = without_activation

    def without_activation(self) -> "NormFactory":
        """The same norm for places where no activation follows (before a residual add)."""
        return self._without_activation or self

    def __call__(self, channels: int) -> nn.Module:
        return self.build(channels)

    def __repr__(self) -> str:
        return f"NormFactory({self.name!r}, includes_activation={self.includes_activation})"


def _group_norm(key: str) -> Callable[[int], nn.Module]:
    def build(channels: int) -> nn.Module:
        if channels % GN_GROUPS != 0:
            raise ValueError(
                f"{key}='GN' uses GroupNorm({GN_GROUPS}, C), but a layer has C={channels} channels, "
                f"which is not divisible by {GN_GROUPS}. Use channel counts that are multiples of "
                f"{GN_GROUPS} or another norm."
            )
        return nn.GroupNorm(GN_GROUPS, channels)

    return build


def _sync_bn() -> Callable[[int], nn.Module]:
    # torch's SyncBatchNorm needs CUDA; Detectron2's NaiveSyncBatchNorm computes the same
    # statistics with all_reduce and also runs on GLOO/CPU workers.
    return nn.SyncBatchNorm if torch.cuda.is_available() else NaiveSyncBatchNorm


def resolve_norm(norm: Union[str, NormFactory], *, key: str, options: FRNOptions = FRNOptions(), tlu: bool = True) -> Union[str, NormFactory]:
    """Resolve a config norm string into "" (no norm) or a NormFactory.

    Args:
        norm: a name from ACCEPTED_NORMS.
        key: the config key it came from, used in error messages.
        options: FRN settings.
        tlu: for FRN, whether the norm carries a TLU (False where no activation follows,
            as in the FPN).
    """
    if isinstance(norm, NormFactory):
        return norm
    if not isinstance(norm, str) or norm not in ACCEPTED_NORMS:
        raise ValueError(
            f"{key}={norm!r} is not a known norm. Accepted: "
            + ", ".join(repr(n) for n in ACCEPTED_NORMS)
        )
    if norm == "":
        return ""
    if norm == "FRN":

        def frn(with_tlu: bool) -> Callable[[int], nn.Module]:
            return lambda c: FilterResponseNorm2d(
                c, eps=options.eps, learnable_eps=options.learnable_eps, tlu=with_tlu, impl=options.impl
            )

        plain = NormFactory("FRN", frn(False))
        return NormFactory("FRN", frn(True), includes_activation=True, without_activation=plain) if tlu else plain
    builders = {
        "BN": nn.BatchNorm2d,
        "SyncBN": _sync_bn(),
        "FrozenBN": FrozenBatchNorm2d,
        "GN": _group_norm(key),
        "nnSyncBN": nn.SyncBatchNorm,
        "naiveSyncBN": NaiveSyncBatchNorm,
        "naiveSyncBN_N": lambda c: NaiveSyncBatchNorm(c, stats_mode="N"),
        "LN": LayerNorm,
    }
    return NormFactory(norm, builders[norm])


def activation_after(norm: Union[str, NormFactory]) -> nn.Module:
    """The activation that follows a conv+norm: none when the norm ends in a TLU."""
    if isinstance(norm, NormFactory) and norm.includes_activation:
        return nn.Identity()
    return nn.ReLU(inplace=True)


def residual_activation(norm: Union[str, NormFactory], channels: int, options: FRNOptions) -> nn.Module:
    """The activation after a residual add: TLU (or ReLU, configurable) for FRN, ReLU otherwise."""
    if isinstance(norm, NormFactory) and norm.name == "FRN" and options.residual_activation == "TLU":
        return TLU(channels)
    return nn.ReLU(inplace=True)
