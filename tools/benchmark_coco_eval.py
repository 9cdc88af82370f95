#!/usr/bin/env python
"""Benchmark COCO box evaluation: pycocotools vs faster-coco-eval, and the image bootstrap.

Writes a seeded synthetic COCO-format ground truth and detections json (no image files)
to a temporary directory, then prints
  1. COCOeval evaluate+accumulate+summarize time with pycocotools and faster-coco-eval on
     the same files, the ratio, and the largest difference of the 12 stats;
  2. the bootstrap: COCOeval.evaluate once + N resamples, resamples/s, and the report's
     one-run interval (test images only: AP +- 1.96 x bootstrap SE, docs/intervals.md).

  python tools/benchmark_coco_eval.py             # 5,000 images, 80 classes, 1,000 resamples
  python tools/benchmark_coco_eval.py --quick     # 500 images
"""
import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def make_synthetic_coco(n_images, n_classes, seed=0):
    """(gt dict, detection list): ~7 GT boxes per image (COCO-like long-tailed classes,
    small/medium/large, ~1% crowd), 50-100 detections per image: jittered true
    positives, duplicates and false positives with lower scores."""
    rng = np.random.default_rng(seed)
    W, H = 640, 480
    class_p = 1.0 / np.arange(1, n_classes + 1) ** 0.8
    class_p /= class_p.sum()
    images, anns, dets = [], [], []
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id, "width": W, "height": H, "file_name": f"{img_id:06d}.jpg"})
        n_gt = rng.poisson(7)
        cls = rng.choice(n_classes, size=n_gt, p=class_p) + 1
        wh = np.exp(rng.uniform(np.log(4), np.log(400), size=(n_gt, 2)))
        wh = np.minimum(wh, [W - 1, H - 1])
        xy = rng.uniform(0, 1, size=(n_gt, 2)) * ([W, H] - wh)
        crowd = rng.random(n_gt) < 0.01
        for c, (x, y), (w, h), cr in zip(cls, xy, wh, crowd):
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": int(c),
                         "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                         "area": round(w * h, 2), "iscrowd": int(cr)})
        # detections of the GT boxes: hit rate 85%, 20% duplicates, jitter ~10% of size
        rows = []
        for copies, sigma, score_lo in ((rng.random(n_gt) < 0.85, 0.08, 0.3), (rng.random(n_gt) < 0.2, 0.2, 0.1)):
            k = int(copies.sum())
            jitter = rng.normal(0, sigma, size=(k, 4)) * np.tile(wh[copies], 2)  # x, y, w, h
            box = np.concatenate([xy[copies], wh[copies]], axis=1) + jitter
            score = score_lo + (1 - score_lo) * rng.random(k) ** 0.5
            rows.append((cls[copies], box, score))
        n_fp = max(int(rng.integers(50, 101)) - sum(len(r[0]) for r in rows), 0)
        fp_wh = np.minimum(np.exp(rng.uniform(np.log(4), np.log(300), size=(n_fp, 2))), [W - 1, H - 1])
        fp_box = np.concatenate([rng.uniform(0, 1, size=(n_fp, 2)) * ([W, H] - fp_wh), fp_wh], axis=1)
        rows.append((rng.choice(n_classes, size=n_fp, p=class_p) + 1, fp_box, 0.6 * rng.random(n_fp) ** 2))
        for c, box, score in rows:
            box[:, 2:] = np.maximum(box[:, 2:], 1.0)
            for ci, b, s in zip(c.tolist(), np.round(box, 2).tolist(), np.round(score, 5).tolist()):
                dets.append({"image_id": img_id, "category_id": ci, "bbox": b, "score": s})
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, n_classes + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def run_cocoeval(cls, gt_path, dt_path, **kwargs):
    """Load both files with pycocotools (as Detectron2 does) and run COCOeval; returns
    (load seconds, evaluate+accumulate+summarize seconds, stats)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        gt = COCO(gt_path)
        dt = gt.loadRes(dt_path)
        t1 = time.perf_counter()
        ev = cls(gt, dt, "bbox", **kwargs)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, np.asarray(ev.stats[:12], dtype=np.float64)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="500 images (a fast check)")
    parser.add_argument("--skip-pycocotools", action="store_true", help="skip the slow official COCOeval")
    args = parser.parse_args(argv)
    if args.quick:
        args.images = min(args.images, 500)

    from pycocotools.cocoeval import COCOeval

    from frn_det.evaluation import METRICS, PerImageEval, bootstrap_weights
    from frn_det.evaluation.coco_backend import coco_eval_backend_name, coco_eval_class
    from frn_det.evaluation.intervals import setting_interval

    fast_cls = coco_eval_class()
    with tempfile.TemporaryDirectory(prefix="frn_det_coco_bench_") as tmp:
        t0 = time.perf_counter()
        gt, dets = make_synthetic_coco(args.images, args.classes, args.seed)
        gt_path, dt_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "dets.json")
        for path, obj in ((gt_path, gt), (dt_path, dets)):
            with open(path, "w") as f:
                json.dump(obj, f)
        print(f"data: {args.images} images, {args.classes} classes, {len(gt['annotations'])} GT boxes "
              f"({len(gt['annotations']) / args.images:.1f}/image), {len(dets)} detections "
              f"({len(dets) / args.images:.1f}/image); generated in {time.perf_counter() - t0:.1f}s")
        del gt, dets

        print("\n1. COCOeval evaluate+accumulate+summarize (same files; loading timed separately)")
        fast_load, fast_eval, fast_stats = run_cocoeval(fast_cls, gt_path, dt_path)
        name = coco_eval_backend_name(fast_cls)
        print(f"  {name:<17} {fast_eval:7.2f} s   (json load + loadRes {fast_load:.1f} s)")
        if not args.skip_pycocotools:
            ref_load, ref_eval, ref_stats = run_cocoeval(COCOeval, gt_path, dt_path)
            print(f"  {'pycocotools':<17} {ref_eval:7.2f} s   (json load + loadRes {ref_load:.1f} s)")
            print(f"  speed-up {name} vs pycocotools: {ref_eval / fast_eval:.1f}x")
            print(f"  max |stats difference| over the 12 stats: {np.abs(fast_stats - ref_stats).max():.3g}")
        print(f"  stats[0:3] (AP, AP50, AP75): {np.round(fast_stats[:3] * 100, 3).tolist()}")

        print(f"\n2. Bootstrap over images ({args.resamples} resamples)")
        t0 = time.perf_counter()
        pie = PerImageEval.from_coco(gt_path, dt_path)
        t_build = time.perf_counter() - t0
        point = pie.metrics()
        print(f"  load + COCOeval.evaluate once + arrays: {t_build:.2f} s "
              f"({len(pie.det_img)} detections kept, {len(pie._tp_pos)} true-positive entries)")
        print("  point estimate - COCOeval stats (x100): "
              + ", ".join(f"{m} {point[m] - 100 * fast_stats[j]:.1e}" for j, m in enumerate(("AP", "AP50", "AP75"))))
        W = bootstrap_weights(pie.n_images, args.resamples, args.seed)
        t0 = time.perf_counter()
        samples = pie.metrics_for_weights(W)
        t_boot = time.perf_counter() - t0
        print(f"  {args.resamples} resamples: {t_boot:.2f} s ({args.resamples / t_boot:.0f} resamples/s)")
        for m in METRICS:
            ci = setting_interval([point[m]], samples[m][None])
            print(f"  {m:<5} {ci.value:6.2f}  95% CI [{ci.lo:.2f}, {ci.hi:.2f}]  se {ci.se:.2f}"
                  f"  bias (resample mean - value) {np.nanmean(samples[m]) - point[m]:+.2f}")


if __name__ == "__main__":
    main()
