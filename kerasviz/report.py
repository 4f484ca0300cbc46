"""The self-contained HTML report: sections of figures and tables, every image embedded.

:class:`Report` is a small builder. Each figure is written as a PNG next to ``report.html`` and
embedded in it as a base64 data URI, so the page needs no other file and no network. A tiny inline
script counts images that failed to decode and records the count in the page
(``<footer id="render-check" data-broken=...>``), which the headless-browser test reads back.

The analyses that fill the report (``analyze``) call the compute functions and lay their results
out with :mod:`kerasviz.plot`; ``kerasviz.cli`` loads models and images and calls them.
"""

from __future__ import annotations

import base64
import datetime
import html
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPORT_NAME = "report.html"

_CSS = """
:root { --fg: #1d2430; --muted: #5b6576; --line: #dde2ea; --accent: #2f6fdf; --bg: #f7f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
header.top { background: #1d2430; color: #fff; padding: 22px 32px; }
header.top h1 { margin: 0 0 4px; font-size: 24px; }
header.top p { margin: 0; color: #c5cbd6; }
nav { padding: 10px 32px; background: #fff; border-bottom: 1px solid var(--line);
      position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav a { color: var(--accent); text-decoration: none; font-size: 13px; white-space: nowrap; }
main { max-width: 1200px; margin: 0 auto; padding: 8px 32px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          margin: 22px 0; padding: 16px 22px; }
section h2 { margin: 0 0 6px; font-size: 19px; }
section p.intro { margin: 0 0 12px; color: var(--muted); }
figure { display: inline-block; vertical-align: top; margin: 8px 14px 12px 0; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px;
             image-rendering: auto; }
figcaption { font-size: 13px; color: var(--muted); max-width: 560px; margin-top: 4px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: left; }
th { background: #eef1f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; color: var(--muted); padding-top: 4px; }
p.note { color: var(--muted); font-style: italic; }
footer { max-width: 1200px; margin: 0 auto; padding: 0 32px 30px; color: var(--muted);
         font-size: 12px; }
"""

