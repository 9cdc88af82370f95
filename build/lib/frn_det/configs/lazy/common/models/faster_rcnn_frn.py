"""Faster R-CNN R50-FPN (P2-P6) from scratch built by frn-det: the model of
configs/faster_rcnn_R_50_FPN_<norm>.yaml (configs/Base-RCNN-FPN-scratch.yaml).

common/models/mask_rcnn_frn.py without the mask branch (as Detectron2's LazyConfigs drop a
branch: common/models/keypoint_rcnn_fpn.py), so the norm is set in the same ONE place,
`model.backbone.bottom_up.stages.norm`, which the stem, the FPN and the box head's convs
follow. See mask_rcnn_frn.py.
"""
from .mask_rcnn_frn import model

for _key in ("mask_in_features", "mask_pooler", "mask_head"):
    model.roi_heads.pop(_key)  # StandardROIHeads: no mask_in_features -> mask_on False
