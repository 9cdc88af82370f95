"""What the R-CNN ROI heads share: the ReLU after each conv+norm replaced by the norm's
activation.

Detectron2's FastRCNNConvFCHead and MaskRCNNConvUpsampleHead build `Conv2d(norm=get_norm(...),
activation=nn.ReLU())`. get_norm calls a NormFactory with the channel count, so the stock
constructors build frn-det's norms; afterwards each conv's `activation` becomes the
norm's own (nothing after FRN+TLU / EvoNorm, a TLU for "X+TLU", the ReLU otherwise), and
with "GNWS" the convs are weight-standardized. No random numbers are drawn after the
stock constructor, so with stock norms the heads equal Detectron2's, init included.
"""
from typing import Iterable

from detectron2.layers import Conv2d

from ..layers.factory import NormFactory

__all__ = ["use_norm_activation"]


def use_norm_activation(convs: Iterable[Conv2d], norm) -> None:
    """Give each conv+norm of `convs` the activation that goes with `norm` (in place), and
    adapt them as the norm asks (GNWS, MABN, WN, CBN: NormFactory.adapt). Callables other
    than a NormFactory keep the ReLU."""
    if not isinstance(norm, NormFactory):
        return
    convs = list(convs)
    for conv in convs:
        conv.activation = norm.activation(conv.out_channels)
    norm.adapt(convs)