# Counts <img> elements that failed to load or decode, after the load event, into the footer.
_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) broken++;
  }
  var check = document.getElementById("render-check");
  check.setAttribute("data-images", String(images.length));
  check.setAttribute("data-broken", String(broken));
  check.setAttribute("data-sections", String(document.querySelectorAll("main section").length));
});
"""

_ID = re.compile(r"^[a-z][a-z0-9-]*$")


def _png_bytes(image: Any, path: Path) -> bytes:
    """Saves a figure or an image array as ``path`` (PNG) through :func:`kerasviz.plot.save`."""
    from kerasviz import plot

    plot.save(image, path)
    return path.read_bytes()


@dataclass
class _Image:
    file: str
    data: bytes
    alt: str
    caption: str


@dataclass
class _Table:
    header: list[str]
    rows: list[list[Any]]
    caption: str


@dataclass
class _Text:
    text: str
    note: bool


@dataclass
class Section:
    """One ``<section>`` of the report: a heading, an intro and blocks in insertion order."""

    id: str
    title: str
    intro: str
    report: Report
    blocks: list = field(default_factory=list)

    def image(self, image: Any, name: str, alt: str, caption: str = "") -> Path:
        """Adds a figure or image array; writes ``<out>/<name>.png`` and returns its path.

        Args:
            image: a matplotlib Figure (closed after saving) or an image array that
                :func:`kerasviz.plot.save` accepts.
            name: the file stem, unique within the report.
            alt: the alt text (what the image shows, for screen readers and broken links).
            caption: a short caption shown under the image.
        """
        file = f"{name}.png"
        if file in self.report.files:
            raise ValueError(f"Expected `name` to be unique in the report. Received: {name!r}.")
        if not alt:
            raise ValueError(f"Expected `alt` to describe image {name!r}. Received: ''.")
        path = self.report.out_dir / file
        data = _png_bytes(image, path)
        self.report.files.append(file)
        self.blocks.append(_Image(file, data, alt, caption))
        return path

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = ""):
        """Adds a table. Floats are shown with 3 decimals; numbers are right-aligned."""
        rows = [list(row) for row in rows]
        for row in rows:
            if len(row) != len(header):
                raise ValueError(
                    f"Expected every row to have {len(header)} cells like `header`. "
                    f"Received a row with {len(row)}: {row!r}."
                )
        self.blocks.append(_Table(list(header), rows, caption))

    def text(self, text: str, *, note: bool = False):
        """Adds a paragraph (a muted note with ``note=True``)."""
        self.blocks.append(_Text(text, note))


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

    def section(self, id: str, title: str, intro: str = "") -> Section:
        """Starts a new section; ``id`` is its HTML id (lowercase letters, digits, dashes)."""
        if not _ID.match(id) or any(s.id == id for s in self.sections):
            raise ValueError(
                f"Expected `id` to be a new lowercase id like 'grad-cam'. Received: {id!r}."
            )
        sec = Section(id, title, intro, self)
        self.sections.append(sec)
        return sec

    def html(self) -> str:
        """The page as one string."""
        esc = html.escape
        nav = "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in self.sections)
        body = "\n".join(_section_html(s) for s in self.sections)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f'<header class="top"><h1>{esc(self.title)}</h1><p>{esc(self.subtitle)}</p></header>\n'
            f"<nav>{nav}</nav>\n<main>\n{body}\n</main>\n"
            f'<footer id="render-check" data-broken="pending">Written by kerasviz on {stamp}; '
            f"{len(self.files)} images, also saved as PNG files beside this page.</footer>\n"
            f"<script>{_CHECK_SCRIPT}</script>\n</body>\n</html>\n"
        )

    def write(self) -> Path:
        """Writes ``report.html`` and returns its path."""
        path = self.out_dir / REPORT_NAME
        path.write_text(self.html(), encoding="utf-8")
        return path


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{html.escape(str(value))}</td>"
    if isinstance(value, float):
        return f'<td class="num">{value:.3f}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _section_html(sec: Section) -> str:
    esc = html.escape
    parts = [f'<section id="{sec.id}">', f"<h2>{esc(sec.title)}</h2>"]
    if sec.intro:
        parts.append(f'<p class="intro">{esc(sec.intro)}</p>')
    for block in sec.blocks:
        if isinstance(block, _Image):
            data = base64.b64encode(block.data).decode("ascii")
            caption = f"<figcaption>{esc(block.caption)}</figcaption>" if block.caption else ""
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block.alt)}" '
                f'data-file="{esc(block.file)}">{caption}</figure>'
            )
        elif isinstance(block, _Table):
            head = "".join(f"<th>{esc(str(h))}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in block.rows)
            caption = f"<caption>{esc(block.caption)}</caption>" if block.caption else ""
            parts.append(
                f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            )
        else:
            cls = ' class="note"' if block.note else ""
            parts.append(f"<p{cls}>{esc(block.text)}</p>")
    parts.append("</section>")
    return "\n".join(parts)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from a PNG header; used to check embedded images."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("Expected PNG data. Received bytes without the PNG signature.")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# ============================================================================ analyses
#
# Everything below fills a Report: it calls kerasviz's compute functions once per section (all
# images of a section in one batched call) and draws the results with kerasviz.plot.

DEMO_SEED = 2024  # held out: the demo models are trained on other seeds
SECTIONS = (
    ("predictions", "Predictions"),
    ("layers", "Layers and receptive fields"),
    ("feature-maps", "Feature maps"),
    ("filters", "Filter weights"),
    ("filter-patterns", "Filter patterns"),
    ("neuron-patterns", "Neuron patterns"),
    ("grad-cam", "Grad-CAM and Grad-CAM++"),
    ("signed-cam", "Signed CAMs of two classes"),
    ("gradients", "Saliency, SmoothGrad and integrated gradients"),
    ("inversion", "Feature inversion"),
    ("adversarial", "Adversarial example (FGSM)"),
    ("localization", "Localization on ground-truth masks"),
)


@dataclass(frozen=True)
class InputSpace:
    """How display pixels ``p`` in [0, 1] map to model inputs: ``x = p @ matrix + offset``.

    Every ``keras.applications`` preprocessing is such a per-pixel affine map (scaling, mean
    subtraction, RGB to BGR), so optimized or attacked inputs can be mapped back for display.
    """

    matrix: np.ndarray
    offset: np.ndarray

    @classmethod
    def identity(cls, channels: int = 3) -> InputSpace:
        return cls(np.eye(channels, dtype=np.float32), np.zeros(channels, np.float32))

    @classmethod
    def from_preprocess(cls, fn: Callable[[np.ndarray], Any], channels: int) -> InputSpace:
        """Measures the affine map of ``fn``, a preprocessing of 0..255 float images."""
        probes = np.concatenate(
            [np.zeros((1, channels)), 255.0 * np.eye(channels), np.full((1, channels), 127.5)]
        ).astype(np.float32)
        out = np.asarray(fn(probes.reshape(-1, 1, 1, channels).copy()), np.float64)
        out = out.reshape(channels + 2, channels)
        offset, matrix, gray = out[0], out[1:-1] - out[0], out[-1]
        if not np.allclose(gray, offset + 0.5 * matrix.sum(axis=0), rtol=1e-4, atol=1e-4):
            raise ValueError(
                "Expected the preprocessing to be a per-pixel affine map of 0..255 images. "
                "Received: a function that is not affine."
            )
        return cls(matrix.astype(np.float32), offset.astype(np.float32))

    def to_model(self, pixels: np.ndarray) -> np.ndarray:
        return (np.asarray(pixels, np.float32) @ self.matrix + self.offset).astype(np.float32)

    def to_display(self, x: Any, *, clip: bool = True) -> np.ndarray:
        """Model inputs back to display pixels, clipped to [0, 1] unless ``clip=False``."""
        pixels = (np.asarray(x, np.float32) - self.offset) @ np.linalg.inv(self.matrix)
        return (np.clip(pixels, 0.0, 1.0) if clip else pixels).astype(np.float32)

    @property
    def value_range(self) -> tuple[float, float]:
        """The smallest and largest model-input value any display image can produce."""
        low = self.offset + np.minimum(self.matrix, 0).sum(axis=0)
        high = self.offset + np.maximum(self.matrix, 0).sum(axis=0)
        return float(low.min()), float(high.max())

    @property
    def scale(self) -> float:
        """Model-input units per display unit (1 for images in [0, 1], 255 for VGG's)."""
        return float(np.abs(self.matrix).sum(axis=0).mean())


@dataclass
class Subject:
    """A model and the images to analyse it on.

    Attributes:
        name: shown in headings.
        model: the Keras model (never modified).
        inputs: model inputs ``(n, h, w, c)``, preprocessed.
        display: the same images in [0, 1] for display ``(n, h, w, c)``.
        names: one label per image (file names).
        space: how display pixels map to model inputs.
        class_names: names of the classes, or None for indices.
        labels: true classes ``(n,)``, when known.
        masks: ground-truth object masks ``(n, h, w)``, when known (localization scores).
        pair: ``(model_input, display, (class_a, class_b))``, an image holding two objects for the
            signed CAM; None uses the first image and its two most likely classes.
    """

    name: str
    model: Any
    inputs: np.ndarray
    display: np.ndarray
    names: list[str]
    space: InputSpace
    class_names: Sequence[str] | None = None
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    pair: tuple | None = None
    # Filled by the predictions section.
    scores: np.ndarray | None = None
    targets: np.ndarray | None = None
    cam_layer: str | None = None

    def class_name(self, index: int) -> str:
        index = int(index)
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return f"{self.class_names[index]}"
        return f"class {index}"


@dataclass(frozen=True)
class Settings:
    """Sizes and step counts of the analyses; :meth:`fast` is for tests."""

    show: int = 3  # images in per-image figures
    feature_channels: int = 32  # channels per feature-map grid
    max_feature_layers: int = 12  # conv layers shown (evenly spaced beyond that)
    pattern_channels: int = 32
    pattern_steps: int = 96
    neurons: int = 8
    neuron_steps: int = 96
    smooth_samples: int = 20
    ig_steps: int = 50
    inversion_steps: int = 150
    epsilon: float = 0.02  # FGSM step, in display units (fraction of the pixel range)
    localization: int = 24  # images scored on masks (demo)
    localization_steps: int = 16  # IG steps and SmoothGrad samples when scoring

    @classmethod
    def full(cls) -> Settings:
        return cls()

    @classmethod
    def fast(cls) -> Settings:
        return cls(
            show=2,
            feature_channels=8,
            max_feature_layers=4,
            pattern_channels=8,
            pattern_steps=3,
            neurons=3,
            neuron_steps=3,
            smooth_samples=3,
            ig_steps=4,
            inversion_steps=3,
            localization=6,
            localization_steps=3,
        )


def _spatial(shape: tuple) -> str:
    return "x".join(str(s) for s in shape)


def layer_table(model: Any) -> tuple[list[str], list[list[Any]]]:
    """Every leaf layer with its type, output shape and receptive field (size, stride, start).

    Layers whose field is not defined (e.g. after an upsampling) show "-".
    """
    from kerasviz._graph import is_graph_model, iter_layers
    from kerasviz._layers import output_shape
    from kerasviz.receptive_field import receptive_field

    header = ["layer", "type", "output shape", "RF size", "RF stride", "RF start"]
    rows = []
    for path, layer in iter_layers(model):
        if is_graph_model(layer):
            continue
        try:
            shape = str(tuple(output_shape(layer))[1:])
        except (AttributeError, ValueError):
            shape = "-"
        try:
            rf = receptive_field(model, path)
            if rf.is_global:
                size, stride, start = f"global ({_spatial(rf.size)})", "-", "-"
            else:
                size, stride = _spatial(rf.size), _spatial(rf.stride)
                start = ", ".join(str(s) for s in rf.start)
        except ValueError:
            size = stride = start = "-"
        rows.append([path, type(layer).__name__, shape, size, stride, start])
    return header, rows


def _conv_layers(model: Any) -> list[str]:
    from kerasviz._layers import is_conv, output_shape, spatial_layers

    return [
        p for p, layer in spatial_layers(model) if is_conv(layer) and len(output_shape(layer)) == 4
    ]


def _spread(items: list, k: int) -> list:
    """At most ``k`` items, evenly spaced, first and last included."""
    if len(items) <= k:
        return list(items)
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in picks]


