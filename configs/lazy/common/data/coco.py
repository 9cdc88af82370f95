"""COCO 2017 ($DETECTRON2_DATASETS/coco), as Detectron2's common/data/coco.py for boxes,
with frn-det's mapper (image read errors name the file) and COCO evaluator (faster
COCOeval where Detectron2's compiled one is missing; COCOeval's prints go to the log)."""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from omegaconf import OmegaConf

from frn_det.data.mapper import CheckedDatasetMapper
from frn_det.engine.trainer import coco_evaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=True),
    mapper=L(CheckedDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(640, 672, 704, 736, 768, 800), max_size=1333, sample_style="choice"
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=False,
    ),
    total_batch_size=64,  # over all workers
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(CheckedDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333, sample_style="choice")],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(coco_evaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference",
)

# How frn-det's tools/lazyconfig_train_net.py prepares the datasets before training (the
# YAML path's DATASETS.REGISTER_COCO / INVALID_BOXES / MISSING_EVAL_FIELDS / CHECK_IMAGES;
# Detectron2's own tool ignores this entry):
dataloader.prepare = dict(
    register_coco=[],  # extra COCO-format datasets: [[name, json_file, image_root], ...]
    invalid_boxes="drop",  # or "error"
    missing_eval_fields="fill",  # or "error"
    check_images=True,
)
