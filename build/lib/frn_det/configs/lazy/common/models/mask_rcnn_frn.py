"""Mask R-CNN R50-FPN (P2-P6) from scratch built by frn-det: the model of
configs/mask_rcnn_R_50_FPN_<norm>.yaml (configs/Base-RCNN-FPN-scratch.yaml with MASK_ON).

Detectron2's common/models/mask_rcnn_fpn.py with frn-det's stem, blocks and FPN, the
4conv1fc box head FRNFastRCNNConvFCHead and the mask head FRNMaskRCNNConvUpsampleHead, so
that "FRN" (FRN+TLU), "GN+TLU", "EvoNormS0", ... put the TLU where the ReLU was, exactly as
MODEL.*.NORM does in YAML. Trained from scratch (He et al., "Rethinking ImageNet
Pre-training"): nothing frozen, STRIDE_IN_1X1 False, the ImageNet PIXEL_STD. The RPN is
Detectron2's (no norm there, in YAML neither).

The norm is set in ONE place, `model.backbone.bottom_up.stages.norm`; the stem, the FPN,
the box head's convs and the mask head's convs follow it by interpolation unless they are
set themselves:

    model.backbone.bottom_up.stages.norm = "GN"             # everywhere
    model.roi_heads.mask_head.conv_norm = "GN+TLU"          # the mask head only (breaks the link)
    model.roi_heads.box_head.fc_norm = "FRN"                # also after the FC (MODEL.ROI_BOX_HEAD.NORM_FCS)

and from the command line (Hydra override grammar):

    model.backbone.bottom_up.stages.norm=GN
    model.backbone.bottom_up.stages.norm_options.frn.eps=1e-5

`norm_options` holds what MODEL.FRN / BRN / EVONORM / WS hold in YAML (same defaults).
Faster R-CNN: common/models/faster_rcnn_frn.py (this model without the mask branch).
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch import GeneralizedRCNN
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator import RPN, StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNOutputLayers, StandardROIHeads

from frn_det.modeling import FRNFastRCNNConvFCHead, FRNMaskRCNNConvUpsampleHead
from frn_det.modeling.lazy import make_frn_fpn, make_frn_stages, make_frn_stem, norm_options_config

model = L(GeneralizedRCNN)(
    backbone=L(make_frn_fpn)(
        bottom_up=L(ResNet)(
            stem=L(make_frn_stem)(
                in_channels=3,
                out_channels=64,
                norm="${..stages.norm}",
                norm_options="${..stages.norm_options}",
            ),
            stages=L(make_frn_stages)(
                depth=50,
                norm="FRN",  # <- the norm of the whole model (see above)
                in_channels="${..stem.out_channels}",
                out_channels=256,
                num_groups=1,
                width_per_group=64,
                stride_in_1x1=False,  # from scratch, as Detectron2's scratch configs
                res5_dilation=1,
                norm_options=norm_options_config(),
            ),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=0,  # from scratch: nothing to freeze
        ),
        in_features="${.bottom_up.out_features}",
        out_channels=256,
        norm="${.bottom_up.stages.norm}",
        top_block=L(LastLevelMaxPool)(),
        fuse_type="sum",
        norm_options="${.bottom_up.stages.norm_options}",
    ),
    proposal_generator=L(RPN)(
        in_features=["p2", "p3", "p4", "p5", "p6"],
        head=L(StandardRPNHead)(in_channels=256, num_anchors=3),
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[32], [64], [128], [256], [512]],
            aspect_ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64],
            offset=0.0,
        ),
        anchor_matcher=L(Matcher)(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_topk=(2000, 1000),  # (training, test), per FPN level
        post_nms_topk=(1000, 1000),
        nms_thresh=0.7,
    ),
    roi_heads=L(StandardROIHeads)(
        num_classes=80,
        batch_size_per_image=512,
        positive_fraction=0.25,
        proposal_matcher=L(Matcher)(thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False),
        box_in_features=["p2", "p3", "p4", "p5"],
        box_pooler=L(ROIPooler)(
            output_size=7,
            scales=(1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32),
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        box_head=L(FRNFastRCNNConvFCHead)(  # 4conv1fc, as in the GN paper
            input_shape=ShapeSpec(channels=256, height=7, width=7),
            conv_dims=[256, 256, 256, 256],
            fc_dims=[1024],
            conv_norm="${...backbone.bottom_up.stages.norm}",
            fc_norm="",  # Detectron2's head: no norm after the FC (MODEL.ROI_BOX_HEAD.NORM_FCS False)
            norm_options="${...backbone.bottom_up.stages.norm_options}",
            keys=("model.roi_heads.box_head.conv_norm", "model.roi_heads.box_head.fc_norm"),  # named in errors
        ),
        box_predictor=L(FastRCNNOutputLayers)(
            input_shape=ShapeSpec(channels=1024),
            box2box_transform=L(Box2BoxTransform)(weights=(10, 10, 5, 5)),
            num_classes="${..num_classes}",
            test_score_thresh=0.05,
            test_nms_thresh=0.5,
            test_topk_per_image=100,
        ),
        mask_in_features=["p2", "p3", "p4", "p5"],
        mask_pooler=L(ROIPooler)(
            output_size=14,
            scales=(1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32),
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        mask_head=L(FRNMaskRCNNConvUpsampleHead)(
            input_shape=ShapeSpec(channels=256, width=14, height=14),
            num_classes="${..num_classes}",
            conv_dims=[256, 256, 256, 256, 256],  # 4 convs, then the deconv's channels
            conv_norm="${...backbone.bottom_up.stages.norm}",
            norm_options="${...backbone.bottom_up.stages.norm_options}",
            key="model.roi_heads.mask_head.conv_norm",  # named in errors
        ),
    ),
    pixel_mean=[103.53, 116.28, 123.675],
    pixel_std=[57.375, 57.120, 58.395],  # from scratch: the ImageNet statistics (Base-RCNN-FPN-scratch.yaml)
    input_format="BGR",
    vis_period=0,
)
