"""The self-contained HTML report: a page builder, the subject it analyses, and its sections.

- :mod:`~kerasviz.report.page`: :class:`Report` and :class:`Section`, rendered by a Jinja2
  template with every PNG embedded;
- :mod:`~kerasviz.report.subject`: :class:`Subject` (a model and its images),
  :class:`InputSpace`, :class:`Settings` and :func:`prepare`;
- :mod:`~kerasviz.report.sections`: one function per section, listed once in :data:`SECTIONS`;
- :mod:`~kerasviz.report.demo`: the ``kerasviz demo`` report.

Presentation only: ``import kerasviz`` never imports this package; ``kerasviz.cli`` does, lazily.
"""

from kerasviz.report.demo import build_demo_report
from kerasviz.report.page import REPORT_NAME, Report, Section, png_size
from kerasviz.report.sections import SECTIONS, analyze, build_report, layer_table
from kerasviz.report.subject import InputSpace, Settings, Subject, prepare

__all__ = [
    "REPORT_NAME",
    "SECTIONS",
    "InputSpace",
    "Report",
    "Section",
    "Settings",
    "Subject",
    "analyze",
    "build_demo_report",
    "build_report",
    "layer_table",
    "png_size",
    "prepare",
]
