"""Unknown keys in a sweep's command-line overrides, reported with the nearest known key.

Hydra rejects `ims_per_gpus=2` with "Key 'ims_per_gpus' is not in struct" and no hint.
This check runs before Hydra composes anything: it reads the primary config and the
options of each config group from configs/sweep/ and names the closest keys.
"""
from pathlib import Path
from typing import Iterable, Optional, Set

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ...config.tree import flatten_keys, nearest_keys


def _load(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def known_keys(config_dir: Path, primary: str = "sweep") -> Set[str]:
    """Keys of the primary config and of every option of its config groups."""
    config_dir = Path(config_dir)
    base = _load(config_dir / f"{primary}.yaml")
    keys = {k for k in flatten_keys(base) if not k.startswith("hydra") and k != "defaults"}
    for group in (p for p in config_dir.iterdir() if p.is_dir()):
        keys.add(group.name)
        for option in group.glob("*.yaml"):
            keys |= set(flatten_keys(_load(option), group.name + "."))
    return keys


def unknown_override_error(overrides: Iterable[str], config_dir: Path) -> Optional[str]:
    """A message for the first override of an unknown key, or None when all are known.

    Overrides that add (+key), delete (~key), touch hydra.* or a nested free-form value
    such as opts are left to Hydra.
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    known = known_keys(config_dir)
    for override in parsed:
        key = override.key_or_group
        if override.is_add() or override.is_delete() or override.is_force_add() or key.startswith("hydra"):
            continue
        if key in known or any(key.startswith(k + ".") for k in known if not _has_children(k, known)):
            continue
        close = nearest_keys(key, known)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return (f"unknown sweep key {key!r} in the override {override.input_line!r}{hint} "
                f"(keys: configs/sweep/sweep.yaml and its groups; `tools/sweep.py --cfg job` prints them)")
    return None


def _has_children(key: str, known: Set[str]) -> bool:
    prefix = key + "."
    return any(k.startswith(prefix) for k in known)
