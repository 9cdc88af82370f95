"""Tests of COCO-format dataset validation (frn_det.data.validate, coco_schema, coco_repair) and its use in
prepare_datasets."""

import json
import logging
import os
import re
import uuid

import pytest
from dataset_files import GOOD_BOX, H, W, make_coco
from PIL import Image

from frn_det.data import coco_repair, coco_schema, validate
from frn_det.data.synthetic import ShapesSpec, ensure_shapes_dataset
from frn_det.data.validate import load_validated_coco, validate_coco_json


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
    assert all(coco_schema.box_problem(a["bbox"], W, H) is None for r in records for a in r["annotations"])

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
    inspect = validate.inspect_coco_json
    monkeypatch.setattr(validate, "inspect_coco_json", lambda *a: calls.append(a) or inspect(*a))
    for _ in range(3):
        validate_coco_json(json_file, img_dir, "ds_cached")
    assert len(calls) == 1
    make_coco(tmp_path, extra_anns=[(1, 1, GOOD_BOX)])  # rewrites the json: size differs
    assert validate_coco_json(json_file, img_dir, "ds_cached").num_annotations == 4
    assert len(calls) == 2


# ----------------------------------------------------------------------------- prepare_datasets


def _cfg(name, json_file, img_dir, *opts, model="tiny_retinanet_cpu"):
    from frn_det.config.build import build_config

    return build_config(f"configs/{model}.yaml", [
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


def test_mask_model_needs_a_mask_on_every_annotation_before_training(tmp_path):
    from frn_det.data import prepare_datasets

    name = unique("boxes_only_train")
    json_file, img_dir = make_coco(tmp_path, num_images=4)
    square = [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]]
    edit_coco(json_file, lambda d: [a.update(segmentation=square) for a in d["annotations"][:2]])
    with pytest.raises(ValueError, match=rf"Dataset '{name}': {re.escape(json_file)} has 2 of 4 annotations without "
                                         r"a 'segmentation' \(annotation ids 3, 4\), but MODEL.MASK_ON=True.*"
                                         r"MODEL.MASK_ON False"):
        prepare_datasets(_cfg(name, json_file, img_dir, model="tiny_mask_rcnn_cpu"))
    prepare_datasets(_cfg(name, json_file, img_dir, model="tiny_faster_rcnn_cpu"))  # boxes only: fine
    edit_coco(json_file, lambda d: [a.update(segmentation=square) for a in d["annotations"]])
    prepare_datasets(_cfg(name, json_file, img_dir, model="tiny_mask_rcnn_cpu"))  # every annotation has its mask


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


# Every wrong kind of dataset path, made in tmp_path: (json, image folder) -> the problem.
def _broken_paths(tmp_path, case):
    json_file, img_dir = make_coco(tmp_path)
    if case == "json is a folder":
        (tmp_path / "train_json_dir").mkdir()
        return str(tmp_path / "train_json_dir"), img_dir, "annotation file", "is a folder, not a file"
    if case == "json missing":
        return str(tmp_path / "nope.json"), img_dir, "annotation file", "does not exist"
    if case == "json is a symlink loop":
        os.symlink(tmp_path / "loop.json", tmp_path / "loop.json")
        return (
            str(tmp_path / "loop.json"),
            img_dir,
            "annotation file",
            "cannot be read (Too many levels of symbolic links)",
        )
    if case == "images are a file":
        return json_file, json_file, "image folder", "is a file, not a folder"
    if case == "images missing":
        return json_file, str(tmp_path / "train2017"), "image folder", "does not exist"
    raise AssertionError(case)


PATH_CASES = ["json is a folder", "json missing", "json is a symlink loop", "images are a file", "images missing"]
EXPECTED = {"annotation file": "expected a readable COCO instances json file",
            "image folder": "expected a readable folder holding the json's images"}


@pytest.mark.parametrize("case", PATH_CASES)
def test_register_coco_path_errors_name_dataset_key_path_and_what_is_expected(tmp_path, case):
    from frn_det.data import DatasetPathError, prepare_datasets

    name = unique("paths")
    json_file, img_dir, what, problem = _broken_paths(tmp_path, case)
    path = json_file if what == "annotation file" else img_dir
    with pytest.raises(DatasetPathError) as err:
        prepare_datasets(_cfg(name, json_file, img_dir))
    assert str(err.value) == (f"Dataset '{name}': {what} {path} {problem} (set by DATASETS.REGISTER_COCO); "
                              f"{EXPECTED[what]}")


@pytest.mark.parametrize("case", ["json is a folder", "images are a file"])
def test_validate_coco_json_path_errors_say_what_is_expected(tmp_path, case):
    from frn_det.data import DatasetPathError

    json_file, img_dir, what, problem = _broken_paths(tmp_path, case)
    with pytest.raises(DatasetPathError, match=rf"Dataset 'ds_kind': {what} .* {problem}; {EXPECTED[what]}$"):
        validate_coco_json(json_file, img_dir, "ds_kind")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_json_is_named(tmp_path):
    from frn_det.data import DatasetPathError, prepare_datasets

    name = unique("unreadable")
    json_file, img_dir = make_coco(tmp_path)
    os.chmod(json_file, 0)
    with pytest.raises(DatasetPathError, match=rf"Dataset '{name}': annotation file .* cannot be read \(Permission "
                                               r"denied\) \(set by DATASETS.REGISTER_COCO\)"):
        prepare_datasets(_cfg(name, json_file, img_dir))


def test_lazy_register_coco_path_errors_name_the_lazy_key(tmp_path):
    from frn_det.config.lazy import load_config
    from frn_det.data import DatasetPathError
    from frn_det.engine.lazy_training import prepare_lazy_datasets

    name = unique("lazy_paths")
    json_file, img_dir, _, _ = _broken_paths(tmp_path, "json is a folder")
    cfg = load_config("configs/lazy/tiny_retinanet_cpu.py", [
        f"dataloader.prepare.register_coco=[[{name},{json_file},{img_dir}]]", f"dataloader.train.dataset.names={name}"])
    with pytest.raises(DatasetPathError, match=rf"Dataset '{name}': annotation file {re.escape(json_file)} is a "
                                               r"folder, "
                                               r"not a file \(set by dataloader.prepare.register_coco\); expected"):
        prepare_lazy_datasets(cfg)


def test_other_format_dataset_paths_are_checked_too(tmp_path):
    """A dataset registered elsewhere in another format than COCO instances (e.g. LVIS)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from frn_det.data import DatasetPathError, prepare_datasets

    name = unique("lvis_like")
    (tmp_path / "ann_dir").mkdir()
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(json_file=str(tmp_path / "ann_dir"), image_root=str(tmp_path), evaluator_type="lvis")
    cfg = _cfg(unique("unused"), *make_coco(tmp_path / "good"))
    with pytest.raises(DatasetPathError) as err:
        prepare_datasets(cfg, names=[name])
    assert (
        str(err.value)
        == f"Dataset '{name}': json_file {tmp_path / 'ann_dir'} is a folder, not a file; expected a readable file"
    )


@pytest.mark.parametrize("tool", ["train_net.py", "lazyconfig_train_net.py"])
def test_tools_stop_on_a_bad_dataset_path_before_making_any_folder(tmp_path, tool):
    from harness import run_tool

    json_dir, img_dir, _, _ = _broken_paths(tmp_path, "json is a folder")
    out = tmp_path / "out"
    if tool == "train_net.py":
        key, args = (
            "DATASETS.REGISTER_COCO",
            [
                "--config-file",
                "configs/tiny_retinanet_cpu.yaml",
                "DATASETS.REGISTER_COCO",
                f"[('mine_train','{json_dir}','{img_dir}')]",
                "DATASETS.TRAIN",
                "('mine_train',)",
                "OUTPUT_DIR",
                out,
            ],
        )
    else:
        key, args = "dataloader.prepare.register_coco", [
            "--config-file", "configs/lazy/tiny_retinanet_cpu.py", f"train.output_dir={out}",
            f"dataloader.prepare.register_coco=[[mine_train,{json_dir},{img_dir}]]",
            "dataloader.train.dataset.names=mine_train"]
    proc = run_tool(tool, *args, check=False, timeout=300)
    assert proc.returncode != 0
    assert (f"DatasetPathError: Dataset 'mine_train': annotation file {json_dir} is a folder, not a file (set by "
            f"{key}); "
            "expected a readable COCO instances json file") in proc.stderr
    assert not out.exists()


def test_prepare_datasets_drops_boxes_of_datasets_registered_elsewhere(tmp_path):
    """Datasets registered by Detectron2 itself (like coco_2017_train) are validated and filtered too."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    from frn_det.config.build import build_config
    from frn_det.data import prepare_datasets

    name = unique("d2_train")
    json_file, img_dir = make_coco(tmp_path, extra_anns=BAD_BOXES)
    register_coco_instances(name, {}, json_file, img_dir)
    cfg = build_config("configs/tiny_retinanet_cpu.yaml", ["DATASETS.TRAIN", (name,)])
    prepare_datasets(cfg)
    prepare_datasets(cfg)  # a second call does not wrap the loader twice
    assert num_annotations(DatasetCatalog.get(name)) == 4


# ----------------------------------------------------------------------------- field types


def edit_coco(json_file, edit):
    """Rewrites json_file after edit(data) changed it in place."""
    with open(json_file) as f:
        data = json.load(f)
    edit(data)
    with open(json_file, "w") as f:
        json.dump(data, f)


def setter(section, position, field, value):
    def edit(data):
        data[section][position][field] = value
    return edit


# (section, position, field, bad value, its text in the message, text of what is allowed)
BAD_TYPES = [
    ("images", 1, "width", "32", '"32" (a string)', "Allowed: a positive integer"),
    ("images", 1, "width", 0, "0 (an integer)", "Allowed: a positive integer"),
    ("images", 1, "height", 24.5, "24.5 (a float)", "Allowed: a positive integer"),
    ("images", 1, "height", True, "true (a bool)", "Allowed: a positive integer"),
    ("images", 1, "height", None, "null", "Allowed: a positive integer"),
    ("images", 1, "id", "2", '"2" (a string)', "Allowed: an integer (not a string, float or bool)"),
    ("images", 1, "file_name", 2, "2 (an integer)", "Allowed: a non-empty string"),
    ("annotations", 1, "id", 2.0, "2.0 (a float)", "Allowed: an integer"),
    ("annotations", 1, "image_id", "2", '"2" (a string)', "Allowed: an integer"),
    ("annotations", 1, "category_id", 1.0, "1.0 (a float)", "Allowed: an integer"),
    ("annotations", 1, "category_id", True, "true (a bool)", "Allowed: an integer"),
    ("annotations", 1, "bbox", ["2", "2", "10", "8"], '["2", "2", "10", "8"] (a list)',
     "Allowed: a list of 4 numbers [x, y, width, height]"),
    ("annotations", 1, "bbox", [2, 2, 10], "[2, 2, 10] (a list)", "Allowed: a list of 4 numbers"),
    ("annotations", 1, "bbox", {"x": 2}, '{"x": 2} (an object)', "Allowed: a list of 4 numbers"),
    ("annotations", 1, "iscrowd", 2, "2 (an integer)", "Allowed: 0 or 1 (an integer), or no 'iscrowd' key"),
    ("annotations", 1, "iscrowd", False, "false (a bool)", "Allowed: 0 or 1"),
    ("annotations", 1, "area", "80", '"80" (a string)', "Allowed: a finite number >= 0, or no 'area' key"),
    ("annotations", 1, "area", None, "null", "Allowed: a finite number >= 0"),
    ("annotations", 1, "area", -5, "-5 (an integer)", "Allowed: a finite number >= 0"),
    ("annotations", 1, "segmentation", [2, 2, 12, 2, 12, 10], "[2, 2, 12, 2, 12, 10] (a list)",
     "Allowed: polygons [[x1, y1, x2, y2, x3, y3, ...], ...] (each an even count of >= 6 numbers"),
    ("annotations", 1, "segmentation", [[2, 2, 12, 2]], "[[2, 2, 12, 2]] (a list)", "3 points or more"),
    ("annotations", 1, "segmentation", [[2, 2, 12, 2, 12, 10], [2, 2, 12, 2, 12]],
     "[[2, 2, 12, 2, 12, 10], [2, 2, 12, 2, 12]] (a list)", "an even count of >= 6 numbers"),
    ("annotations", 1, "segmentation", "abc", '"abc" (a string)', "Allowed: polygons"),
    ("annotations", 1, "ignore", 1, "1 (an integer)", "Detectron2 does not support ignored annotations"),
    ("categories", 1, "id", "2", '"2" (a string)', "Allowed: an integer"),
    ("categories", 1, "name", 7, "7 (an integer)", "Allowed: a string"),
]


@pytest.mark.parametrize("section,position,field,value,shown,allowed", BAD_TYPES,
                         ids=[f"{s}.{f}={v!r}" for s, _, f, v, _, _ in BAD_TYPES])
def test_wrong_field_type(tmp_path, section, position, field, value, shown, allowed):
    json_file, img_dir = make_coco(tmp_path)
    edit_coco(json_file, setter(section, position, field, value))
    with pytest.raises(ValueError) as e:
        validate_coco_json(json_file, img_dir, "ds_types")
    msg = str(e.value)
    assert f"Dataset 'ds_types': {json_file} has fields of the wrong type" in msg
    assert f"'{section}' field '{field}': 1 of " in msg
    entry_id = 2 if not (field == "id") else json.dumps(value)
    assert f"position {position} (id {entry_id}): {shown}" in msg
    assert allowed in msg


def test_wrong_types_are_counted_and_listed_together(tmp_path):
    json_file, img_dir = make_coco(tmp_path, num_images=8)

    def edit(data):
        for img in data["images"]:
            img["width"] = str(img["width"])
        data["annotations"][0]["category_id"] = "1"

    edit_coco(json_file, edit)
    with pytest.raises(ValueError) as e:
        validate_coco_json(json_file, img_dir, "ds_many")
    msg = str(e.value)
    assert "'images' field 'width': 8 of 8 entries, e.g. position 0 (id 1): \"32\" (a string)" in msg
    assert "position 4 (id 5)" in msg and "position 5 (id 6)" not in msg and "(+3 more)" in msg
    assert "'annotations' field 'category_id': 1 of 8 entries, e.g. position 0 (id 1): \"1\" (a string)" in msg


def test_integer_valued_float_sizes_are_accepted_and_written_as_ints(tmp_path, warnings_log):
    from detectron2.data.datasets import load_coco_json

    json_file, img_dir = make_coco(tmp_path)
    edit_coco(json_file, setter("images", 0, "width", float(W)))
    report = validate_coco_json(json_file, img_dir, unique("ds_float"), "error", check_images=True)
    assert report.float_sizes == [1] and report.eval_json_file != json_file
    fixed = json.load(open(report.eval_json_file))
    assert fixed["images"][0]["width"] == W and isinstance(fixed["images"][0]["width"], int)
    assert "wrote width/height as integers on 1 images (image ids 1" in warnings_log.text
    records = load_coco_json(report.eval_json_file, img_dir)
    assert isinstance(records[0]["width"], int)


# ----------------------------------------------------------------------------- fields COCO evaluation needs


def coco_bbox_ap(json_file, detections):
    """pycocotools' COCOeval bbox AP (IoU .50:.95) of detections against json_file."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        ev = COCOeval(gt, gt.loadRes(detections), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0]


def perfect_detections(json_file):
    data = json.load(open(json_file))
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in data["annotations"]]


def strip_fields(data, ann_fields=("iscrowd", "area"), top=(), cat_fields=()):
    for a in data["annotations"]:
        for f in ann_fields:
            a.pop(f, None)
    for k in top:
        data.pop(k, None)
    for c in data["categories"]:
        for f in cat_fields:
            c.pop(f, None)


def test_missing_iscrowd_and_area_without_fill_break_cocoeval(tmp_path):
    """Why the fill exists: pycocotools' COCOeval needs both fields."""
    json_file, _ = make_coco(tmp_path)
    edit_coco(json_file, strip_fields)
    with pytest.raises(KeyError):
        coco_bbox_ap(json_file, perfect_detections(json_file))


def test_missing_iscrowd_and_area_are_filled(tmp_path, warnings_log):
    json_file, img_dir = make_coco(tmp_path)

    def edit(data):
        strip_fields(data)
        data["annotations"][0]["iscrowd"] = 0  # iscrowd only missing on 2 of 3
        # a polygon: COCO's area is the mask's (a 10x8 triangle: about half the box)
        data["annotations"][2]["segmentation"] = [[2, 2, 12, 2, 2, 10]]

    edit_coco(json_file, edit)
    name = unique("ds_fill")
    report = validate_coco_json(json_file, img_dir, name)
    assert (report.missing_iscrowd, report.missing_area) == ([2, 3], [1, 2, 3])
    fixed = report.eval_json_file
    assert fixed != json_file and fixed.startswith(str(coco_repair.cache_dir() / "fixed_json"))
    anns = json.load(open(fixed))["annotations"]
    assert [a["iscrowd"] for a in anns] == [0, 0, 0]
    assert anns[0]["area"] == anns[1]["area"] == 80.0  # box 10 x 8
    assert 35 <= anns[2]["area"] <= 50  # mask area of the triangle, not the box's 80
    assert json.load(open(json_file))["annotations"][1].get("iscrowd") is None  # the source is untouched

    warnings = [r.getMessage() for r in warnings_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"Dataset '{name}': filled iscrowd on 2 annotations, area on 3" in warnings[0]
    assert fixed in warnings[0] and "DATASETS.MISSING_EVAL_FIELDS error" in warnings[0]
    validate_coco_json(json_file, img_dir, name)  # once per dataset
    assert len([r for r in warnings_log.records if r.levelno == logging.WARNING]) == 1

    # Evaluation reads the fixed copy: a perfect detection per box gives AP 1.0.
    assert coco_bbox_ap(fixed, perfect_detections(fixed)) == pytest.approx(1.0)
    # Training reads it too.
    records = load_validated_coco(json_file, img_dir, name)
    assert all(a["iscrowd"] == 0 for r in records for a in r["annotations"])


def test_fixed_copy_follows_the_source(tmp_path):
    json_file, img_dir = make_coco(tmp_path)
    edit_coco(json_file, strip_fields)
    first = validate_coco_json(json_file, img_dir, unique("ds_src")).eval_json_file
    edit_coco(json_file, lambda d: d["annotations"].pop())  # the source changes: a new copy
    second = validate_coco_json(json_file, img_dir, unique("ds_src")).eval_json_file
    assert second != first and len(json.load(open(second))["annotations"]) == 2
    assert not os.path.exists(first)  # the stale copy is gone
    edit_coco(json_file, lambda d: [a.update(iscrowd=0, area=1.0) for a in d["annotations"]])
    assert validate_coco_json(json_file, img_dir, unique("ds_src")).eval_json_file == json_file


def test_missing_eval_fields_error_mode(tmp_path):
    json_file, img_dir = make_coco(tmp_path)
    edit_coco(json_file, lambda d: d["annotations"][1].pop("area"))
    with pytest.raises(ValueError) as e:
        validate_coco_json(json_file, img_dir, "ds_eval_err", missing_eval_fields="error")
    msg = str(e.value)
    assert f"Dataset 'ds_eval_err': {json_file} lacks fields that COCO evaluation" in msg
    assert "iscrowd is missing on 0 annotations, area on 1 (annotation ids without area: 2)" in msg
    assert "DATASETS.MISSING_EVAL_FIELDS fill" in msg
    with pytest.raises(ValueError, match=re.escape("must be one of ['fill', 'error'], got 'zero'")):
        validate_coco_json(json_file, img_dir, "ds_eval_err", missing_eval_fields="zero")


def test_minimal_dataset_with_every_optional_field_missing(tmp_path, warnings_log):
    """No iscrowd, area, segmentation, info, licenses or supercategory: valid, and evaluable."""
    json_file, img_dir = make_coco(tmp_path)
    edit_coco(json_file, lambda d: strip_fields(d, ("iscrowd", "area", "segmentation"),
                                                ("info", "licenses"), ("supercategory",)))
    assert set(json.load(open(json_file))) == {"images", "annotations", "categories"}
    name = unique("ds_minimal")
    report = validate_coco_json(json_file, img_dir, name, "error", for_training=True,
                                missing_eval_fields="fill", check_images=True)
    assert report.num_invalid == 0 and report.usable_images == 3 and report.missing_info
    fixed = report.eval_json_file
    assert coco_bbox_ap(fixed, perfect_detections(fixed)) == pytest.approx(1.0)
    assert len(load_validated_coco(json_file, img_dir, name)) == 3


def test_missing_info_is_added_when_pycocotools_needs_it(tmp_path, monkeypatch):
    """pycocotools 2.0.9/2.0.10 loadRes reads dataset['info']: probed at run time."""
    json_file, img_dir = make_coco(tmp_path)
    report = validate_coco_json(json_file, img_dir, unique("ds_info"), missing_eval_fields="error")
    assert report.missing_info and report.eval_json_file == json_file  # the installed one does not need it
    monkeypatch.setattr(coco_repair, "loadres_needs_info", lambda: True)
    fixed = validate_coco_json(json_file, img_dir, unique("ds_info")).eval_json_file
    assert fixed != json_file and json.load(open(fixed))["info"] == {}
    with pytest.raises(ValueError, match="no top-level 'info'"):
        validate_coco_json(json_file, img_dir, unique("ds_info"), missing_eval_fields="error")


def test_loadres_probe_matches_the_installed_pycocotools():
    import contextlib
    import io

    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 4, "height": 4}], "annotations": [],
                  "categories": [{"id": 1, "name": "a"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        try:
            gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
            needs = False
        except KeyError:
            needs = True
    assert coco_repair.loadres_needs_info() == needs


# ----------------------------------------------------------------------------- prepare_datasets: new checks


def test_prepare_datasets_fill_reaches_training_and_the_evaluator(tmp_path):
    """Also for datasets registered by others (Detectron2's coco_2017_*): the metadata's
    json_file, read by COCOEvaluator, points at the fixed copy; the loader fills iscrowd."""
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    from frn_det.config.build import build_config
    from frn_det.data import prepare_datasets

    json_file, img_dir = make_coco(tmp_path)
    edit_coco(json_file, strip_fields)
    ours, theirs = unique("fill_ours"), unique("fill_d2")
    register_coco_instances(theirs, {}, json_file, img_dir)
    cfg = build_config("configs/tiny_retinanet_cpu.yaml", [
        "DATASETS.REGISTER_COCO", [(ours, json_file, img_dir)],
        "DATASETS.TRAIN", (ours,), "DATASETS.TEST", (theirs,)])
    for _ in range(2):  # a second call changes nothing
        prepare_datasets(cfg)
        for name in (ours, theirs):
            meta = MetadataCatalog.get(name)
            assert meta.json_file != json_file and meta.source_json_file == json_file
            assert meta.image_root == img_dir and meta.evaluator_type == "coco"
            records = DatasetCatalog.get(name)
            assert len(records) == 3 and all(a["iscrowd"] == 0 for r in records for a in r["annotations"])

    evaluator = COCOEvaluator(theirs, tasks=("bbox",), output_dir=None)
    evaluator.reset()
    for r in DatasetCatalog.get(theirs):
        inst = Instances((H, W))
        x, y, w, h = r["annotations"][0]["bbox"]
        inst.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h]]))
        inst.scores = torch.tensor([0.9])
        inst.pred_classes = torch.tensor([r["annotations"][0]["category_id"]])
        evaluator.process([{"image_id": r["image_id"]}], [{"instances": inst}])
    assert evaluator.evaluate()["bbox"]["AP"] == pytest.approx(100.0)

    # Fixed at the source: the metadata goes back to the user's file.
    edit_coco(json_file, lambda d: [a.update(iscrowd=0, area=80.0) for a in d["annotations"]])
    prepare_datasets(cfg)
    assert MetadataCatalog.get(theirs).json_file == json_file
    assert not hasattr(MetadataCatalog.get(theirs), "source_json_file")


