"""The schema of a COCO instances json and its paths: what a dataset must look like.

* structural problems (missing files or keys, invalid JSON, annotations pointing at
  unknown images/categories, image files missing from the folder) are errors;
* field types are checked (ids, category_id: int; width/height: positive int; bbox:
  4 numbers; iscrowd 0/1, area a number >= 0, segmentation polygons or RLE when
  present; categories' name a string). A bool is not an int here. A width/height
  that is a float with an integer value (640.0) is accepted, as Detectron2's size
  check compares with ==, and written as an int in the fixed copy (coco_repair.py);
* invalid boxes (non-finite, non-positive width/height, outside the image by more
  than BOX_TOLERANCE px) are found by `box_problem`; what happens to them is
  validate.py's choice (DATASETS.INVALID_BOXES).

`inspect_coco_json` reads a json once into a ValidationReport: what is invalid or missing.
"""
import json
import math
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

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
    num_categories: int = 0
    category_names: List[str] = field(default_factory=list)  # in id order: class 0, 1, ... in Detectron2
    missing_iscrowd: List[int] = field(default_factory=list)  # annotation ids
    missing_area: List[int] = field(default_factory=list)  # annotation ids
    missing_info: bool = False  # no top-level 'info' (pycocotools 2.0.9/2.0.10 loadRes needs one)
    float_sizes: List[int] = field(default_factory=list)  # image ids with width/height like 640.0
    without_masks: List[int] = field(default_factory=list)  # annotation ids with no segmentation
    # (image id, file_name, width, height) per image: what the image check needs.
    images: List[tuple] = field(default_factory=list, repr=False, compare=False)
    # The json that training and evaluation should read: json_file, or its fixed copy.
    eval_json_file: Optional[str] = None


    @property
    def num_invalid(self) -> int:
        return sum(len(ids) for ids in self.invalid.values())

    def invalid_summary(self) -> str:
        """E.g. '2 with width or height <= 0 (annotation ids 4, 7); 1 with NaN/inf values (...)'."""
        return "; ".join(
            f"{len(ids)} {reason} (annotation ids {few(ids)})" for reason, ids in self.invalid.items() if ids
        )


def few(values: Iterable, n: int = _SHOW) -> str:
    values = list(values)
    more = f", ... (+{len(values) - n} more)" if len(values) > n else ""
    return ", ".join(map(str, values[:n])) + more


class DatasetPathError(FileNotFoundError):
    """A dataset path that is missing, a folder where a file is expected (or the reverse),
    or unreadable; the message names the dataset, the key, the path and what is expected."""


class PathKind(NamedTuple):
    """What a dataset path must be, in the words of the error messages."""

    label: str
    expected: str
    folder: bool


ANNOTATION_FILE = PathKind("annotation file", "a readable COCO instances json file", folder=False)
IMAGE_FOLDER = PathKind("image folder", "a readable folder holding the json's images", folder=True)


def path_problem(path: str, folder: bool) -> Optional[str]:
    """Why `path` is not a readable file (folder=False) or folder, in words; None when it is."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "does not exist"
    except OSError as e:  # e.g. a symlink loop, a folder on the way without permission
        return f"cannot be read ({e.strerror})"
    if folder != stat.S_ISDIR(st.st_mode):
        return "is a file, not a folder" if folder else "is a folder, not a file"
    try:
        if folder:
            os.listdir(path)
        else:
            with open(path, "rb"):
                pass
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    return None


def check_dataset_path(name: str, path, kind: PathKind = ANNOTATION_FILE, key: Optional[str] = None) -> None:
    """DatasetPathError unless `path` is what `kind` (ANNOTATION_FILE, IMAGE_FOLDER) expects.
    `key`: the config key that set the path (None: a dataset registered by Detectron2 or
    another library; the message then says where Detectron2 reads COCO 2017 from)."""
    what, expected, folder = kind
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise DatasetPathError(f"Dataset {name!r}: {what} {path!r}{_set_by(key)} is not a path; expected {expected}")
    problem = path_problem(str(path), folder)
    if problem is None:
        return
    message = f"Dataset {name!r}: {what} {path} {problem}{_set_by(key)}; expected {expected}"
    if key is None and problem == "does not exist":
        root = os.environ.get("DETECTRON2_DATASETS")
        message += (
            ". Detectron2's COCO datasets are read from "
            "$DETECTRON2_DATASETS/coco/annotations/instances_train2017.json with images in "
            "$DETECTRON2_DATASETS/coco/train2017/ (val2017 likewise); DETECTRON2_DATASETS is "
            + (f"{root!r}" if root else "not set, so 'datasets' relative to the working directory is used")
            + ". Register other COCO-format files with "
            "DATASETS.REGISTER_COCO \"[('name', 'instances.json', 'images/')]\"."
        )
    raise DatasetPathError(message)


def _set_by(key: Optional[str]) -> str:
    return f" (set by {key})" if key else ""


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


# ----------------------------------------------------------------------------- field types


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # JSON true/false are not ids


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_size(v) -> bool:
    """A positive int; a float with an integer value (640.0) is accepted too."""
    if _is_int(v):
        return v >= 1
    return isinstance(v, float) and math.isfinite(v) and v.is_integer() and v >= 1


_NUMBER_TYPES = frozenset((int, float))  # exact types: bool is excluded
_INT_TYPES = frozenset((int,))


def _all_numbers(values: list) -> bool:
    """Like all(_is_number(x) for x in values), in C: COCO's polygons have ~40M coordinates."""
    return all(map(_NUMBER_TYPES.__contains__, map(type, values)))


