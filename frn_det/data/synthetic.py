"""Deterministic synthetic "shapes" detection dataset, written in real COCO format.

It is the default data for CPU smoke runs and tests: small enough to generate in a
few seconds and to be learned by a tiny RetinaNet in minutes, yet not trivial:

* 4 classes (square, circle, triangle, cross); colour is random and never tells
  the class apart, only the outline does;
* object sizes are drawn per COCO area range so that every split has a healthy
  share of small / medium / large objects (COCOeval reports AP_s/AP_m/AP_l);
* smooth random background, gaussian noise, and un-annotated clutter (thin lines
  and specks) so that "anything that is not background" is not a valid answer;
* instance masks as COCO polygons (``segmentation``) that rasterise exactly to each
  object's visible pixels (after occlusion by later objects, which can split an
  object into parts or cut holes into it), so Mask R-CNN trains on it with
  Detectron2's default INPUT.MASK_FORMAT "polygon" and COCOEvaluator reports segm AP.

Everything derives from ``ShapesSpec``: the same spec yields byte-identical json
files and identical images.
"""

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..utils.damaged import set_aside
from ..utils.paths import cache_dir as cache_dir_default

logger = logging.getLogger(__name__)

SHAPES_CATEGORIES = [
    {"id": 1, "name": "square", "supercategory": "shape"},
    {"id": 2, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "cross", "supercategory": "shape"},
]

DONE_MARKER = "DONE"
_PARSED = set()  # (json path, mtime_ns, size) of generated jsons that parsed in this process
SPLITS = ("train", "val", "tune")

# Target (visible) pixel areas per COCO range. The gaps around the COCO thresholds
# (32^2 = 1024, 96^2 = 9216) leave room for a little occlusion without an object
# changing range. The large range's upper end is limited by the image size.
_SMALL_AREA = (200.0, 900.0)
_MEDIUM_AREA = (1300.0, 8000.0)
_LARGE_MIN_AREA = 10000.0
# Sampling weights of (small, medium, large). Large objects are favoured because
# they are the ones that most often find no free place and get skipped.
_RANGE_WEIGHTS = (0.3, 0.3, 0.4)

_MARGIN = 4  # objects keep this many pixels from the image border
_MAX_BOX_IOU = 0.3  # between boxes of the same image
_MIN_VISIBLE = 0.7  # later (smaller) objects may hide at most 30% of an earlier one
_PLACEMENT_TRIES = 30
_MIN_CONTRAST = 90.0  # RGB distance between an object and what lies under it


@dataclass(frozen=True)
class ShapesSpec:
    seed: int = 0
    num_train: int = 320
    num_val: int = 80
    # A tuning split, disjoint from val: sweeps choose the learning rate on it and report
    # AP on val, so the choice never sees the images it is scored on.
    num_tune: int = 80
    image_size: int = 160
    max_objects: int = 5
    version: int = 2  # bump when the generator changes, so caches are not reused (2: polygon masks)

    def __post_init__(self):
        if self.num_train < 1 or self.num_val < 1 or self.num_tune < 1:
            raise ValueError("num_train, num_val and num_tune must be >= 1")
        if self.image_size < 48:
            raise ValueError("image_size must be >= 48")
        if self.max_objects < 1:
            raise ValueError("max_objects must be >= 1")

    def key(self) -> str:
        return (
            f"shapes_v{self.version}_s{self.seed}_n{self.num_train}-{self.num_val}-{self.num_tune}"
            f"_px{self.image_size}_o{self.max_objects}"
        )


# ----------------------------------------------------------------------------- shapes


def _fill_ratio(cat_id: int, param: float) -> float:
    """Approximate shape area / bounding-square area, used to pick a side length
    that gives the wanted pixel area."""
    if cat_id == 1:  # square
        return 1.0
    if cat_id == 2:  # circle
        return np.pi / 4
    if cat_id == 3:  # triangle
        return 0.5
    return 2 * param - param * param  # cross, param = arm thickness / side


