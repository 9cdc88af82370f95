"""Command line for the sweep report.

    python tools/report.py SWEEP_DIR [SWEEP_DIR ...] [--out DIR] [--references FILE]
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from .load import ReportError
from .write import write_report


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
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        paths = write_report(args.sweep_dirs, out_dir=args.out, references=args.references)
    except ReportError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 2
    for path in paths.values():
        print(path)
    return 0
