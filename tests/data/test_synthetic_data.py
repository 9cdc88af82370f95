"""Tests of the synthetic COCO-format shapes dataset (frn_det.data.synthetic)."""

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frn_det.data.synthetic import (
    DONE_MARKER,
    SHAPES_CATEGORIES,
    ShapesSpec,
    _mask_polygons,
    _render_split_image,
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
        assert ann_a and all(len(x["segmentation"]) >= 1 for x in ann_a)  # masks are covered too
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


# ----------------------------------------------------------------------------- instance masks


def rasterize(polygons, height, width):
    """The mask of COCO polygons as pycocotools (COCOeval, Detectron2) rasterises them."""
    from pycocotools import mask as mask_util

    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, height, width))).astype(bool)


def mask_from_text(rows):
    return np.array([[c == "#" for c in row] for row in rows])


@pytest.mark.parametrize("rows", [
    ["#"],  # one pixel
    ["####",
     "#..#",
     "####"],  # a hole
    ["#.",
     ".#"],  # touching only at a corner: two parts
    ["#####.",
     "#...#.",
     "#.#.#.",
     "#...##",
     "#####."],  # a part inside another part's hole, and a bump
    ["######",
     "#.##.#",
     "######",
     "##..##",
     "#.##.#",
     "######"],  # several holes, one of them touching another at a corner
    ["###.###",
     "#.#.#.#",
     "###.###",
     "..#.#..",
     "###.###"],  # two parts, each with a hole
])
def test_mask_polygons_are_exact_on_hand_made_masks(rows):
    mask = np.zeros((10, 12), dtype=bool)
    m = mask_from_text(rows)
    mask[2:2 + m.shape[0], 3:3 + m.shape[1]] = m  # not at the origin: offsets are applied
    polygons = _mask_polygons(mask)
    assert all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    assert all(type(v) is float for p in polygons for v in p)
    assert np.array_equal(rasterize(polygons, *mask.shape), mask)


def test_mask_polygons_one_per_part_and_collinear_points_dropped():
    mask = np.zeros((8, 8), dtype=bool)
    mask[1:4, 1:5] = True  # a 4x3 rectangle: 4 corners
    mask[5:7, 5:7] = True  # a second part
    assert _mask_polygons(mask) == [[1.0, 1.0, 5.0, 1.0, 5.0, 4.0, 1.0, 4.0],
                                    [5.0, 5.0, 7.0, 5.0, 7.0, 7.0, 5.0, 7.0]]


def test_every_annotation_has_polygons(small_dataset):
    for split in ("train", "val", "tune"):
        coco = json.loads(Path(small_dataset[split][0]).read_text())
        size = SMALL.image_size
        assert coco["annotations"]
        for a in coco["annotations"]:
            polygons = a["segmentation"]
            assert isinstance(polygons, list) and len(polygons) >= 1
            for p in polygons:
                assert len(p) >= 6 and len(p) % 2 == 0 and all(type(v) is float for v in p)
            xs = np.concatenate([p[0::2] for p in polygons])
            ys = np.concatenate([p[1::2] for p in polygons])
            # The polygons' extent is the tight box of the visible pixels.
            x, y, w, h = a["bbox"]
            assert [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()] == [x, y, w, h]
            assert 0 <= xs.min() and xs.max() <= size and 0 <= ys.min() and ys.max() <= size


