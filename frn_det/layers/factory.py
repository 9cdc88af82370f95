"""The norm factory: a norm string (grammar.py) -> a NormFactory that builds the layers.

Detectron2's `get_norm` knows a fixed set of strings and otherwise calls its argument
with the channel count. We resolve every string here into such a callable (a
NormFactory), so the stock Detectron2 modules build our norms without any monkeypatching;
the NormFactory also tells the frn-det builders which activation module goes where:

- after a norm that an activation follows: nothing (nn.Identity) for norm+activation
  layers ("FRN" = FRN with its TLU, EvoNorm), TLU for "X+TLU", ReLU for "X+ReLU";
- where no activation follows (before a residual add, in the FPN): the norm alone
  (`without_activation()`: FRN without TLU, the linear EvoNorm, any other norm as is);
- after a residual add: TLU for "X+TLU" (MODEL.FRN.RESIDUAL_ACTIVATION="ReLU" turns it
  back into a ReLU), ReLU otherwise.
"""
import functools
from typing import Callable, Iterable, Optional, Union

import torch
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm
from detectron2.layers.batch_norm import LayerNorm
from torch import nn

from .activations import TLU
from .frn import FilterResponseNorm2d
from .grammar import NORM_ACT_LAYERS, parse_norm
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
    standardize_convs,
    weight_normalize_layers,
)
from .options import EvoNormOptions, FRNOptions, NormOptions

__all__ = [
    "NormFactory",
    "resolve_norm",
    "resolve_norm_arg",
    "activation_after",
    "residual_activation",
]

GN_GROUPS = 32  # Detectron2's "GN" is GroupNorm(32, C)
# What a norm does to the conv / FC layers it follows (NormFactory.adapt); GNWS's Weight
# Standardization is NormFactory.weight_standardization.
LAYER_ADAPTERS = {"MABN": centralize_layers, "WN": weight_normalize_layers, "CBN": link_cbn_layers}


def _options(options) -> NormOptions:
    if options is None:
        return NormOptions()
    if isinstance(options, FRNOptions):
        return NormOptions(frn=options)
    return options


class NormFactory:
    """A callable `channels -> nn.Module` (Detectron2's get_norm calls it) that also knows the
    activation that goes with the norm.

    name: the norm ("BN", "FRN", ...); act: "ReLU", "TLU", or None for norm+activation
    layers. `includes_activation` is True when the module ends in the activation (FRN with
    its TLU, EvoNorm): then no activation module follows it.
    """

    def __init__(
        self,
        name: str,
        build: Callable[..., nn.Module],
        includes_activation: bool = False,
        without_activation: "NormFactory" = None,
        act: Optional[str] = "ReLU",
        weight_standardization: Optional[float] = None,
        residual_tlu: bool = True,
        adapt_layers: Optional[Callable[[Iterable[nn.Module]], int]] = None,
    ):
        self.name = name
        self.build = build
        self.includes_activation = includes_activation
        self._without_activation = without_activation
        self.act = act
        # eps of the Weight Standardization applied to the convs this norm follows (GNWS)
        self.weight_standardization = weight_standardization
        self._residual_tlu = residual_tlu
        # what the norm does to the layers it follows (MABN: centralize, WN: weight-normalize,
        # CBN: link), applied by `adapt`
        self.adapt_layers = adapt_layers

    @property
    def spec(self) -> str:
        return self.name if self.act is None else f"{self.name}+{self.act}"

    def without_activation(self) -> "NormFactory":
        """The same norm for places where no activation follows (before a residual add, FPN)."""
        return self._without_activation or self

    def with_build(self, build: Callable[..., nn.Module]) -> "NormFactory":
        """The same factory, building its modules with `build` (e.g. a per-level list)."""
        return NormFactory(self.name, build, self.includes_activation, self._without_activation, self.act,
                           self.weight_standardization, self._residual_tlu, self.adapt_layers)

    def adapt(self, modules: Iterable[nn.Module]) -> None:
        """Adapt the convs (and FCs) this norm normalizes inside `modules`, in place, where the
        norm asks for it: GNWS standardizes their weights, MABN centralizes them, WN
        weight-normalizes them, CBN links each norm to its layer. Call after the norms are
        built, before anything is frozen."""
        modules = list(modules)
        if self.weight_standardization is not None:
            standardize_convs(modules, eps=self.weight_standardization)
        if self.adapt_layers is not None:
            self.adapt_layers(modules)

    def __call__(self, channels: int) -> nn.Module:
        return self.build(channels)

    def activation(self, channels: int) -> nn.Module:
        """The module that follows the norm where an activation belongs."""
        if self.includes_activation:
            return nn.Identity()
        if self.act == "TLU":
            return TLU(channels)
        return nn.ReLU(inplace=True)

    def residual_activation(self, channels: int) -> nn.Module:
        """The activation after a residual add."""
        if self.act == "TLU" and self._residual_tlu:
            return TLU(channels)
        return nn.ReLU(inplace=True)

    def __repr__(self) -> str:
        return f"NormFactory({self.spec!r}, includes_activation={self.includes_activation})"


