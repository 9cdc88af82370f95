"""Dataset registration: the built-in synthetic shapes set, COCO 2017 and any COCO-format files.

COCO 2017 is registered by Detectron2 itself (coco_2017_train, coco_2017_val, ...) under
$DETECTRON2_DATASETS/coco. The built-in set is registered by name at import and
generated on first use into the cache folder. Every other COCO-format dataset is
validated by prepare_datasets before training (validate.py): json structure, field
types, boxes, the fields COCO evaluation needs, the category count against the
model's class count, and (DATASETS.CHECK_IMAGES) that every image decodes with the
json's size (image_check.py).
"""
import logging
from dataclasses import dataclass
from functools import partial
from typing import Iterable, Optional, Sequence, Tuple

from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .coco_repair import fix_records, needs_record_fixes
from .coco_schema import ANNOTATION_FILE, IMAGE_FOLDER, PathKind, check_dataset_path, check_masks_for_mask_model
from .synthetic import SHAPES_CATEGORIES, ShapesSpec, dataset_paths, dataset_root, ensure_shapes_dataset
from .validate import (
    check_dataset_images,
    check_invalid_boxes_setting,
    check_missing_eval_fields_setting,
    load_validated_coco,
    validate_coco_json,
)

logger = logging.getLogger(__name__)

BUILTIN_SHAPES = {"frn_shapes_train": "train", "frn_shapes_val": "val", "frn_shapes_tune": "tune"}
DEFAULT_SHAPES_SPEC = ShapesSpec()


def register_builtin_shapes(spec: ShapesSpec = DEFAULT_SHAPES_SPEC) -> None:
    """Register frn_shapes_train / frn_shapes_val; the files are generated on first use."""
    for name, split in BUILTIN_SHAPES.items():
        if name in DatasetCatalog.list():
            continue
        json_file, image_root = dataset_paths(dataset_root(spec))[split]

        def load(name=name, json_file=json_file, image_root=image_root):
            ensure_shapes_dataset(spec)
            return load_coco_json(json_file, image_root, name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=[c["name"] for c in SHAPES_CATEGORIES],
            thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(SHAPES_CATEGORIES)},
        )


# name -> (json_file, image_root, invalid_boxes, missing_eval_fields) of the datasets
# registered by register_coco_datasets, so that a later config with other values
# re-registers them.
_REGISTERED = {}
# Datasets registered by others (Detectron2's COCO) whose loader we wrapped with fix_records.
_FILTERED = set()


REGISTER_KEY = "DATASETS.REGISTER_COCO"
# The paths of datasets in other formats than COCO instances (e.g. LVIS), by metadata attribute.
OTHER_FORMAT_PATHS = (PathKind("json_file", "a readable file", folder=False),
                      PathKind("image_root", "a readable folder", folder=True))


def check_register_coco(triples: Iterable[Tuple[str, str, str]], key: str = REGISTER_KEY) -> None:
    """Each (name, json_file, image_root) triple has a name, a readable json file and a
    readable image folder (DatasetPathError naming the dataset, `key` and the path)."""
    for triple in triples:
        if len(triple) != 3 or not isinstance(triple[0], str) or not triple[0]:
            raise ValueError(f"{key} entries must be (name, json_file, image_root), got {triple!r}")
        name, json_file, image_root = triple
        check_dataset_path(name, json_file, ANNOTATION_FILE, key)
        check_dataset_path(name, image_root, IMAGE_FOLDER, key)


def register_coco_datasets(triples: Iterable[Tuple[str, str, str]], invalid_boxes: str = "drop",
                           missing_eval_fields: str = "fill", key: str = REGISTER_KEY) -> None:
    """Register (name, json_file, image_root) triples from DATASETS.REGISTER_COCO (`key`:
    the config key they came from, for the messages).

    Each json must be a readable file and each image root a readable folder
    (check_register_coco). Their loader validates the files and drops invalid boxes (or
    raises, per `invalid_boxes`), so training only sees valid boxes; it reads the fixed
    copy of the json where fields were filled (`missing_eval_fields`).
    """
    check_invalid_boxes_setting(invalid_boxes)
    check_missing_eval_fields_setting(missing_eval_fields)
    triples = [tuple(t) for t in triples]
    check_register_coco(triples, key)
    for triple in triples:
        name, json_file, image_root = triple
        args = (json_file, image_root, invalid_boxes, missing_eval_fields)
        if name in DatasetCatalog.list():
            if name not in _REGISTERED or _REGISTERED[name] == args:
                continue  # someone else's dataset (e.g. Detectron2's), or ours unchanged
            DatasetCatalog.remove(name)  # ours with other files/setting: register again
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name, partial(load_validated_coco, json_file, image_root, name, invalid_boxes, missing_eval_fields)
        )
        MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")
        _REGISTERED[name] = args


