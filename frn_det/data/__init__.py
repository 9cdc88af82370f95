from .coco_schema import ANNOTATION_FILE, IMAGE_FOLDER, DatasetPathError, ValidationReport, check_dataset_path
from .datasets import (
    BUILTIN_SHAPES,
    ModelClasses,
    check_num_classes,
    check_register_coco,
    model_classes_from_config,
    model_num_classes,
    prepare_datasets,
    prepare_datasets_distributed,
    register_builtin_shapes,
    register_coco_datasets,
)
from .image_check import ImageCheckError, check_images
from .validate import INVALID_BOXES_CHOICES, MISSING_EVAL_FIELDS_CHOICES, load_validated_coco, validate_coco_json