def _rgb(images: np.ndarray) -> np.ndarray:
    """Display images with one channel are repeated to grey RGB (every plot accepts RGB)."""
    images = np.asarray(images)
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def _forward(model: Any, inputs: np.ndarray, batch_size: int = 32) -> np.ndarray:
    parts = [
        np.asarray(model(inputs[i : i + batch_size], training=False))
        for i in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(parts).astype(np.float64)


@dataclass
class _Context:
    report: Report
    subjects: list[Subject]
    settings: Settings
    layer: Any
    target: int | None

    @property
    def main(self) -> Subject:
        return self.subjects[0]


def _heading(ctx: _Context, subject: Subject) -> str:
    return f" ({subject.name})" if len(ctx.subjects) > 1 else ""


def _sec_predictions(ctx: _Context, sec: Section) -> None:
    from kerasviz import plot
    from kerasviz._layers import default_cam_layer, resolve_layer

    for s in ctx.subjects:
        s.scores = _forward(s.model, s.inputs)
        predicted = s.scores.argmax(axis=1)
        s.targets = (
            np.full(len(s.inputs), ctx.target, np.int64) if ctx.target is not None else predicted
        )
        if ctx.layer is not None and s is ctx.main:
            s.cam_layer = resolve_layer(s.model, ctx.layer, "--layer")[0]
        else:
            s.cam_layer = default_cam_layer(s.model)[0]
        k = min(ctx.settings.show, len(s.inputs))
        rows, titles = [], []
        for i in range(len(s.inputs)):
            top = np.argsort(-s.scores[i])[:3]
            guesses = ", ".join(f"{s.class_name(c)} {s.scores[i, c]:.2f}" for c in top)
            truth = s.class_name(s.labels[i]) if s.labels is not None else "-"
            rows.append([s.names[i], truth, s.class_name(predicted[i]), guesses])
            if i < k:
                titles.append(
                    f"{s.names[i]}\npred: {s.class_name(predicted[i])} "
                    f"{s.scores[i, predicted[i]]:.2f}"
                )
        if s is ctx.main:
            fig = plot.gallery(_rgb(s.display[:k]), titles, cols=k)
            sec.image(fig, "predictions", alt=f"The {k} first images with predicted classes")
        if s.labels is not None:
            accuracy = float(np.mean(predicted == s.labels))
            sec.text(f"{s.name}: {accuracy:.1%} of {len(predicted)} images classified correctly.")
        sec.table(
            ["image", "true class", "predicted", "top scores"],
            rows[: max(k, 8)],
            caption=f"{s.name}: model output for each image (the first {min(len(rows), max(k, 8))}).",
        )


def _sec_layers(ctx: _Context, sec: Section) -> None:
    for s in ctx.subjects:
        header, rows = layer_table(s.model)
        sec.table(
            header,
            rows,
            caption=f"{s.name}: receptive fields in input pixels; unit (i, j) sees rows "
            "start + i*stride ... + size - 1. The CAM layer is " + str(s.cam_layer) + ".",
        )


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")


def _sec_feature_maps(ctx: _Context, sec: Section) -> None:
    import kerasviz
    from kerasviz import plot
    from kerasviz._layers import spatial_layers

    s, st = ctx.main, ctx.settings
    convs = _conv_layers(s.model)
    shown = _spread(convs, st.max_feature_layers)
    if len(shown) < len(convs):
        sec.text(f"{len(shown)} of the {len(convs)} conv layers, evenly spaced.", note=True)
    progression = _spread([p for p, _ in spatial_layers(s.model)], 20)
    maps = kerasviz.feature_maps(s.model, s.inputs[:1], list(dict.fromkeys(progression + shown)))
    fig = plot.layer_progression({p: maps[p] for p in progression}, image=0)
    sec.image(
        fig,
        "layer_progression",
        alt="The mean activation of each spatial layer for the first image",
        caption=f"{s.names[0]}: the channel mean of each spatial layer, from input to output.",
    )
    last = maps[shown[-1]][0]
    busiest = int(np.argmax(last.mean(axis=(0, 1))))
    fig = plot.channel(last, busiest, title=f"{shown[-1]}, channel {busiest}")
    sec.image(
        fig,
        "feature_map_channel",
        alt=f"Channel {busiest} of {shown[-1]}",
        caption=f"The most active channel of {shown[-1]} in its own units.",
    )
    for k, path in enumerate(shown):
        count = min(st.feature_channels, maps[path].shape[-1])
        fig = plot.feature_map_grid(
            maps[path][0],
            normalize="standardize",
            channels=count,
            title=f"{path}  {_spatial(maps[path].shape[1:])}",
        )
        sec.image(
            fig,
            f"feature_maps_{k}_{_slug(path)}",
            alt=f"Feature maps of {path}",
            caption=f"{path}: the first {count} of {maps[path].shape[-1]} channels, each "
            "standardized to mean 128 and std 64.",
        )


def _kernels(model: Any, convs: list[str]) -> list[tuple[str, np.ndarray]]:
    import kerasviz

    out = []
    for path in convs:
        weights = kerasviz.filter_weights(model, path)
        kernel = weights.get("kernel")
        if kernel is not None and kernel.ndim == 4:
            out.append((path, kernel))
    return out


def _depthwise_filters(s: Subject, sec: Section) -> None:
    """Models whose deeper spatial filters are all depthwise (MobileNet): one kernel per channel."""
    import kerasviz
    from kerasviz import plot

    for path in _conv_layers(s.model):
        kernel = kerasviz.filter_weights(s.model, path).get("depthwise_kernel")
        if kernel is not None and kernel.shape[0] * kernel.shape[1] > 1:
            kh, kw, cin, mult = kernel.shape
            per_channel = kernel.reshape(kh, kw, 1, cin * mult)
            fig = plot.filter_channel_average(per_channel, max_filters=32, title=path)
            sec.image(
                fig,
                "filters_depthwise",
                alt=f"Depthwise filters of {path}",
                caption=f"{path} {kernel.shape}: the deeper spatial filters are depthwise, one "
                "per input channel (the first 32, grey is zero).",
            )
            return
    sec.text("No deeper convolution has a spatial kernel to show.", note=True)


def _sec_filters(ctx: _Context, sec: Section) -> None:
    from kerasviz import plot

    s = ctx.main
    kernels = _kernels(s.model, _conv_layers(s.model))
    if not kernels:
        sec.text("The model has no Conv2D layer with a kernel to show.", note=True)
        return
    path, kernel = kernels[0]
    if kernel.shape[2] == 3:
        fig = plot.filter_rgb(kernel, max_filters=32, title=f"{path} {kernel.shape}")
        caption = (
            f"{path}: each filter as an RGB tile, followed by its R, G and B weights in grey "
            "(one min-max scale per filter)."
        )
    else:
        fig = plot.filter_channel_average(kernel, max_filters=32, title=f"{path} {kernel.shape}")
        caption = f"{path}: each filter averaged over its input channels."
    sec.image(fig, "filters_first", alt=f"First-layer filters of {path}", caption=caption)
    deeper = [(p, k) for p, k in kernels[1:] if k.shape[0] * k.shape[1] > 1]
    if not deeper:
        _depthwise_filters(s, sec)
    if deeper:
        path, kernel = deeper[0]
        fig = plot.filter_depth_sections(kernel, max_filters=8, max_inputs=8, title=path)
        sec.image(
            fig,
            "filters_depth_sections",
            alt=f"Depth sections of the filters of {path}",
            caption=f"{path} {kernel.shape}: one filter per row, one input channel per column; "
            "grey is zero, each row on one scale.",
        )
        path, kernel = deeper[-1]
        fig = plot.filter_channel_average(kernel, max_filters=32, title=path)
        sec.image(
            fig,
            "filters_channel_average",
            alt=f"Channel averages of the filters of {path}",
            caption=f"{path} {kernel.shape}: each filter averaged over its input channels, on "
            "one signed scale (grey is zero).",
        )


def _start(s: Subject) -> np.ndarray:
    """Gray with faint seeded noise: units that are silent on flat gray still get a gradient."""
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, s.inputs.shape[1:])
    return s.space.to_model((0.5 + noise).astype(np.float32))


