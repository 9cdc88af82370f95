"""frn-det's built-in synthetic shapes as in shapes.py, with instance masks (their COCO
polygons): the train mapper loads them (gt_masks, for Mask R-CNN) and the evaluator
reports mask AP (segm) besides box AP, as configs/tiny_mask_rcnn_cpu.yaml does."""
from .shapes import dataloader

dataloader.train.mapper.use_instance_mask = True
dataloader.evaluator.tasks = ["bbox", "segm"]
