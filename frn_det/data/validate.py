"""Validation of COCO-format datasets (instances json + image folder) before any training.

A bad dataset should stop a run at once with an error that names the file, the
offending ids/values and what is allowed, not crash later inside a data loader or
train on garbage boxes. This module runs the checks, once per process and json
version; registration is in datasets.py.

* the json's structure, field types and boxes: coco_schema.py;
* invalid boxes are dropped with one warning, or are an error, per ``invalid_boxes``
  (config key DATASETS.INVALID_BOXES);
* fields that COCO evaluation needs but converters often leave out are filled in a
  fixed copy of the json (coco_repair.py), per ``missing_eval_fields`` (config key
  DATASETS.MISSING_EVAL_FIELDS): "fill" with one warning, or an "error";
* every image decodes and has the json's size (image_check.py; DATASETS.CHECK_IMAGES).
"""
import logging
import os
from typing import Dict, List, Optional, Tuple

from .coco_repair import drop_invalid_boxes, needs_fixed_json, needs_info, write_fixed_json
from .coco_schema import (
    ANNOTATION_FILE,
    BOX_TOLERANCE,
    IMAGE_FOLDER,
    ValidationReport,
    check_dataset_path,
    few,
    inspect_coco_json,
)

logger = logging.getLogger(__name__)

INVALID_BOXES_CHOICES = ("drop", "error")
MISSING_EVAL_FIELDS_CHOICES = ("fill", "error")


def check_invalid_boxes_setting(value: str) -> str:
    if value not in INVALID_BOXES_CHOICES:
        raise ValueError(
            f"DATASETS.INVALID_BOXES must be one of {list(INVALID_BOXES_CHOICES)}, got {value!r}"
        )
    return value


def check_missing_eval_fields_setting(value: str) -> str:
    if value not in MISSING_EVAL_FIELDS_CHOICES:
        raise ValueError(
            f"DATASETS.MISSING_EVAL_FIELDS must be one of {list(MISSING_EVAL_FIELDS_CHOICES)}, got {value!r}"
        )
    return value


# (json path, mtime, size, image_root, name) -> report: prepare_datasets and the dataset
# loader both validate, and a large json should be read for that once per process.
_CACHE: Dict[tuple, ValidationReport] = {}
_WARNED = set()  # cache keys whose "dropping boxes" / "filled fields" warning was logged already
_IMAGES_OK = set()  # (json path, mtime, size, image_root) whose images passed the image check


def _missing_fields_summary(report: ValidationReport, verb: str) -> str:
    """E.g. 'filled iscrowd on 3 annotations, area on 5 (annotation ids without iscrowd: 1, 2, 3; ...)'."""
    ids = "; ".join(f"without {fld}: {few(getattr(report, 'missing_' + fld))}" for fld in ("iscrowd", "area")
                    if getattr(report, "missing_" + fld))
    return (f"{verb} iscrowd on {len(report.missing_iscrowd)} annotations, area on {len(report.missing_area)} "
            f"(annotation ids {ids})")


def validate_coco_json(json_file: str, image_root: str, name: str, invalid_boxes: str = "drop",
                       for_training: bool = False, missing_eval_fields: str = "fill",
                       check_images: bool = False, image_workers: Optional[int] = None) -> ValidationReport:
    """Checks a COCO instances json and its image folder; returns a report of invalid boxes.

    Raises FileNotFoundError / ValueError with a message naming the file and offending
    ids. Invalid boxes raise with invalid_boxes="error"; with "drop" they are logged once
    (per process and file) and the caller removes them (see `drop_invalid_boxes`).
    for_training: also fail when no image has a valid annotation left to train on.
    missing_eval_fields: "fill" writes a copy of the json with the missing iscrowd/area
    (see `write_fixed_json`; report.eval_json_file names it), "error" raises.
    check_images: also decode every image and compare its size (`check_dataset_images`).
    """
    check_invalid_boxes_setting(invalid_boxes)
    check_missing_eval_fields_setting(missing_eval_fields)
    json_file, image_root = str(json_file), str(image_root)
    check_dataset_path(name, json_file, ANNOTATION_FILE)
    check_dataset_path(name, image_root, IMAGE_FOLDER)
    st = os.stat(json_file)
    key = (os.path.abspath(json_file), st.st_mtime_ns, st.st_size, os.path.abspath(image_root), name)
    if key not in _CACHE:
        _CACHE[key] = inspect_coco_json(json_file, image_root, name)
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
    _handle_missing_eval_fields(report, key, missing_eval_fields)
    if check_images:
        check_dataset_images(report, workers=image_workers)
    return report