def _divisible(key: str, value: str, groups: int, what: str) -> Callable[[int], None]:
    def check(channels: int) -> None:
        if channels % groups != 0:
            raise ValueError(
                f"{key}={value!r} uses {what}, but a layer has C={channels} channels, "
                f"which is not divisible by {groups}. Use channel counts that are multiples of "
                f"{groups} or another norm."
            )

    return check


def _group_norm(key: str, value: str) -> Callable[[int], nn.Module]:
    check = _divisible(key, value, GN_GROUPS, f"GroupNorm({GN_GROUPS}, C)")

    def build(channels: int) -> nn.Module:
        check(channels)
        return nn.GroupNorm(GN_GROUPS, channels)

    return build


def _sync_bn() -> Callable[[int], nn.Module]:
    # torch's SyncBatchNorm needs CUDA; Detectron2's NaiveSyncBatchNorm computes the same
    # statistics with all_reduce and also runs on GLOO/CPU workers.
    return nn.SyncBatchNorm if torch.cuda.is_available() else NaiveSyncBatchNorm


def _evonorm(name: str, key: str, value: str, opts: EvoNormOptions, apply_act: bool) -> Callable[[int], nn.Module]:
    if name == "EvoNormB0":
        return lambda c: EvoNorm2dB0(c, apply_act=apply_act, momentum=opts.momentum, eps=opts.eps, impl=opts.impl)
    check = _divisible(key, value, opts.groups, f"EvoNorm-S0 with {opts.groups} groups (MODEL.EVONORM.GROUPS)")

    def build(channels: int) -> nn.Module:
        if apply_act:  # the linear variant (no activation follows) has no groups
            check(channels)
        return EvoNorm2dS0(channels, groups=opts.groups, apply_act=apply_act, eps=opts.eps, impl=opts.impl)

    return build


