"""Tests of the image check (frn_det.data.image_check) and of the data loader's CheckedDatasetMapper."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from frn_det.data import image_check
from frn_det.data.image_check import ImageCheckError, check_images

W, H = 40, 30


def write_image(path, size=(W, H), fmt=None, exif_orientation=None, seed=0):
    """A noisy image (so JPEG/PNG data is not trivially small); returns the path as str."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[image_check.EXIF_ORIENTATION] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    Image.fromarray(arr).save(path, fmt, **kwargs)
    return str(path)


def truncate(path, keep=0.6):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def entries(paths, size=(W, H)):
    return [(i + 1, p, *size) for i, p in enumerate(paths)]


def check(images, tmp_path, **kw):
    kw.setdefault("cache_file", tmp_path / "cache.json")
    return check_images(images, "ds_img", str(tmp_path / "instances.json"), image_root=str(tmp_path), **kw)


def test_good_images_pass(tmp_path):
    paths = [write_image(tmp_path / f"{i}.{ext}", seed=i) for i, ext in enumerate(["jpg", "png", "bmp", "webp"])]
    stats = check(entries(paths), tmp_path)
    assert (stats.num_images, stats.opened, stats.cached) == (4, 4, 0)


def test_truncated_jpeg_and_png_are_named(tmp_path):
    good = write_image(tmp_path / "good.jpg")
    jpg, png = write_image(tmp_path / "cut.jpg", seed=1), write_image(tmp_path / "cut.png", seed=2)
    truncate(jpg)
    truncate(png)
    with pytest.raises(ImageCheckError) as e:
        check(entries([good, jpg, png]), tmp_path)
    msg = str(e.value)
    assert "Dataset 'ds_img': 2 of 3 images listed in " + str(tmp_path / "instances.json") in msg
    assert f"{jpg} (image id 2): does not decode: image file is truncated" in msg
    assert f"{png} (image id 3): does not decode: image file is truncated" in msg
    assert "good.jpg" not in msg
    assert "DATASETS.CHECK_IMAGES False" in msg
    assert [f[0] for f in e.value.failures] == [2, 3]


def test_jpeg_missing_only_its_end_marker_is_caught(tmp_path):
    """PIL's verify() passes this file, but Detectron2's read_image fails on it."""
    p = write_image(tmp_path / "a.jpg")
    data = open(p, "rb").read()
    open(p, "wb").write(data[:-2])
    with pytest.raises(ImageCheckError, match="image file is truncated"):
        check(entries([p]), tmp_path)


def test_non_image_with_jpg_name(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a JPEG")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageCheckError) as e:
        check(entries([str(p), str(empty)]), tmp_path)
    msg = str(e.value)
    assert f"{p} (image id 1): does not decode: not an image file PIL can identify" in msg
    assert f"{empty} (image id 2): does not decode" in msg


def test_size_mismatch(tmp_path):
    ok, wrong = write_image(tmp_path / "ok.png"), write_image(tmp_path / "wrong.png", size=(W + 8, H))
    images = [(7, ok, W, H), (8, wrong, W, H)]
    with pytest.raises(ImageCheckError) as e:
        check(images, tmp_path)
    assert f"{wrong} (image id 8): size {W + 8}x{H} on disk but the json says {W}x{H}" in str(e.value)
    assert "1 of 2 images" in str(e.value)


def test_integer_valued_float_size_in_json_matches(tmp_path):
    """Detectron2's check_image_size compares with ==, so 40.0 matches 40."""
    p = write_image(tmp_path / "a.jpg")
    check([(1, p, float(W), float(H))], tmp_path)


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotation_follows_detectron2(tmp_path, orientation):
    """Stored 40x30 with orientation 6/8: Detectron2 sees 30x40. The json must say 30x40."""
    from detectron2.data import detection_utils

    p = write_image(tmp_path / "rot.jpg", exif_orientation=orientation)
    assert Image.open(p).size == (W, H)
    check([(1, p, H, W)], tmp_path, cache_file=None)  # what Detectron2 will see: accepted
    detection_utils.check_image_size({"width": H, "height": W}, detection_utils.read_image(p, "BGR"))

    with pytest.raises(ImageCheckError) as e:
        check([(1, p, W, H)], tmp_path, cache_file=None)
    assert f"size {H}x{W} after its EXIF orientation {orientation} (stored as {W}x{H}" in str(e.value)
    with pytest.raises(detection_utils.SizeMismatchError):  # Detectron2 agrees
        detection_utils.check_image_size({"width": W, "height": H}, detection_utils.read_image(p, "BGR"))


def test_exif_orientation_that_keeps_the_size(tmp_path):
    p = write_image(tmp_path / "flip.jpg", exif_orientation=3)  # rotate 180: same size
    check([(1, p, W, H)], tmp_path, cache_file=None)


def test_cache_hit_does_not_reopen_files(tmp_path, monkeypatch):
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(5)]
    bad = write_image(tmp_path / "bad.jpg")
    truncate(bad)
    opened = []
    inspect = image_check.inspect_image
    monkeypatch.setattr(image_check, "inspect_image", lambda p: opened.append(p) or inspect(p))

    first = check(entries(paths), tmp_path)
    assert (first.opened, first.cached, len(opened)) == (5, 0, 5)
    assert (tmp_path / "cache.json").exists()
    second = check(entries(paths), tmp_path)
    assert (second.opened, second.cached, len(opened)) == (0, 5, 5)

    # Failures are cached too (by size and mtime), and still reported.
    for _ in range(2):
        with pytest.raises(ImageCheckError, match=re.escape(bad)):
            check(entries([bad]), tmp_path)
    assert opened.count(os.path.abspath(bad)) == 1


