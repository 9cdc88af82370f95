#!/usr/bin/env python
"""Write the sweep report; see ``frn_det/cli/report.py`` (``--help`` for options)."""
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from frn_det.cli.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
