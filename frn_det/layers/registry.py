"""The norm table: one NormSpec per norm name, filled by `register_norm` only.

Every norm, built-in (builtin_norms.py) or a user's (docs/own_norm.md), gets into the
table through `register_norm`, and everything that asks which norms are what (the grammar,
the factory, PreciseBN, RetinaNet's per-level head statistics, the sync warning, the stock
builder switch, the config sections) reads the table:

    from frn_det import register_norm

    @register_norm("RMS", options=RMSOptions, section="RMS", reference="https://...")
    def build_rms(request):                  # a BuildRequest -> a callable channels -> nn.Module
        return lambda channels: RMSNorm2d(channels, eps=request.options.eps)

    register_norm("RMS", layer=RMSNorm2d, options=RMSOptions, section="RMS")   # the same, shorter

Nothing here reads a config: frn_det/config/keys.py turns MODEL.<SECTION> into the options
dataclass instance that a BuildRequest carries.
"""
import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from torch import nn

__all__ = [
    "ACTIVATIONS",
    "BuildRequest",
    "NormSpec",
    "register_norm",
    "unregister_norm",
    "norm_spec",
    "norm_specs",
    "is_registered",
    "norm_names",
    "option_sections",
    "reference_schedules",
]

ACTIVATIONS = ("ReLU", "TLU")
FAMILIES = ("detectron2", "frn", "comparator", "user")
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
SECTION_PATTERN = re.compile(r"[A-Z][A-Z0-9_]*")
# The value types a yacs config key can hold (the defaults of a section's options dataclass)
CONFIG_VALUE_TYPES = (str, int, float, bool, tuple, list, type(None))


@dataclass(frozen=True)
class BuildRequest:
    """What a norm's builder is asked for, once per place a norm string is used.

    key: the config key the string came from (for error messages); value: the string as
    written ("GN+TLU"); options: the norm's options dataclass instance (MODEL.<SECTION>), or
    None for a norm without options; act: "ReLU", "TLU" or None (a norm+activation layer);
    with_activation: build the module that ends in its activation (a norm+activation layer,
    FRN with a fused TLU) rather than the norm alone; norm_options: the whole NormOptions
    (for norms that read another section, e.g. GNWS's MODEL.WS)."""

    key: str
    value: str
    options: Any
    act: Optional[str]
    with_activation: bool
    norm_options: Any = None


Builder = Callable[[BuildRequest], Callable[[int], nn.Module]]