def _is_bbox(v) -> bool:
    # Finiteness is not checked here: NaN/inf boxes are invalid boxes (INVALID_BOXES).
    return isinstance(v, list) and len(v) == 4 and _all_numbers(v)


def _is_segmentation(v) -> bool:
    """Polygons [[x1, y1, x2, y2, x3, y3, ...], ...], an RLE {"counts", "size": [h, w]}, or empty.

    A polygon needs an even count of >= 6 numbers (3 points): Detectron2's load_coco_json
    drops an instance whose polygons all fail that, box included, with one warning, while
    COCOeval still counts it: a silently different training set."""
    if v is None or v == []:
        return True  # no mask: fine for box training and bbox evaluation
    if isinstance(v, list):
        return all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and _all_numbers(p) for p in v)
    if isinstance(v, dict):
        size, counts = v.get("size"), v.get("counts")
        return (isinstance(size, list) and len(size) == 2 and all(_is_int(x) and x >= 0 for x in size)
                and (isinstance(counts, str) or (isinstance(counts, list)
                                                 and all(map(_INT_TYPES.__contains__, map(type, counts))))))
    return False


_INT = "an integer (not a string, float or bool)"
# section -> (field, required, check, what is allowed). Required fields are known to be
# present (checked before); optional ones are checked only where present.
_FIELD_TYPES: Dict[str, List[Tuple[str, bool, Callable, str]]] = {
    "images": [
        ("id", True, _is_int, _INT),
        ("file_name", True, lambda v: isinstance(v, str) and v != "",
         "a non-empty string: the path in the image folder"),
        ("width", True, _is_size, "a positive integer (a float with an integer value such as 640.0 is accepted)"),
        ("height", True, _is_size, "a positive integer (a float with an integer value such as 480.0 is accepted)"),
    ],
    "annotations": [
        ("id", True, _is_int, _INT),
        ("image_id", True, _is_int, _INT),
        ("category_id", True, _is_int, _INT),
        ("bbox", True, _is_bbox, "a list of 4 numbers [x, y, width, height]"),
        ("iscrowd", False, lambda v: _is_int(v) and v in (0, 1), "0 or 1 (an integer), or no 'iscrowd' key"),
        ("area", False, lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
         "a finite number >= 0, or no 'area' key (then it is filled, see DATASETS.MISSING_EVAL_FIELDS)"),
        ("segmentation", False, _is_segmentation,
         "polygons [[x1, y1, x2, y2, x3, y3, ...], ...] (each an even count of >= 6 numbers: 3 points or more), "
         "an RLE {'counts': ..., 'size': [height, width]}, [] or null"),
        ("ignore", False, lambda v: v == 0,
         "0 or no 'ignore' key: Detectron2 does not support ignored annotations; mark such regions iscrowd 1"),
    ],
    "categories": [
        ("id", True, _is_int, _INT),
        ("name", True, lambda v: isinstance(v, str), "a string"),
    ],
}


def _json_text(v, limit: int = 60) -> str:
    """A value as it is written in the json (NaN/Infinity as Python's json writes them)."""
    try:
        text = json.dumps(v)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_JSON_TYPE = {bool: "a bool", str: "a string", int: "an integer", float: "a float", list: "a list",
              dict: "an object"}


def _show_value(v) -> str:
    """E.g. '"640" (a string)', 'true (a bool)', 'null'."""
    return "null" if v is None else f"{_json_text(v)} ({_JSON_TYPE.get(type(v), type(v).__name__)})"


def _check_types(data: dict, name: str, json_file: str) -> None:
    """One ValueError listing every field of the wrong type: entry, value, what is allowed."""
    problems = []
    for key, rules in _FIELD_TYPES.items():
        entries = data[key]
        for fld, required, ok, allowed in rules:
            bad = [(i, e) for i, e in enumerate(entries) if (required or fld in e) and not ok(e[fld])]
            if not bad:
                continue
            examples = "; ".join(
                f"position {i} (id {_json_text(e.get('id'), 30)}): {_show_value(e[fld])}"
                for i, e in bad[:_SHOW]
            )
            more = f"; ... (+{len(bad) - _SHOW} more)" if len(bad) > _SHOW else ""
            problems.append(f"  - {key!r} field {fld!r}: {len(bad)} of {len(entries)} entries, e.g. {examples}"
                            f"{more}. Allowed: {allowed}")
    if problems:
        raise ValueError(
            f"Dataset {name!r}: {json_file} has fields of the wrong type (positions count from 0 in each list):\n"
            + "\n".join(problems)
        )