def _sec_filter_patterns(ctx: _Context, sec: Section) -> None:
    import kerasviz
    from kerasviz import plot

    s, st = ctx.main, ctx.settings
    path = s.cam_layer
    total = int(kerasviz.resolve_layer(s.model, path)[1].output.shape[-1])
    count = min(st.pattern_channels, total)
    patterns = kerasviz.filter_patterns(
        s.model,
        path,
        channels=range(count),
        steps=st.pattern_steps,
        start=_start(s),
        value_range=s.space.value_range,
    )
    grid = plot.image_grid(
        s.space.to_display(patterns, clip=False), cols=8, margin=5, normalize="minmax"
    )
    sec.image(
        grid,
        "filter_patterns",
        alt=f"Input patterns that maximize the first {count} channels of {path}",
        caption=f"{path}: the input that maximizes the mean of each of the first {count} "
        f"channels ({st.pattern_steps} steps of gradient ascent from noisy gray, all channels in one "
        "batch); 8 per row, 5 px margins.",
    )


def _neuron_layer(s: Subject) -> tuple[str, Any]:
    """The deepest conv whose units see at most half of the input."""
    import kerasviz

    best = None
    for path in _conv_layers(s.model):
        try:
            rf = kerasviz.receptive_field(s.model, path)
        except ValueError:
            continue
        if not rf.is_global and all(
            2 * a <= b for a, b in zip(rf.size, rf.input_size, strict=True)
        ):
            best = (path, rf)
    if best is None:
        path = _conv_layers(s.model)[0]
        best = (path, kerasviz.receptive_field(s.model, path))
    return best


