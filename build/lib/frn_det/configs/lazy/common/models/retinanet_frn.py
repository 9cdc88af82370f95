"""RetinaNet R50-FPN (P3-P7) built by frn-det: the model of configs/Base-RetinaNet-FRN.yaml.

Detectron2's common/models/retinanet.py with frn-det's stem, blocks, FPN and head, so
that "FRN" (FRN+TLU), "GN+TLU", "EvoNormS0", ... put the TLU where the ReLU was, exactly
as MODEL.*.NORM does in YAML. Trained from scratch: nothing frozen.

The norm is set in ONE place, `model.backbone.bottom_up.stages.norm`; the stem, the FPN
and the head follow it by interpolation unless they are set themselves:

    model.backbone.bottom_up.stages.norm = "GN"       # everywhere
    model.head.norm = "GN+TLU"                        # the head only (breaks the link)

and from the command line (Hydra override grammar):

    model.backbone.bottom_up.stages.norm=GN
    'model.backbone.bottom_up.stages.norm="GN+TLU"'   model.head.norm=BN
    model.backbone.bottom_up.stages.norm_options.frn.eps=1e-5

`norm_options` holds what MODEL.FRN / BRN / EVONORM / WS hold in YAML (same defaults).
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher

from frn_det.modeling import FRNRetinaNet
from frn_det.modeling.lazy import (
    make_frn_fpn,
    make_frn_retinanet_head,
    make_frn_stages,
    make_frn_stem,
    norm_options_config,
)

model = L(FRNRetinaNet)(
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
                stride_in_1x1=False,
                res5_dilation=1,
                norm_options=norm_options_config(),
            ),
            out_features=["res3", "res4", "res5"],
            freeze_at=0,  # from scratch: nothing to freeze
        ),
        in_features=["res3", "res4", "res5"],
        out_channels=256,
        norm="${.bottom_up.stages.norm}",
        top_block=L(LastLevelP6P7)(in_channels=2048, out_channels="${..out_channels}"),
        fuse_type="sum",
        norm_options="${.bottom_up.stages.norm_options}",
    ),
    head=L(make_frn_retinanet_head)(
        input_shape=[ShapeSpec(channels=256)] * 5,
        num_classes="${..num_classes}",
        num_anchors=9,
        conv_dims=[256, 256, 256, 256],
        norm="${..backbone.bottom_up.stages.norm}",
        prior_prob=0.01,
        norm_options="${..backbone.bottom_up.stages.norm_options}",
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    anchor_generator=L(DefaultAnchorGenerator)(
        sizes=[[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [32, 64, 128, 256, 512]],
        aspect_ratios=[0.5, 1.0, 2.0],
        strides=[8, 16, 32, 64, 128],
        offset=0.0,
    ),
    box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
    anchor_matcher=L(Matcher)(thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True),
    num_classes=80,
    focal_loss_alpha=0.25,
    focal_loss_gamma=2.0,
    smooth_l1_beta=0.0,
    box_reg_loss_type="smooth_l1",
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_nms_thresh=0.5,
    max_detections_per_image=100,
    pixel_mean=[103.53, 116.28, 123.675],
    pixel_std=[57.375, 57.120, 58.395],
    vis_period=0,
    input_format="BGR",
)
