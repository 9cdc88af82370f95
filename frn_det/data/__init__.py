from .datasets import BUILTIN_SHAPES, prepare_datasets, register_builtin_shapes, register_coco_datasets