def test_prepare_datasets_missing_eval_fields_error_mode(tmp_path):
    from frn_det.data import prepare_datasets

    name = unique("eval_err")
    json_file, img_dir = make_coco(tmp_path)
    edit_coco(json_file, strip_fields)
    with pytest.raises(ValueError, match=rf"Dataset '{name}': .* lacks fields that COCO evaluation"):
        prepare_datasets(_cfg(name, json_file, img_dir, "DATASETS.MISSING_EVAL_FIELDS", "error"))


def test_prepare_datasets_checks_field_types(tmp_path):
    from frn_det.data import prepare_datasets

    name = unique("types")
    json_file, img_dir = make_coco(tmp_path)
    edit_coco(json_file, setter("images", 0, "width", "32"))
    with pytest.raises(ValueError, match=rf"(?s)Dataset '{name}': .*'images' field 'width'.*position 0 \(id 1\)"):
        prepare_datasets(_cfg(name, json_file, img_dir))


def many_categories(json_file, n):
    edit_coco(json_file, lambda d: d.update(categories=[{"id": i, "name": f"c{i}"} for i in range(1, n + 1)]))


def test_more_categories_than_the_model_has_classes(tmp_path):
    from frn_det.data import prepare_datasets

    name = unique("cats")
    json_file, img_dir = make_coco(tmp_path)
    many_categories(json_file, 6)  # the tiny config has MODEL.RETINANET.NUM_CLASSES 4
    with pytest.raises(ValueError) as e:
        prepare_datasets(_cfg(name, json_file, img_dir))
    msg = str(e.value)
    assert f"Dataset '{name}': {json_file} has 6 categories, but the model has only 4 classes" in msg
    assert "MODEL.META_ARCHITECTURE 'FRNRetinaNet' uses MODEL.RETINANET.NUM_CLASSES" in msg
    assert "MODEL.RETINANET.NUM_CLASSES = 4, MODEL.ROI_HEADS.NUM_CLASSES = 80" in msg
    assert "Set MODEL.RETINANET.NUM_CLASSES 6" in msg
    prepare_datasets(_cfg(name, json_file, img_dir, "MODEL.RETINANET.NUM_CLASSES", 6))
    prepare_datasets(_cfg(name, json_file, img_dir, "MODEL.RETINANET.NUM_CLASSES", 9))  # fewer: fine


