"""Stock Detectron2 configs asking for frn-det's norms switch to the frn builders (or say which keys to set)."""
import logging

import pytest

from frn_det.config.build import build_config
from frn_det.config.stock_switch import use_frn_builders

ZOO_RETINANET = "COCO-Detection/retinanet_R_50_FPN_1x.yaml"
FRN_EVERYWHERE = ["MODEL.RESNETS.NORM", "FRN", "MODEL.FPN.NORM", "FRN", "MODEL.RETINANET.NORM", "FRN"]


def test_zoo_retinanet_with_frn_gets_the_frn_builders_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="frn_det"):
        cfg = build_config(ZOO_RETINANET, FRN_EVERYWHERE)
    assert cfg.MODEL.BACKBONE.NAME == "build_frn_retinanet_resnet_fpn_backbone"
    assert cfg.MODEL.META_ARCHITECTURE == "FRNRetinaNet"
    lines = [r.getMessage() for r in caplog.records if "stock builders" in r.getMessage()]
    assert len(lines) == 1 and "RetinaNet -> FRNRetinaNet" in lines[0]


def test_stock_norms_keep_the_stock_builders():
    cfg = build_config(ZOO_RETINANET, ["MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN"])
    assert (
        cfg.MODEL.BACKBONE.NAME == "build_retinanet_resnet_fpn_backbone" and cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
    )


def test_frn_in_the_backbone_only_keeps_the_stock_meta_architecture():
    cfg = build_config(ZOO_RETINANET, ["MODEL.RESNETS.NORM", "FRN"])
    assert (
        cfg.MODEL.BACKBONE.NAME == "build_frn_retinanet_resnet_fpn_backbone"
        and cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
    )


ZOO_MASK_RCNN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"


def test_zoo_mask_rcnn_with_frn_gets_the_frn_heads_and_backbone(caplog):
    with caplog.at_level(logging.INFO, logger="frn_det"):
        cfg = build_config(ZOO_MASK_RCNN, ["MODEL.RESNETS.NORM", "FRN", "MODEL.FPN.NORM", "FRN",
                                           "MODEL.ROI_BOX_HEAD.NORM", "FRN", "MODEL.ROI_MASK_HEAD.NORM", "FRN"])
    assert cfg.MODEL.BACKBONE.NAME == "build_frn_resnet_fpn_backbone"
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"  # it takes its heads from the registries
    assert cfg.MODEL.ROI_BOX_HEAD.NAME == "FRNFastRCNNConvFCHead"
    assert cfg.MODEL.ROI_MASK_HEAD.NAME == "FRNMaskRCNNConvUpsampleHead"
    lines = [r.getMessage() for r in caplog.records if "stock builders" in r.getMessage()]
    assert len(lines) == 1 and "FastRCNNConvFCHead -> FRNFastRCNNConvFCHead" in lines[0]


def test_zoo_rcnn_with_stock_head_norms_keeps_the_stock_heads():
    cfg = build_config(ZOO_MASK_RCNN, ["MODEL.ROI_BOX_HEAD.NORM", "GN", "MODEL.ROI_MASK_HEAD.NORM", "GN"])
    assert (cfg.MODEL.ROI_BOX_HEAD.NAME, cfg.MODEL.ROI_MASK_HEAD.NAME) == (
        "FastRCNNConvFCHead",
        "MaskRCNNConvUpsampleHead",
    )


def test_norm_after_the_fcs_needs_the_frn_box_head():
    # the stock head has no norm after its FCs: it would silently ignore NORM_FCS
    cfg = build_config(ZOO_MASK_RCNN, ["MODEL.ROI_BOX_HEAD.NORM", "GN", "MODEL.ROI_BOX_HEAD.NORM_FCS", True])
    assert cfg.MODEL.ROI_BOX_HEAD.NAME == "FRNFastRCNNConvFCHead"
    assert cfg.MODEL.ROI_MASK_HEAD.NAME == "MaskRCNNConvUpsampleHead"


def test_a_custom_box_head_with_frn_fails_naming_the_keys():
    with pytest.raises(ValueError, match=r"MODEL.ROI_BOX_HEAD.NAME='MyHead' cannot build "
                                         r"MODEL.ROI_BOX_HEAD.NORM='FRN': "
                                         r"set MODEL.ROI_BOX_HEAD.NAME to one of \['FRNFastRCNNConvFCHead'\]"):
        build_config(ZOO_MASK_RCNN, ["MODEL.ROI_BOX_HEAD.NAME", "MyHead", "MODEL.ROI_BOX_HEAD.NORM", "FRN"])


def test_semantic_head_with_frn_fails_naming_the_key():
    with pytest.raises(ValueError, match=r"MODEL.SEM_SEG_HEAD.NORM='FRN' is read by Detectron2's own head.*set "
                                         r"MODEL.SEM_SEG_HEAD.NORM"):
        build_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml", ["MODEL.SEM_SEG_HEAD.NORM", "FRN"])


def test_a_custom_backbone_fails_with_the_keys_to_set():
    from detectron2.config import get_cfg

    from frn_det import add_frn_config

    cfg = add_frn_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "my_own_backbone"
    cfg.MODEL.RESNETS.NORM = "FRN"
    with pytest.raises(ValueError, match=r"MODEL.BACKBONE.NAME='my_own_backbone' cannot build "
                                         r"MODEL.RESNETS.NORM='FRN': set MODEL.BACKBONE.NAME to one of"):
        use_frn_builders(cfg)
