"""The page builder: sections of figures, tables and notes, rendered by ``templates/report.html.j2``.

Each figure is written as a PNG next to ``report.html`` and embedded in it as a base64 data URI,
so the page needs no other file and no network. An inline script counts images that failed to
decode into ``<footer id="render-check" data-broken=...>``, which the headless-browser test reads.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from kerasviz import plot

REPORT_NAME = "report.html"
_ID = re.compile(r"^[a-z][a-z0-9-]*$")
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("kerasviz.report", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _cell(value: Any) -> tuple[str, str]:
    """(CSS class, text) of a table cell: floats with 3 decimals, numbers right-aligned."""
    if isinstance(value, float):
        return "num", f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return "num", str(value)
    return "", str(value)


@dataclass
class Section:
    """One ``<section>`` of the report: a heading, an intro and blocks in insertion order."""

    id: str
    title: str
    intro: str
    report: Report
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def image(self, image: Any, name: str, alt: str, caption: str = "") -> Path:
        """Adds a figure or image array; writes ``<out>/<name>.png`` and returns its path.

        Args:
            image: a matplotlib Figure (closed after saving) or an image array that
                :func:`kerasviz.plot.save` accepts.
            name: the file stem, unique within the report.
            alt: the alt text (what the image shows, for screen readers and broken links).
            caption: a short caption shown under the image.

        Raises:
            ValueError: ``name`` is already used, or ``alt`` is empty.
        """
        file = f"{name}.png"
        if file in self.report.files:
            raise ValueError(f"Expected `name` to be unique in the report. Received: {name!r}.")
        if not alt:
            raise ValueError(f"Expected `alt` to describe image {name!r}. Received: ''.")
        path = self.report.out_dir / file
        plot.save(image, path)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.report.files.append(file)
        self.blocks.append(dict(kind="image", file=file, data=data, alt=alt, caption=caption))
        return path

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = ""):
        """Adds a table. Floats are shown with 3 decimals; numbers are right-aligned.

        Raises:
            ValueError: a row does not have one cell per header.
        """
        for row in rows:
            if len(row) != len(header):
                raise ValueError(
                    f"Expected every row to have {len(header)} cells like `header`. "
                    f"Received a row with {len(row)}: {list(row)!r}."
                )
        cells = [[_cell(v) for v in row] for row in rows]
        self.blocks.append(dict(kind="table", header=list(header), rows=cells, caption=caption))

    def text(self, text: str, *, note: bool = False):
        """Adds a paragraph (a muted note with ``note=True``)."""
        self.blocks.append(dict(kind="text", text=text, note=note))


class Report:
    """An HTML report written into ``out_dir``: PNG files plus one self-contained page.

    Example:
        >>> report = Report("out", "kerasviz report")
        >>> sec = report.section("grad-cam", "Grad-CAM", "Where the class evidence lies.")
        >>> sec.image(kerasviz.plot.overlay(image, cam), "grad_cam", alt="Grad-CAM overlay")
        >>> report.write()
        PosixPath('out/report.html')
    """

    def __init__(self, out_dir: str | Path, title: str, subtitle: str = ""):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.subtitle = subtitle
        self.sections: list[Section] = []
        self.files: list[str] = []
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """Adds a line under the page's header (how the report was planned, say)."""
        self.notes.append(text)

    def section(self, id: str, title: str, intro: str = "") -> Section:
        """Starts a new section; ``id`` is its HTML id (lowercase letters, digits, dashes).

        Raises:
            ValueError: ``id`` is malformed or already used.
        """
        if not _ID.match(id) or any(s.id == id for s in self.sections):
            raise ValueError(
                f"Expected `id` to be a new lowercase id like 'grad-cam'. Received: {id!r}."
            )
        sec = Section(id, title, intro, self)
        self.sections.append(sec)
        return sec

    def html(self) -> str:
        """The page as one string."""
        return _ENV.get_template("report.html.j2").render(
            title=self.title,
            subtitle=self.subtitle,
            notes=self.notes,
            sections=self.sections,
            images=len(self.files),
            stamp=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        )

    def write(self) -> Path:
        """Writes ``report.html`` and returns its path."""
        path = self.out_dir / REPORT_NAME
        path.write_text(self.html(), encoding="utf-8")
        return path


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from a PNG header; used to check embedded images.

    Raises:
        ValueError: ``data`` does not start with the PNG signature.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("Expected PNG data. Received bytes without the PNG signature.")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