def test_polygons_match_the_visible_masks(small_dataset):
    """Every object's polygons rasterise (as COCO evaluation does) to its visible mask
    from the generator: IoU >= 0.9 for each, and in fact exactly, which the occluded
    objects need (parts split apart, holes from objects drawn inside them)."""
    checked, small, split_apart, holed = 0, 0, 0, 0
    for split in ("train", "val", "tune"):
        coco = json.loads(Path(small_dataset[split][0]).read_text())
        anns = {}
        for a in coco["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        for img in coco["images"]:
            _, objects = _render_split_image(SMALL, split, img["id"] - 1)
            assert len(objects) == len(anns[img["id"]])
            for (cat_id, visible), a in zip(objects, anns[img["id"]]):
                assert a["category_id"] == cat_id
                mask = rasterize(a["segmentation"], img["height"], img["width"])
                iou = (mask & visible).sum() / (mask | visible).sum()
                assert iou >= 0.9, (split, a["id"], iou)
                assert np.array_equal(mask, visible), (split, a["id"], iou)
                assert a["area"] == mask.sum()
                checked += 1
                small += a["area"] < 32**2
                split_apart += len(a["segmentation"]) > 1
                holed += any(has_hole(p) for p in a["segmentation"])
    # The cases that matter are all there.
    assert checked >= 300 and small >= 50 and split_apart >= 5 and holed >= 5, (small, split_apart, holed)


def has_hole(polygon):
    """Whether a polygon of _mask_polygons has a hole: the cut to a hole starts at the
    polygon's first corner, which is then visited again."""
    corners = list(zip(polygon[0::2], polygon[1::2]))
    return corners[0] in corners[1:]


def outer_boundary(polygon):
    """A polygon of _mask_polygons without its holes: up to the first cut."""
    corners = list(zip(polygon[0::2], polygon[1::2]))
    end = corners.index(corners[0], 1) if has_hole(polygon) else len(corners)
    return [v for corner in corners[:end] for v in corner]


def test_detectron2_builds_polygon_masks(small_dataset):
    """load_coco_json keeps the polygons, annotations_to_instances turns them into
    gt_masks (Mask R-CNN's default INPUT.MASK_FORMAT "polygon"), and they stay exact
    through Detectron2's flip and resize, holes included."""
    from detectron2.data import detection_utils as utils
    from detectron2.data import transforms as T
    from detectron2.data.datasets import load_coco_json
    from detectron2.structures import BitMasks, PolygonMasks

    json_path, image_root = small_dataset["val"]
    records = load_coco_json(json_path, image_root, "frn_shapes_test_val_masks")
    coco = json.loads(Path(json_path).read_text())
    assert sum(len(r["annotations"]) for r in records) == len(coco["annotations"])  # none dropped
    tricky = [r for r in records
              if any(len(a["segmentation"]) > 1 or any(has_hole(p) for p in a["segmentation"])
                     for a in r["annotations"])]
    assert len(tricky) >= 3
    size = SMALL.image_size
    for r in records[:3] + tricky[:5]:
        annos = r["annotations"]
        assert all(isinstance(a["segmentation"], list) and a["segmentation"] for a in annos)
        want = np.stack([rasterize(a["segmentation"], size, size) for a in annos])
        inst = utils.annotations_to_instances(annos, (size, size), mask_format="polygon")
        assert isinstance(inst.gt_masks, PolygonMasks) and len(inst.gt_masks) == len(annos)
        assert inst.gt_classes.tolist() == [a["category_id"] for a in annos]
        # Detectron2's polygon area (shoelace) is the pixel area: the cuts to holes cancel.
        assert inst.gt_masks.area().tolist() == [float(m.sum()) for m in want]
        assert np.array_equal(BitMasks.from_polygon_masks(inst.gt_masks, size, size).tensor.numpy(), want)

        tfm = T.TransformList([T.HFlipTransform(size), T.ResizeTransform(size, size, 2 * size, 2 * size)])
        moved = [utils.transform_instance_annotations(dict(a), tfm, (2 * size, 2 * size)) for a in annos]
        inst = utils.annotations_to_instances(moved, (2 * size, 2 * size), mask_format="polygon")
        got = BitMasks.from_polygon_masks(inst.gt_masks, 2 * size, 2 * size).tensor.numpy()
        assert np.array_equal(got, want[:, :, ::-1].repeat(2, axis=1).repeat(2, axis=2))


def test_coco_evaluator_reports_segm_ap(small_dataset):
    """Predicting the ground-truth masks gives segm AP 100; filling the holes costs AP."""
    import torch
    from detectron2.data.datasets import load_coco_json, register_coco_instances
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    json_path, image_root = small_dataset["val"]
    name = f"frn_shapes_test_val_segm_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, json_path, image_root)
    records = load_coco_json(json_path, image_root, name)
    size = SMALL.image_size

    def ap(fill_holes):
        evaluator = COCOEvaluator(name, tasks=("segm",), output_dir=None)
        evaluator.reset()
        for r in records:
            annos = r["annotations"]
            masks = [rasterize([outer_boundary(p) if fill_holes else p for p in a["segmentation"]],
                               size, size) for a in annos]
            inst = Instances((size, size))
            inst.pred_masks = torch.from_numpy(np.stack(masks))
            inst.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                                                  (a["bbox"] for a in annos)], dtype=torch.float32))
            inst.scores = torch.full((len(annos),), 0.9)
            inst.pred_classes = torch.tensor([a["category_id"] for a in annos])
            evaluator.process([{"image_id": r["image_id"]}], [{"instances": inst}])
        return evaluator.evaluate()["segm"]["AP"]

    assert ap(fill_holes=False) == pytest.approx(100.0)
    filled = ap(fill_holes=True)
    assert filled < 99.0, filled  # 98.2 on this split
