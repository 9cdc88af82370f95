"""The tracking keys (TRACKING.* in YAML, train.tracking in a LazyConfig): the logger names,
their defaults and their check before training. The trackers themselves are
frn_det/engine/trackers.py."""
import importlib.util
from typing import Sequence

LOGGERS = ("tensorboard", "wandb", "mlflow")
DEFAULT_LOGGERS = ("tensorboard",)
DEFAULT_PROJECT = "frn-det"


def check_loggers(loggers: Sequence[str], key: str = "TRACKING.LOGGERS") -> None:
    """Known names, and the libraries of the chosen ones installed (checked before training)."""
    if isinstance(loggers, str) or not all(isinstance(n, str) for n in loggers):
        raise ValueError(f"{key} must be a list of logger names from {list(LOGGERS)}, got {loggers!r}")
    unknown = [n for n in loggers if n not in LOGGERS]
    if unknown:
        raise ValueError(f"{key}={list(loggers)}: unknown logger {unknown[0]!r}; choose from {list(LOGGERS)}")
    for name in loggers:
        if name != "tensorboard" and importlib.util.find_spec(name) is None:
            raise ImportError(missing_tracker_message(name, key))


def missing_tracker_message(name: str, key: str = "TRACKING.LOGGERS") -> str:
    return f"{key} includes {name!r} but {name} is not installed: pip install \"frn-det[{name}]\""
