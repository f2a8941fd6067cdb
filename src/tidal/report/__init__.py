"""The run report: figures, metrics.json and report.html for a run directory."""

from tidal.report.build import write_report
from tidal.report.metrics import evaluate_run

__all__ = ["evaluate_run", "write_report"]
