"""COCO 2017 as in coco.py, with instance masks: the train mapper loads the polygons
(gt_masks, for Mask R-CNN) and the evaluator reports mask AP (segm) besides box AP."""
from .coco import dataloader

dataloader.train.mapper.use_instance_mask = True
dataloader.evaluator.tasks = ["bbox", "segm"]
