"""The Mask R-CNN mask head with frn-det's norms.

FRNMaskRCNNConvUpsampleHead is Detectron2's MaskRCNNConvUpsampleHead (same layers, names
and init) whose norm (MODEL.ROI_MASK_HEAD.NORM) may be any frn-det norm string, with the
norm's activation in place of the ReLU after each conv+norm (roi_norms.py). The upsampling
deconv has no norm in Detectron2 and keeps its ReLU.
"""
from typing import Optional

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead

from ..config.keys import norm_options_from_config
from ..layers import NormOptions
from ..layers.factory import resolve_norm_arg
from .roi_norms import use_norm_activation

__all__ = ["FRNMaskRCNNConvUpsampleHead"]


@ROI_MASK_HEAD_REGISTRY.register()
class FRNMaskRCNNConvUpsampleHead(MaskRCNNConvUpsampleHead):
    """MaskRCNNConvUpsampleHead with frn-det's norms (see the module docstring). `key`: where
    conv_norm comes from, for error messages (a LazyConfig names its own)."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, num_classes, conv_dims, conv_norm="",
                 norm_options: Optional[NormOptions] = None, key: str = "MODEL.ROI_MASK_HEAD.NORM", **kwargs):
        conv_norm = resolve_norm_arg(conv_norm, key=key, options=norm_options)
        super().__init__(input_shape, num_classes=num_classes, conv_dims=conv_dims, conv_norm=conv_norm, **kwargs)
        use_norm_activation(self.conv_norm_relus, conv_norm)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["norm_options"] = norm_options_from_config(cfg)
        return ret
