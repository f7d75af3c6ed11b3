"""The static HTML report: `mptcplab report OUT/` (build.py), read from a store in bulk (data.py), charts as plotly
figures (figures.py) drawn by the plotly.js written once into OUT/assets; pages from the jinja2 templates in templates/.

It imports the store, the analysis, the result models and the metric table, never the engine.
"""
from __future__ import annotations

__all__ = ["build_report", "ReportOptions", "BuildStats", "ChangePointDetector"]

from .build import BuildStats, ChangePointDetector, ReportOptions, build_report