@dataclass(frozen=True)
class NormSpec:
    """One norm: how it is built and what it is.

    name: the NORM of the norm strings (no "+"). builder: a BuildRequest -> a callable
    `channels -> nn.Module` (Detectron2's get_norm convention). options / section: its options
    dataclass (field defaults = config defaults) and MODEL.<section> holding them in a yacs
    config (norms may share a section: BRN, naiveSyncBRN, SyncBRN read MODEL.BRN).
    activation: the activation when the string has no "+ACT" ("ReLU", "TLU").
    includes_activation: a norm+activation layer (EvoNorm): no "+ACT", built with
    with_activation=True where an activation belongs and False elsewhere.
    fused_activations: activations the layer applies itself when asked (FRN's TLU).
    batch_stats: normalizes with the training batch's statistics (what PreciseBN recomputes).
    per_level: RetinaNet's head keeps one per FPN level (the layer must take
    `num_features=` and `affine=` keywords, as CycleBatchNormList builds it).
    synchronized: statistics over all workers.
    adapter: what the norm does to the convs/FCs it follows, `adapter(modules)` (MABN
    centralizes, WN weight-normalizes, CBN links); weight_standardization: those convs are
    weight-standardized (GNWS, eps from MODEL.WS.EPS).
    reference_schedule: (SOLVER.MAX_ITER, keys of the section) that the section's
    iteration-count defaults were written for; the sweep scales those keys with the schedule.
    family: "detectron2" (Detectron2's get_norm knows it), "frn", "comparator" or "user".
    reference: a public source (paper, code).
    """

    name: str
    builder: Builder
    options: Optional[type] = None
    section: Optional[str] = None
    activation: Optional[str] = "ReLU"
    includes_activation: bool = False
    fused_activations: Tuple[str, ...] = ()
    batch_stats: bool = False
    per_level: bool = False
    synchronized: bool = False
    adapter: Optional[Callable[[Iterable[nn.Module]], Any]] = None
    weight_standardization: bool = False
    reference_schedule: Optional[Tuple[int, Tuple[str, ...]]] = None
    family: str = "user"
    reference: str = ""

    def __post_init__(self):
        where = f"register_norm({self.name!r})"
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"register_norm({self.name!r}): a norm name is a non-empty identifier without '+' "
                             "(the norm strings are NORM or NORM+ACT), e.g. 'RMS' or 'MyNorm_2'")
        if self.name in ACTIVATIONS:
            raise ValueError(f"{where}: {self.name!r} is an activation name of the norm strings")
        if not callable(self.builder):
            raise TypeError(f"{where}: the builder must be callable (a BuildRequest -> channels -> nn.Module)")
        if self.includes_activation:
            object.__setattr__(self, "activation", None)
        elif self.activation not in ACTIVATIONS:
            raise ValueError(f"{where}: activation={self.activation!r} is not one of {ACTIVATIONS}")
        object.__setattr__(self, "fused_activations", tuple(self.fused_activations))
        bad = [a for a in self.fused_activations if a not in ACTIVATIONS]
        if bad or (self.includes_activation and self.fused_activations):
            raise ValueError(f"{where}: fused_activations={self.fused_activations!r} must be some of {ACTIVATIONS}, "
                             "and a norm+activation layer (includes_activation) has none")
        if self.family not in FAMILIES:
            raise ValueError(f"{where}: family={self.family!r} is not one of {FAMILIES}")
        if (self.options is None) != (self.section is None):
            raise ValueError(f"{where}: options and section go together (the options dataclass and the "
                             "MODEL.<SECTION> holding its fields as keys)")
        if self.options is not None:
            _check_options(where, self.options, self.section)
        if self.reference_schedule is not None:
            _check_schedule(where, self.reference_schedule, self.options)
        if self.adapter is not None and not callable(self.adapter):
            raise TypeError(f"{where}: adapter must be callable on the modules it adapts")

    def same_as(self, other: "NormSpec") -> bool:
        """Whether `other` registers the same norm: equal fields, callables and classes
        compared by where they are defined (a module imported twice defines them anew)."""
        return all(_identity(getattr(self, f.name)) == _identity(getattr(other, f.name))
                   for f in dataclasses.fields(self))


def _identity(value):
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        line = getattr(getattr(value, "__code__", None), "co_firstlineno", None)
        return ("callable", getattr(value, "__module__", None), value.__qualname__, line)
    return value


def _check_options(where: str, options: type, section: str) -> None:
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TypeError(f"{where}: options={options!r} must be a dataclass (its fields are the keys of "
                        f"MODEL.{section})")
    if not isinstance(section, str) or not SECTION_PATTERN.fullmatch(section):
        raise ValueError(f"{where}: section={section!r} must be an upper-case config section name, e.g. 'RMS'")
    for f in dataclasses.fields(options):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if default is dataclasses.MISSING:
            raise ValueError(f"{where}: {options.__name__}.{f.name} needs a default (the default of "
                             f"MODEL.{section}.{f.name.upper()})")
        if not isinstance(default, CONFIG_VALUE_TYPES):
            raise ValueError(f"{where}: {options.__name__}.{f.name} defaults to {default!r}, which a config key "
                             "cannot hold (str, int, float, bool, list, tuple or None)")


def _check_schedule(where: str, schedule, options: Optional[type]) -> None:
    ok = (isinstance(schedule, tuple) and len(schedule) == 2 and isinstance(schedule[0], int) and schedule[0] > 0
          and isinstance(schedule[1], tuple))
    keys = {f.name.upper() for f in dataclasses.fields(options)} if options is not None else set()
    if not ok or not set(schedule[1]) <= keys:
        raise ValueError(f"{where}: reference_schedule={schedule!r} must be (max_iter, (KEY, ...)) with keys of "
                         "its options section")


_TABLE: Dict[str, NormSpec] = {}


