"""Validation of COCO-format datasets (instances json + image folder) before any training.

A bad dataset should stop a run at once with an error that names the file, the
offending ids/values and what is allowed, not crash later inside a data loader or
train on garbage boxes. Only this module's checks live here; registration is in
datasets.py.

* structural problems (missing files or keys, invalid JSON, annotations pointing at
  unknown images/categories, image files missing from the folder) are always errors;
* invalid boxes (non-finite, non-positive width/height, outside the image by more
  than BOX_TOLERANCE px) are dropped with one warning, or are an error, per
  ``invalid_boxes`` (config key DATASETS.INVALID_BOXES).
"""
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

logger = logging.getLogger(__name__)

INVALID_BOXES_CHOICES = ("drop", "error")
BOX_TOLERANCE = 1.0  # px a box may stick out of its image (rounding in converters)
_SHOW = 5  # offending ids/values shown per error message

# Box problems, in the order they are checked; an annotation counts for the first only.
NON_FINITE = "with NaN/inf values"
NON_POSITIVE = "with width or height <= 0"
OUTSIDE = f"outside the image by more than {BOX_TOLERANCE:g} px"

_REQUIRED_FIELDS = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


@dataclass
class ValidationReport:
    name: str
    json_file: str
    image_root: str
    num_images: int
    num_annotations: int
    usable_images: int  # images with at least one valid, non-crowd annotation
    invalid: Dict[str, List[int]]  # box problem -> ids of the annotations that have it

    @property
    def num_invalid(self) -> int:
        return sum(len(ids) for ids in self.invalid.values())

    def invalid_summary(self) -> str:
        """E.g. '2 with width or height <= 0 (annotation ids 4, 7); 1 with NaN/inf values (...)'."""
        return "; ".join(
            f"{len(ids)} {reason} (annotation ids {_few(ids)})" for reason, ids in self.invalid.items() if ids
        )


def _few(values: Iterable, n: int = _SHOW) -> str:
    values = list(values)
    more = f", ... (+{len(values) - n} more)" if len(values) > n else ""
    return ", ".join(map(str, values[:n])) + more


def check_invalid_boxes_setting(value: str) -> str:
    if value not in INVALID_BOXES_CHOICES:
        raise ValueError(
            f"DATASETS.INVALID_BOXES must be one of {list(INVALID_BOXES_CHOICES)}, got {value!r}"
        )
    return value


def check_exists(name: str, what: str, path: str) -> None:
    """FileNotFoundError naming the path and where Detectron2 expects COCO 2017."""
    if os.path.exists(path):
        return
    root = os.environ.get("DETECTRON2_DATASETS")
    raise FileNotFoundError(
        f"Dataset {name!r}: {what} {path} does not exist. Detectron2's COCO datasets are read from "
        "$DETECTRON2_DATASETS/coco/annotations/instances_train2017.json with images in "
        "$DETECTRON2_DATASETS/coco/train2017/ (val2017 likewise); DETECTRON2_DATASETS is "
        + (f"{root!r}" if root else "not set, so 'datasets' relative to the working directory is used")
        + ". Register other COCO-format files with "
        "DATASETS.REGISTER_COCO \"[('name', 'instances.json', 'images/')]\"."
    )


def box_problem(bbox, width, height) -> Optional[str]:
    """Why an XYWH box is unusable in a width x height image, or None if it is fine."""
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return NON_FINITE
    if w <= 0 or h <= 0:
        return NON_POSITIVE
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return OUTSIDE
    return None


def _read_json(json_file: str, name: str) -> dict:
    try:
        with open(json_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"Dataset {name!r}: {json_file} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"Dataset {name!r}: {json_file} must hold a JSON object with keys "
            f"'images', 'annotations', 'categories', got a {type(data).__name__}"
        )
    for key, fields in _REQUIRED_FIELDS.items():
        if key not in data:
            raise ValueError(
                f"Dataset {name!r}: {json_file} has no {key!r} key; a COCO instances json needs "
                f"'images', 'annotations' and 'categories' (found keys: {_few(sorted(data), 10)})"
            )
        if not isinstance(data[key], list):
            raise ValueError(f"Dataset {name!r}: {json_file}: {key!r} must be a list, got {type(data[key]).__name__}")
        bad = [i for i, e in enumerate(data[key]) if not isinstance(e, dict) or any(f not in e for f in fields)]
        if bad:
            raise ValueError(
                f"Dataset {name!r}: {json_file}: {len(bad)} entries of {key!r} lack one of the required "
                f"fields {list(fields)} (entries at positions {_few(bad)})"
            )
        ids = [e["id"] for e in data[key]]
        if len(set(ids)) != len(ids):
            dups = [i for i, n in Counter(ids).items() if n > 1]
            raise ValueError(f"Dataset {name!r}: {json_file}: ids in {key!r} must be unique; repeated: {_few(dups)}")
    return data


def _unknown_refs(name, json_file, anns, field, known, where) -> None:
    bad = [a for a in anns if a[field] not in known]
    if bad:
        pairs = ", ".join(f"id {a['id']} -> {field} {a[field]!r}" for a in bad[:_SHOW])
        raise ValueError(
            f"Dataset {name!r}: {json_file}: {len(bad)} annotation(s) with a {field} value not in {where!r} "
            f"({pairs}{', ...' if len(bad) > _SHOW else ''}). Allowed: the ids in {where!r}: "
            f"{_few(sorted(known, key=str), 10)}"
        )