def _fix_records_in_loader(name: str) -> None:
    """Make a dataset registered elsewhere drop invalid boxes and fill iscrowd too (fix_records)."""
    if name in _REGISTERED or name in _FILTERED:
        return
    load = DatasetCatalog[name]
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: fix_records(load()))
    _FILTERED.add(name)


def _use_json_file(name: str, json_file: str, source_json_file: str) -> None:
    """Point MetadataCatalog[name].json_file (read by COCOEvaluator) at json_file.

    Metadata attributes cannot be set to a new value in place: the entry is rebuilt with
    all its other attributes. source_json_file keeps the user's file for later checks.
    """
    meta = MetadataCatalog.get(name)
    if getattr(meta, "json_file", None) == json_file:
        return
    attrs = {k: v for k, v in meta.as_dict().items() if k not in ("name", "source_json_file")}
    attrs["json_file"] = json_file
    if json_file != source_json_file:
        attrs["source_json_file"] = source_json_file
    MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(**attrs)


def model_num_classes(cfg) -> Tuple[str, int]:
    """(config key, value) of the class count of the config's model: RetinaNet meta
    architectures (names containing 'RetinaNet') use MODEL.RETINANET.NUM_CLASSES, the
    others (R-CNNs) MODEL.ROI_HEADS.NUM_CLASSES."""
    if "RetinaNet" in cfg.MODEL.META_ARCHITECTURE:
        return "MODEL.RETINANET.NUM_CLASSES", cfg.MODEL.RETINANET.NUM_CLASSES
    return "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES


@dataclass(frozen=True)
class ModelClasses:
    """The model's class count, the config key that sets it, and where it comes from in
    words (for the messages)."""

    key: str
    num_classes: int
    about: str


def model_classes_from_config(cfg) -> ModelClasses:
    """ModelClasses of a yacs config (model_num_classes)."""
    key, num_classes = model_num_classes(cfg)
    both = (f"MODEL.RETINANET.NUM_CLASSES = {cfg.MODEL.RETINANET.NUM_CLASSES}, "
            f"MODEL.ROI_HEADS.NUM_CLASSES = {cfg.MODEL.ROI_HEADS.NUM_CLASSES}")
    return ModelClasses(key, num_classes, f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} uses {key}; {both}")


def check_num_classes(classes: Optional[ModelClasses], name: str, json_file: str, num_categories: int) -> None:
    """More categories in a dataset than the model has classes is an error; fewer is fine.
    No check where the class count is unknown (None)."""
    if classes is None:
        return
    key, num_classes = classes.key, classes.num_classes
    if num_categories > num_classes:
        raise ValueError(
            f"Dataset {name!r}: {json_file} has {num_categories} categories, but the model has only "
            f"{num_classes} classes ({classes.about}). Detectron2 maps the json's category ids to class ids "
            f"0..{num_categories - 1}, so "
            f"annotations of classes {num_classes} and up would fail the first training step. Set {key} "
            f"{num_categories}, or remove the extra categories from the json."
        )
    if num_categories < num_classes:
        logger.info(
            "Dataset %r has %d categories and the model %d classes (%s): %d outputs are never used",
            name, num_categories, num_classes, key, num_classes - num_categories,
        )


def _warn_if_categories_differ(classes: dict, train_names: list) -> None:
    """Detectron2 numbers each dataset's categories 0..K-1 in id order: a dataset whose
    list differs from the (first) training set's is trained or evaluated on other labels."""
    ref = next((n for n in train_names if n in classes), None)
    if ref is None:
        return
    for name, cats in classes.items():
        if name != ref and cats != classes[ref]:
            common = min(len(cats), len(classes[ref]))
            i = next((i for i, (a, b) in enumerate(zip(cats, classes[ref])) if a != b), common)
            logger.warning(
                "Dataset %r has other categories than the training set %r (%d vs %d; in id order they first "
                "differ at class %d: %r vs %r). Detectron2 numbers each json's categories 0..K-1 by id, so "
                "class ids would mean different things in the two datasets.",
                name, ref, len(cats), len(classes[ref]), i,
                cats[i] if i < len(cats) else None, classes[ref][i] if i < len(classes[ref]) else None,
            )


def _check_images_setting(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"DATASETS.CHECK_IMAGES must be True or False, got {value!r}")
    return value


def _datasets_from_config(cfg) -> dict:
    """prepare_datasets' arguments from a yacs config (DATASETS.*, MODEL.MASK_ON, the class count)."""
    return dict(
        train=cfg.DATASETS.TRAIN,
        test=cfg.DATASETS.TEST,
        register_coco=cfg.DATASETS.REGISTER_COCO,
        invalid_boxes=cfg.DATASETS.INVALID_BOXES,
        missing_eval_fields=cfg.DATASETS.get("MISSING_EVAL_FIELDS", "fill"),
        check_images=cfg.DATASETS.get("CHECK_IMAGES", True),
        masks_asked_by="MODEL.MASK_ON=True" if cfg.MODEL.MASK_ON else None,
        model_classes=model_classes_from_config(cfg),
    )