def _shape_mask(size: int, cat_id: int, x0: int, y0: int, side: int, param: float,
                orient: int) -> np.ndarray:
    """Boolean mask of one shape whose bounding square is [x0, x0+side) x [y0, y0+side)."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    x1, y1 = x0 + side - 1, y0 + side - 1  # PIL boxes are inclusive
    if cat_id == 1:
        draw.rectangle([x0, y0, x1, y1], fill=255)
    elif cat_id == 2:
        draw.ellipse([x0, y0, x1, y1], fill=255)
    elif cat_id == 3:
        # Isosceles triangle pointing up/right/down/left, so the class is not
        # tied to one orientation.
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        pts = [
            [(x0, y1), (x1, y1), (cx, y0)],
            [(x0, y0), (x0, y1), (x1, cy)],
            [(x0, y0), (x1, y0), (cx, y1)],
            [(x1, y0), (x1, y1), (x0, cy)],
        ][orient]
        draw.polygon(pts, fill=255)
    else:
        t = max(2, int(round(side * param)))
        a = (side - t) // 2
        draw.rectangle([x0, y0 + a, x1, y0 + a + t - 1], fill=255)
        draw.rectangle([x0 + a, y0, x0 + a + t - 1, y1], fill=255)
    return np.asarray(canvas) > 0


def _box_iou(a: Tuple[int, int, int, int], b: Tuple[int, int, int, int]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes with exclusive x1/y1."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _area_ranges(size: int) -> List[Tuple[float, float]]:
    """Feasible target-area ranges (small, medium, large) for this image size."""
    max_side = size - 2 * _MARGIN
    # Capped by the least filling shape (triangle) so every class can reach it.
    cap = 0.5 * max_side * max_side
    ranges = [_SMALL_AREA, _MEDIUM_AREA, (_LARGE_MIN_AREA, cap)]
    return [(lo, min(hi, cap)) for lo, hi in ranges]


# ----------------------------------------------------------------------------- images


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Bilinear blend of 4 random corner colours: smooth, varied, cheap."""
    corners = rng.uniform(30, 225, size=(2, 2, 3))
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    top = corners[0, 0] * (1 - t) + corners[0, 1] * t  # (size, 1, 3) along x
    bottom = corners[1, 0] * (1 - t) + corners[1, 1] * t
    top, bottom = top.transpose(1, 0, 2), bottom.transpose(1, 0, 2)  # (1, size, 3)
    return top * (1 - t) + bottom * t  # t now runs along y


