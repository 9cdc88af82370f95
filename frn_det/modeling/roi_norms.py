"""What the R-CNN ROI heads share: their norm strings resolved by frn-det, and the ReLU
after each conv+norm replaced by the norm's activation.

Detectron2's FastRCNNConvFCHead and MaskRCNNConvUpsampleHead build `Conv2d(norm=get_norm(...),
activation=nn.ReLU())`. get_norm calls a NormFactory with the channel count, so the stock
constructors build frn-det's norms; afterwards each conv's `activation` becomes the
norm's own (nothing after FRN+TLU / EvoNorm, a TLU for "X+TLU", the ReLU otherwise), and
with "GNWS" the convs are weight-standardized. No random numbers are drawn after the
stock constructor, so with stock norms the heads equal Detectron2's, init included.
"""
from typing import Iterable, Optional, Union

from detectron2.layers import Conv2d

from ..layers.factory import NormFactory, NormOptions, resolve_norm
from ..layers.norms import standardize_convs

__all__ = ["resolve_head_norm", "use_norm_activation"]


def resolve_head_norm(norm, *, key: str, options: Optional[NormOptions] = None) -> Union[str, NormFactory]:
    """A norm string (or NormFactory) -> "" or NormFactory, errors naming `key`; any other
    callable `channels -> nn.Module` is returned as is (Detectron2's get_norm convention)."""
    if isinstance(norm, (str, NormFactory)):
        return resolve_norm(norm, key=key, options=options)
    if norm is None:
        return ""
    if not callable(norm):
        raise ValueError(f"{key}={norm!r} is neither a norm string nor a callable channels -> nn.Module")
    return norm


def use_norm_activation(convs: Iterable[Conv2d], norm) -> None:
    """Give each conv+norm of `convs` the activation that goes with `norm` (in place), and
    weight-standardize them for GNWS. Callables other than a NormFactory keep the ReLU."""
    if not isinstance(norm, NormFactory):
        return
    convs = list(convs)
    for conv in convs:
        conv.activation = norm.activation(conv.out_channels)
    if norm.weight_standardization is not None:
        standardize_convs(convs, eps=norm.weight_standardization)
