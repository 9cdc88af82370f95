#!/usr/bin/env python
"""Coverage of the report's 95% intervals by simulation, per number of seeds.

    python tools/benchmark_coverage.py [--reps 4000] [--seeds 1 2 3 5 10]

A synthetic sweep with known truth (frn_det/report/coverage.py: 6 settings, 200 test
images, training noise 0.5 AP per run, true difference 0.5 AP): how often the interval of
the difference, and of one setting's mean, holds the truth. Also with one setting's
training noise 2x and 4x the others' (what pooling assumes away), and the MDD-style width.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from frn_det.report.coverage import Scenario, simulate  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=4000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    args = p.parse_args()
    base = Scenario()
    print(f"scenario: {base}")
    print(f"{args.reps} replications per row; nominal 95%; binomial SE of a coverage near 95%: "
          f"{(0.95 * 0.05 / args.reps) ** 0.5:.3f}")
    print("| seeds | one setting's training sd | difference covered | setting mean covered | pooled "
          "| mean width (AP) |")
    print("|---:|---:|---:|---:|---:|---:|")
    start = time.perf_counter()
    for ratio in (1.0, 2.0, 4.0):
        for n in args.seeds:
            if ratio != 1 and n == 1:
                continue
            c = simulate(n, args.reps, Scenario(train_sd_ratio=ratio), seed=n)
            print(f"| {n} | {ratio:g}x | {c['difference']:.3f} | {c['setting']:.3f} | {c['pooled']:.3f} | "
                  f"{c['width']:.2f} |")
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
