"""The run report: figures, metrics.json with the checks, report.html, and the summary the
command line prints."""

from tidal.report.build import write_report
from tidal.report.checks import read_summary
from tidal.report.metrics import evaluate_run

__all__ = ["evaluate_run", "read_summary", "write_report"]