def test_test_set_categories_are_checked_too(tmp_path):
    from frn_det.data import prepare_datasets

    train, test = unique("cats_train"), unique("cats_test")
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    train_json, train_dir = make_coco(tmp_path / "train")
    test_json, test_dir = make_coco(tmp_path / "test")
    many_categories(test_json, 5)
    cfg = _cfg(train, train_json, train_dir, "DATASETS.TEST", (test,))
    cfg.DATASETS.REGISTER_COCO.append((test, test_json, test_dir))
    with pytest.raises(ValueError, match=rf"Dataset '{test}': .* has 5 categories, but the model has only 4"):
        prepare_datasets(cfg)


def test_class_count_key_follows_the_meta_architecture():
    from frn_det.config.build import build_config
    from frn_det.data import model_num_classes

    cfg = build_config("configs/tiny_retinanet_cpu.yaml")
    assert model_num_classes(cfg) == ("MODEL.RETINANET.NUM_CLASSES", 4)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    assert model_num_classes(cfg) == ("MODEL.ROI_HEADS.NUM_CLASSES", 3)
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    assert model_num_classes(cfg) == ("MODEL.RETINANET.NUM_CLASSES", 4)


def test_prepare_datasets_checks_images_of_train_and_test_sets(tmp_path):
    from frn_det.data import ImageCheckError, prepare_datasets

    train, test = unique("img_train"), unique("img_test")
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    train_json, train_dir = make_coco(tmp_path / "train")
    test_json, test_dir = make_coco(tmp_path / "test")
    bad = tmp_path / "test" / "images" / "002.jpg"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    Image.new("RGB", (W + 1, H)).save(tmp_path / "test" / "images" / "003.jpg")  # wrong size
    cfg = _cfg(train, train_json, train_dir, "DATASETS.TEST", (test,))
    cfg.DATASETS.REGISTER_COCO.append((test, test_json, test_dir))
    with pytest.raises(ImageCheckError) as e:
        prepare_datasets(cfg)
    msg = str(e.value)
    assert f"Dataset '{test}': 2 of 3 images listed in {test_json}" in msg
    assert f"{bad} (image id 2): does not decode" in msg
    assert f"003.jpg (image id 3): size {W + 1}x{H} on disk but the json says {W}x{H}" in msg
    cfg.DATASETS.CHECK_IMAGES = False
    prepare_datasets(cfg)  # skipped on request
    cfg.DATASETS.CHECK_IMAGES = "no"
    with pytest.raises(ValueError, match="DATASETS.CHECK_IMAGES must be True or False, got 'no'"):
        prepare_datasets(cfg)


def test_test_set_with_other_categories_than_the_training_set_warns(tmp_path, caplog):
    from frn_det.data import datasets, prepare_datasets

    train, test = unique("cat_order_train"), unique("cat_order_test")
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    train_json, train_dir = make_coco(tmp_path / "train")
    test_json, test_dir = make_coco(tmp_path / "test")
    edit_coco(test_json, lambda d: d.update(categories=[{"id": 1, "name": "b"}, {"id": 2, "name": "a"}]))
    cfg = _cfg(train, train_json, train_dir, "DATASETS.TEST", (test,))
    cfg.DATASETS.REGISTER_COCO.append((test, test_json, test_dir))
    log = logging.getLogger(datasets.__name__)  # captured even if a logger above stops propagation
    log.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING, logger=datasets.__name__)
    try:
        prepare_datasets(cfg)
    finally:
        log.removeHandler(caplog.handler)
    msg = " ".join(r.getMessage() for r in caplog.records if r.name == datasets.__name__)
    assert f"Dataset '{test}' has other categories than the training set '{train}'" in msg
    assert "differ at class 0: 'b' vs 'a'" in msg