def _inspect(json_file: str, image_root: str, name: str) -> ValidationReport:
    """Reads the json, raises on structural problems, and finds the invalid boxes."""
    data = _read_json(json_file, name)
    images, anns = data["images"], data["annotations"]

    _unknown_refs(name, json_file, anns, "image_id", {i["id"] for i in images}, "images")
    _unknown_refs(name, json_file, anns, "category_id", {c["id"] for c in data["categories"]}, "categories")
    bad_bbox = [a["id"] for a in anns if not isinstance(a["bbox"], list) or len(a["bbox"]) != 4
                or not all(isinstance(v, (int, float)) for v in a["bbox"])]
    if bad_bbox:
        raise ValueError(
            f"Dataset {name!r}: {json_file}: {len(bad_bbox)} annotations have a 'bbox' that is not a list "
            f"of 4 numbers [x, y, width, height] (annotation ids {_few(bad_bbox)})"
        )

    missing = [os.path.join(image_root, i["file_name"]) for i in images
               if not os.path.exists(os.path.join(image_root, i["file_name"]))]
    if missing:
        raise FileNotFoundError(
            f"Dataset {name!r}: {len(missing)} of {len(images)} images listed in {json_file} are missing "
            f"from {image_root}: {_few(missing, 3)}"
        )

    sizes = {i["id"]: (i["width"], i["height"]) for i in images}
    invalid = {NON_FINITE: [], NON_POSITIVE: [], OUTSIDE: []}
    usable = set()
    for a in anns:
        problem = box_problem(a["bbox"], *sizes[a["image_id"]])
        if problem:
            invalid[problem].append(a["id"])
        elif not a.get("iscrowd", 0):
            usable.add(a["image_id"])
    return ValidationReport(name, json_file, image_root, len(images), len(anns), len(usable), invalid)


# (json path, mtime, size, image_root, name) -> report: prepare_datasets and the dataset
# loader both validate, and a large json should be read for that once per process.
_CACHE: Dict[tuple, ValidationReport] = {}
_WARNED = set()  # cache keys whose "dropping boxes" warning was logged already


def validate_coco_json(json_file: str, image_root: str, name: str, invalid_boxes: str = "drop",
                       for_training: bool = False) -> ValidationReport:
    """Checks a COCO instances json and its image folder; returns a report of invalid boxes.

    Raises FileNotFoundError / ValueError with a message naming the file and offending
    ids. Invalid boxes raise with invalid_boxes="error"; with "drop" they are logged once
    (per process and file) and the caller removes them (see `drop_invalid_boxes`).
    for_training: also fail when no image has a valid annotation left to train on.
    """
    check_invalid_boxes_setting(invalid_boxes)
    json_file, image_root = str(json_file), str(image_root)
    check_exists(name, "annotation file", json_file)
    check_exists(name, "image folder", image_root)
    st = os.stat(json_file)
    key = (os.path.abspath(json_file), st.st_mtime_ns, st.st_size, os.path.abspath(image_root), name)
    if key not in _CACHE:
        _CACHE[key] = _inspect(json_file, image_root, name)
    report = _CACHE[key]

    if report.num_images == 0:
        raise ValueError(f"Dataset {name!r}: {json_file} lists no images; there is nothing to train or test on")
    if report.num_invalid:
        if invalid_boxes == "error":
            raise ValueError(
                f"Dataset {name!r}: {json_file} has {report.num_invalid} of {report.num_annotations} "
                f"annotations with invalid boxes: {report.invalid_summary()}. Boxes must be finite "
                f"[x, y, width, height] with width, height > 0 inside the image (±{BOX_TOLERANCE:g} px). "
                "Fix the file, or set DATASETS.INVALID_BOXES drop to skip these boxes."
            )
        if key not in _WARNED:
            _WARNED.add(key)
            logger.warning(
                "Dataset %r: dropping %d of %d annotations with invalid boxes from %s: %s. "
                "Set DATASETS.INVALID_BOXES error to stop instead.",
                name, report.num_invalid, report.num_annotations, json_file, report.invalid_summary(),
            )
    if for_training and report.usable_images == 0:
        raise ValueError(
            f"Dataset {name!r} is used for training, but none of the {report.num_images} images in "
            f"{json_file} has a valid non-crowd annotation ({report.num_annotations} annotations, "
            f"{report.num_invalid} with invalid boxes)"
        )
    return report


def drop_invalid_boxes(records: List[dict]) -> List[dict]:
    """Removes the annotations whose boxes `box_problem` rejects from Detectron2 records.

    Uses the same check as the validation on the records' own bbox/width/height, so
    exactly the reported annotations go (records carry no annotation ids).
    """
    for r in records:
        if "annotations" in r:
            r["annotations"] = [a for a in r["annotations"] if not box_problem(a["bbox"], r["width"], r["height"])]
    return records


def load_validated_coco(json_file: str, image_root: str, name: str, invalid_boxes: str = "drop") -> List[dict]:
    """Detectron2 records of a validated COCO json, without the invalid boxes."""
    from detectron2.data.datasets import load_coco_json

    validate_coco_json(json_file, image_root, name, invalid_boxes)
    return drop_invalid_boxes(load_coco_json(str(json_file), str(image_root), name))
