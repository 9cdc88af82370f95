"""Checks of config values and keys before any library sees them: yacs configs (YAML) and
Python LazyConfigs, from one table of rules.

Each problem is a ConfigError naming the key, the bad value and what is allowed, raised
before a model, a data loader or a worker process is built. Unknown keys get the nearest
known key as a suggestion (yacs only says that the key does not exist; LazyConfig
overrides of unknown keys would silently add them).
"""
import difflib
import inspect
import logging
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..layers import norm_spec, parse_norm
from .keys import LAZY_NORM_KEYS, NORM_KEYS, check_norm_config
from .tracking import check_loggers
from .tree import flatten_keys, get_key, nearest_keys

logger = logging.getLogger("frn_det")

_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: ([\w.]+)")
_ABSENT = object()  # OmegaConf.select's answer for a key the config lacks


class ConfigError(ValueError):
    """A config value or key that frn-det rejects before training."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value):
    """OmegaConf containers as lists/dicts, for the tests and the messages."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


@dataclass(frozen=True)
class Rule:
    """A test of one value and what it allows, in words."""

    test: Callable[[Any], bool]
    allowed: str

    def note(self, why: str) -> "Rule":
        return replace(self, allowed=f"{self.allowed} ({why})")

    def or_none(self) -> "Rule":
        return Rule(lambda v: v is None or self.test(v), f"null or {self.allowed}")

    def check(self, key: str, value, context=None) -> None:
        """ConfigError "KEY=VALUE is not allowed: expected ..." unless the value passes.
        `context` (the whole config) is for rules of other kinds that need more than the
        value (the sweep's dataset paths); a Rule ignores it."""
        value = _plain(value)
        try:
            good = bool(self.test(value))
        except (TypeError, ValueError):
            good = False
        if not good:
            raise ConfigError(f"{key}={value!r} is not allowed: expected {self.allowed}")


def one_of(*choices) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join("null" if c is None else repr(c) for c in choices))


def _sizes(v) -> bool:
    v = [v] if _is_int(v) else v
    return len(v) > 0 and all(_is_int(s) and s > 0 for s in v)


def _names(v) -> List[str]:
    return [v] if isinstance(v, str) else list(v)


