"""Reports built from records: tables, plots and a verdict per claim."""

from spikebench.report.build import build_report

__all__ = ["build_report"]