def _sec_neuron_patterns(ctx: _Context, sec: Section) -> None:
    import kerasviz
    from kerasviz import plot

    s, st = ctx.main, ctx.settings
    path, rf = _neuron_layer(s)
    total = int(kerasviz.resolve_layer(s.model, path)[1].output.shape[-1])
    channels = list(range(min(st.neurons, total)))
    centre = tuple(m // 2 for m in rf.map_size)
    objectives = [kerasviz.neuron(path, c, centre) for c in channels]
    images = kerasviz.maximize(
        s.model,
        objectives,
        steps=st.neuron_steps,
        start=_start(s),
        parametrization="pixel",
        regularizers=(),
        transforms=(),
        learning_rate=0.01,
        value_range=s.space.value_range,
    ).images
    pixels = s.space.to_display(images, clip=False)
    crops = kerasviz.crop_to_receptive_field(pixels, rf, centre)
    fig = plot.gallery(
        [_rgb(plot.normalize(c, "minmax")) for c in crops],
        [f"channel {c}" for c in channels],
        cols=min(8, len(channels)),
        panel_size=1.4,
    )
    box = rf.box(*centre)
    sec.image(
        fig,
        "neuron_patterns",
        alt=f"Neuron patterns of {path} cropped to the receptive field",
        caption=f"{path}: the centre unit {centre} of each channel, maximized from noisy gray "
        f"with plain pixel steps, cut to its exact receptive field {box} "
        f"({_spatial(rf.size)} px); nothing outside it changes.",
    )
    fig = plot.receptive_field_boxes(
        _rgb(plot.normalize(pixels[0], "minmax")), [box], labels=[f"RF {_spatial(rf.size)}"]
    )
    sec.image(
        fig,
        "neuron_pattern_full",
        alt=f"The whole input optimized for channel 0 of {path}, with the receptive field box",
        caption=f"The whole input for channel {channels[0]}, with the unit's receptive field.",
    )


def _project(cam: np.ndarray, rf: Any) -> tuple[np.ndarray, np.ndarray]:
    import kerasviz

    return kerasviz.backproject(cam, rf), kerasviz.resize_bilinear(cam, rf.input_size)


def _sec_grad_cam(ctx: _Context, sec: Section) -> None:
    import kerasviz
    from kerasviz import plot

    st = ctx.settings
    for s in ctx.subjects:
        n = min(st.show, len(s.inputs))
        x, t = s.inputs[:n], s.targets[:n]
        rf = kerasviz.receptive_field(s.model, s.cam_layer)
        maps = {}
        for name, method in (
            ("Grad-CAM", kerasviz.grad_cam),
            ("Grad-CAM++", kerasviz.grad_cam_plus_plus),
        ):
            cam = method(s.model, x, t, s.cam_layer, upsample=None)
            exact, resized = _project(cam, rf)
            maps[f"{name}\nexact RF"] = exact
            maps[f"{name}\nresize"] = resized
        fig = plot.heatmaps(_rgb(s.display[:n]), maps)
        sec.image(
            fig,
            f"grad_cam_{_slug(s.name)}",
            alt=f"Grad-CAM and Grad-CAM++ of {s.name}, back-projected and resized",
            caption=f"{s.name}, layer {s.cam_layer} ({_spatial(rf.map_size)} map, RF "
            f"{_spatial(rf.size)}, stride {_spatial(rf.stride)}, start {rf.start}): each map "
            "back-projected through the exact receptive fields, beside a bilinear resize. "
            "Targets: " + ", ".join(s.class_name(c) for c in t) + ".",
        )
        if s is ctx.main:
            last = tuple(m - 1 for m in rf.map_size)
            centre = tuple(m // 2 for m in rf.map_size)
            zero = (0,) * len(rf.map_size)
            fig = plot.receptive_field_boxes(
                _rgb(s.display[0]),
                [rf.box(*zero), rf.box(*centre), rf.box(*last)],
                labels=[f"unit {zero}", f"unit {centre}", f"unit {last}"],
            )
            sec.image(
                fig,
                "cam_receptive_fields",
                alt=f"Receptive fields of three units of {s.cam_layer}",
                caption=f"Where three units of {s.cam_layer} look: unit {zero} sees "
                f"{rf.box(*zero)} (top, left, bottom, right), not the corner pixel a resize "
                "assigns it to.",
            )


def _sec_signed_cam(ctx: _Context, sec: Section) -> None:
    import kerasviz
    from kerasviz import plot

    s = ctx.main
    if s.scores.shape[1] < 2:
        sec.text("A signed map compares two classes; this model has one output.", note=True)
        return
    if s.pair is not None:
        x, display, (a, b) = s.pair
        x, display = x[None], display
        what = "an image holding two objects"
    else:
        x, display = s.inputs[:1], s.display[0]
        a, b = (int(c) for c in np.argsort(-s.scores[0])[:2])
        what = f"{s.names[0]} and its two most likely classes"
    cams = kerasviz.grad_cam(s.model, np.concatenate([x, x]), [a, b], s.cam_layer, relu=False)
    name_a, name_b = s.class_name(a), s.class_name(b)
    fig = plot.signed_map(_rgb(display), cams[0], cams[1], labels=(name_a, name_b))
    sec.image(
        fig,
        "signed_cam",
        alt=f"Signed class activation map, {name_a} against {name_b}",
        caption=f"{what}: the CAM of {name_a} minus the CAM of {name_b}, without ReLU, on one "
        f"scale centred at 0 (red: evidence for {name_a}, blue: for {name_b}).",
    )
    fig = plot.heatmaps(
        _rgb(display), {name_a: cams[0], name_b: cams[1]}, normalize="signed", cmap="RdBu_r"
    )
    sec.image(
        fig,
        "signed_cam_each",
        alt=f"The signed CAMs of {name_a} and of {name_b}",
        caption="Each class's signed CAM on the same 0-centred scale.",
    )


def _baseline(s: Subject, value: float, n: int) -> np.ndarray:
    shape = (n, *s.inputs.shape[1:])
    return s.space.to_model(np.full(shape, value, np.float32))


def _sec_gradients(ctx: _Context, sec: Section) -> None:
    import kerasviz
    from kerasviz import plot

    s, st = ctx.main, ctx.settings
    n = min(st.show, len(s.inputs))
    x, t = s.inputs[:n], s.targets[:n]
    maps = {
        "saliency": kerasviz.saliency(s.model, x, t),
        "SmoothGrad": kerasviz.smoothgrad(s.model, x, t, samples=st.smooth_samples, noise=0.1),
        "IG, black": kerasviz.integrated_gradients(
            s.model, x, t, baseline=_baseline(s, 0.0, n), steps=st.ig_steps
        ),
        "IG, blur": kerasviz.integrated_gradients(
            s.model, x, t, baseline="blur", steps=st.ig_steps
        ),
    }
    fig = plot.heatmaps(_rgb(s.display[:n]), maps, cmap="inferno", alpha=0.7)
    sec.image(
        fig,
        "gradients",
        alt="Saliency, SmoothGrad and integrated gradients with two baselines",
        caption=f"Max |gradient| over colour channels; SmoothGrad averages {st.smooth_samples} "
        f"noisy copies; integrated gradients ({st.ig_steps} steps) from a black and from a "
        "blurred baseline.",
    )


def _sec_inversion(ctx: _Context, sec: Section) -> None:
    import kerasviz
    from kerasviz import metrics, plot

    s, st = ctx.main, ctx.settings
    depths = _spread(_conv_layers(s.model), 3)
    original = s.display[0]
    pictures, titles, rows = [_rgb(original)], ["original"], []
    for path in depths:
        recon = kerasviz.invert(
            s.model,
            s.inputs[0],
            path,
            steps=st.inversion_steps,
            value_range=s.space.value_range,
        ).images
        shown = s.space.to_display(recon)
        ssim = float(metrics.ssim(shown, original))
        psnr = float(metrics.psnr(shown, original))
        pictures.append(_rgb(shown))
        titles.append(f"{path}\nSSIM {ssim:.2f}")
        rf = kerasviz.receptive_field(s.model, path)
        rows.append([path, _spatial(rf.size), ssim, psnr])
    fig = plot.gallery(pictures, titles, cols=len(pictures))
    sec.image(
        fig,
        "inversion",
        alt="The image reconstructed from the features of three layers",
        caption=f"Reconstructions from {', '.join(depths)} ({st.inversion_steps} steps), with "
        "their SSIM to the original.",
    )
    sec.table(
        ["layer", "RF size", "SSIM", "PSNR (dB)"],
        rows,
        caption="Deeper features keep less of the image.",
    )


def _sec_adversarial(ctx: _Context, sec: Section) -> None:
    import kerasviz
    from kerasviz import plot

    s, st = ctx.main, ctx.settings
    n = min(st.show, len(s.inputs))
    x, t = s.inputs[:n], s.targets[:n]
    epsilon = st.epsilon * s.space.scale
    adversarial = kerasviz.fgsm(s.model, x, t, epsilon=epsilon, value_range=s.space.value_range)
    after = _forward(s.model, np.asarray(adversarial))
    shown = s.space.to_display(adversarial)
    pictures, titles, rows = [], [], []
    for i in range(n):
        before_c, after_c = int(s.scores[i].argmax()), int(after[i].argmax())
        delta = shown[i] - s.display[i]
        pictures += [_rgb(s.display[i]), _rgb(plot.normalize(delta, "signed")), _rgb(shown[i])]
        titles += [
            f"{s.class_name(before_c)} {s.scores[i, before_c]:.2f}",
            f"perturbation (eps {st.epsilon:g})",
            f"{s.class_name(after_c)} {after[i, after_c]:.2f}",
        ]
        rows.append(
            [
                s.names[i],
                f"{s.class_name(before_c)} ({s.scores[i, before_c]:.2f})",
                f"{s.class_name(after_c)} ({after[i, after_c]:.2f})",
                f"{s.class_name(t[i])}: {s.scores[i, t[i]]:.2f} -> {after[i, t[i]]:.2f}",
            ]
        )
    fig = plot.gallery(pictures, titles, cols=3)
    sec.image(
        fig,
        "fgsm",
        alt="Original images, FGSM perturbations and adversarial images",
        caption=f"FGSM: one signed-gradient step of {st.epsilon:g} of the pixel range away from "
        "each image's class (perturbation shown amplified).",
    )
    sec.table(["image", "before", "after", "score of the attacked class"], rows)


def localization_scores(s: Subject, settings: Settings) -> list[list[Any]]:
    """Pointing game and energy pointing game of each method on ``s.masks`` (true classes)."""
    import kerasviz
    from kerasviz import metrics
    from kerasviz.plot import reduce_channels

    m = min(settings.localization, len(s.inputs))
    x, masks = s.inputs[:m], s.masks[:m]
    t = s.labels[:m] if s.labels is not None else s.targets[:m]
    rf = kerasviz.receptive_field(s.model, s.cam_layer)
    methods: dict[str, Callable[[], dict[str, np.ndarray]]] = {}

    def cams(method):
        cam = method(s.model, x, t, s.cam_layer, upsample=None)
        exact, resized = _project(cam, rf)
        return {"exact RF": exact, "bilinear resize": resized}

    methods["Grad-CAM"] = lambda: cams(kerasviz.grad_cam)
    methods["Grad-CAM++"] = lambda: cams(kerasviz.grad_cam_plus_plus)
    methods["saliency"] = lambda: {"": kerasviz.saliency(s.model, x, t)}
    methods["SmoothGrad"] = lambda: {
        "": kerasviz.smoothgrad(s.model, x, t, samples=settings.localization_steps, noise=0.1)
    }
    methods["integrated gradients"] = lambda: {
        "": kerasviz.integrated_gradients(
            s.model, x, t, baseline=_baseline(s, 0.0, m), steps=settings.localization_steps
        )
    }
    rows = []
    for name, compute in methods.items():
        start = time.perf_counter()
        results = compute()
        seconds = (time.perf_counter() - start) / m / len(results)
        for projection, maps in results.items():
            maps = np.asarray(maps)
            if maps.ndim == 4:
                maps = reduce_channels(maps, "abs_max")
            rows.append(
                [
                    name,
                    projection or "-",
                    float(np.mean(metrics.pointing_game(maps, masks))),
                    float(np.mean(metrics.energy_pointing_game(maps, masks))),
                    seconds,
                ]
            )
    return rows


def _sec_localization(ctx: _Context, sec: Section) -> None:
    scored = [s for s in ctx.subjects if s.masks is not None]
    if not scored:
        sec.text(
            "No ground-truth masks were given, so nothing can be scored here; `kerasviz demo` "
            "scores every method on the exact masks of its synthetic images.",
            note=True,
        )
        return
    for s in scored:
        m = min(ctx.settings.localization, len(s.inputs))
        rows = localization_scores(s, ctx.settings)
        sec.table(
            ["method", "projection", "pointing game", "energy pointing game", "s / image"],
            rows,
            caption=f"{s.name}: {m} held-out images, maps of the true class. Pointing game: share "
            "of maps whose maximum lies on the object; energy: share of positive map mass on it.",
        )


_SECTION_FUNCTIONS = {
    "predictions": (_sec_predictions, "What the model predicts for each image."),
    "layers": (
        _sec_layers,
        "Every layer with its output shape and the exact receptive field of "
        "its units in input pixels.",
    ),
    "feature-maps": (_sec_feature_maps, "The activations of the conv layers for one image."),
    "filters": (_sec_filters, "The learned weights of the first layer and of deeper layers."),
    "filter-patterns": (
        _sec_filter_patterns,
        "What each channel of one layer responds to most, found by gradient ascent on the input.",
    ),
    "neuron-patterns": (
        _sec_neuron_patterns,
        "What single units respond to, shown only inside their receptive field.",
    ),
    "grad-cam": (
        _sec_grad_cam,
        "Where the evidence for the class lies, projected exactly through "
        "the receptive fields, beside the usual bilinear resize.",
    ),
    "signed-cam": (_sec_signed_cam, "Evidence for one class against another, on one scale."),
    "gradients": (_sec_gradients, "Pixel-level attributions from input gradients."),
    "inversion": (_sec_inversion, "Images reconstructed from the features of three depths."),
    "adversarial": (_sec_adversarial, "A small perturbation along the gradient's sign."),
    "localization": (_sec_localization, "How well each method's map points at the object."),
}


def analyze(
    report: Report,
    subjects: Sequence[Subject],
    settings: Settings,
    *,
    layer: Any = None,
    target: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Adds every section of :data:`SECTIONS` to ``report``; the first subject is the main one.

    Sections about one model (feature maps, filters, optimization, inversion, FGSM) use the first
    subject; predictions, layers, Grad-CAM and localization cover every subject.
    """
    ctx = _Context(report, list(subjects), settings, layer, target)
    for k, (sid, title) in enumerate(SECTIONS, start=1):
        function, intro = _SECTION_FUNCTIONS[sid]
        start = time.perf_counter()
        function(ctx, report.section(sid, title, intro))
        if progress is not None:
            progress(f"[{k:2d}/{len(SECTIONS)}] {title}: {time.perf_counter() - start:.1f} s")
    return report


def build_report(
    out: str | Path,
    subject: Subject,
    *,
    settings: Settings,
    layer: Any = None,
    target: int | None = None,
    title: str = "kerasviz report",
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Writes the report of one model on its images into ``out``; returns the HTML path."""
    report = Report(out, title, f"{subject.name}: {len(subject.inputs)} images")
    analyze(report, [subject], settings, layer=layer, target=target, progress=progress)
    return report.write()


def _two_object_image(images: np.ndarray, labels: np.ndarray, masks: np.ndarray):
    """Pastes the object of one image into another with a different class, without overlap."""
    grown = masks.copy()
    for axis in (1, 2):  # dilate by 4 px so the objects do not touch
        for shift in range(1, 5):
            grown |= np.roll(masks, shift, axis) | np.roll(masks, -shift, axis)
    for i in range(len(images)):
        for j in range(len(images)):
            if labels[i] != labels[j] and not np.any(grown[i] & grown[j]):
                image = np.where(masks[j][..., None], images[j], images[i])
                return image, (int(labels[i]), int(labels[j]))
    return None


def build_demo_report(
    out: str | Path,
    models: Sequence[Any],
    *,
    settings: Settings,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The demo: both demo models on held-out synthetic shapes, with localization scores."""
    from kerasviz.datasets import CLASS_NAMES, shapes

    size = int(models[0].inputs[0].shape[1])
    n = max(settings.localization, settings.show)
    images, labels, masks = shapes(n, size=size, seed=DEMO_SEED)
    space = InputSpace.identity(3)
    pair = _two_object_image(images, labels, masks)
    subjects = [
        Subject(
            name=model.name,
            model=model,
            inputs=images,
            display=images,
            names=[f"#{i} {CLASS_NAMES[c]}" for i, c in enumerate(labels)],
            space=space,
            class_names=CLASS_NAMES,
            labels=labels,
            masks=masks,
            pair=(pair[0], pair[0], pair[1]) if pair is not None else None,
        )
        for model in models
    ]
    report = Report(
        out,
        "kerasviz demo",
        f"{' and '.join(m.name for m in models)} on {n} held-out synthetic shapes images "
        f"({size}x{size}) with ground-truth masks.",
    )
    analyze(report, subjects, settings, progress=progress)
    return report.write()
