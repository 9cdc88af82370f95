"""Tests of the synthetic COCO-format shapes dataset (frn_det.data.synthetic)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frn_det.data.synthetic import (
    DONE_MARKER,
    SHAPES_CATEGORIES,
    ShapesSpec,
    ensure_shapes_dataset,
    generate_shapes_dataset,
)

SMALL = ShapesSpec(num_train=40, num_val=20)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return ensure_shapes_dataset(SMALL, cache_dir=tmp_path_factory.mktemp("cache"))


def test_spec_key():
    assert ShapesSpec().key() == "shapes_v2_s0_n320-80-80_px160_o5"
    with pytest.raises(ValueError):
        ShapesSpec(num_train=0)


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_json_is_valid(small_dataset, split):
    from pycocotools.coco import COCO

    json_path, image_root = small_dataset[split]
    coco = COCO(json_path)
    num_images = SMALL.num_train if split == "train" else SMALL.num_val
    assert len(coco.getImgIds()) == num_images
    assert sorted(coco.getCatIds()) == [c["id"] for c in SHAPES_CATEGORIES]
    cat_ids = {c["id"] for c in SHAPES_CATEGORIES}

    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= num_images  # at least one object per image on average
    assert len({a["id"] for a in anns}) == len(anns)
    for a in anns:
        img = coco.imgs[a["image_id"]]  # KeyError if the image does not exist
        assert a["category_id"] in cat_ids
        assert a["iscrowd"] == 0
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0
        assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
        assert 0 < a["area"] <= w * h

    for img in coco.loadImgs(coco.getImgIds()):
        path = Path(image_root) / img["file_name"]
        assert path.is_file()
        with Image.open(path) as im:
            assert im.size == (img["width"], img["height"]) == (SMALL.image_size,) * 2
            assert im.mode == "RGB"


def test_deterministic_and_seed_dependent(tmp_path):
    spec = ShapesSpec(num_train=6, num_val=4)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_shapes_dataset(a, spec)
    generate_shapes_dataset(b, spec)
    generate_shapes_dataset(c, ShapesSpec(seed=1, num_train=6, num_val=4))
    for split in ("train", "val"):
        name = f"annotations/instances_{split}.json"
        assert (a / name).read_text() == (b / name).read_text()
        ann_a = json.loads((a / name).read_text())["annotations"]
        ann_c = json.loads((c / name).read_text())["annotations"]
        assert ann_a != ann_c
    for name in ("train/000001.jpg", "val/000004.jpg"):
        assert np.array_equal(np.asarray(Image.open(a / name)), np.asarray(Image.open(b / name)))


def test_val_covers_all_coco_area_ranges(tmp_path):
    # Val images do not depend on num_train, so this is the default spec's val split.
    paths = ensure_shapes_dataset(ShapesSpec(num_train=1, num_val=80), cache_dir=tmp_path)
    anns = json.loads(Path(paths["val"][0]).read_text())["annotations"]
    areas = np.array([a["area"] for a in anns])
    fractions = {
        "small": np.mean(areas < 32**2),
        "medium": np.mean((areas >= 32**2) & (areas <= 96**2)),
        "large": np.mean(areas > 96**2),
    }
    assert all(f >= 0.15 for f in fractions.values()), fractions
    # Every class shows up too.
    assert {a["category_id"] for a in anns} == {c["id"] for c in SHAPES_CATEGORIES}


def test_ensure_reuses_existing_dataset(tmp_path):
    spec = ShapesSpec(num_train=3, num_val=2)
    first = ensure_shapes_dataset(spec, cache_dir=tmp_path)
    root = first["root"]
    assert root == tmp_path / "datasets" / spec.key()
    assert (root / DONE_MARKER).is_file()
    before = os.stat(first["train"][0]).st_mtime_ns
    second = ensure_shapes_dataset(spec, cache_dir=tmp_path)
    assert second == first
    assert os.stat(second["train"][0]).st_mtime_ns == before
    # No temp folders are left behind.
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == [spec.key()]


def test_ensure_ignores_half_written_folders(tmp_path):
    spec = ShapesSpec(num_train=3, num_val=2)
    parent = tmp_path / "datasets"
    # A temp sibling from a killed run...
    stale = parent / f".{spec.key()}.tmp-killed"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "000001.jpg").write_bytes(b"truncated")
    # ...and a final-named folder without the DONE marker.
    partial = parent / spec.key()
    (partial / "annotations").mkdir(parents=True)
    (partial / "annotations" / "instances_train.json").write_text("{")

    paths = ensure_shapes_dataset(spec, cache_dir=tmp_path)
    assert (paths["root"] / DONE_MARKER).is_file()
    train = json.loads(Path(paths["train"][0]).read_text())
    assert len(train["images"]) == spec.num_train
    assert stale.is_dir()  # someone else's temp folder is left alone


def test_detectron2_load_coco_json(small_dataset):
    from detectron2.data.datasets import load_coco_json
    from detectron2.structures import BoxMode

    json_path, image_root = small_dataset["val"]
    records = load_coco_json(json_path, image_root, "frn_shapes_test_val")
    coco = json.loads(Path(json_path).read_text())
    assert len(records) == len(coco["images"])
    assert sum(len(r["annotations"]) for r in records) == len(coco["annotations"])
    for r in records:
        assert os.path.isfile(r["file_name"])
        for a in r["annotations"]:
            assert a["bbox_mode"] == BoxMode.XYWH_ABS
            # Category ids 1..4 are mapped to contiguous 0..3.
            assert 0 <= a["category_id"] < len(SHAPES_CATEGORIES)


def test_tune_split_is_disjoint_from_val(small_dataset):
    """The lr is chosen on tune and AP reported on val: they must not share images."""
    def pixels(split):
        json_path, root = small_dataset[split]
        names = [i["file_name"] for i in json.loads(Path(json_path).read_text())["images"]]
        return {np.asarray(Image.open(Path(root) / n)).tobytes() for n in names}

    tune, val = pixels("tune"), pixels("val")
    assert len(tune) == SMALL.num_tune and len(val) == SMALL.num_val
    assert not tune & val
