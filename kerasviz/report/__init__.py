"""The self-contained HTML report: a page builder, the subject it analyses, and its sections.

- :mod:`~kerasviz.report.page`: :class:`Report` and :class:`Section`, rendered by a Jinja2
  template with every PNG embedded;
- :mod:`~kerasviz.report.subject`: :class:`Subject` (a model and its images),
  :class:`InputSpace`, :class:`Settings` and :func:`prepare`;
- :mod:`~kerasviz.report.sections`: one function per section, listed once in :data:`SECTIONS`,
  with the cost of the heavy ones;
- :mod:`~kerasviz.report.budget`: measured model costs, the time budget and the planning of sizes;
- :mod:`~kerasviz.report.schedule`: :func:`analyze` runs the sections, planned to the budget;
- :mod:`~kerasviz.report.views`: the model up to one layer on a smaller input (pattern canvases);
- :mod:`~kerasviz.report.progress`: a progress bar per section, or one line per section;
- :mod:`~kerasviz.report.demo`: the ``kerasviz demo`` report.

Presentation only: ``import kerasviz`` never imports this package; ``kerasviz.cli`` does, lazily.
"""

from kerasviz.report.budget import CPU_BUDGET, Budget, Costs
from kerasviz.report.demo import build_demo_report
from kerasviz.report.page import REPORT_NAME, Report, Section, png_size
from kerasviz.report.progress import Progress
from kerasviz.report.schedule import analyze, build_report, elapsed_line, select_sections
from kerasviz.report.sections import SECTIONS, layer_table
from kerasviz.report.subject import InputSpace, Settings, Subject, prepare

__all__ = [
    "CPU_BUDGET",
    "REPORT_NAME",
    "SECTIONS",
    "Budget",
    "Costs",
    "InputSpace",
    "Progress",
    "Report",
    "Section",
    "Settings",
    "Subject",
    "analyze",
    "build_demo_report",
    "build_report",
    "elapsed_line",
    "layer_table",
    "png_size",
    "prepare",
    "select_sections",
]
