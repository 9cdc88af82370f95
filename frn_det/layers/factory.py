"""Turn the norm strings of a Detectron2 config into norm factories.

Grammar of every norm key (NORM_KEYS: MODEL.RESNETS.NORM, MODEL.FPN.NORM,
MODEL.RETINANET.NORM, MODEL.ROI_BOX_HEAD.NORM, MODEL.ROI_MASK_HEAD.NORM):

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
convs; the norm slot holds only their bias).

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
from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar, Dict, Iterable, Optional, Tuple, Union

import torch
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm
from detectron2.layers.batch_norm import LayerNorm
from torch import nn

from .activations import TLU
from .frn import FRN_IMPLS, FilterResponseNorm2d
from .norms import (
    EVONORM_IMPLS,
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

__all__ = [
    "DETECTRON2_NORMS",
    "FRN_NORMS",
    "COMPARATOR_NORMS",
    "NORM_ACT_LAYERS",
    "ACCEPTED_NORMS",
    "ACTIVATIONS",
    "PER_LEVEL_NORMS",
    "BATCH_STAT_NORMS",
    "FRNOptions",
    "BRNOptions",
    "CBNOptions",
    "MABNOptions",
    "EvoNormOptions",
    "NormOptions",
    "NormFactory",
    "parse_norm",
    "check_norm_config",
    "NORM_KEYS",
    "resolve_norm",
    "resolve_norm_arg",
    "activation_after",
    "residual_activation",
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
# Every config key that takes a norm string: the backbone, the FPN and the heads of
# RetinaNet and the R-CNNs (the box head's FCs take MODEL.ROI_BOX_HEAD.NORM when
# MODEL.ROI_BOX_HEAD.NORM_FCS is True).
NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.RETINANET.NORM", "MODEL.ROI_BOX_HEAD.NORM",
             "MODEL.ROI_MASK_HEAD.NORM")
GN_GROUPS = 32  # Detectron2's "GN" is GroupNorm(32, C)
RESIDUAL_ACTIVATIONS = ("TLU", "ReLU")
# What a norm does to the conv / FC layers it follows (NormFactory.adapt); GNWS's Weight
# Standardization is NormFactory.weight_standardization.
LAYER_ADAPTERS = {"MABN": centralize_layers, "WN": weight_normalize_layers, "CBN": link_cbn_layers}


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


def _cfg_get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def check_norm_config(cfg) -> Dict[str, Tuple[str, Optional[str]]]:
    """Validate the norm keys (NORM_KEYS) and the norm option keys of a config before
    anything is built; returns {key: (norm, activation)}."""
    parsed = {key: parse_norm(_cfg_get(cfg, key), key) for key in NORM_KEYS}
    NormOptions.from_config(cfg)  # raises on bad MODEL.FRN / BRN / EVONORM / WS / CBN / MABN values
    return parsed


class ConfigOptions:
    """Options of one MODEL.<SECTION> of the config: each dataclass field is the key of the
    same name in capitals (learnable_eps <-> MODEL.FRN.LEARNABLE_EPS). The field defaults are
    the config's defaults (frn_det.config.add_frn_config reads them from here)."""

    SECTION: ClassVar[str] = ""

    @classmethod
    def defaults(cls) -> dict:
        """{KEY: default} of the config section."""
        return {f.name.upper(): f.default for f in fields(cls)}

    @classmethod
    def from_config(cls, cfg):
        node = cfg.MODEL[cls.SECTION]
        return cls(**{f.name: node[f.name.upper()] for f in fields(cls)})


@dataclass(frozen=True)
class FRNOptions(ConfigOptions):
    """MODEL.FRN.*: see frn_det/config.py and layers/frn/."""

    SECTION: ClassVar[str] = "FRN"

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


@dataclass(frozen=True)
class BRNOptions(ConfigOptions):
    """MODEL.BRN.*: see frn_det/config.py and layers/norms/batch_renorm.py."""

    SECTION: ClassVar[str] = "BRN"

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
class EvoNormOptions(ConfigOptions):
    """MODEL.EVONORM.*: groups of EvoNorm-S0, eps, B0's momentum, implementation."""

    SECTION: ClassVar[str] = "EVONORM"

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
class CBNOptions(ConfigOptions):
    """MODEL.CBN.*: Cross-Iteration BN (layers/norms/cross_iteration_bn.py)."""

    SECTION: ClassVar[str] = "CBN"

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
class MABNOptions(ConfigOptions):
    """MODEL.MABN.*: Moving Average BN (layers/norms/mabn.py)."""

    SECTION: ClassVar[str] = "MABN"

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

    @classmethod
    def from_config(cls, cfg) -> "NormOptions":
        """From MODEL.FRN / BRN / EVONORM / WS / CBN / MABN (frn_det.add_frn_config); a config that lacks
        one of the comparator sections gets that section's defaults."""
        m = cfg.MODEL
        return cls(
            frn=FRNOptions.from_config(cfg),
            brn=BRNOptions.from_config(cfg) if "BRN" in m else BRNOptions(),
            evonorm=EvoNormOptions.from_config(cfg) if "EVONORM" in m else EvoNormOptions(),
            ws_eps=m.WS.EPS if "WS" in m else 1e-5,
            cbn=CBNOptions.from_config(cfg) if "CBN" in m else CBNOptions(),
            mabn=MABNOptions.from_config(cfg) if "MABN" in m else MABNOptions(),
        )


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
    tlu: Optional[bool] = None,
) -> Union[str, NormFactory]:
    """Resolve a config norm string into "" (no norm) or a NormFactory.

    Args:
        norm: NORM or NORM+ACT (see the module docstring).
        key: the config key it came from, used in error messages.
        options: NormOptions (or FRNOptions alone, the other norms then take defaults).
        activation: whether an activation follows the norm where it is used; False (the
            FPN) gives the factory's `without_activation()`. `tlu` is an older name for it.
    """
    if tlu is not None:
        activation = tlu
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


def residual_activation(norm: Union[str, NormFactory], channels: int, options=None) -> nn.Module:
    """The activation after a residual add: TLU for "X+TLU" (including "FRN") unless
    MODEL.FRN.RESIDUAL_ACTIVATION is "ReLU", ReLU otherwise. (`options` is unused: the
    factory carries the setting.)"""
    if isinstance(norm, NormFactory):
        return norm.residual_activation(channels)
    return nn.ReLU(inplace=True)
