"""frn-det's built-in synthetic COCO-format dataset (frn_shapes_train / frn_shapes_val,
registered by `import frn_det`, generated on first use) at 160 px, as in
configs/tiny_retinanet_cpu.yaml."""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from .coco import dataloader

dataloader.train.dataset.names = "frn_shapes_train"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(160,), max_size=160, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 0

dataloader.test.dataset.names = "frn_shapes_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=160, max_size=160, sample_style="choice")
]
dataloader.test.num_workers = 0
