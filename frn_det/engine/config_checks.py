"""Checks of Detectron2 config values before any library sees them.

Each problem is a ConfigError naming the key, the bad value and what is allowed, raised
before a model, a data loader or a worker process is built. Unknown keys get the nearest
known key as a suggestion (yacs only says that the key does not exist).
"""
import difflib
import logging
import math
import re
from typing import Iterable, List

from ..layers import NORM_KEYS, check_norm_config, parse_norm
from .trackers import check_loggers

logger = logging.getLogger("frn_det")

SYNC_NORMS = ("SyncBN", "naiveSyncBN", "naiveSyncBN_N", "nnSyncBN", "SyncBRN", "naiveSyncBRN")
_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: ([\w.]+)")


class ConfigError(ValueError):
    """A config value or key that frn-det rejects before training."""


def all_keys(cfg, prefix: str = "") -> List[str]:
    keys = []
    for name, value in cfg.items():
        full = f"{prefix}{name}"
        keys.append(full)
        if hasattr(value, "items"):
            keys += all_keys(value, full + ".")
    return keys


def unknown_key_error(error: BaseException, cfg, source: str):
    """A ConfigError with a suggestion for yacs' "Non-existent key" errors, else None."""
    match = _UNKNOWN_KEY.search(str(error))
    if not match:
        return None
    key = match.group(1)
    known = all_keys(cfg)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if not close:  # a typo in the last part only: compare leaf names within the same parent
        parent, _, leaf = key.rpartition(".")
        siblings = [k for k in known if k.rpartition(".")[0] == parent]
        close = [k for k in siblings if k.rpartition(".")[2] in difflib.get_close_matches(leaf, [s.rpartition(".")[2] for s in siblings], n=3)]
    hint = f"; did you mean {' or '.join(close)}?" if close else "; see `python tools/train_net.py --help` and Detectron2's config reference"
    return ConfigError(f"unknown config key {key} (in {source}){hint}")


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rules(cfg):
    """(key, test, what is allowed) for every value we check."""
    max_iter = cfg.SOLVER.MAX_ITER
    return [
        ("SOLVER.IMS_PER_BATCH", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (the total batch over all workers)"),
        ("SOLVER.BASE_LR", lambda v: _is_number(v) and v > 0, "a finite number > 0"),
        ("SOLVER.MAX_ITER", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("SOLVER.STEPS", lambda v: all(_is_int(s) and 0 < s for s in v) and list(v) == sorted(set(v)),
         "increasing positive integers (iterations where the lr drops)"),
        ("SOLVER.WARMUP_ITERS", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("SOLVER.WARMUP_FACTOR", lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
        ("SOLVER.GAMMA", lambda v: _is_number(v) and v > 0, "a number > 0"),
        ("SOLVER.MOMENTUM", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("SOLVER.WEIGHT_DECAY", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        ("SOLVER.CHECKPOINT_PERIOD", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("TEST.EVAL_PERIOD", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: evaluate at the end only)"),
        ("TEST.DETECTIONS_PER_IMAGE", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("DATALOADER.NUM_WORKERS", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("INPUT.MIN_SIZE_TRAIN", lambda v: len(v) > 0 and all(_is_int(s) and s > 0 for s in v),
         "a non-empty list of positive integers"),
        ("INPUT.MAX_SIZE_TRAIN", lambda v: _is_int(v) and v > 0, "an integer > 0"),
        ("INPUT.MIN_SIZE_TEST", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("INPUT.MAX_SIZE_TEST", lambda v: _is_int(v) and v > 0, "an integer > 0"),
        ("MODEL.RETINANET.NUM_CLASSES", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("MODEL.ROI_HEADS.NUM_CLASSES", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("MODEL.DEVICE", lambda v: isinstance(v, str) and re.fullmatch(r"cpu|cuda(:\d+)?", v) is not None,
         "'cpu', 'cuda' or 'cuda:N'"),
        ("MODEL.FRN.EPS", lambda v: _is_number(v) and v > 0, "a number > 0"),
        ("DATASETS.TRAIN", lambda v: len(v) > 0 and all(isinstance(n, str) and n for n in v),
         "a non-empty list of dataset names"),
        ("DATASETS.TEST", lambda v: all(isinstance(n, str) and n for n in v), "a list of dataset names"),
        ("SEED", lambda v: _is_int(v), "an integer (< 0: a random seed)"),
    ], max_iter


def check_values(cfg) -> None:
    """Every checked key's value, with the key and what is allowed."""
    rules, _ = _rules(cfg)
    for key, ok, allowed in rules:
        try:
            value = _get(cfg, key)
        except KeyError:
            continue  # a config without that part (e.g. no FRN keys)
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")
    if cfg.TEST.EVAL_PERIOD > cfg.SOLVER.MAX_ITER:
        logger.warning("TEST.EVAL_PERIOD=%d > SOLVER.MAX_ITER=%d: evaluation runs at the end only",
                       cfg.TEST.EVAL_PERIOD, cfg.SOLVER.MAX_ITER)


def check_config(cfg, world_size: int) -> None:
    """All checks, including those that need the number of workers, before anything is built."""
    check_values(cfg)
    check_norm_config(cfg)  # the norm strings and their option keys, with the choices
    if "TRACKING" in cfg:
        try:
            check_loggers(cfg.TRACKING.LOGGERS)  # names, and the chosen trackers' libraries installed
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if not _is_int(world_size) or world_size < 1:
        raise ConfigError(f"the number of workers must be an integer >= 1, got {world_size!r}")
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} (the total batch) must be a positive "
            f"multiple of the number of workers ({world_size})"
        )
    synced = [f"{k}={v}" for k, v in zip(NORM_KEYS, _norms(cfg)) if parse_norm(v, k)[0] in SYNC_NORMS]
    if synced and world_size == 1:
        logger.warning("%s with a single worker computes exactly what its unsynced norm computes", ", ".join(synced))


def _norms(cfg) -> Iterable[str]:
    return (_get(cfg, k) for k in NORM_KEYS)
