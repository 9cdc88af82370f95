"""Dataset registration: the built-in synthetic shapes set, COCO 2017 and any COCO-format files.

COCO 2017 is registered by Detectron2 itself (coco_2017_train, coco_2017_val, ...) under
$DETECTRON2_DATASETS/coco. The built-in set is registered by name at import and
generated on first use into the cache folder. Every other COCO-format dataset is
validated by prepare_datasets before training (validate.py).
"""
import os
from functools import partial
from pathlib import Path
from typing import Iterable, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .synthetic import SHAPES_CATEGORIES, ShapesSpec, ensure_shapes_dataset
from .validate import (
    check_exists,
    check_invalid_boxes_setting,
    drop_invalid_boxes,
    load_validated_coco,
    validate_coco_json,
)

BUILTIN_SHAPES = {"frn_shapes_train": "train", "frn_shapes_val": "val"}
DEFAULT_SHAPES_SPEC = ShapesSpec()


def cache_dir() -> Path:
    return Path(os.environ.get("FRN_DET_CACHE", Path.home() / ".cache" / "frn_det"))


def _shapes_paths(spec: ShapesSpec, split: str) -> Tuple[str, str]:
    root = cache_dir() / "datasets" / spec.key()
    return str(root / "annotations" / f"instances_{split}.json"), str(root / split)


def register_builtin_shapes(spec: ShapesSpec = DEFAULT_SHAPES_SPEC) -> None:
    """Register frn_shapes_train / frn_shapes_val; the files are generated on first use."""
    for name, split in BUILTIN_SHAPES.items():
        if name in DatasetCatalog.list():
            continue
        json_file, image_root = _shapes_paths(spec, split)

        def load(name=name, json_file=json_file, image_root=image_root):
            ensure_shapes_dataset(spec, cache_dir=cache_dir())
            return load_coco_json(json_file, image_root, name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=[c["name"] for c in SHAPES_CATEGORIES],
            thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(SHAPES_CATEGORIES)},
        )


# name -> (json_file, image_root, invalid_boxes) of the datasets registered by
# register_coco_datasets, so that a later config with other values re-registers them.
_REGISTERED = {}
# Datasets registered by others (Detectron2's COCO) whose loader we wrapped to drop boxes.
_FILTERED = set()


def register_coco_datasets(triples: Iterable[Tuple[str, str, str]], invalid_boxes: str = "drop") -> None:
    """Register (name, json_file, image_root) triples from DATASETS.REGISTER_COCO.

    Their loader validates the files and drops invalid boxes (or raises, per
    `invalid_boxes`), so training only sees valid boxes.
    """
    check_invalid_boxes_setting(invalid_boxes)
    for triple in triples:
        if len(triple) != 3:
            raise ValueError(
                f"DATASETS.REGISTER_COCO entries must be (name, json_file, image_root), got {triple!r}"
            )
        name, json_file, image_root = triple
        args = (json_file, image_root, invalid_boxes)
        if name in DatasetCatalog.list():
            if name not in _REGISTERED or _REGISTERED[name] == args:
                continue  # someone else's dataset (e.g. Detectron2's), or ours unchanged
            DatasetCatalog.remove(name)  # ours with other files/setting: register again
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, partial(load_validated_coco, json_file, image_root, name, invalid_boxes))
        MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")
        _REGISTERED[name] = args


def _drop_boxes_in_loader(name: str) -> None:
    """Make a dataset registered elsewhere drop invalid boxes too (drop mode)."""
    if name in _REGISTERED or name in _FILTERED:
        return
    load = DatasetCatalog[name]
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: drop_invalid_boxes(load()))
    _FILTERED.add(name)


def prepare_datasets(cfg, names: Optional[Iterable[str]] = None) -> None:
    """Register the config's extra datasets, generate built-in ones and validate the rest.

    Runs before any training so that a missing file or a bad annotation is a clear
    error, not a crash deep inside a data loader worker (see validate.py).
    """
    invalid_boxes = check_invalid_boxes_setting(cfg.DATASETS.INVALID_BOXES)
    register_coco_datasets(cfg.DATASETS.REGISTER_COCO, invalid_boxes)
    names = list(names if names is not None else list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    for name in names:
        if name not in DatasetCatalog.list():
            raise KeyError(
                f"Dataset {name!r} is not registered. Built-in: {sorted(BUILTIN_SHAPES)}; Detectron2's "
                "COCO names such as 'coco_2017_train'; or add your own COCO-format files with "
                "DATASETS.REGISTER_COCO \"[('name', 'instances.json', 'images/')]\""
            )
        if name in BUILTIN_SHAPES:  # generated by us, always valid
            ensure_shapes_dataset(DEFAULT_SHAPES_SPEC, cache_dir=cache_dir())
            continue
        meta = MetadataCatalog.get(name)
        json_file, image_root = getattr(meta, "json_file", None), getattr(meta, "image_root", None)
        # COCO instances format only: e.g. LVIS also has a json_file, in another format.
        if json_file and image_root and getattr(meta, "evaluator_type", "coco") == "coco":
            report = validate_coco_json(json_file, image_root, name, invalid_boxes,
                                        for_training=name in cfg.DATASETS.TRAIN)
            if report.num_invalid:
                _drop_boxes_in_loader(name)
            continue
        for attr in ("json_file", "image_root"):  # other formats: at least the files must exist
            path = getattr(meta, attr, None)
            if path is not None:
                check_exists(name, attr, path)


register_builtin_shapes()