def resolve_norm(
    norm: Union[str, NormFactory],
    *,
    key: str,
    options: Union[NormOptions, FRNOptions, None] = None,
    activation: bool = True,
) -> Union[str, NormFactory]:
    """Resolve a config norm string into "" (no norm) or a NormFactory.

    Args:
        norm: NORM or NORM+ACT (grammar.py).
        key: the config key it came from, used in error messages.
        options: NormOptions (or FRNOptions alone, the other norms then take defaults).
        activation: whether an activation follows the norm where it is used; False (the
            FPN) gives the factory's `without_activation()`.
    """
    if isinstance(norm, NormFactory):
        return norm if activation else norm.without_activation()
    name, act = parse_norm(norm, key)
    if name == "":
        return ""
    opts = _options(options)
    residual_tlu = opts.frn.residual_activation == "TLU"
    if name == "FRN":
        f = opts.frn

        def frn(with_tlu: bool) -> Callable[[int], nn.Module]:
            return lambda c: FilterResponseNorm2d(c, eps=f.eps, learnable_eps=f.learnable_eps, tlu=with_tlu,
                                                  impl=f.impl)

        plain = NormFactory(name, frn(False), act=act, residual_tlu=residual_tlu)
        if act == "TLU":  # the TLU is fused into the FRN module
            factory = NormFactory(name, frn(True), includes_activation=True, without_activation=plain, act=act,
                                  residual_tlu=residual_tlu)
        else:
            factory = plain
    elif name in NORM_ACT_LAYERS:
        plain = NormFactory(name, _evonorm(name, key, norm, opts.evonorm, False), act=None)
        factory = NormFactory(name, _evonorm(name, key, norm, opts.evonorm, True), includes_activation=True,
                              without_activation=plain, act=None)
    else:
        builders = {
            "BN": nn.BatchNorm2d,
            "SyncBN": _sync_bn(),
            "FrozenBN": FrozenBatchNorm2d,
            "GN": _group_norm(key, norm),
            "nnSyncBN": nn.SyncBatchNorm,
            "naiveSyncBN": NaiveSyncBatchNorm,
            "naiveSyncBN_N": lambda c: NaiveSyncBatchNorm(c, stats_mode="N"),
            "LN": LayerNorm,
            "BRN": functools.partial(BatchRenorm2d, **opts.brn.layer_kwargs()),
            "naiveSyncBRN": functools.partial(NaiveSyncBatchRenorm2d, **opts.brn.layer_kwargs()),
            "SyncBRN": functools.partial(NaiveSyncBatchRenorm2d, **opts.brn.layer_kwargs()),
            "GNWS": _group_norm(key, norm),
            "EvalNorm": EvalNorm2d,
            "CBN": functools.partial(CrossIterationBatchNorm2d, **opts.cbn.layer_kwargs()),
            "MABN": functools.partial(MABN2d, **opts.mabn.layer_kwargs()),
            "IN": InstanceNorm2d,
            "WN": WNBias2d,
        }
        ws = opts.ws_eps if name == "GNWS" else None
        factory = NormFactory(name, builders[name], act=act, weight_standardization=ws, residual_tlu=residual_tlu,
                              adapt_layers=LAYER_ADAPTERS.get(name))
    return factory if activation else factory.without_activation()


def resolve_norm_arg(norm, *, key: str, options: Union[NormOptions, FRNOptions, None] = None,
                     activation: bool = True):
    """A builder's `norm` argument: a norm string or NormFactory -> resolve_norm; None -> ""
    (no norm); any other callable `channels -> nn.Module` as it is (Detectron2's get_norm
    convention). Anything else is a ValueError naming `key`."""
    if isinstance(norm, (str, NormFactory)):
        return resolve_norm(norm, key=key, options=options, activation=activation)
    if norm is None:
        return ""
    if not callable(norm):
        raise ValueError(f"{key}={norm!r} is neither a norm string nor a callable channels -> nn.Module")
    return norm


def activation_after(norm: Union[str, NormFactory], channels: int = 0) -> nn.Module:
    """The activation that follows a conv+norm: none when the norm ends in its activation
    (FRN+TLU, EvoNorm), TLU for "X+TLU" (needs `channels`), ReLU otherwise."""
    if isinstance(norm, NormFactory):
        return norm.activation(channels)
    return nn.ReLU(inplace=True)


def residual_activation(norm: Union[str, NormFactory], channels: int) -> nn.Module:
    """The activation after a residual add: TLU for "X+TLU" (including "FRN") unless
    MODEL.FRN.RESIDUAL_ACTIVATION is "ReLU", ReLU otherwise (the factory carries it)."""
    if isinstance(norm, NormFactory):
        return norm.residual_activation(channels)
    return nn.ReLU(inplace=True)
