"""Report for a sweep of norms x images per GPU: tables, CSV/JSON and an AP plot.

Typical use::

    from frn_det.report import write_report
    paths = write_report([Path("multirun/2024-06-01")])
"""
from .load import ReportError, load_runs
from .write import write_report

__all__ = ["ReportError", "load_runs", "write_report"]
