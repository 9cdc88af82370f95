"""Check that every image of a dataset decodes and has the size its json gives, before training.

Detectron2 reads an image only when a data loader first draws it: a corrupt or truncated
file, or one whose pixel size disagrees with the json's width/height, stops a run at
whatever iteration that happens (a truncated file with a bare PIL "image file is
truncated", naming no file). `check_images` finds all of them up front:

* each file is opened with PIL and fully decoded, as Detectron2's `read_image` does
  (JPEGs decode at 1/8 scale with `Image.draft`: the entropy-coded data, and with it
  any truncation, is still read in full, at about half the cost). PIL's `verify()`
  alone misses truncated JPEGs, so it is not used;
* the size is compared after EXIF orientation, with Detectron2's rule
  (`detection_utils._apply_exif_orientation` then `check_image_size`): orientations
  5-8 swap width and height, and (width, height) must equal the json's exactly;
* files are checked in parallel (a fork-based process pool where available, else
  threads) with a tqdm progress bar that appears after 2 s;
* results are cached on disk per image folder, keyed by (absolute path, size,
  mtime_ns), under `cache_dir()/image_check/`: a second check of an unchanged folder
  only stats the files (about a second per 100k images on a local disk).
"""
import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import PIL
from PIL import Image, ImageFile, UnidentifiedImageError

from ..utils.atomic import write_atomic
from ..utils.cores import usable_cores
from ..utils.damaged import Damaged, read_or_set_aside
from ..utils.paths import cache_dir

logger = logging.getLogger(__name__)

EXIF_ORIENTATION = 274  # the EXIF tag Detectron2 reads (detection_utils._EXIF_ORIENT)
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # transpose / rotate 90 / transverse / rotate 270
SHOW = 5  # failures listed in an ImageCheckError
CACHE_VERSION = 1
SERIAL_BELOW = 256  # fewer files than this to open: no pool
CHUNK = 64  # files per pool task
SAVE_EVERY_S = 30.0  # an interrupted cold check keeps what it did up to here

# One image's result: (width, height) as Detectron2 sees it, the EXIF orientation and
# an error text (None when it decodes; width/height are then None).
Result = Tuple[Optional[int], Optional[int], Optional[int], Optional[str]]


class ImageCheckError(ValueError):
    """Images that do not decode or whose size disagrees with the json."""

    def __init__(self, message: str, failures: List[Tuple[object, str, str]]):
        super().__init__(message)
        self.failures = failures  # (image id, path, reason)


@dataclass
class ImageCheckStats:
    num_images: int  # distinct files checked
    opened: int  # files decoded this time (the others came from the cache)
    cached: int
    seconds: float