def _layer_builder(layer: Callable[..., nn.Module]) -> Builder:
    """The builder of a layer `layer(channels, **options)`: the options dataclass's
    `layer_kwargs()` if it has one, else its fields, as keywords."""

    def build(request: BuildRequest):
        opts = request.options
        if opts is None:
            return layer
        kwargs = opts.layer_kwargs() if hasattr(opts, "layer_kwargs") else dataclasses.asdict(opts)
        return _partial(layer, kwargs)

    build.__qualname__ = f"layer_builder({getattr(layer, '__qualname__', layer)!s})"
    build.__module__ = getattr(layer, "__module__", __name__)
    return build


def _partial(layer, kwargs):
    return functools.partial(layer, **kwargs) if kwargs else layer


def register_norm(name: str, builder: Optional[Builder] = None, *, layer: Optional[Callable[..., nn.Module]] = None,
                  **properties):
    """Add a norm to the table under `name` (NORM of the norm strings); returns its NormSpec.

    Give how it is built as `builder` (a BuildRequest -> a callable channels -> nn.Module)
    or as `layer` (called as `layer(channels, **options)`, see _layer_builder); without
    either, register_norm is a decorator of the builder (and returns it unchanged). The
    properties are NormSpec's fields (options, section, activation, includes_activation,
    batch_stats, per_level, synchronized, adapter, reference, ...).

    Registering a name again is an error unless it is the same spec (a module imported
    twice); the built-in norms are registered by frn_det.layers.builtin_norms."""
    if builder is not None and layer is not None:
        raise TypeError(f"register_norm({name!r}): give builder or layer, not both")
    if builder is None and layer is None:
        def decorate(fn: Builder) -> Builder:
            register_norm(name, fn, **properties)
            return fn

        return decorate
    spec = NormSpec(name=name, builder=builder if builder is not None else _layer_builder(layer), **properties)
    old = _TABLE.get(name)
    if old is not None and not old.same_as(spec):
        raise ValueError(f"register_norm({name!r}): a norm of that name is already registered ({_origin(old)}); "
                         "choose another name")
    _check_shared_section(spec)
    _TABLE[name] = spec
    return spec


def _origin(spec: NormSpec) -> str:
    return f"built by {getattr(spec.builder, '__module__', '?')}.{getattr(spec.builder, '__qualname__', '?')}"


def _check_shared_section(spec: NormSpec) -> None:
    """Norms that share a section share its options dataclass and reference schedule."""
    for other in _TABLE.values():
        if other.name == spec.name or other.section is None or other.section != spec.section:
            continue
        if _identity(other.options) != _identity(spec.options) or other.reference_schedule != spec.reference_schedule:
            raise ValueError(f"register_norm({spec.name!r}): section MODEL.{spec.section} is {other.name!r}'s, with "
                             f"options {other.options.__name__} and reference_schedule {other.reference_schedule}; "
                             "a norm sharing it must give the same (or choose another section)")


def unregister_norm(name: str) -> None:
    """Remove a user's norm from the table (tests, notebooks); built-in norms stay."""
    spec = _TABLE.get(name)
    if spec is not None and spec.family != "user":
        raise ValueError(f"unregister_norm({name!r}): {name!r} is a built-in norm")
    _TABLE.pop(name, None)


def is_registered(name: str) -> bool:
    return name in _TABLE


def norm_spec(name: str) -> NormSpec:
    """The NormSpec of a norm name (NORM, without "+ACT"); KeyError for an unknown one."""
    return _TABLE[name]


def norm_specs() -> Tuple[NormSpec, ...]:
    """Every registered norm, in registration order (the built-ins first)."""
    return tuple(_TABLE.values())


def norm_names(**where) -> Tuple[str, ...]:
    """The names of the norms whose NormSpec fields equal `where` (all without), e.g.
    norm_names(batch_stats=True)."""
    return tuple(s.name for s in _TABLE.values() if all(getattr(s, k) == v for k, v in where.items()))


def option_sections() -> Dict[str, type]:
    """MODEL.<SECTION> -> the options dataclass whose fields are its keys in upper case."""
    return {s.section: s.options for s in _TABLE.values() if s.section is not None}


def reference_schedules() -> Dict[str, Tuple[int, Tuple[str, ...]]]:
    """MODEL.<SECTION> -> (the SOLVER.MAX_ITER its iteration defaults were written for, those keys)."""
    return {s.section: s.reference_schedule for s in _TABLE.values() if s.reference_schedule is not None}