def _draw_clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Un-annotated distractors: a few thin lines and small specks (< 6 px)."""
    size = img.shape[0]
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    layers = []
    for _ in range(rng.integers(0, 4)):
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        draw.line([(x0, y0), (x1, y1)], fill=len(layers) + 1, width=int(rng.integers(1, 3)))
        layers.append(rng.uniform(0, 255, 3))
    for _ in range(rng.integers(2, 9)):
        d = rng.uniform(1.5, 5.5)
        cx, cy = rng.uniform(0, size, 2)
        draw.ellipse([cx, cy, cx + d, cy + d], fill=len(layers) + 1)
        layers.append(rng.uniform(0, 255, 3))
    labels = np.asarray(canvas)
    for i, colour in enumerate(layers):
        img[labels == i + 1] = colour


def _pick_colour(rng: np.random.Generator, under: List[np.ndarray]) -> np.ndarray:
    """Random colour that stands out from every colour it will be drawn over."""
    best, best_dist = None, -1.0
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        dist = min(float(np.linalg.norm(colour - u)) for u in under)
        if dist >= _MIN_CONTRAST:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


def _render_image(rng: np.random.Generator, spec: ShapesSpec):
    """Returns (uint8 HxWx3 image, list of (category_id, visible mask))."""
    size = spec.image_size
    img = _background(rng, size)
    _draw_clutter(rng, img)

    # Sample all objects first, then place them largest first: smaller objects
    # are drawn on top, so occlusion only nibbles at bigger ones.
    ranges = _area_ranges(size)
    weights = np.array([w if hi > lo else 0.0 for w, (lo, hi) in zip(_RANGE_WEIGHTS, ranges)])
    weights /= weights.sum()
    wanted = []
    for _ in range(rng.integers(1, spec.max_objects + 1)):
        cat_id = int(rng.integers(1, len(SHAPES_CATEGORIES) + 1))
        lo, hi = ranges[rng.choice(3, p=weights)]
        area = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # log-uniform
        param = float(rng.uniform(0.28, 0.4))  # cross arm thickness ratio
        orient = int(rng.integers(0, 4))  # triangle orientation
        side = int(round(np.sqrt(area / _fill_ratio(cat_id, param))))
        side = min(max(side, 8), size - 2 * _MARGIN)
        wanted.append((side, cat_id, param, orient))
    wanted.sort(key=lambda w: -w[0])

    objects = []  # dicts: cat_id, box, full mask, visible mask, colour
    for side, cat_id, param, orient in wanted:
        for _ in range(_PLACEMENT_TRIES):
            x0, y0 = rng.integers(_MARGIN, size - _MARGIN - side + 1, 2)
            box = (int(x0), int(y0), int(x0) + side, int(y0) + side)
            if any(_box_iou(box, o["box"]) >= _MAX_BOX_IOU for o in objects):
                continue
            mask = _shape_mask(size, cat_id, box[0], box[1], side, param, orient)
            if any((o["visible"] & ~mask).sum() < _MIN_VISIBLE * o["full"].sum()
                   for o in objects):
                continue
            under = [img[mask].mean(axis=0)]  # background + clutter under the shape
            under += [o["colour"] for o in objects if (o["visible"] & mask).any()]
            colour = _pick_colour(rng, under)
            img[mask] = colour
            for o in objects:
                o["visible"] &= ~mask
            objects.append({"cat_id": cat_id, "box": box, "full": mask,
                            "visible": mask.copy(), "colour": colour})
            break  # placed; if all tries fail the object is skipped

    img += rng.uniform(2.0, 6.0) * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return img, [(o["cat_id"], o["visible"]) for o in objects]


# ----------------------------------------------------------------------------- masks


# Walking directions on the pixel-corner grid (x right, y down): east, south, west, north.
_STEP_X = (1, 0, -1, 0)
_STEP_Y = (0, 1, 0, -1)


def _boundary_rings(mask: np.ndarray) -> List[List[Tuple[int, int]]]:
    """Every boundary ring of a boolean mask, exact along the pixel edges.

    Vertices are pixel corners (pixel (row r, col c) covers [c, c+1) x [r, r+1)); only
    corners where the boundary turns are kept, so collinear points are dropped. Rings
    are walked with the mask on their right: outer boundaries come out with a positive
    shoelace area (_ring_area), hole boundaries with a negative one. Foreground is
    4-connected: pixels that touch only at a corner belong to different rings.
    """
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    # Plain lists: much faster than numpy scalar indexing. The walk below uses padded
    # coordinates X = x + 1, Y = y + 1, where the pixel right-below corner (X, Y) is px[Y][X].
    px = padded.tolist()
    # Every ring has an eastward edge: the top edge of a pixel with background above.
    top_edges = padded[1:-1, 1:-1] & ~padded[:-2, 1:-1]
    visited = np.zeros_like(top_edges)
    rings = []
    for y0, x0 in zip(*np.nonzero(top_edges)):  # row-major: (x0, y0) is a corner of its ring
        if visited[y0, x0]:
            continue
        X, Y, d = int(x0) + 1, int(y0) + 1, 0
        start = (X, Y)
        ring = [(X - 1, Y - 1)]
        while True:
            if d == 0:
                visited[Y - 1, X - 1] = True
            X += _STEP_X[d]
            Y += _STEP_Y[d]
            # The pixels ahead-left and ahead-right of corner (X, Y), facing d.
            if d == 0:
                left, right = px[Y - 1][X], px[Y][X]
            elif d == 1:
                left, right = px[Y][X], px[Y][X - 1]
            elif d == 2:
                left, right = px[Y][X - 1], px[Y - 1][X - 1]
            else:
                left, right = px[Y - 1][X - 1], px[Y - 1][X]
            # Keep the mask on the right. Where only the two diagonal pixels are set,
            # turning right keeps them apart (4-connectivity).
            turn = (d + 1) % 4 if not right else ((d + 3) % 4 if left else d)
            if turn != d:
                if turn == 0 and (X, Y) == start:
                    break  # back on the first edge
                ring.append((X - 1, Y - 1))
                d = turn
        rings.append(ring)
    return rings


def _ring_area(ring: List[Tuple[int, int]]) -> float:
    """Shoelace area: > 0 for outer boundaries, < 0 for holes (see _boundary_rings)."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1]))


