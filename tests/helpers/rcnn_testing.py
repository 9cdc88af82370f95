"""The tiny Mask R-CNN as the tests build it, and a two-image training batch with masks."""
import torch
from detectron2.modeling import build_model
from harness import REPO

from frn_det.config.build import build_config

TINY_MASK_RCNN = str(REPO / "configs" / "tiny_mask_rcnn_cpu.yaml")


HEAD_NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")


def norms(norm, fpn=None):
    opts = []
    for key in HEAD_NORM_KEYS:
        opts += [key, fpn if (key == "MODEL.FPN.NORM" and fpn is not None) else norm]
    return opts


def tiny_rcnn(norm, *opts):
    return build_model(build_config(TINY_MASK_RCNN, norms(norm) + list(opts), announce=False)).eval()


def rcnn_training_batch():
    from detectron2.structures import Boxes, Instances, PolygonMasks

    images = []
    for k in range(2):  # two images: the batch statistics of BN-like norms need more than one value
        inst = Instances((64, 64))
        inst.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 36.0], [30.0, 20.0, 60.0, 60.0]]))
        inst.gt_classes = torch.tensor([k, 2])
        inst.gt_masks = PolygonMasks([[[8.0, 8.0, 40.0, 8.0, 40.0, 36.0, 8.0, 36.0]],
                                      [[30.0, 60.0, 60.0, 60.0, 45.0, 20.0]]])
        images.append({"image": torch.rand(3, 64, 64) * 255, "instances": inst})
    return images