def _handle_missing_eval_fields(report: ValidationReport, key: tuple, mode: str) -> None:
    """Raises (error mode) or writes the fixed copy and sets report.eval_json_file (fill)."""
    name, json_file = report.name, report.json_file
    info_needed = needs_info(report)
    if mode == "error" and (report.missing_iscrowd or report.missing_area or info_needed):
        what = []
        if report.missing_iscrowd or report.missing_area:
            summary = _missing_fields_summary(report, "missing").replace("missing iscrowd on", "iscrowd is missing on")
            what.append(f"of its {report.num_annotations} annotations, {summary}")
        if info_needed:
            what.append("no top-level 'info' (the installed pycocotools' COCO.loadRes needs one)")
        raise ValueError(
            f"Dataset {name!r}: {json_file} lacks fields that COCO evaluation (pycocotools COCOeval) needs, "
            f"so evaluation would crash after training: {'; '.join(what)}. Allowed: every annotation has "
            "'iscrowd' (0 or 1) and 'area' (the mask's pixel area, or the box's width*height). Add them, or "
            "set DATASETS.MISSING_EVAL_FIELDS fill to have frn-det write a fixed copy of the json."
        )
    if not needs_fixed_json(report):
        report.eval_json_file = json_file
        return
    report.eval_json_file = write_fixed_json(json_file)
    if (key, "fill") in _WARNED:
        return
    _WARNED.add((key, "fill"))
    done = []
    if report.missing_iscrowd or report.missing_area:
        done.append(_missing_fields_summary(report, "filled") + " (iscrowd 0; area of the segmentation "
                    "mask, or of the box width*height without one)")
    if info_needed:
        done.append("added an empty 'info' (the installed pycocotools' COCO.loadRes needs one)")
    if report.float_sizes:
        done.append(f"wrote width/height as integers on {len(report.float_sizes)} images "
                    f"(image ids {few(report.float_sizes)}; 640.0 -> 640)")
    logger.warning(
        "Dataset %r: %s in a copy of %s that training and COCO evaluation read: %s.%s",
        name, "; ".join(done), json_file, report.eval_json_file,
        " Set DATASETS.MISSING_EVAL_FIELDS error to stop instead." if mode == "fill"
        and (report.missing_iscrowd or report.missing_area or info_needed) else "",
    )


def check_dataset_images(report: ValidationReport, workers: Optional[int] = None, progress: bool = True):
    """Decodes every image of a validated dataset and compares its size with the json's
    (image_check.check_images, cached on disk); raises ImageCheckError naming the files.
    Done once per process and json version."""
    from .image_check import check_images

    key = (os.path.abspath(report.json_file), *_stat_key(report.json_file), os.path.abspath(report.image_root))
    if key in _IMAGES_OK:
        return None
    images = [(i, os.path.join(report.image_root, f), w, h) for i, f, w, h in report.images]
    stats = check_images(images, report.name, report.json_file, image_root=report.image_root,
                         workers=workers, progress=progress)
    _IMAGES_OK.add(key)
    return stats


def _stat_key(path: str) -> Tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def load_validated_coco(json_file: str, image_root: str, name: str, invalid_boxes: str = "drop",
                        missing_eval_fields: str = "fill") -> List[dict]:
    """Detectron2 records of a validated COCO json (its fixed copy where fields were
    filled), without the invalid boxes."""
    from detectron2.data.datasets import load_coco_json

    report = validate_coco_json(json_file, image_root, name, invalid_boxes, missing_eval_fields=missing_eval_fields)
    return drop_invalid_boxes(load_coco_json(report.eval_json_file or str(json_file), str(image_root), name))
