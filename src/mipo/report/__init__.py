"""The report stage: ``report.md`` and ``report.html`` from a run folder."""

from mipo.report.writer import ReportConfig, build_report

__all__ = ["ReportConfig", "build_report"]
