"""Find the (layer, norm) pairs of a model: the conv or FC whose output a norm of given
types normalizes. The norms that change the layer before them (MABN's weight
centralization, WN's weight normalization) or read its weight (Cross-Iteration BN's
Taylor compensation) use it, where GNWS uses `standardize_convs`."""
from typing import Iterable, List, Tuple, Type, Union

from detectron2.layers import Conv2d
from torch import nn

__all__ = ["normalized_layers"]

NormTypes = Union[Type[nn.Module], Tuple[Type[nn.Module], ...]]


def _holds(module, norm_types: NormTypes) -> bool:
    """`module` is a norm of `norm_types` or wraps some (a per-level list, an FC norm)."""
    return module is not None and any(isinstance(m, norm_types) for m in module.modules())


def normalized_layers(roots: Iterable[nn.Module], norm_types: NormTypes) -> List[Tuple[nn.Module, nn.Module]]:
    """(layer, norm) for every Detectron2 Conv2d whose `norm` holds a norm of `norm_types`,
    and in every nn.Sequential (RetinaNet's subnets, the R-CNN box head) every nn.Conv2d or
    nn.Linear directly followed by such a norm; each layer once, in model order."""
    pairs = {}
    for root in roots:
        for module in root.modules():
            if isinstance(module, Conv2d) and _holds(module.norm, norm_types):
                pairs.setdefault(id(module), (module, module.norm))
            if isinstance(module, nn.Sequential):
                children = list(module)
                for layer, follower in zip(children[:-1], children[1:]):
                    # (a Detectron2 Conv2d holds its own norm; the next conv's norm is not this one's)
                    if isinstance(layer, (nn.Conv2d, nn.Linear)) and getattr(layer, "norm", None) is None and \
                            not isinstance(follower, (nn.Conv2d, nn.Linear)) and _holds(follower, norm_types):
                        pairs.setdefault(id(layer), (layer, follower))
    return list(pairs.values())