@configurable(from_config=_datasets_from_config)
def prepare_datasets(train: Sequence[str], test: Sequence[str] = (), *,
                     register_coco: Iterable[Tuple[str, str, str]] = (), invalid_boxes: str = "drop",
                     missing_eval_fields: str = "fill", check_images: bool = True, masks_asked_by: Optional[str] = None,
                     model_classes: Optional[ModelClasses] = None, names: Optional[Iterable[str]] = None,
                     register_key: str = REGISTER_KEY) -> None:
    """Register the extra datasets (`register_coco`), generate built-in ones and validate the rest.

    Runs before any training so that a missing file, a bad annotation, too many
    categories for the model or an image that does not decode is a clear error, not a
    crash deep inside a data loader worker or after training, in evaluation (see
    validate.py); when the model predicts masks (`masks_asked_by` names what says so, e.g.
    "MODEL.MASK_ON=True") every annotation needs a mask. The json checks of all datasets
    (`names`, default the `train` and `test` sets) run first, then the (slower) image checks.

    Takes plain arguments, or a yacs config as Detectron2's @configurable functions do:
    `prepare_datasets(cfg)` reads them from DATASETS.* (DATASETS.INVALID_BOXES ...),
    MODEL.MASK_ON and the model's class count (_datasets_from_config).
    """
    invalid_boxes = check_invalid_boxes_setting(invalid_boxes)
    missing_eval_fields = check_missing_eval_fields_setting(missing_eval_fields)
    check_images = _check_images_setting(check_images)
    register_coco_datasets(register_coco, invalid_boxes, missing_eval_fields, register_key)
    names = list(names if names is not None else list(train) + list(test))
    reports = []
    classes = {}  # dataset -> category names in id order
    for name in dict.fromkeys(names):  # a dataset in TRAIN and TEST is checked once
        if name not in DatasetCatalog.list():
            raise KeyError(
                f"Dataset {name!r} is not registered. Built-in: {sorted(BUILTIN_SHAPES)}; Detectron2's "
                "COCO names such as 'coco_2017_train'; or add your own COCO-format files with "
                "DATASETS.REGISTER_COCO \"[('name', 'instances.json', 'images/')]\""
            )
        meta = MetadataCatalog.get(name)
        if name in BUILTIN_SHAPES:  # generated by us, always valid
            ensure_shapes_dataset(DEFAULT_SHAPES_SPEC)
            check_num_classes(model_classes, name, meta.json_file, len(SHAPES_CATEGORIES))
            classes[name] = [c["name"] for c in SHAPES_CATEGORIES]
            continue
        # The user's json, also after _use_json_file pointed json_file at a fixed copy.
        json_file = getattr(meta, "source_json_file", None) or getattr(meta, "json_file", None)
        image_root = getattr(meta, "image_root", None)
        # COCO instances format only: e.g. LVIS also has a json_file, in another format.
        if json_file and image_root and getattr(meta, "evaluator_type", "coco") == "coco":
            report = validate_coco_json(json_file, image_root, name, invalid_boxes,
                                        for_training=name in train,
                                        missing_eval_fields=missing_eval_fields)
            check_num_classes(model_classes, name, json_file, report.num_categories)
            if masks_asked_by:
                check_masks_for_mask_model(report, masks_asked_by)
            _use_json_file(name, report.eval_json_file, json_file)
            if needs_record_fixes(report):
                _fix_records_in_loader(name)
            reports.append(report)
            classes[name] = report.category_names
            continue
        thing_classes = getattr(meta, "thing_classes", None)
        if thing_classes:
            check_num_classes(model_classes, name, getattr(meta, "json_file", "(no json)"), len(thing_classes))
        for kind in OTHER_FORMAT_PATHS:  # other formats: at least the files must be there
            path = getattr(meta, kind.label, None)
            if path is not None:
                check_dataset_path(name, path, kind)
    _warn_if_categories_differ(classes, list(train))
    if check_images:
        for report in reports:
            check_dataset_images(report)


register_builtin_shapes()


def prepare_datasets_distributed(*args, **kwargs) -> None:
    """prepare_datasets (a config or plain arguments) in every worker, local rank 0 first: the
    first (uncached) image check runs once per machine and the other ranks then read its cache."""
    from detectron2.utils import comm

    first = comm.get_local_rank() == 0
    if first:
        prepare_datasets(*args, **kwargs)
    comm.synchronize()
    if not first:
        prepare_datasets(*args, **kwargs)