def _inside(ring: List[Tuple[int, int]], px: float, py: float) -> bool:
    """Whether (px, py), not on a grid line, lies inside the ring (ray cast to -x)."""
    xy = np.asarray(ring, dtype=np.float64)
    x0, y0 = xy[:, 0], xy[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    vertical = x0 == x1  # rectilinear ring: the other edges are horizontal and never cross y = py
    crosses = vertical & (x0 < px) & (np.minimum(y0, y1) < py) & (py < np.maximum(y0, y1))
    return bool(crosses.sum() % 2)


def _mask_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons [[x0, y0, x1, y1, ...], ...] that rasterise exactly to `mask`.

    One polygon per 4-connected part. A part with holes (a smaller object drawn inside
    it) keeps them: each hole ring is appended to its part's ring through a zero-width
    cut, walked there and back. pycocotools, which rasterises polygons for COCO
    evaluation and for Detectron2's mask targets, fills each polygon by the even-odd
    rule, so the cut cancels out and the hole stays empty (a polygon with only the outer
    boundary would fill it, up to 30% of the object with _MIN_VISIBLE 0.7).
    """
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    x_off, y_off = int(cols[0]), int(rows[0])
    crop = mask[y_off:int(rows[-1]) + 1, x_off:int(cols[-1]) + 1]  # faster to trace
    outer, holes, areas = [], [], []
    for ring in _boundary_rings(crop):
        area = _ring_area(ring)
        if area > 0:
            outer.append(ring)
            areas.append(area)
        else:
            holes.append(ring)
    parts = [list(ring) for ring in outer]
    for hole in holes:
        # The pixel above the hole's first corner lies in the hole (background above a top
        # edge); the hole belongs to the smallest outer ring around that pixel.
        px, py = hole[0][0] + 0.5, hole[0][1] - 0.5
        owner = min((i for i, ring in enumerate(outer) if _inside(ring, px, py)), key=areas.__getitem__)
        # Close the part's ring at its first corner, cut to the hole, walk the hole, and
        # (implicitly, when the polygon closes, or before the next hole) cut back.
        parts[owner] += [parts[owner][0]] + list(hole) + [hole[0]]
    return [[float(v) for x, y in part for v in (x + x_off, y + y_off)] for part in parts]


# ----------------------------------------------------------------------------- COCO


_SPLIT_IDS = {"train": 0, "val": 1, "tune": 2}  # part of each image's random seed


def _render_split_image(spec: ShapesSpec, split: str, idx: int):
    """_render_image's (image, [(category_id, visible mask), ...]) for image `idx`
    (counted from 0; its COCO id is idx + 1) of a split."""
    # One independent stream per image: adding images never changes others,
    # and val does not depend on num_train.
    return _render_image(np.random.default_rng([spec.seed, _SPLIT_IDS[split], idx]), spec)


def _write_split(root: Path, spec: ShapesSpec, split: str, num: int) -> None:
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for idx in range(num):
        img, objects = _render_split_image(spec, split, idx)
        image_id = idx + 1
        file_name = f"{image_id:06d}.jpg"
        # 4:4:4 chroma so that the colours of small objects are not smeared.
        Image.fromarray(img).save(image_dir / file_name, quality=95, subsampling=0)
        images.append({"id": image_id, "file_name": file_name,
                       "width": spec.image_size, "height": spec.image_size})
        for cat_id, visible in objects:
            ys, xs = np.nonzero(visible)
            # Tight box of the drawn (visible) pixels; pixel i covers [i, i+1).
            x, y = int(xs.min()), int(ys.min())
            w, h = int(xs.max()) + 1 - x, int(ys.max()) + 1 - y
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat_id,
                "bbox": [float(x), float(y), float(w), float(h)],
                # Visible pixel count: COCOeval uses it for the small/medium/large ranges.
                # It equals the pixel count of the segmentation, rasterised.
                "area": float(visible.sum()),
                # The visible mask (after occlusion by later objects), exactly.
                "segmentation": _mask_polygons(visible),
                "iscrowd": 0,
            })
    coco = {
        # No timestamps: the json must be byte-identical for the same spec.
        "info": {"description": f"frn-det synthetic shapes, {split} split",
                 "version": str(spec.version), "spec": asdict(spec)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": SHAPES_CATEGORIES,
    }
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / f"instances_{split}.json").write_text(json.dumps(coco, indent=1))


def generate_shapes_dataset(root: Path, spec: ShapesSpec) -> None:
    """Writes root/{train,val,tune}/*.jpg and root/annotations/instances_{train,val,tune}.json."""
    root = Path(root)
    _write_split(root, spec, "train", spec.num_train)
    _write_split(root, spec, "val", spec.num_val)
    _write_split(root, spec, "tune", spec.num_tune)


def dataset_paths(root: Path) -> Dict[str, object]:
    # Plain strings for the split paths: they go into configs and dataset registries.
    paths: Dict[str, object] = {
        split: (str(root / "annotations" / f"instances_{split}.json"), str(root / split))
        for split in SPLITS
    }
    paths["root"] = root
    return paths


def dataset_root(spec: ShapesSpec, cache_dir: Optional[Path] = None) -> Path:
    """Where ensure_shapes_dataset keeps `spec` (whether or not it exists yet)."""
    return Path(cache_dir if cache_dir is not None else cache_dir_default()) / "datasets" / spec.key()


def _marker(root: Path, spec: ShapesSpec) -> str:
    """The DONE marker: the spec's key, then "<size> <path>" of every file generated."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return spec.key() + "\n" + "".join(f"{p.stat().st_size} {p.relative_to(root).as_posix()}\n" for p in files)


def _damage(root: Path, spec: ShapesSpec) -> Optional[str]:
    """What is wrong with a generated dataset (a file missing or of another size than was
    written, a marker of another spec), or None. Stats only: cheap enough for every use."""
    try:
        lines = (root / DONE_MARKER).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        return f"its {DONE_MARKER} marker cannot be read ({e.strerror})"
    if not lines or lines[0] != spec.key():
        return f"its {DONE_MARKER} marker does not name {spec.key()}"
    for line in lines[1:]:  # markers written before the sizes were recorded hold the key alone
        size, _, name = line.partition(" ")
        try:
            found = (root / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if not size.isdigit() or found != int(size):
            return f"{name} has {found} bytes, {size} were written"
    for split in SPLITS:  # the jsons parse (bytes changed in place keep the size)
        json_file = root / "annotations" / f"instances_{split}.json"
        st = json_file.stat() if json_file.is_file() else None
        state = (str(json_file), st.st_mtime_ns, st.st_size) if st else None
        if state in _PARSED:
            continue
        try:
            with open(json_file, encoding="utf-8") as f:
                if not isinstance(json.load(f).get("images"), list):
                    raise ValueError("no 'images' list")
        except (OSError, ValueError, AttributeError) as e:
            return f"{json_file.relative_to(root)} does not parse ({type(e).__name__}: {e})"
        _PARSED.add(state)
    return None


def ensure_shapes_dataset(spec: ShapesSpec = ShapesSpec(),
                          cache_dir: Optional[Path] = None) -> dict:
    """Generates the dataset once into ``<cache>/datasets/<spec.key()>`` and reuses it.

    Returns {"train" | "val" | "tune": (json_path, image_root), ...
    "root": Path}. Safe against concurrent callers and killed processes: data is
    generated in a private temp folder, the DONE marker (with every file's size) is
    written last, and the folder is atomically renamed into place. Leftover temp folders
    are ignored; a folder damaged since (a file missing or cut short) is set aside and
    generated again.
    """
    root = dataset_root(spec, cache_dir)
    parent = root.parent
    if (root / DONE_MARKER).exists():
        problem = _damage(root, spec)
        if problem is None:
            return dataset_paths(root)
        set_aside(root, problem, "generating the dataset again")

    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key()}.tmp-", dir=parent))
    try:
        start = time.perf_counter()
        generate_shapes_dataset(tmp, spec)
        (tmp / DONE_MARKER).write_text(_marker(tmp, spec))
        os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
        for _ in range(2):
            try:
                os.rename(tmp, root)
                logger.info("Generated synthetic shapes dataset %s (%d train, %d val, %d tune images) "
                            "in %.1fs", root, spec.num_train, spec.num_val, spec.num_tune,
                            time.perf_counter() - start)
                return dataset_paths(root)
            except OSError:
                if (root / DONE_MARKER).exists():
                    break  # another process won the race; use its copy
                # A final-named folder without marker was not made by us (renames
                # are atomic and carry the marker): clear it and try once more.
                shutil.rmtree(root, ignore_errors=True)
        if not (root / DONE_MARKER).exists():
            raise RuntimeError(f"could not move generated dataset into {root}")
        return dataset_paths(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
