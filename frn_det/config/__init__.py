"""frn-det's config: its keys and defaults (keys.py, tracking.py), a Detectron2 config built
from YAML and overrides (build.py, stock_switch.py), a LazyConfig loaded (lazy.py), and the
checks of every value and key before training (checks.py). Nothing here builds a model."""
from .build import build_config, resolve_config_file
from .checks import ConfigError, check_config
from .keys import add_frn_config, config_hash
from .lazy import load_config

__all__ = ["add_frn_config", "build_config", "check_config", "config_hash", "ConfigError", "load_config",
           "resolve_config_file"]
