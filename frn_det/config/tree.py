"""Dotted keys in nested configs (a yacs CfgNode, an OmegaConf DictConfig, plain dicts):
get one, list them all, suggest the nearest to a misspelt one."""
import difflib
from collections.abc import Mapping
from typing import Iterable, List

_REQUIRED = object()


def get_key(tree, dotted: str, default=_REQUIRED):
    """tree["a"]["b"]["c"] for "a.b.c"; `default` where a part is missing (KeyError without one)."""
    node = tree
    for part in dotted.split("."):
        is_tree = isinstance(node, Mapping) or hasattr(node, "items")
        if not is_tree or part not in node:
            if default is _REQUIRED:
                raise KeyError(dotted)
            return default
        node = node[part]
    return node


def flatten_keys(tree, prefix: str = "") -> List[str]:
    """Every dotted key of a nested mapping, parents before their children."""
    keys = []
    for name, value in tree.items():
        full = f"{prefix}{name}"
        keys.append(full)
        if isinstance(value, Mapping) or hasattr(value, "items"):
            keys += flatten_keys(value, full + ".")
    return keys


def nearest_keys(key: str, known: Iterable[str]) -> List[str]:
    """Up to three known keys closest to `key`; a typo in the last part only is also
    found among the siblings of the same parent."""
    known = sorted(set(known))
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if not close:
        parent, _, leaf = key.rpartition(".")
        siblings = [k for k in known if k.rpartition(".")[0] == parent]
        leaves = difflib.get_close_matches(leaf, [s.rpartition(".")[2] for s in siblings], n=3)
        close = [k for k in siblings if k.rpartition(".")[2] in leaves]
    return close