def test_cache_invalidated_by_mtime_and_size(tmp_path, monkeypatch):
    a, b, c = (write_image(tmp_path / f"{n}.jpg", seed=i) for i, n in enumerate("abc"))
    check(entries([a, b, c]), tmp_path)
    opened = []
    inspect = image_check.inspect_image
    monkeypatch.setattr(image_check, "inspect_image", lambda p: opened.append(p) or inspect(p))

    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same bytes, new mtime
    truncate(b)  # new size: now broken
    with pytest.raises(ImageCheckError) as e:
        check(entries([a, b, c]), tmp_path)
    assert sorted(opened) == sorted([os.path.abspath(a), os.path.abspath(b)])
    assert f"{b} (image id 2): does not decode" in str(e.value) and "1 of 3" in str(e.value)


def test_default_cache_file_is_under_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FRN_DET_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "train2017"
    root.mkdir()
    p = write_image(root / "a.jpg")
    stats = check_images([(1, p, W, H)], "ds", "x.json", image_root=str(root))
    assert stats.opened == 1
    files = list((tmp_path / "cache" / "image_check").glob("train2017-*.json"))
    assert len(files) == 1 and image_check.default_cache_file(root) == files[0]
    assert check_images([(1, p, W, H)], "ds", "x.json", image_root=str(root)).cached == 1


def test_unreadable_cache_is_ignored(tmp_path):
    p = write_image(tmp_path / "a.jpg")
    (tmp_path / "cache.json").write_text("{not json")
    assert check(entries([p]), tmp_path).opened == 1
    assert check(entries([p]), tmp_path).cached == 1


def test_parallel_check_finds_the_bad_files(tmp_path):
    """Enough files for the process pool (SERIAL_BELOW); the failures keep their ids."""
    n = image_check.SERIAL_BELOW + 20
    paths = [write_image(tmp_path / f"{i:04d}.png", size=(8, 6), seed=i) for i in range(n)]
    truncate(paths[3])
    (tmp_path / "0100.png").write_text("text")
    with pytest.raises(ImageCheckError) as e:
        check(entries(paths, size=(8, 6)), tmp_path, workers=2)
    assert [f[0] for f in e.value.failures] == [4, 101]
    assert f"2 of {n} images" in str(e.value)
    stats = check(entries(paths[4:100], size=(8, 6)), tmp_path, workers=2)
    assert stats.opened == 0 and stats.cached == 96


# ----------------------------------------------------------------------------- mapper


def _mapper(is_train=False):
    from detectron2.config import get_cfg

    from frn_det.data.mapper import CheckedDatasetMapper

    return CheckedDatasetMapper(get_cfg(), is_train=is_train)


def test_mapper_maps_good_images(tmp_path):
    p = write_image(tmp_path / "a.jpg")
    out = _mapper()({"file_name": p, "image_id": 5, "width": W, "height": H})
    assert out["image_id"] == 5 and out["image"].shape[0] == 3


def test_mapper_names_the_file_that_fails_mid_run(tmp_path):
    from frn_det.data.mapper import ImageReadError

    p = write_image(tmp_path / "a.jpg")
    truncate(p)
    with pytest.raises(ImageReadError) as e:
        _mapper(is_train=True)({"file_name": p, "image_id": 17, "width": W, "height": H, "annotations": []})
    msg = str(e.value)
    assert p in msg and "image_id 17" in msg and "image file is truncated" in msg
    assert isinstance(e.value.__cause__, OSError)

    gone = str(tmp_path / "gone.jpg")
    with pytest.raises(ImageReadError, match=re.escape(gone) + r" \(image_id 3\).*FileNotFoundError"):
        _mapper()({"file_name": gone, "image_id": 3, "width": W, "height": H})

    q = write_image(tmp_path / "b.jpg", size=(W, H + 2))
    with pytest.raises(ImageReadError, match=re.escape(q) + r" \(image_id 4\).*SizeMismatchError"):
        _mapper()({"file_name": q, "image_id": 4, "width": W, "height": H})


def test_mapper_error_survives_a_dataloader_worker(tmp_path):
    """PyTorch re-raises worker exceptions as exc_type(message): ImageReadError must allow it."""
    from frn_det.data.mapper import ImageReadError

    err = ImageReadError("Could not read image x.jpg")
    assert str(type(err)("again: " + str(err))) == "again: Could not read image x.jpg"
