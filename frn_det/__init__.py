"""frn-det: Filter Response Normalization (FRN + TLU) for Detectron2.

`import frn_det` registers with Detectron2:
  - backbones build_frn_resnet_backbone, build_frn_resnet_fpn_backbone and
    build_frn_retinanet_resnet_fpn_backbone (MODEL.BACKBONE.NAME),
  - the meta architecture FRNRetinaNet (MODEL.META_ARCHITECTURE),
  - the R-CNN heads FRNFastRCNNConvFCHead (MODEL.ROI_BOX_HEAD.NAME) and
    FRNMaskRCNNConvUpsampleHead (MODEL.ROI_MASK_HEAD.NAME), for GeneralizedRCNN,
  - the built-in synthetic COCO-format dataset (frn_shapes_train / frn_shapes_val / frn_shapes_tune).
Norm strings ("FRN", the comparators and all of Detectron2's) are resolved by frn_det.layers.resolve_norm;
`register_norm` adds a norm of your own (docs/own_norm.md).
"""
from .utils.quiet import silence_third_party_warnings

silence_third_party_warnings()  # before Detectron2 is imported below

from . import data, modeling  # noqa: E402, F401  (registers datasets and builders)
from .config.keys import add_frn_config  # noqa: E402
from .layers import TLU, FilterResponseNorm2d, NormSpec, register_norm  # noqa: E402
from .utils.imports import import_modules  # noqa: E402

__version__ = "0.1.0"
__all__ = ["add_frn_config", "FilterResponseNorm2d", "TLU", "ACCEPTED_NORMS", "register_norm", "NormSpec",
           "import_modules"]


def __getattr__(name: str):
    """ACCEPTED_NORMS: every registered norm name now (frn_det.layers.ACCEPTED_NORMS)."""
    if name == "ACCEPTED_NORMS":
        from . import layers

        return layers.ACCEPTED_NORMS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
