from .datasets import (
    BUILTIN_SHAPES,
    check_register_coco,
    check_num_classes,
    model_num_classes,
    prepare_datasets,
    prepare_datasets_distributed,
    register_builtin_shapes,
    register_coco_datasets,
)
from .image_check import ImageCheckError, check_images
from .validate import (
    ANNOTATION_FILE,
    IMAGE_FOLDER,
    INVALID_BOXES_CHOICES,
    DatasetPathError,
    check_dataset_path,
    MISSING_EVAL_FIELDS_CHOICES,
    ValidationReport,
    load_validated_coco,
    validate_coco_json,
)
