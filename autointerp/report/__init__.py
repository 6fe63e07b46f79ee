"""The report: figures (PNG + SVG), a static HTML page with a feature gallery, summary.json/.md."""

from autointerp.report.build import collect_media, render_markdown, write_report
from autointerp.report.sources import report_from_files, report_from_run

__all__ = ["collect_media", "render_markdown", "report_from_files", "report_from_run", "write_report"]