def _read_json(json_file: str, name: str) -> dict:
    try:
        with open(json_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"Dataset {name!r}: {json_file} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except UnicodeDecodeError as e:
        raise ValueError(f"Dataset {name!r}: {json_file} is not UTF-8 text (JSON): {e}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"Dataset {name!r}: {json_file} must hold a JSON object with keys "
            f"'images', 'annotations', 'categories', got a {type(data).__name__}"
        )
    for key, fields in _REQUIRED_FIELDS.items():
        if key not in data:
            raise ValueError(
                f"Dataset {name!r}: {json_file} has no {key!r} key; a COCO instances json needs "
                f"'images', 'annotations' and 'categories' (found keys: {few(sorted(data), 10)})"
            )
        if not isinstance(data[key], list):
            raise ValueError(f"Dataset {name!r}: {json_file}: {key!r} must be a list, got {type(data[key]).__name__}")
        bad = [i for i, e in enumerate(data[key]) if not isinstance(e, dict) or any(f not in e for f in fields)]
        if bad:
            raise ValueError(
                f"Dataset {name!r}: {json_file}: {len(bad)} entries of {key!r} lack one of the required "
                f"fields {list(fields)} (entries at positions {few(bad)})"
            )
    _check_types(data, name, json_file)
    for key in _REQUIRED_FIELDS:
        ids = [e["id"] for e in data[key]]
        if len(set(ids)) != len(ids):
            dups = [i for i, n in Counter(ids).items() if n > 1]
            raise ValueError(f"Dataset {name!r}: {json_file}: ids in {key!r} must be unique; repeated: {few(dups)}")
    return data


def _unknown_refs(name, json_file, anns, field, known, where) -> None:
    bad = [a for a in anns if a[field] not in known]
    if bad:
        pairs = ", ".join(f"id {a['id']} -> {field} {a[field]!r}" for a in bad[:_SHOW])
        raise ValueError(
            f"Dataset {name!r}: {json_file}: {len(bad)} annotation(s) with a {field} value not in {where!r} "
            f"({pairs}{', ...' if len(bad) > _SHOW else ''}). Allowed: the ids in {where!r}: "
            f"{few(sorted(known, key=str), 10)}"
        )


def inspect_coco_json(json_file: str, image_root: str, name: str) -> ValidationReport:
    """Reads the json, raises on structural problems, and finds the invalid boxes."""
    data = _read_json(json_file, name)
    images, anns = data["images"], data["annotations"]

    _unknown_refs(name, json_file, anns, "image_id", {i["id"] for i in images}, "images")
    _unknown_refs(name, json_file, anns, "category_id", {c["id"] for c in data["categories"]}, "categories")

    missing = [os.path.join(image_root, i["file_name"]) for i in images
               if not os.path.exists(os.path.join(image_root, i["file_name"]))]
    if missing:
        raise FileNotFoundError(
            f"Dataset {name!r}: {len(missing)} of {len(images)} images listed in {json_file} are missing "
            f"from {image_root}: {few(missing, 3)}"
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
    return ValidationReport(
        name, json_file, image_root, len(images), len(anns), len(usable), invalid,
        num_categories=len(data["categories"]),
        category_names=[c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])],
        missing_iscrowd=[a["id"] for a in anns if "iscrowd" not in a],
        missing_area=[a["id"] for a in anns if "area" not in a],
        missing_info="info" not in data,
        float_sizes=[i["id"] for i in images if isinstance(i["width"], float) or isinstance(i["height"], float)],
        without_masks=[a["id"] for a in anns if not a.get("segmentation")],
        images=[(i["id"], i["file_name"], i["width"], i["height"]) for i in images],
    )


def check_masks_for_mask_model(report: ValidationReport, asked_by: str) -> None:
    """A model that predicts masks (MODEL.MASK_ON) trains on every annotation's mask and is
    scored on them (COCOeval segm): an annotation without one would stop training at the
    first batch that holds it, or evaluation after training. Raises naming the dataset,
    the json, the annotations and what asked for masks (`asked_by`)."""
    if report.without_masks:
        raise ValueError(
            f"Dataset {report.name!r}: {report.json_file} has {len(report.without_masks)} of "
            f"{report.num_annotations} annotations without a 'segmentation' (annotation ids "
            f"{few(report.without_masks, 5)}), but {asked_by}: Mask R-CNN trains on and is "
            "evaluated on every annotation's mask. Give each annotation polygons or an RLE, or use a "
            "model without a mask head (e.g. MODEL.MASK_ON False, or in the sweep model=tiny_faster_rcnn_cpu)"
        )
