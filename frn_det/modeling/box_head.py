"""The R-CNN box head (4conv1fc and friends) with frn-det's norms after its convs and FCs.

FRNFastRCNNConvFCHead is Detectron2's FastRCNNConvFCHead (same layers, names and init)
whose norm (MODEL.ROI_BOX_HEAD.NORM) may be any frn-det norm string, with the norm's
activation in place of the ReLU after each conv+norm (roi_norms.py).

With MODEL.ROI_BOX_HEAD.NORM_FCS each FC layer is followed by the norm as well
(`fc_norm{k}`, applied to the (N, C) features as (N, C, 1, 1) maps) and the ReLU after it
(`fc_relu{k}`) becomes the norm's activation. FRN on a 1x1 map divides each value by
sqrt(x^2 + eps): with the paper's constant eps = 1e-6 that is sign(x). The paper's remedy,
a learned eps (eps + |eps_l|), is therefore always on after FCs.
"""
import dataclasses
from collections import OrderedDict
from typing import List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY, FastRCNNConvFCHead
from torch import nn

from ..config.keys import norm_options_from_config
from ..layers import NormOptions
from ..layers.factory import NormFactory, resolve_norm_arg
from ..layers.norms import to_ws_linear
from .roi_norms import use_norm_activation

__all__ = ["FCNorm", "fc_norm_options", "FRNFastRCNNConvFCHead"]


class FCNorm(nn.Module):
    """A 2-d norm (BN, GN, FRN, ...) applied to the (N, C) output of an FC layer, viewed as
    (N, C, 1, 1) maps."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.reshape(x.shape[0], -1, 1, 1)).reshape(x.shape[0], -1)


def fc_norm_options(options: Optional[NormOptions]) -> NormOptions:
    """`options` with FRN's learned eps on: FRN after an FC acts on 1x1 maps."""
    options = options or NormOptions()
    return dataclasses.replace(options, frn=dataclasses.replace(options.frn, learnable_eps=True))


@ROI_BOX_HEAD_REGISTRY.register()
class FRNFastRCNNConvFCHead(FastRCNNConvFCHead):
    """FastRCNNConvFCHead with frn-det's norms (see the module docstring).

    conv_norm: the norm after each conv (a norm string, a NormFactory, or a callable);
    fc_norm: the norm after each FC ("" for none: Detectron2's head); norm_options: what
    MODEL.FRN / BRN / EVONORM / WS hold (NormOptions); the FCs' FRN gets the learned eps.
    keys: where conv_norm and fc_norm come from, for error messages (a LazyConfig names its own).
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, conv_dims: List[int], fc_dims: List[int], conv_norm="",
                 fc_norm="", norm_options: Optional[NormOptions] = None,
                 keys=("MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_BOX_HEAD.NORM (after the FCs, NORM_FCS)")):
        conv_norm = resolve_norm_arg(conv_norm, key=keys[0], options=norm_options)
        fc_norm = resolve_norm_arg(fc_norm, key=keys[1], options=fc_norm_options(norm_options))
        super().__init__(input_shape, conv_dims=conv_dims, fc_dims=fc_dims, conv_norm=conv_norm)
        use_norm_activation(self.conv_norm_relus, conv_norm)
        if fc_norm:
            self._add_fc_norms(fc_norm)

    def _add_fc_norms(self, norm) -> None:
        """Insert `fc_norm{k}` between `fc{k}` and `fc_relu{k}` (nn.Sequential runs its modules
        in insertion order) and make `fc_relu{k}` the norm's activation."""
        layers, activations = OrderedDict(), {}
        for name, module in self._modules.items():
            layers[name] = activations.pop(name, module)
            if module in self.fcs:
                k, channels = self.fcs.index(module) + 1, module.out_features
                layers[f"fc_norm{k}"] = FCNorm(norm(channels))
                if isinstance(norm, NormFactory):
                    activations[f"fc_relu{k}"] = norm.activation(channels)  # replaces the ReLU that comes next
                    if norm.weight_standardization is not None:
                        to_ws_linear(module, norm.weight_standardization)
        self._modules.clear()
        self._modules.update(layers)
        if isinstance(norm, NormFactory) and norm.adapt_layers is not None:
            norm.adapt_layers([self])  # MABN / WN / CBN on the (fc, fc_norm) pairs too

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        head = cfg.MODEL.ROI_BOX_HEAD
        ret["fc_norm"] = head.NORM if head.get("NORM_FCS", False) else ""
        ret["norm_options"] = norm_options_from_config(cfg)
        return ret
