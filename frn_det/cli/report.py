"""Command line for the sweep report.

    python tools/report.py SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--references FILE] [--effect AP]
                           [--primary frn-gn frn-bn ...]
    python tools/report.py SWEEP_DIR --plan-seeds [--effect AP ...]   # seeds needed, nothing written
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from ..report.comparisons import DEFAULT_EFFECT, DEFAULT_PRIMARY, parse_comparison
from ..report.load import ReportError
from ..report.write import plan_seeds, write_report

PLAN_EFFECTS = (0.25, 0.5, 1.0, 2.0)  # AP points --plan-seeds prints without --effect


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="report",
        description="Summarise a norm x images-per-GPU sweep: "
                    "results.{json,csv,md} and an AP plot.")
    p.add_argument("sweep_dirs", nargs="+", type=Path,
                   help="sweep directories, each holding <run_name>/metrics.json")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: the first sweep dir)")
    p.add_argument("--references", type=Path, default=None,
                   help="YAML list of reference AP values, e.g. "
                        "configs/references/detectron2_model_zoo.yaml")
    p.add_argument("--effect", type=float, nargs="+", default=None, metavar="AP",
                   help=f"difference in AP points the power columns ask seeds for (default {DEFAULT_EFFECT}, "
                        "the paper's claimed gain); with --plan-seeds, one column per value")
    p.add_argument("--primary", nargs="*", default=None, metavar="NORM-BASELINE",
                   help="the primary comparisons, which form their own family and carry the stars (default: "
                        f"what the sweep declared, else {' '.join(DEFAULT_PRIMARY)}); with no value, the whole "
                        "difference table is one family")
    p.add_argument("--plan-seeds", action="store_true",
                   help="print the seeds per setting needed to detect each effect, from this sweep's "
                        "seed and test-image variances, and write nothing")
    return p



def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    effects = args.effect or ([DEFAULT_EFFECT] if not args.plan_seeds else list(PLAN_EFFECTS))
    if any(not e > 0 for e in effects):
        print(f"error: --effect must be positive AP points, got {effects}", file=sys.stderr)
        return 2
    try:
        for comparison in args.primary or ():
            parse_comparison(comparison)
    except ValueError as e:
        print(f"error: --primary: {e}", file=sys.stderr)
        return 2
    try:
        if args.plan_seeds:
            print(plan_seeds(args.sweep_dirs, effects, args.primary))
            return 0
        paths = write_report(args.sweep_dirs, out_dir=args.out, references=args.references, effect=effects[0],
                             primary=args.primary)
    except ReportError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 2
    for path in paths.values():
        print(path)
    return 0
