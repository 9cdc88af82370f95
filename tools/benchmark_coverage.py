#!/usr/bin/env python
"""The report's stars, intervals, power and convergence flag against known truth, by simulation.

    python tools/benchmark_coverage.py [--reps 1000] [--only intervals|convergence]

Synthetic sweeps run through the report's own code (frn_det/report/coverage.py: moderated
seed variances, families and max-t, power): the family-wise error under a global null of 13
norms x 2 images-per-GPU settings x 3 seeds, coverage with one noisy setting and with
heavy-tailed training noise, one pair alone at 2, 3 and 5 seeds, power at the printed
minimum detectable difference; then the convergence flag's false-flag rate on flat logged
losses and its hit rate on a loss still falling (frn_det/report/convergence.py). The table
it prints is the one in docs/intervals.md.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from frn_det.report.coverage import convergence_rows, coverage_rows  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=1000, help="simulated sweeps per row (4x for one pair alone)")
    p.add_argument("--only", choices=("intervals", "convergence"), default=None)
    args = p.parse_args()
    start = time.perf_counter()
    print(f"{args.reps} simulated sweeps per row; binomial SE of a rate near 0.95: "
          f"{(0.95 * 0.05 / args.reps) ** 0.5:.3f}, near 0.05: the same, near 0.80: {(0.16 / args.reps) ** 0.5:.3f}")
    print("| row | value | target |")
    print("|:---|---:|:---|")
    if args.only in (None, "intervals"):
        for row, value, target in coverage_rows(args.reps):
            print(f"| {row} | {value:.3f} | {target} |", flush=True)
    if args.only in (None, "convergence"):
        for row, value, target in convergence_rows(args.reps):
            print(f"| {row} | {value:.3f} | {target} |", flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
