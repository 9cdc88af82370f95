from .datasets import BUILTIN_SHAPES, prepare_datasets, register_builtin_shapes, register_coco_datasets
from .validate import INVALID_BOXES_CHOICES, ValidationReport, load_validated_coco, validate_coco_json
