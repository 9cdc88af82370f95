"""Dataset registration: the built-in synthetic shapes set, COCO 2017 and any COCO-format files.

COCO 2017 is registered by Detectron2 itself (coco_2017_train, coco_2017_val, ...) under
$DETECTRON2_DATASETS/coco. The built-in set is registered by name at import and
generated on first use into the cache folder.
"""
import os
from pathlib import Path
from typing import Iterable, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances

from .synthetic import SHAPES_CATEGORIES, ShapesSpec, ensure_shapes_dataset

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


def register_coco_datasets(triples: Iterable[Tuple[str, str, str]]) -> None:
    """Register (name, json_file, image_root) triples from DATASETS.REGISTER_COCO."""
    for triple in triples:
        if len(triple) != 3:
            raise ValueError(
                f"DATASETS.REGISTER_COCO entries must be (name, json_file, image_root), got {triple!r}"
            )
        name, json_file, image_root = triple
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, json_file, image_root)


def prepare_datasets(cfg, names: Optional[Iterable[str]] = None) -> None:
    """Register the config's extra datasets, generate built-in ones and check files exist.

    Runs before any training so that a missing file is a clear error, not a crash
    deep inside a data loader worker.
    """
    register_coco_datasets(cfg.DATASETS.REGISTER_COCO)
    names = list(names if names is not None else list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    for name in names:
        if name not in DatasetCatalog.list():
            raise KeyError(
                f"Dataset {name!r} is not registered. Built-in: {sorted(BUILTIN_SHAPES)}; Detectron2's "
                "COCO names such as 'coco_2017_train'; or add your own COCO-format files with "
                "DATASETS.REGISTER_COCO \"[('name', 'instances.json', 'images/')]\""
            )
        if name in BUILTIN_SHAPES:
            ensure_shapes_dataset(DEFAULT_SHAPES_SPEC, cache_dir=cache_dir())
            continue
        meta = MetadataCatalog.get(name)
        for attr in ("json_file", "image_root"):
            path = getattr(meta, attr, None)
            if path is not None and not os.path.exists(path):
                raise FileNotFoundError(
                    f"Dataset {name!r}: {attr} {path} does not exist. Detectron2's COCO datasets are "
                    "read from $DETECTRON2_DATASETS/coco/{annotations,train2017,val2017} "
                    f"(DETECTRON2_DATASETS={os.environ.get('DETECTRON2_DATASETS', 'datasets')!r})."
                )


register_builtin_shapes()