# The rules, by what they allow; the sweep's keys use them too (frn_det/sweep/planning/job_checks.py).
ANY_INT = Rule(_is_int, "an integer")
INT_MIN_0 = Rule(lambda v: _is_int(v) and v >= 0, "an integer >= 0")
INT_MIN_1 = Rule(lambda v: _is_int(v) and v >= 1, "an integer >= 1")
INT_POSITIVE = Rule(INT_MIN_1.test, "an integer > 0")
POSITIVE = Rule(lambda v: _is_number(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = Rule(lambda v: _is_number(v) and v >= 0, "a number >= 0")
MOMENTUM = Rule(lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
FRACTION = Rule(lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]")
WARMUP_FRACTION = Rule(lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1] (a fraction of training)")
STEPS = Rule(lambda v: all(_is_int(s) and 0 < s for s in v) and list(v) == sorted(set(v)),
             "increasing positive integers (iterations where the lr drops)")
SIZES = Rule(_sizes, "a non-empty list of positive integers")
DEVICE = Rule(lambda v: isinstance(v, str) and re.fullmatch(r"cpu|cuda(:\d+)?", v) is not None,
              "'cpu', 'cuda' or 'cuda:N'")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
TRAIN_NAMES = Rule(lambda v: len(_names(v)) > 0 and all(isinstance(n, str) and n for n in _names(v)),
                   "a non-empty list of dataset names")
TEST_NAMES = Rule(lambda v: all(isinstance(n, str) and n for n in _names(v)), "a list of dataset names")

# Where a LazyConfig's norm strings live (the box head's FCs take one too).
LAZY_NORMS = tuple(k for keys in LAZY_NORM_KEYS.values() for k in keys) + ("model.roi_heads.box_head.fc_norm",)


def _next_to_norms(key: str) -> Tuple[str, ...]:
    """`key` in the module of every lazy norm, e.g. its norm_options."""
    return tuple(dict.fromkeys(f"{norm.rpartition('.')[0]}.{key}" for norm in LAZY_NORMS))


# One row per checked value: its yacs key, where a LazyConfig holds it (none, one or more
# places; "*" stands for every element of a list) and what is allowed. Both kinds of
# config are checked from this table alone.
VALUE_RULES: Sequence[Tuple[Optional[str], Tuple[str, ...], Rule]] = (
    ("SOLVER.IMS_PER_BATCH", ("dataloader.train.total_batch_size",),
     INT_MIN_1.note("the total batch over all workers")),
    ("SOLVER.BASE_LR", ("optimizer.lr",), POSITIVE),
    ("SOLVER.MAX_ITER", ("train.max_iter",), INT_MIN_1),
    ("SOLVER.STEPS", ("lr_multiplier.scheduler.milestones",), STEPS),
    ("SOLVER.WARMUP_ITERS", (), INT_MIN_0),
    (None, ("lr_multiplier.warmup_length",), WARMUP_FRACTION),  # LazyConfigs give the warm-up as a fraction
    ("SOLVER.WARMUP_FACTOR", ("lr_multiplier.warmup_factor",), FRACTION),
    ("SOLVER.GAMMA", (), POSITIVE),
    ("SOLVER.MOMENTUM", ("optimizer.momentum",), MOMENTUM),
    ("SOLVER.WEIGHT_DECAY", ("optimizer.weight_decay",), NON_NEGATIVE),
    ("SOLVER.CHECKPOINT_PERIOD", ("train.checkpointer.period",), INT_MIN_1),
    ("TEST.EVAL_PERIOD", ("train.eval_period",), INT_MIN_0.note("0: evaluate at the end only")),
    ("TEST.DETECTIONS_PER_IMAGE",
     ("model.max_detections_per_image", "model.roi_heads.box_predictor.test_topk_per_image"), INT_MIN_1),
    ("DATALOADER.NUM_WORKERS", ("dataloader.train.num_workers", "dataloader.test.num_workers"), INT_MIN_0),
    ("INPUT.MIN_SIZE_TRAIN", ("dataloader.train.mapper.augmentations.*.short_edge_length",), SIZES),
    ("INPUT.MAX_SIZE_TRAIN", ("dataloader.train.mapper.augmentations.*.max_size",), INT_POSITIVE),
    ("INPUT.MIN_SIZE_TEST", ("dataloader.test.mapper.augmentations.*.short_edge_length",), INT_MIN_0),
    ("INPUT.MAX_SIZE_TEST", ("dataloader.test.mapper.augmentations.*.max_size",), INT_POSITIVE),
    ("MODEL.RETINANET.NUM_CLASSES", ("model.num_classes",), INT_MIN_1),
    ("MODEL.ROI_HEADS.NUM_CLASSES", ("model.roi_heads.num_classes",), INT_MIN_1),
    ("MODEL.DEVICE", ("train.device",), DEVICE),
    ("MODEL.FRN.EPS", _next_to_norms("norm_options.frn.eps"), POSITIVE),
    ("DATASETS.TRAIN", ("dataloader.train.dataset.names",), TRAIN_NAMES),
    ("DATASETS.TEST", ("dataloader.test.dataset.names",), TEST_NAMES),
    ("SEED", ("train.seed",), ANY_INT.note("< 0: a random seed")),
    ("SOLVER.AMP.ENABLED", ("train.amp.enabled",), BOOL),
)


def is_lazy(cfg) -> bool:
    """A LazyConfig (OmegaConf) rather than a yacs CfgNode."""
    return isinstance(cfg, DictConfig)



def lazy_values(cfg, key: str) -> Iterator[Tuple[str, Any]]:
    """(concrete key, value) of every place `key` names in a LazyConfig ("*": each list
    element that has the rest); none where the config lacks it."""
    head, star, rest = key.partition(".*.")
    if not star:
        node = OmegaConf.select(cfg, key, default=_ABSENT)
        if node is not _ABSENT:
            yield key, node
        return
    items = OmegaConf.select(cfg, head, default=None)
    if not isinstance(items, ListConfig):
        return
    for i, item in enumerate(items):
        if isinstance(item, DictConfig):
            yield from ((f"{head}[{i}].{k}", v) for k, v in lazy_values(item, rest))


def _values(cfg, yacs_key: Optional[str], lazy_keys: Tuple[str, ...]) -> Iterator[Tuple[str, Any]]:
    """(key, value) pairs of one VALUE_RULES row in `cfg`, either kind of config."""
    if is_lazy(cfg):
        for key in lazy_keys:
            yield from lazy_values(cfg, key)
    elif yacs_key is not None:
        try:
            yield yacs_key, get_key(cfg, yacs_key)
        except KeyError:
            pass  # a config without that part (e.g. no FRN keys)


def check_values(cfg) -> None:
    """Every checked value of a yacs config or a LazyConfig, with the key and what is allowed."""
    for yacs_key, lazy_keys, rule in VALUE_RULES:
        for key, value in _values(cfg, yacs_key, lazy_keys):
            rule.check(key, value)
    amp, device = _first(cfg, "SOLVER.AMP.ENABLED"), _first(cfg, "MODEL.DEVICE")
    if amp and amp[1] and device and not str(device[1]).startswith("cuda"):
        raise ConfigError(f"{amp[0]}=True needs a CUDA model, got {device[0]}={device[1]!r}: "
                          "Detectron2's AMPTrainer trains with CUDA autocast only")
    max_iter = _first(cfg, "SOLVER.MAX_ITER")
    eval_period = _first(cfg, "TEST.EVAL_PERIOD")
    if max_iter and eval_period and eval_period[1] > max_iter[1]:
        logger.warning("%s=%d > %s=%d: evaluation runs at the end only", *eval_period, *max_iter)


def _first(cfg, yacs_key: str) -> Optional[Tuple[str, Any]]:
    """(key, value) of the first place of a VALUE_RULES row, or None."""
    row = next(r for r in VALUE_RULES if r[0] == yacs_key)
    return next(_values(cfg, *row[:2]), None)


def check_norms(cfg) -> List[Tuple[str, str]]:
    """The norm strings (and, for yacs, the norm option keys), with the choices; returns
    (key, norm string) of every norm. A LazyConfig's norm may also be a callable."""
    if not is_lazy(cfg):
        check_norm_config(cfg)
        return [(k, get_key(cfg, k)) for k in NORM_KEYS]
    norms = []
    for key, value in (kv for norm in LAZY_NORMS for kv in lazy_values(cfg, norm)):
        if isinstance(value, str):
            parse_norm(value, key)
            norms.append((key, value))
    return norms


def check_config(cfg, world_size: int) -> None:
    """All checks of a yacs config or a LazyConfig, including those that need the number
    of workers, before anything is built."""
    check_values(cfg)
    norms = check_norms(cfg)
    loggers = (
        OmegaConf.select(cfg, "train.tracking.loggers") if is_lazy(cfg) else cfg.get("TRACKING", {}).get("LOGGERS")
    )
    if loggers:
        try:
            check_loggers(loggers)  # names, and the chosen trackers' libraries installed
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if not _is_int(world_size) or world_size < 1:
        raise ConfigError(f"the number of workers must be an integer >= 1, got {world_size!r}")
    batch = _first(cfg, "SOLVER.IMS_PER_BATCH")
    if batch and batch[1] % world_size:
        raise ConfigError(
            f"{batch[0]}={batch[1]} (the total batch) must be a positive multiple of the number of workers "
            f"({world_size})"
        )
    synced = [f"{k}={v}" for k, v in norms if v and norm_spec(parse_norm(v, k)[0]).synchronized]
    if synced and world_size == 1:
        logger.warning("%s with a single worker computes exactly what its unsynced norm computes", ", ".join(synced))


# ---- unknown keys -------------------------------------------------------------------




def unknown_key_error(error: BaseException, cfg, source: str):
    """A ConfigError with a suggestion for yacs' "Non-existent key" errors, else None."""
    match = _UNKNOWN_KEY.search(str(error))
    if not match:
        return None
    key = match.group(1)
    close = nearest_keys(key, flatten_keys(cfg))
    hint = (
        f"; did you mean {' or '.join(close)}?"
        if close
        else "; see `python tools/train_net.py --help` and Detectron2's config reference"
    )
    return ConfigError(f"unknown config key {key} (in {source}){hint}")


def _target_parameters(node) -> Tuple[List[str], bool]:
    """(argument names, whether it takes any other: **kwargs or an unreadable signature)
    of a LazyCall node's target; ([], False) for a plain dict."""
    target = node.get("_target_") if isinstance(node, dict) else None
    if target is None:
        return [], False
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        try:
            target = locate(target)
        except Exception:  # noqa: BLE001  instantiate reports an unknown target itself
            return [], True
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


# Keys that Detectron2's default_setup reads from a LazyConfig with a default, so the
# shipped configs need not hold them.
LAZY_OPTIONAL_KEYS = ("train.seed", "train.cudnn_benchmark")
# A target that takes **kwargs accepts any name; one this close to a name it has is a typo.
_TYPO_CUTOFF = 0.8


def _lazy_known(tree, key: str) -> bool:
    """Whether `key` names a value of the LazyConfig tree (plain containers): an existing
    key, a list index in range, an argument that a LazyCall's target takes (with
    **kwargs: any name not a near miss of one it has), or one of LAZY_OPTIONAL_KEYS."""
    if key in LAZY_OPTIONAL_KEYS:
        return True
    node = tree
    for part in key.split("."):
        if isinstance(node, dict):
            if part in node:
                node = node[part]
                continue
            names, takes_any = _target_parameters(node)
            if part in names:
                return True
            return takes_any and not difflib.get_close_matches(part, set(names) | set(node), cutoff=_TYPO_CUTOFF)
        if isinstance(node, list):
            if part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            return False
        return True  # inside a value: Detectron2's apply_overrides reports that itself
    return True


def _lazy_keys(tree, prefix: str = "") -> List[str]:
    """Every key of a LazyConfig tree, with the arguments its LazyCalls' targets take."""
    keys = []
    if isinstance(tree, dict):
        names = list(tree) + [p for p in _target_parameters(tree)[0] if p not in tree]
        for name in names:
            if name == "_target_":
                continue
            keys.append(f"{prefix}{name}")
            keys += _lazy_keys(tree.get(name), f"{prefix}{name}.")
    elif isinstance(tree, list):
        for i, item in enumerate(tree):
            keys += _lazy_keys(item, f"{prefix}{i}.")
    return keys


def check_lazy_overrides(cfg, overrides: Sequence[str]) -> None:
    """ConfigError for an override (Hydra grammar) of a key the LazyConfig does not have,
    with the nearest known keys; before Detectron2's apply_overrides would add it.
    `+key=value` adds a key on purpose (Hydra's grammar) and is left alone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    tree = OmegaConf.to_container(cfg, resolve=False)
    known = None  # all keys, listed only for a message
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.is_add() or override.is_force_add() or override.is_delete() or _lazy_known(tree, key):
            continue
        known = known if known is not None else _lazy_keys(tree) + list(LAZY_OPTIONAL_KEYS)
        close = nearest_keys(key, known)
        hint = f"did you mean {' or '.join(close)}?" if close else "no key of the config is close"
        raise ConfigError(
            f"unknown config key {key} (in the command-line overrides); {hint} "
            f"(to add a new key on purpose: +{override.input_line})"
        )
