"""Repair of a validated COCO json: what training and COCO evaluation need filled in.

Fields that COCO evaluation (pycocotools COCOeval) needs but converters often leave out
(annotations' ``iscrowd`` and ``area``; ``info`` for pycocotools 2.0.9/2.0.10) and
float image sizes (640.0) are written into a fixed copy of the json (`write_fixed_json`,
iscrowd 0, area of the segmentation mask or of the box w*h without one); Detectron2
records of a json validated in drop/fill mode get the same fixes and lose their invalid
boxes (`fix_records`). The source json is never changed.
"""
import contextlib
import functools
import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import List

from ..utils.atomic import write_atomic
from ..utils.damaged import Damaged, read_or_set_aside
from ..utils.paths import cache_dir
from .coco_schema import ValidationReport, box_problem

FIXED_JSON_VERSION = 1  # bump when the fixed copy's content changes


@functools.lru_cache(maxsize=None)
def loadres_needs_info() -> bool:
    """Whether the installed pycocotools' COCO.loadRes fails without a top-level 'info'.

    pycocotools 2.0.9 and 2.0.10 copy dataset['info'] in loadRes (KeyError without
    one); earlier and later versions do not need it. Probed, not version-parsed.
    """
    try:
        from pycocotools.coco import COCO
    except ImportError:
        return False
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": 1}], "annotations": [], "categories": []}
        gt.createIndex()
        try:
            gt.loadRes([])
        except KeyError as e:
            return e.args == ("info",)
        except Exception:  # noqa: BLE001  an empty result list fails later on (anns[0]): info was not needed
            return False
    return False


def coco_area(ann: dict, width: int, height: int) -> float:
    """COCO's area of an annotation: its mask's pixel count if it has a usable
    segmentation (pycocotools mask.area), else its box's width * height."""
    segm = ann.get("segmentation")
    try:
        if segm:
            from pycocotools import mask as mask_util

            if isinstance(segm, dict):
                rle = mask_util.frPyObjects(segm, *segm["size"]) if isinstance(segm["counts"], list) else segm
                return float(mask_util.area(rle))
            polys = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]  # as Detectron2 keeps them
            if polys:
                return float(mask_util.area(mask_util.merge(mask_util.frPyObjects(polys, int(height), int(width)))))
    except Exception:  # noqa: BLE001  a malformed mask: fall back to the box
        pass
    w, h = float(ann["bbox"][2]), float(ann["bbox"][3])
    area = w * h
    return area if math.isfinite(area) and w > 0 and h > 0 else 0.0


def fixed_json_path(json_file: str) -> Path:
    """cache_dir()/fixed_json/<stem>-<hash of path>-<hash of mtime, size>.json."""
    src = os.path.abspath(json_file)
    st = os.stat(src)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(src).stem)[:40]
    version = hashlib.sha1(f"{st.st_mtime_ns}:{st.st_size}:{FIXED_JSON_VERSION}".encode()).hexdigest()[:12]
    return cache_dir() / "fixed_json" / f"{stem}-{hashlib.sha1(src.encode()).hexdigest()[:12]}-{version}.json"


def write_fixed_json(json_file: str) -> str:
    """A copy of json_file with what training and COCO evaluation need filled in.

    iscrowd 0 and `coco_area` where missing, integer width/height (640.0 -> 640), empty
    'info'/'licenses' where missing. Written once per source version (path, mtime, size)
    into cache_dir()/fixed_json/; older copies of the same source are removed.
    """
    out = fixed_json_path(json_file)
    if _usable_copy(out):
        return str(out)
    with open(json_file) as f:
        data = json.load(f)
    sizes = {}
    for img in data["images"]:
        for k in ("width", "height"):
            if isinstance(img[k], float):
                img[k] = int(img[k])
        sizes[img["id"]] = (img["width"], img["height"])
    for a in data["annotations"]:
        if "iscrowd" not in a:
            a["iscrowd"] = 0
        if "area" not in a:
            a["area"] = coco_area(a, *sizes[a["image_id"]])
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))

    write_atomic(out, write)  # one process per GPU may write it at the same time; a kill leaves none
    prefix = out.name.rsplit("-", 1)[0] + "-"
    for old in out.parent.glob(prefix + "*.json"):
        if old != out:
            with contextlib.suppress(OSError):
                old.unlink()
    return str(out)


_CHECKED = set()  # (path, mtime_ns, size) of fixed copies that parsed in this process


def _parse_fixed(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise Damaged("not a COCO json: expected an object with 'images' and 'annotations' lists")
    return data


def _usable_copy(path: Path) -> bool:
    """Whether the fixed copy exists and parses (once per process and file state): a damaged
    one is set aside and written again before training, not found by the evaluator after it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    state = (str(path), st.st_mtime_ns, st.st_size)
    if state not in _CHECKED:
        if read_or_set_aside(path, _parse_fixed, "writing it again from the source json") is None:
            return False
        _CHECKED.add(state)
    return True


def needs_info(report: ValidationReport) -> bool:
    """Whether the json lacks a top-level 'info' that the installed pycocotools needs."""
    return report.missing_info and loadres_needs_info()


def needs_fixed_json(report: ValidationReport) -> bool:
    """Whether training/evaluation must read a fixed copy (missing fields, 640.0 sizes)."""
    return bool(report.missing_iscrowd or report.missing_area or report.float_sizes or needs_info(report))


def needs_record_fixes(report: ValidationReport) -> bool:
    """Whether Detectron2 records loaded from the report's json need fix_records."""
    return bool(report.num_invalid or report.missing_iscrowd or report.float_sizes)


def drop_invalid_boxes(records: List[dict]) -> List[dict]:
    """Removes the annotations whose boxes `box_problem` rejects from Detectron2 records.

    Uses the same check as the validation on the records' own bbox/width/height, so
    exactly the reported annotations go (records carry no annotation ids).
    """
    for r in records:
        if "annotations" in r:
            r["annotations"] = [a for a in r["annotations"] if not box_problem(a["bbox"], r["width"], r["height"])]
    return records


def fix_records(records: List[dict]) -> List[dict]:
    """Detectron2 records of a json validated in drop/fill mode, as training should see them:
    invalid boxes dropped, iscrowd 0 where missing, integer width/height (640.0 -> 640).
    For datasets whose loader is not ours (e.g. Detectron2's coco_2017_train)."""
    for r in records:
        for k in ("width", "height"):
            if isinstance(r.get(k), float) and r[k].is_integer():
                r[k] = int(r[k])
        for a in r.get("annotations", ()):
            a.setdefault("iscrowd", 0)
    return drop_invalid_boxes(records)
