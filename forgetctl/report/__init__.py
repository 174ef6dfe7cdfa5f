"""Report rendering: a self-contained HTML file (plots embedded) or Markdown with PNG plots,
plus report.json with the same data. Torch-free: works from the registry's stored numbers."""

from forgetctl.report.render import render_report
from forgetctl.report.timeline import build_timeline

__all__ = ["render_report", "build_timeline"]
