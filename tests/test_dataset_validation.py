"""Tests of COCO-format dataset validation (frn_det.data.validate) and its use in prepare_datasets."""

import json
import logging
import re
import uuid

import pytest
from PIL import Image

from frn_det.data import validate
from frn_det.data.synthetic import ShapesSpec, ensure_shapes_dataset
from frn_det.data.validate import load_validated_coco, validate_coco_json

W, H = 32, 24  # image size of the small datasets below
GOOD_BOX = [2.0, 2.0, 10.0, 8.0]


def make_coco(root, num_images=3, extra_anns=(), drop_keys=(), write_images=True):
    """A small COCO dataset under root: one good box per image plus `extra_anns`.

    extra_anns: (image_id, category_id, bbox) triples, given annotation ids 101, 102, ...
    Returns (json_path, image_dir) as strings.
    """
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "file_name": f"{i:03d}.jpg", "width": W, "height": H})
        if write_images:
            Image.new("RGB", (W, H), (i * 40, 80, 120)).save(img_dir / f"{i:03d}.jpg")
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": GOOD_BOX, "area": 80.0, "iscrowd": 0})
    for k, (image_id, cat_id, bbox) in enumerate(extra_anns):
        anns.append({"id": 101 + k, "image_id": image_id, "category_id": cat_id, "bbox": bbox,
                     "area": 1.0, "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    for key in drop_keys:
        del coco[key]
    json_path = root / "instances.json"
    json_path.write_text(json.dumps(coco, indent=1))  # json.dumps writes NaN/Infinity as is
    return str(json_path), str(img_dir)


def num_annotations(records):
    return sum(len(r["annotations"]) for r in records)


def unique(prefix):
    """Detectron2's DatasetCatalog is global: every test registers fresh names."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def warnings_log(caplog):
    """Captures frn_det.data.validate warnings even if a logger above stops propagation."""
    log = logging.getLogger(validate.__name__)
    log.addHandler(caplog.handler)
    log.propagate = False  # else the root logger's caplog handler sees each record again
    caplog.set_level(logging.WARNING, logger=validate.__name__)
    yield caplog
    log.propagate = True
    log.removeHandler(caplog.handler)


# ----------------------------------------------------------------------------- good data


def test_good_dataset_passes(tmp_path):
    json_file, img_dir = make_coco(tmp_path)
    report = validate_coco_json(json_file, img_dir, unique("good"), "error", for_training=True)
    assert (report.num_images, report.num_annotations, report.num_invalid, report.usable_images) == (3, 3, 0, 3)
    records = load_validated_coco(json_file, img_dir, unique("good"))
    assert len(records) == 3 and num_annotations(records) == 3


def test_builtin_shapes_dataset_is_valid(tmp_path):
    paths = ensure_shapes_dataset(ShapesSpec(num_train=4, num_val=2), cache_dir=tmp_path)
    for split in ("train", "val"):
        report = validate_coco_json(*paths[split], unique(f"shapes_{split}"), "error", for_training=True)
        assert report.num_invalid == 0
        assert report.num_images == (4 if split == "train" else 2)
        assert report.usable_images == report.num_images


# ----------------------------------------------------------------------------- structural errors


def test_missing_annotation_file(tmp_path):
    _, img_dir = make_coco(tmp_path)
    missing = tmp_path / "nope" / "instances_train2017.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))) as e:
        validate_coco_json(missing, img_dir, "ds_missing_json")
    assert "ds_missing_json" in str(e.value)
    assert "$DETECTRON2_DATASETS/coco/annotations/instances_train2017.json" in str(e.value)
    assert "$DETECTRON2_DATASETS/coco/train2017/" in str(e.value)


def test_missing_image_folder(tmp_path):
    json_file, _ = make_coco(tmp_path)
    missing = tmp_path / "train2017"
    with pytest.raises(FileNotFoundError, match=f"image folder {re.escape(str(missing))} does not exist"):
        validate_coco_json(json_file, missing, "ds_missing_dir")


def test_invalid_json_names_line_and_column(tmp_path):
    json_file, img_dir = make_coco(tmp_path)
    with open(json_file, "w") as f:
        f.write('{\n  "images": [],\n  "annotations": [,]\n}\n')
    with pytest.raises(ValueError, match=re.escape(json_file) + r" is not valid JSON: .* line 3 column 19"):
        validate_coco_json(json_file, img_dir, "ds_bad_json")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tmp_path, key):
    json_file, img_dir = make_coco(tmp_path, drop_keys=[key])
    with pytest.raises(ValueError, match=f"{re.escape(json_file)} has no '{key}' key"):
        validate_coco_json(json_file, img_dir, "ds_no_key")


def test_unknown_image_id(tmp_path):
    json_file, img_dir = make_coco(tmp_path, extra_anns=[(99, 1, GOOD_BOX), (98, 1, GOOD_BOX)])
    with pytest.raises(ValueError, match=r"2 annotation\(s\) with a image_id value not in 'images'") as e:
        validate_coco_json(json_file, img_dir, "ds_bad_img")
    msg = str(e.value)
    assert json_file in msg and "id 101 -> image_id 99" in msg and "id 102 -> image_id 98" in msg
    assert "Allowed: the ids in 'images': 1, 2, 3" in msg


def test_unknown_category_id(tmp_path):
    json_file, img_dir = make_coco(tmp_path, extra_anns=[(1, 7, GOOD_BOX)])
    with pytest.raises(ValueError, match=r"1 annotation\(s\) with a category_id value not in 'categories' "
                                         r"\(id 101 -> category_id 7\)\. Allowed: .*: 1, 2"):
        validate_coco_json(json_file, img_dir, "ds_bad_cat")


def test_missing_image_files(tmp_path):
    json_file, img_dir = make_coco(tmp_path, num_images=5)
    for i in (2, 4):
        (tmp_path / "images" / f"{i:03d}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 of 5 images listed in .* are missing") as e:
        validate_coco_json(json_file, img_dir, "ds_missing_imgs")
    assert "002.jpg" in str(e.value) and "004.jpg" in str(e.value)


def test_no_images(tmp_path):
    json_file, img_dir = make_coco(tmp_path, num_images=0)
    with pytest.raises(ValueError, match=r"Dataset 'ds_empty': .* lists no images"):
        validate_coco_json(json_file, img_dir, "ds_empty")


def test_unknown_invalid_boxes_setting(tmp_path):
    json_file, img_dir = make_coco(tmp_path)
    with pytest.raises(ValueError, match=re.escape("must be one of ['drop', 'error'], got 'clip'")):
        validate_coco_json(json_file, img_dir, "ds", "clip")


# ----------------------------------------------------------------------------- invalid boxes

BAD_BOXES = [
    (1, 1, [2.0, 2.0, 0.0, 5.0]),  # 101: zero width
    (1, 2, [2.0, 2.0, 5.0, -1.0]),  # 102: negative height
    (2, 1, [float("nan"), 2.0, 5.0, 5.0]),  # 103: non-finite
    (2, 1, [20.0, 2.0, 20.0, 5.0]),  # 104: x + w = 40 > 32 + 1
    (3, 1, [-3.0, 0.0, 5.0, 5.0]),  # 105: x < -1
    (3, 2, [-0.5, 0.0, W + 0.5, H + 0.9]),  # 106: sticks out < 1 px: kept
]


def test_drop_mode_removes_exactly_the_bad_boxes(tmp_path, warnings_log):
    json_file, img_dir = make_coco(tmp_path, extra_anns=BAD_BOXES)
    records = load_validated_coco(json_file, img_dir, unique("ds_drop"), "drop")
    assert num_annotations(records) == 3 + 1  # the good ones and the one within tolerance
    assert all(validate.box_problem(a["bbox"], W, H) is None for r in records for a in r["annotations"])

    warnings = [r.getMessage() for r in warnings_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    msg = warnings[0]
    assert "ds_drop" in msg and "dropping 5 of 9 annotations" in msg
    assert "2 with width or height <= 0 (annotation ids 101, 102)" in msg
    assert "1 with NaN/inf values (annotation ids 103)" in msg
    assert "2 outside the image by more than 1 px (annotation ids 104, 105)" in msg

    # Validation is cached per file: a second load neither re-reads nor warns again.
    load_validated_coco(json_file, img_dir, msg.split("'")[1], "drop")
    assert len([r for r in warnings_log.records if r.levelno == logging.WARNING]) == 1


def test_error_mode_raises(tmp_path):
    json_file, img_dir = make_coco(tmp_path, extra_anns=BAD_BOXES)
    with pytest.raises(ValueError, match=r"has 5 of 9 annotations with invalid boxes: 1 with NaN/inf values") as e:
        validate_coco_json(json_file, img_dir, "ds_error", "error")
    assert "annotation ids 101, 102" in str(e.value)
    assert "DATASETS.INVALID_BOXES drop" in str(e.value)


def test_training_set_without_valid_boxes(tmp_path):
    json_file, img_dir = make_coco(tmp_path, num_images=1, extra_anns=BAD_BOXES[:3])
    data = json.loads(open(json_file).read().replace("NaN", "null"))
    data["annotations"] = data["annotations"][1:3]  # only invalid boxes left
    with open(json_file, "w") as f:
        json.dump(data, f)
    # Fine for testing (nothing to learn from is only a problem for training) ...
    assert validate_coco_json(json_file, img_dir, "ds_nothing", "drop").usable_images == 0
    with pytest.raises(ValueError, match=r"Dataset 'ds_nothing' is used for training, but none of the 1 images"):
        validate_coco_json(json_file, img_dir, "ds_nothing", "drop", for_training=True)


def test_validation_is_cached_until_the_file_changes(tmp_path, monkeypatch):
    json_file, img_dir = make_coco(tmp_path)
    calls = []
    inspect = validate._inspect
    monkeypatch.setattr(validate, "_inspect", lambda *a: calls.append(a) or inspect(*a))
    for _ in range(3):
        validate_coco_json(json_file, img_dir, "ds_cached")
    assert len(calls) == 1
    make_coco(tmp_path, extra_anns=[(1, 1, GOOD_BOX)])  # rewrites the json: size differs
    assert validate_coco_json(json_file, img_dir, "ds_cached").num_annotations == 4
    assert len(calls) == 2


# ----------------------------------------------------------------------------- prepare_datasets


def _cfg(name, json_file, img_dir, *opts):
    from frn_det.engine.train_net import build_config

    return build_config("configs/tiny_retinanet_cpu.yaml", [
        "DATASETS.REGISTER_COCO", [(name, json_file, img_dir)],
        "DATASETS.TRAIN", (name,), *opts,
    ])


def test_prepare_datasets_raises_before_training(tmp_path):
    from frn_det.data import prepare_datasets

    name = unique("bad_train")
    json_file, img_dir = make_coco(tmp_path, extra_anns=[(1, 9, GOOD_BOX)])
    with pytest.raises(ValueError, match=rf"Dataset '{name}': .*category_id value not in 'categories' \(id 101"):
        prepare_datasets(_cfg(name, json_file, img_dir))


def test_prepare_datasets_error_mode_from_config(tmp_path):
    from frn_det.data import prepare_datasets

    name = unique("bad_boxes_train")
    json_file, img_dir = make_coco(tmp_path, extra_anns=BAD_BOXES)
    with pytest.raises(ValueError, match=r"5 of 9 annotations with invalid boxes"):
        prepare_datasets(_cfg(name, json_file, img_dir, "DATASETS.INVALID_BOXES", "error"))
    with pytest.raises(ValueError, match=r"DATASETS.INVALID_BOXES must be one of \['drop', 'error'\]"):
        prepare_datasets(_cfg(name, json_file, img_dir, "DATASETS.INVALID_BOXES", "clip"))


def test_prepare_datasets_drop_mode_loader_sees_only_valid_boxes(tmp_path):
    from detectron2.data import DatasetCatalog

    from frn_det.data import prepare_datasets

    name = unique("drop_train")
    json_file, img_dir = make_coco(tmp_path, extra_anns=BAD_BOXES)
    prepare_datasets(_cfg(name, json_file, img_dir))
    assert num_annotations(DatasetCatalog.get(name)) == 4


def test_prepare_datasets_missing_file(tmp_path):
    from frn_det.data import prepare_datasets

    name = unique("missing_train")
    _, img_dir = make_coco(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"Dataset '{name}': annotation file .*nope\.json does not exist"):
        prepare_datasets(_cfg(name, str(tmp_path / "nope.json"), img_dir))


def test_prepare_datasets_drops_boxes_of_datasets_registered_elsewhere(tmp_path):
    """Datasets registered by Detectron2 itself (like coco_2017_train) are validated and filtered too."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    from frn_det.data import prepare_datasets
    from frn_det.engine.train_net import build_config

    name = unique("d2_train")
    json_file, img_dir = make_coco(tmp_path, extra_anns=BAD_BOXES)
    register_coco_instances(name, {}, json_file, img_dir)
    cfg = build_config("configs/tiny_retinanet_cpu.yaml", ["DATASETS.TRAIN", (name,)])
    prepare_datasets(cfg)
    prepare_datasets(cfg)  # a second call does not wrap the loader twice
    assert num_annotations(DatasetCatalog.get(name)) == 4
