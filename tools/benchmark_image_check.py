#!/usr/bin/env python
"""Time the image check (frn_det.data.image_check) on a generated COCO-format folder.

Writes --num small JPEGs (default 20,000 of 64x64, in parallel) and an instances json
into a temporary folder, then times a first check (nothing cached: every file is
decoded) and a second one (unchanged files: answered from the on-disk cache after a
stat). The files were just written, so the first check reads them from the OS page
cache: it measures decoding, not the disk.

    python tools/benchmark_image_check.py [--num 20000] [--size 64] [--workers N]
"""
import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _write_images(args):
    folder, start, stop, size = args
    rng = np.random.default_rng(start)
    ramp = np.linspace(0, 180, size, dtype=np.float32)
    for i in range(start, stop):
        noise = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        arr = (noise + ramp[None, :, None] * (i % 3 == 0) + ramp[:, None, None] * (i % 3 == 1)).astype(np.uint8)
        Image.fromarray(arr).save(os.path.join(folder, f"{i:07d}.jpg"), quality=90)


def make_dataset(root: Path, num: int, size: int, workers: int):
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    step = max(1, num // (workers * 8))
    jobs = [(str(images_dir), s, min(num, s + step), size) for s in range(0, num, step)]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) as pool:
        pool.map(_write_images, jobs)
    coco = {
        "images": [{"id": i + 1, "file_name": f"{i:07d}.jpg", "width": size, "height": size} for i in range(num)],
        "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 4, size / 2, size / 2],
                         "area": size * size / 4, "iscrowd": 0} for i in range(num)],
        "categories": [{"id": 1, "name": "thing"}],
    }
    json_file = root / "instances.json"
    json_file.write_text(json.dumps(coco))
    return str(json_file), str(images_dir), coco


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=20000, help="images to generate (default 20000)")
    parser.add_argument("--size", type=int, default=64, help="image width and height in px (default 64)")
    parser.add_argument("--workers", type=int, default=None, help="decoders (default: all usable cores)")
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    args = parser.parse_args(argv)

    from frn_det.data.image_check import check_images
    from frn_det.utils.cores import usable_cores

    workers = args.workers or usable_cores()
    root = Path(tempfile.mkdtemp(prefix="frn_det_image_check_bench_"))
    try:
        t0 = time.perf_counter()
        json_file, images_dir, coco = make_dataset(root, args.num, args.size, workers)
        print(f"generated {args.num} {args.size}x{args.size} JPEGs in {time.perf_counter() - t0:.1f} s ({root})")
        entries = [(img["id"], os.path.join(images_dir, img["file_name"]), img["width"], img["height"])
                   for img in coco["images"]]
        cache_file = root / "image_check_cache.json"
        rows = []
        for label in ("first check (nothing cached)", "second check (cached)"):
            t0 = time.perf_counter()
            stats = check_images(entries, "bench", json_file, image_root=images_dir, cache_file=cache_file,
                                 workers=workers, progress=False)
            dt = time.perf_counter() - t0
            rows.append((label, dt, stats))
            print(f"{label:30s} {dt:7.2f} s  {len(entries) / dt:10.0f} images/s  "
                  f"(decoded {stats.opened}, from cache {stats.cached}; {workers} workers)")
        print(f"cache file: {cache_file.stat().st_size / 1e6:.1f} MB; speed-up of the cached check: "
              f"{rows[0][1] / rows[1][1]:.0f}x")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
