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

from torch import nn

from .activations import TLU
from .grammar import parse_norm
from .norms import standardize_convs
from .options import FRNOptions, NormOptions
from .registry import BuildRequest, norm_spec

__all__ = [
    "NormFactory",
    "resolve_norm",
    "resolve_norm_arg",
    "activation_after",
    "residual_activation",
    "mark_norm_layer",
    "is_norm_layer",
]


def _options(options) -> NormOptions:
    if options is None:
        return NormOptions()
    if isinstance(options, FRNOptions):
        return NormOptions(frn=options)
    return options


NORM_LAYER_ATTR = "is_norm_layer"  # set on every module a NormFactory builds, and on its submodules


def mark_norm_layer(module: nn.Module) -> nn.Module:
    """Mark a norm's module (and its submodules) as a norm layer: the optimizer gives their
    parameters SOLVER.WEIGHT_DECAY_NORM, as it does BN's, whatever their type."""
    for m in module.modules():
        setattr(m, NORM_LAYER_ATTR, True)
    return module


def is_norm_layer(module: nn.Module) -> bool:
    """A module that mark_norm_layer marked (a user's norm, built by a NormFactory)."""
    return getattr(module, NORM_LAYER_ATTR, False)


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
        module = self.build(channels)
        # A user's norm: the optimizer cannot know its type. The built-ins are known by type
        # (engine/optimizer.py), exactly as Detectron2 knows its own.
        return mark_norm_layer(module) if norm_spec(self.name).family == "user" else module

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
    spec = norm_spec(name)  # the norm table (registry.py): how it is built and what it is
    opts = _options(options)
    section_options = opts.for_section(spec.section, spec.options) if spec.section is not None else None
    request = functools.partial(BuildRequest, key=key, value=norm, options=section_options, act=act,
                                norm_options=opts)
    common = dict(act=act, weight_standardization=opts.ws_eps if spec.weight_standardization else None,
                  residual_tlu=opts.frn.residual_activation == "TLU", adapt_layers=spec.adapter)
    plain = NormFactory(name, spec.builder(request(with_activation=False)), **common)
    if spec.includes_activation or act in spec.fused_activations:
        # a norm+activation layer (EvoNorm), or an activation fused into the norm (FRN's TLU);
        # the plain norm where no activation follows
        factory = NormFactory(name, spec.builder(request(with_activation=True)), includes_activation=True,
                              without_activation=plain, **common)
    else:
        factory = plain
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