def inspect_image(path: str) -> Result:
    """Decode one file like Detectron2 does; its oriented (width, height), orientation, error."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            try:  # exactly as detection_utils._apply_exif_orientation
                exif = im.getexif()
            except Exception:  # noqa: BLE001  Pillow raises anything on a broken EXIF block: read it as none
                exif = None
            orientation = exif.get(EXIF_ORIENTATION) if exif is not None else None
            # JPEG: decode at 1/8 scale; a no-op for formats without draft support.
            im.draft(None, (max(1, w // 8), max(1, h // 8)))
            im.load()
            im.crop((0, 0, 1, 1)).convert("RGB")  # Detectron2 converts to RGB/BGR: the mode must allow it
    except UnidentifiedImageError:
        return None, None, None, "does not decode: not an image file PIL can identify"
    except OSError as e:
        if e.errno is not None and e.strerror:  # missing file, no permission, I/O error
            return None, None, None, f"cannot be read: {e.strerror}"
        return None, None, None, f"does not decode: {_message(e)}"
    except Exception as e:  # noqa: BLE001  SyntaxError, ValueError, DecompressionBombError, struct.error, ...
        return None, None, None, f"does not decode: {_message(e)}"
    if orientation in SWAPPING_ORIENTATIONS:
        w, h = h, w
    return w, h, orientation if isinstance(orientation, int) else None, None


def _message(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text if isinstance(e, OSError) else f"{type(e).__name__}: {text}"


def _check_chunk(paths: Sequence[str]) -> List[Result]:
    return [inspect_image(p) for p in paths]


def default_cache_file(image_root: Union[str, Path]) -> Path:
    """cache_dir()/image_check/<folder name>-<hash of its absolute path>.json."""
    root = os.path.abspath(str(image_root))
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(root.rstrip(os.sep)) or "root")[:40]
    return cache_dir() / "image_check" / f"{slug}-{hashlib.sha1(root.encode()).hexdigest()[:12]}.json"


def _cache_header() -> dict:
    # A result depends on the decoder and on whether PIL accepts truncated files.
    return {"version": CACHE_VERSION, "pillow": PIL.__version__,
            "load_truncated": bool(ImageFile.LOAD_TRUNCATED_IMAGES)}


def _parse_cache(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("header"), dict) or \
            not isinstance(data.get("entries"), dict):
        raise Damaged("not an image check cache: expected an object with 'header' and 'entries'")
    version = data["header"].get("version")
    if version != CACHE_VERSION:
        raise Damaged(f"written by another version (cache version {version!r}, this one writes {CACHE_VERSION})")
    return data


def _load_cache(path: Optional[Path]) -> Dict[str, list]:
    """The cached results of a folder; {} for none, for another decoder (Pillow version,
    truncated-image setting: re-checked), or for a damaged file (set aside, re-checked)."""
    if path is None:
        return {}
    try:
        data = read_or_set_aside(path, _parse_cache, "checking the images again")
    except OSError as e:
        logger.warning("Could not read the image check cache %s (%s); checking the images again", path, e.strerror)
        return {}
    if data is None or data["header"] != _cache_header():
        return {}
    return data["entries"]


def _valid_entry(hit) -> bool:
    """[size, mtime_ns, width, height, orientation, error] as _save_cache writes it (a
    tampered entry is checked again, not trusted)."""
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    return (isinstance(hit, list) and len(hit) == 6 and is_int(hit[0]) and is_int(hit[1])
            and all(v is None or is_int(v) for v in hit[2:5]) and (hit[5] is None or isinstance(hit[5], str)))


def _save_cache(path: Optional[Path], entries: Dict[str, list]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic: concurrent runs (one per GPU) and a kill during the write never leave half a file
        write_atomic(path, lambda tmp: _dump(tmp, {"header": _cache_header(), "entries": entries}))
    except OSError as e:
        logger.warning("Could not write the image check cache %s: %s", path, e)


def _dump(tmp: str, data: dict) -> None:
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))


def _executor(workers: int):
    """Processes (fork: no re-import of torch/Detectron2 in the workers), else threads."""
    import multiprocessing as mp

    if "fork" in mp.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
    return ThreadPoolExecutor(workers)  # PIL releases the GIL while decoding


def _decode_all(paths: List[str], workers: int, progress: bool, desc: str, on_result) -> None:
    """Runs inspect_image on every path; on_result(path, result) in the calling thread."""
    from tqdm import tqdm

    bar = tqdm(total=len(paths), desc=desc, unit="img", delay=2.0, disable=not progress, leave=False)
    try:
        if workers <= 1 or len(paths) < SERIAL_BELOW:
            for p in paths:
                on_result(p, inspect_image(p))
                bar.update()
            return
        chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
        with _executor(min(workers, len(chunks))) as ex:
            for chunk, results in zip(chunks, ex.map(_check_chunk, chunks)):
                for p, r in zip(chunk, results):
                    on_result(p, r)
                bar.update(len(chunk))
    finally:
        bar.close()


def _wh(w, h) -> str:
    return f"{w:g}x{h:g}" if isinstance(w, float) or isinstance(h, float) else f"{w}x{h}"


def check_images(images: Sequence[Tuple[object, str, object, object]], name: str, json_file: str,
                 image_root: Optional[str] = None, cache_file: Union[str, Path, None, bool] = True,
                 workers: Optional[int] = None, progress: bool = True) -> ImageCheckStats:
    """Checks that every image decodes and has the json's size; raises ImageCheckError if not.

    images: (image id, path, json width, json height) per image of the dataset.
    cache_file: True for `default_cache_file(image_root)`, a path, or None/False for no cache.
    workers: parallel decoders (default: the CPU cores this process may use).
    """
    t0 = time.perf_counter()
    if cache_file is True:
        cache_file = default_cache_file(image_root or os.path.dirname(os.path.abspath(json_file)))
    cache_path = Path(cache_file) if cache_file else None
    entries = _load_cache(cache_path)

    results: Dict[str, Result] = {}
    stats: Dict[str, Tuple[int, int]] = {}
    to_open: List[str] = []
    num_cached = 0
    keys = [os.path.abspath(path) for _, path, _, _ in images]
    for key in keys:
        if key in results or key in stats:
            continue
        try:
            st = os.stat(key)
        except OSError as e:
            results[key] = (None, None, None, f"cannot be read: {e.strerror or e}")
            continue
        stats[key] = (st.st_size, st.st_mtime_ns)
        hit = entries.get(key)
        if _valid_entry(hit) and (hit[0], hit[1]) == stats[key]:
            results[key] = tuple(hit[2:])
            num_cached += 1
        else:
            to_open.append(key)

    last_save = [time.monotonic()]

    def on_result(key: str, r: Result) -> None:
        results[key] = r
        entries[key] = [*stats[key], *r]
        if cache_path is not None and time.monotonic() - last_save[0] > SAVE_EVERY_S:
            _save_cache(cache_path, entries)
            last_save[0] = time.monotonic()

    try:
        if to_open:
            _decode_all(to_open, workers or usable_cores(), progress, f"Checking images of {name}", on_result)
    finally:
        if to_open:
            _save_cache(cache_path, entries)

    failures = []
    for (image_id, path, width, height), key in zip(images, keys):
        w, h, orientation, error = results[key]
        if error is None and (w, h) != (width, height):
            if orientation in SWAPPING_ORIENTATIONS:
                error = (f"size {w}x{h} after its EXIF orientation {orientation} (stored as {h}x{w}; Detectron2 "
                         f"rotates images per EXIF) but the json says {_wh(width, height)}")
            else:
                error = f"size {w}x{h} on disk but the json says {_wh(width, height)}"
        if error is not None:
            failures.append((image_id, path, error))
    seconds = time.perf_counter() - t0
    check_stats = ImageCheckStats(len(results), len(to_open), num_cached, seconds)
    logger.info("Dataset %r: checked %d images in %.1f s (%d decoded, %d unchanged since the last check)",
                name, len(images), seconds, len(to_open), num_cached)
    if failures:
        raise ImageCheckError(_failure_message(name, json_file, image_root, len(images), failures), failures)
    return check_stats


def _failure_message(name, json_file, image_root, num_images, failures) -> str:
    lines = [f"  - {path} (image id {image_id!r}): {reason}" for image_id, path, reason in failures[:SHOW]]
    if len(failures) > SHOW:
        lines.append(f"  - ... and {len(failures) - SHOW} more")
    folder = f" (image folder {image_root})" if image_root else ""
    return (
        f"Dataset {name!r}: {len(failures)} of {num_images} images listed in {json_file}{folder} failed the "
        "image check; Detectron2 would stop training at the first of them it reads:\n" + "\n".join(lines) + "\n"
        "Every image must decode with PIL and its size after EXIF orientation must equal the json's "
        "width x height. Fix or re-export these files (or their width/height in the json), remove them "
        "from the json, or set DATASETS.CHECK_IMAGES False to skip this check."
    )
