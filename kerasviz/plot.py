"""Presentation: normalizations, image grids, overlays and matplotlib figures.

Compute functions return raw, unnormalized arrays. Everything that turns them into pictures
lives here, with the normalizations chosen by name (see :func:`normalize`).

* matplotlib and PIL are imported inside the functions that need them, so ``import kerasviz``
  never loads them on kerasviz's behalf, and the numpy helpers (:func:`normalize`,
  :func:`global_then_max_factors`, :func:`reduce_channels`, :func:`to_uint8`,
  :func:`image_grid`, :func:`filter_tiles`) work without matplotlib.
* Figures are built with ``matplotlib.figure.Figure`` directly, never with pyplot: nothing is
  shown, no global figure state is created or leaked, and it is safe headless and in threads.
* Every figure function returns the ``Figure``. ``path=`` saves it as PNG (``bbox_inches=
  "tight"``, parent folders created). Single-panel functions take ``ax=`` to draw into an
  existing axes; multi-panel functions take ``fig=`` (a Figure or SubFigure) to draw into.

Example:
    >>> from kerasviz import plot
    >>> maps = kerasviz.feature_maps(model, image, "conv2d")["conv2d"]  # (h, w, c)
    >>> plot.feature_map_grid(maps, normalize="global_then_max", path="out/conv2d.png")
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure, SubFigure

NORMALIZATIONS = ("standardize", "minmax", "global_then_max", "shared", "signed")
REDUCTIONS = ("abs_max", "sum", "l2")
DPI = 120


# --------------------------------------------------------------------------- checks


def _check_choice(value: Any, allowed: Sequence[str], argname: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"Expected `{argname}` to be one of {list(allowed)}. Received: {value!r}.")
    return value


def _as_float(x: Any, argname: str) -> np.ndarray:
    """A finite, non-empty float64 array, or a ValueError naming ``argname``."""
    a = np.asarray(x)
    if a.dtype == bool:
        a = a.astype(np.float64)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(
            f"Expected `{argname}` to be a real numeric array. Received: dtype {a.dtype}."
        )
    if a.size == 0:
        raise ValueError(f"Expected `{argname}` to be non-empty. Received: shape {a.shape}.")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(
            f"Expected `{argname}` to be finite. Received: an array of shape {a.shape} with "
            f"{int((~np.isfinite(a)).sum())} NaN or Inf values."
        )
    return a


def _axes_tuple(ndim: int, axis: int | Sequence[int] | None) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    result = []
    for a in axes:
        if not isinstance(a, int | np.integer) or not -ndim <= a < ndim:
            raise ValueError(
                f"Expected `axis` to hold axes of a {ndim}D array. Received: axis={axis!r}."
            )
        result.append(int(a) % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"Expected `axis` without repeated axes. Received: axis={axis!r}.")
    return tuple(sorted(result))


def _check_rank(a: np.ndarray, ranks: Sequence[int], argname: str, expected: str) -> None:
    if a.ndim not in ranks:
        raise ValueError(f"Expected `{argname}` to be {expected}. Received: shape {a.shape}.")


# --------------------------------------------------------------------------- normalizations


def normalize(
    x: Any, method: str = "minmax", *, axis: int | Sequence[int] | None = None
) -> np.ndarray:
    """Rescale raw maps for display, by name.

    ``axis`` names the axes that make up one map; per-map statistics are taken over them and
    broadcast over the other axes. ``None`` means the whole array is one map. For one image's
    feature maps ``(h, w, c)`` use ``axis=(0, 1)`` (one map per channel); for a stack of CAMs
    ``(n, h, w)`` use ``axis=(1, 2)``.

    Methods:
        ``"standardize"``: per map ``(x - mean) / std * 64 + 128``, clipped to [0, 255] and
            truncated to uint8, as in the seed feature-map workflow (Chollet, *Deep Learning
            with Python*, 5.4.1). A constant map gives 128 everywhere.
        ``"minmax"``: per map to [0, 1]. A constant map gives zeros.
        ``"global_then_max"``: the whole array rescaled to [0, 1] with one min and max, then each
            map divided by its own max (all-zero maps stay zero). The multiplier applied to each
            map is :func:`global_then_max_factors`.
        ``"shared"``: one min-max scale for the whole array, to [0, 1] (``axis`` is ignored).
        ``"signed"``: ``0.5 + x / (2 * max|x|)`` with one scale for the whole array, so 0 maps to
            0.5 and ``+-max|x|`` to 1 and 0 (``axis`` is ignored). Use it for signed CAMs of two
            classes and signed attributions. An all-zero array gives 0.5.

    Returns:
        An array of the shape of ``x``: uint8 for ``"standardize"``, float32 in [0, 1] otherwise.
        Never NaN; non-finite inputs are a ValueError.

    Example:
        >>> normalize(np.array([0.0, 1.0, 2.0, 3.0]), "standardize")
        array([ 42,  99, 156, 213], dtype=uint8)
    """
    method = _check_choice(method, NORMALIZATIONS, "method")
    a = _as_float(x, "x")
    axes = _axes_tuple(a.ndim, axis)
    if method in ("shared", "signed"):
        axes = tuple(range(a.ndim))
    if method == "standardize":
        # Constant maps are detected exactly: their float mean need not equal their value.
        constant = a.max(axis=axes, keepdims=True) == a.min(axis=axes, keepdims=True)
        centred = np.where(constant, 0.0, a - a.mean(axis=axes, keepdims=True))
        std = np.where(constant, 1.0, a.std(axis=axes, keepdims=True))
        return np.clip(centred / std * 64.0 + 128.0, 0.0, 255.0).astype(np.uint8)
    if method == "signed":
        scale = np.abs(a).max()
        out = 0.5 + a / (2.0 * scale) if scale > 0 else np.full_like(a, 0.5)
        return out.astype(np.float32)
    if method == "global_then_max":
        g = _minmax(a, tuple(range(a.ndim)))
        peak = g.max(axis=axes, keepdims=True)
        return (g / np.where(peak > 0, peak, 1.0)).astype(np.float32)
    return _minmax(a, axes).astype(np.float32)


_normalize = normalize  # for functions whose `normalize` argument shadows the function


def _minmax(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    lo = a.min(axis=axes, keepdims=True)
    span = a.max(axis=axes, keepdims=True) - lo
    return (a - lo) / np.where(span > 0, span, 1.0)


def global_then_max_factors(x: Any, *, axis: int | Sequence[int] | None = None) -> np.ndarray:
    """The multiplier ``"global_then_max"`` applies to each map after the global rescale.

    A factor of 1 marks the map holding the global maximum; 4.0 means the map was brightened
    four times. A map that is all zero after the global rescale gets ``inf``.

    Returns:
        float64 array of the shape of ``x`` without the ``axis`` axes (0-d for ``axis=None``).

    Example:
        >>> global_then_max_factors(np.stack([np.full((2, 2), 4.0), np.eye(2)]), axis=(1, 2))
        array([1., 4.])
    """
    a = _as_float(x, "x")
    axes = _axes_tuple(a.ndim, axis)
    peak = _minmax(a, tuple(range(a.ndim))).max(axis=axes)
    with np.errstate(divide="ignore"):
        return np.where(peak > 0, 1.0 / np.where(peak > 0, peak, 1.0), np.inf)


def reduce_channels(
    attribution: Any, method: str = "abs_max", *, signed: bool = False, axis: int = -1
) -> np.ndarray:
    """Reduce an attribution's channel axis to one value per pixel.

    Methods: ``"abs_max"`` (max of ``|a|`` over channels, the usual saliency map of Simonyan et
    al., 2014), ``"sum"`` and ``"l2"`` (Euclidean norm). Unsigned results are magnitudes
    (``|sum|`` for ``"sum"``). With ``signed=True``, ``"abs_max"`` keeps the sign of the channel
    with the largest magnitude and ``"sum"`` is the plain sum; ``"l2"`` has no sign.

    Example:
        >>> reduce_channels(np.array([[[1.0, -3.0, 2.0]]]), signed=True)
        array([[-3.]])
    """
    method = _check_choice(method, REDUCTIONS, "reduce")
    a = _as_float(attribution, "attribution")
    axis = _axes_tuple(a.ndim, axis)[0]
    if method == "l2":
        if signed:
            raise ValueError(
                "Expected `reduce` to be 'abs_max' or 'sum' with signed=True. Received: 'l2'."
            )
        return np.sqrt((a * a).sum(axis=axis))
    if method == "sum":
        total = a.sum(axis=axis)
        return total if signed else np.abs(total)
    if not signed:
        return np.abs(a).max(axis=axis)
    index = np.expand_dims(np.abs(a).argmax(axis=axis), axis)
    return np.take_along_axis(a, index, axis=axis).squeeze(axis)


# --------------------------------------------------------------------------- arrays and files


def to_uint8(images: Any, *, axis: int | Sequence[int] | None = None) -> np.ndarray:
    """Convert images to uint8 pixels with one rule for the whole array.

    * uint8 stays as is; bool becomes 0 / 255;
    * an integer array within [0, 255] is cast;
    * a float array within [0, 1] is scaled by 255 and rounded;
    * anything else is min-max rescaled per image (over ``axis``; None: the whole array).

    Example:
        >>> to_uint8(np.array([0.0, 0.5, 1.0]))
        array([  0, 128, 255], dtype=uint8)
    """
    raw = np.asarray(images)
    if raw.dtype == np.uint8:
        return raw
    if raw.dtype == bool:
        return raw.astype(np.uint8) * np.uint8(255)
    a = _as_float(raw, "images")
    if np.issubdtype(raw.dtype, np.integer) and a.min() >= 0 and a.max() <= 255:
        return raw.astype(np.uint8)
    if not (np.issubdtype(raw.dtype, np.floating) and a.min() >= 0 and a.max() <= 1):
        a = _minmax(a, _axes_tuple(a.ndim, axis))
    return np.rint(a * 255.0).astype(np.uint8)


def image_grid(
    images: Any,
    cols: int | None = None,
    margin: int = 5,
    *,
    normalize: str | None = None,
    background: int = 0,
) -> np.ndarray:
    """Stitch images into one uint8 array, row by row.

    Args:
        images: ``(n, h, w)`` or ``(n, h, w, c)`` with c in 1, 3 or 4.
        cols: images per row; None for ``ceil(sqrt(n))``.
        margin: pixels between neighbouring images (none around the outside).
        normalize: None converts with :func:`to_uint8` (floats in [0, 1] are scaled by 255,
            other ranges min-max per image); a :func:`normalize` method name is applied per
            image instead (``"shared"`` and ``"signed"`` use one scale for all).
        background: the value of the margins and of empty cells: 0 (black, the default) to 255.

    Returns:
        uint8 ``(rows*h + (rows-1)*margin, cols*w + (cols-1)*margin[, c])`` with
        ``rows = ceil(n / cols)``.

    Example:
        >>> image_grid(np.zeros((64, 32, 32, 3)), cols=8, margin=5).shape
        (291, 291, 3)
    """
    a = np.asarray(images)
    _check_rank(a, (3, 4), "images", "(n, h, w) or (n, h, w, c)")
    if a.ndim == 4 and a.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Expected `images` to have 1, 3 or 4 channels. Received: shape {a.shape}."
        )
    if a.shape[0] == 0:
        raise ValueError(f"Expected `images` to hold at least one image. Received: {a.shape}.")
    n = a.shape[0]
    cols = math.ceil(math.sqrt(n)) if cols is None else cols
    if not isinstance(cols, int | np.integer) or isinstance(cols, bool) or cols < 1:
        raise ValueError(f"Expected `cols` to be a positive int. Received: {cols!r}.")
    if not isinstance(margin, int | np.integer) or margin < 0:
        raise ValueError(f"Expected `margin` to be a non-negative int. Received: {margin!r}.")
    if not isinstance(background, int | np.integer) or not 0 <= background <= 255:
        raise ValueError(
            f"Expected `background` to be an int in [0, 255]. Received: {background!r}."
        )
    per_image = tuple(range(1, a.ndim))
    if normalize is None:
        pixels = to_uint8(a, axis=per_image)
    else:
        scaled = _normalize(a, normalize, axis=per_image)
        pixels = scaled if scaled.dtype == np.uint8 else np.rint(scaled * 255.0).astype(np.uint8)
    rows = math.ceil(n / cols)
    h, w = a.shape[1:3]
    channels = a.shape[3:]
    # Pad every image with the margin on its bottom and right, lay the cells out as
    # (rows, cols), interleave the axes, and crop the trailing margin.
    cells = np.full((rows * cols, h + margin, w + margin, *channels), background, np.uint8)
    cells[:n, :h, :w] = pixels
    cells = cells.reshape(rows, cols, h + margin, w + margin, *channels)
    cells = cells.swapaxes(1, 2).reshape(rows * (h + margin), cols * (w + margin), *channels)
    return np.ascontiguousarray(
        cells[: rows * (h + margin) - margin, : cols * (w + margin) - margin]
    )


def save(array_or_figure: Any, path: str | os.PathLike | Any, *, dpi: int = DPI) -> Any:
    """Save a Figure (``savefig``, tight bounding box) or an image array (PIL) to ``path``.

    Arrays ``(h, w)`` or ``(h, w, c)`` with c in 1, 3, 4 are converted with :func:`to_uint8`, so
    uint8 arrays are written exactly. Parent folders are created. ``path`` may also be a binary
    file object, which receives PNG.

    Returns:
        ``path`` (a ``Path`` when a path was given).

    Example:
        >>> plot.save(plot.image_grid(patterns, cols=8), "out/patterns.png")
    """
    stream = hasattr(path, "write")
    if not stream:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(array_or_figure, "savefig"):
        kwargs = {"format": "png"} if stream else {}
        array_or_figure.savefig(path, dpi=dpi, bbox_inches="tight", **kwargs)
        return path
    from PIL import Image

    a = np.asarray(array_or_figure)
    _check_rank(a, (2, 3), "array_or_figure", "a Figure or an image (h, w) or (h, w, c)")
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Expected `array_or_figure` to have 1, 3 or 4 channels. Received: shape {a.shape}."
        )
    pixels = to_uint8(a)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    fmt = None if not stream and path.suffix else "PNG"
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format=fmt)
    return path


# --------------------------------------------------------------------------- figure helpers


def _colormap(cmap: str | Colormap) -> Colormap:
    import matplotlib

    if not isinstance(cmap, str):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(
            f"Expected `cmap` to be a matplotlib colormap name. Received: {cmap!r}."
        ) from None


def _single(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(root=True), ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _panels(
    n: int,
    cols: int,
    fig: Figure | SubFigure | None,
    panel_size: float,
    title: str | None,
    rows: int | None = None,
    aspect: float = 1.0,
) -> tuple[Figure, list[Axes]]:
    """A grid of ``n`` axes (unused cells removed), in a new figure or in ``fig``.

    Panels are ``panel_size`` wide and ``panel_size * aspect`` high, plus room for a title.
    """
    rows = math.ceil(n / cols) if rows is None else rows
    if fig is None:
        from matplotlib.figure import Figure

        size = (cols * panel_size, rows * (panel_size * aspect + 0.3) + 0.3)
        fig = Figure(figsize=size, layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    axes = list(grid.ravel())
    for extra in axes[n:]:
        extra.remove()
    for ax in axes[:n]:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig.get_figure(root=True), axes[:n]


def _finish(fig: Figure, path: Any, dpi: int) -> Figure:
    if path is not None:
        save(fig, path, dpi=dpi)
    return fig


def _one_image(maps: Any, argname: str, rank: int, expected: str) -> np.ndarray:
    """``maps`` of one image, accepting a leading batch axis of size 1."""
    a = np.asarray(maps)
    if a.ndim == rank + 1 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != rank:
        raise ValueError(
            f"Expected `{argname}` to be {expected} for one image (a leading batch axis of 1 is "
            f"accepted; index a batch first). Received: shape {a.shape}."
        )
    return a


def _rgb(image: Any, argname: str = "image") -> np.ndarray:
    """An image ``(h, w)``, ``(h, w, 1|3|4)`` as float RGB in [0, 1], shape ``(h, w, 3)``."""
    a = np.asarray(image)
    _check_rank(a, (2, 3), argname, "an image (h, w) or (h, w, c)")
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Expected `{argname}` to have 1, 3 or 4 channels. Received: shape {a.shape}."
        )
    pixels = to_uint8(a).astype(np.float64) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    pixels = pixels[..., :3]
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels


def _map2d(heatmap: Any, argname: str, reduce: str | None = None) -> np.ndarray:
    a = np.asarray(heatmap)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    elif a.ndim == 3 and reduce is not None:
        a = reduce_channels(a, reduce)
    _check_rank(a, (2,), argname, "a map (h, w) or (h, w, 1)")
    return a


def _normalized_or_clipped(heatmap: np.ndarray, method: str | None, argname: str) -> np.ndarray:
    if method is None:
        return np.clip(_as_float(heatmap, argname), 0.0, 1.0)
    if method == "standardize":
        return normalize(heatmap, method).astype(np.float64) / 255.0
    return normalize(heatmap, method).astype(np.float64)


# --------------------------------------------------------------------------- feature maps


def _channel_selection(channels: int | Sequence[int] | None, total: int) -> list[int]:
    if channels is None:
        return list(range(total))
    if isinstance(channels, int | np.integer):
        if not 1 <= channels <= total:
            raise ValueError(
                f"Expected `channels` as a count in [1, {total}]. Received: {channels!r}."
            )
        return list(range(int(channels)))
    chosen = [int(c) for c in channels]
    if not chosen or any(not 0 <= c < total for c in chosen):
        raise ValueError(
            f"Expected `channels` to be indices in [0, {total}). Received: {list(channels)!r}."
        )
    return chosen


def feature_map_grid(
    maps: Any,
    *,
    normalize: str = "standardize",
    cols: int | None = None,
    channels: int | Sequence[int] | None = None,
    cmap: str | Colormap | None = None,
    title: str | None = None,
    fig: Figure | SubFigure | None = None,
    path: Any = None,
    dpi: int = DPI,
    panel_size: float = 1.4,
) -> Figure:
    """One layer's feature maps for one image, one panel per channel.

    Args:
        maps: ``(h, w, c)`` (or ``(1, h, w, c)``), e.g. ``kerasviz.feature_maps(...)[layer][i]``.
        normalize: a :func:`normalize` method, applied to the whole layer with one map per
            channel. ``"global_then_max"`` adds each map's factor to its title (``"7 x3.2"``).
        cols: panels per row; None for ``ceil(sqrt(channels))``.
        channels: None for all, an int k for the first k, or a list of channel indices.
        cmap: default "viridis" ("RdBu_r" for ``"signed"``).

    Example:
        >>> plot.feature_map_grid(maps["conv2d"][0], normalize="global_then_max", channels=16)
    """
    a = _one_image(maps, "maps", 3, "(h, w, c)")
    shown = _channel_selection(channels, a.shape[-1])
    scaled = _normalize(a, normalize, axis=(0, 1))
    vmax = 255 if normalize == "standardize" else 1
    if cmap is None:
        cmap = "RdBu_r" if normalize == "signed" else "viridis"
    titles = [str(c) for c in shown]
    if normalize == "global_then_max":
        factors = global_then_max_factors(a, axis=(0, 1))
        titles = [
            f"{c} x{factors[c]:.1f}" if np.isfinite(factors[c]) else f"{c} (zero)" for c in shown
        ]
    cols = math.ceil(math.sqrt(len(shown))) if cols is None else cols
    fig, axes = _panels(len(shown), cols, fig, panel_size, title)
    for ax, c, text in zip(axes, shown, titles, strict=True):
        ax.imshow(scaled[..., c], cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(text, fontsize=8)
    return _finish(fig, path, dpi)


def channel(
    maps: Any,
    index: int,
    *,
    normalize: str | None = None,
    cmap: str | Colormap = "viridis",
    colorbar: bool = True,
    title: str | None = None,
    ax: Axes | None = None,
    path: Any = None,
    dpi: int = DPI,
) -> Figure:
    """One channel of one image's feature maps ``(h, w, c)`` (or ``(1, h, w, c)``).

    ``normalize=None`` shows the raw values with a colorbar in the layer's own units.

    Example:
        >>> plot.channel(kerasviz.feature_maps(model, image, "conv2d")["conv2d"], 4)
    """
    a = _one_image(maps, "maps", 3, "(h, w, c)")
    if not isinstance(index, int | np.integer) or not -a.shape[-1] <= index < a.shape[-1]:
        raise ValueError(
            f"Expected `index` to be a channel in [0, {a.shape[-1]}). Received: {index!r}."
        )
    values = a[..., index]
    kwargs: dict[str, Any] = {}
    if normalize is not None:
        values = _normalize(values, normalize)
        kwargs = {"vmin": 0, "vmax": 255 if normalize == "standardize" else 1}
    fig, ax = _single(ax, (4.0, 3.4))
    image = ax.imshow(values, cmap=cmap, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"channel {int(index)}" if title is None else title)
    if colorbar:
        ax.get_figure().colorbar(image, ax=ax, shrink=0.85)
    return _finish(fig, path, dpi)


def layer_progression(
    feature_maps: Mapping[str, Any],
    *,
    image: int = 0,
    normalize: str = "minmax",
    cmap: str | Colormap = "viridis",
    cols: int | None = None,
    title: str | None = None,
    fig: Figure | SubFigure | None = None,
    path: Any = None,
    dpi: int = DPI,
    panel_size: float = 2.2,
) -> Figure:
    """One panel per layer showing the mean over channels, titled with the layer and its shape.

    Args:
        feature_maps: ``{layer: (n, h, w, c) or (h, w, c)}`` as returned by
            ``kerasviz.feature_maps``.
        image: which image of a batch to show.
        normalize: applied to each panel on its own (layers have unrelated scales).
        cols: panels per row; None for up to 5.

    Example:
        >>> plot.layer_progression(kerasviz.feature_maps(model, images), image=0)
    """
    if not isinstance(feature_maps, Mapping) or not feature_maps:
        raise ValueError(
            f"Expected `feature_maps` to be a non-empty dict {{layer: array}}. Received: "
            f"{type(feature_maps).__name__}."
        )
    panels = []
    for name, value in feature_maps.items():
        a = np.asarray(value)
        if a.ndim == 4:
            if not -a.shape[0] <= image < a.shape[0]:
                raise ValueError(
                    f"Expected `image` in [0, {a.shape[0]}) for layer {name!r}. Received: {image}."
                )
            a = a[image]
        _check_rank(a, (3,), f"feature_maps[{name!r}]", "(n, h, w, c) or (h, w, c)")
        panels.append((name, a.shape, _normalize(a.mean(axis=-1), normalize)))
    cols = min(len(panels), 5) if cols is None else cols
    fig, axes = _panels(len(panels), cols, fig, panel_size, title)
    vmax = 255 if normalize == "standardize" else 1
    for ax, (name, shape, values) in zip(axes, panels, strict=True):
        ax.imshow(values, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{name}\n{' x '.join(str(s) for s in shape)}", fontsize=8)
    return _finish(fig, path, dpi)


# --------------------------------------------------------------------------- filters


def _kernel(kernel: Any) -> np.ndarray:
    if isinstance(kernel, Mapping):
        key = "kernel" if "kernel" in kernel else "depthwise_kernel"
        if key not in kernel:
            raise ValueError(
                "Expected `kernel` to be an array (kh, kw, in, out) or a filter_weights dict with "
                f"'kernel'. Received keys: {sorted(kernel)}."
            )
        kernel = kernel[key]
    a = _as_float(kernel, "kernel")
    _check_rank(a, (4,), "kernel", "a kernel (kh, kw, in, out)")
    return a


def _filter_count(requested: int | None, total: int, argname: str) -> int:
    if requested is None:
        return total
    if not isinstance(requested, int | np.integer) or requested < 1:
        raise ValueError(f"Expected `{argname}` to be a positive int. Received: {requested!r}.")
    return min(int(requested), total)


def filter_tiles(kernel: Any) -> np.ndarray:
    """First-layer filters as RGB tiles with their R, G and B sections beside them, in grey.

    Each filter is min-max scaled over all its weights (one scale per filter, so the colour
    balance is kept), and laid out as ``[RGB | R | G | B]`` with a 1-pixel white separator.

    Returns:
        float ``(out, kh, 4*kw + 3, 3)`` in [0, 1].
    """
    a = _kernel(kernel)
    if a.shape[2] != 3:
        raise ValueError(
            f"Expected `kernel` to have 3 input channels (a first, RGB layer). Received: shape "
            f"{a.shape}."
        )
    kh, kw, _, out = a.shape
    filters = np.moveaxis(normalize(a, "minmax", axis=(0, 1, 2)), -1, 0)  # (out, kh, kw, 3)
    separator = np.ones((out, kh, 1, 3))
    parts = [filters]
    for c in range(3):
        parts += [separator, np.repeat(filters[..., c : c + 1], 3, axis=-1)]
    return np.concatenate(parts, axis=2)


def filter_rgb(
    kernel: Any,
    *,
    max_filters: int | None = None,
    cols: int | None = None,
    title: str | None = None,
    fig: Figure | SubFigure | None = None,
    path: Any = None,
    dpi: int = DPI,
    panel_size: float = 2.0,
) -> Figure:
    """First-layer filters ``(kh, kw, 3, out)`` as RGB tiles with R, G, B grey sections beside.

    ``kernel`` may be the dict of ``kerasviz.filter_weights``. See :func:`filter_tiles` for the
    scaling. One panel per filter, titled with its index.

    Example:
        >>> plot.filter_rgb(kerasviz.filter_weights(model, "conv2d"), max_filters=16)
    """
    tiles = filter_tiles(kernel)
    n = _filter_count(max_filters, tiles.shape[0], "max_filters")
    cols = min(n, 4) if cols is None else cols
    aspect = tiles.shape[1] / tiles.shape[2]
    fig, axes = _panels(n, cols, fig, panel_size, title, aspect=aspect)
    for f, ax in enumerate(axes):
        ax.imshow(tiles[f], interpolation="nearest")
        ax.set_title(f"{f}  RGB|R|G|B", fontsize=7)
    return _finish(fig, path, dpi)


def filter_depth_sections(
    kernel: Any,
    *,
    max_filters: int = 8,
    max_inputs: int = 8,
    cmap: str | Colormap = "gray",
    title: str | None = None,
    fig: Figure | SubFigure | None = None,
    path: Any = None,
    dpi: int = DPI,
    panel_size: float = 0.9,
) -> Figure:
    """Deeper filters as depth sections: one filter per row, one input channel per column.

    Each filter (row) gets one ``"signed"`` scale over all its input channels, so zero is the
    middle grey and sections within a row are comparable.

    Example:
        >>> plot.filter_depth_sections(kerasviz.filter_weights(model, "conv2d_2"))
    """
    a = _kernel(kernel)
    rows = _filter_count(max_filters, a.shape[3], "max_filters")
    cols = _filter_count(max_inputs, a.shape[2], "max_inputs")
    fig, axes = _panels(rows * cols, cols, fig, panel_size, title, rows=rows)
    for f in range(rows):
        section = normalize(a[..., f], "signed")
        for c in range(cols):
            ax = axes[f * cols + c]
            ax.imshow(section[..., c], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if f == 0:
                ax.set_title(f"in {c}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"filter {f}", fontsize=7)
    return _finish(fig, path, dpi)


def filter_channel_average(
    kernel: Any,
    *,
    max_filters: int | None = None,
    normalize: str = "signed",
    cols: int | None = None,
    cmap: str | Colormap = "gray",
    title: str | None = None,
    fig: Figure | SubFigure | None = None,
    path: Any = None,
    dpi: int = DPI,
    panel_size: float = 1.0,
) -> Figure:
    """Each filter's weights averaged over its input channels, one panel per filter.

    ``normalize`` is applied to the stack of averages with one map per filter: ``"signed"``
    (the default: one scale for all, zero is middle grey) and ``"shared"`` compare filters;
    ``"minmax"`` stretches each filter on its own.

    Example:
        >>> plot.filter_channel_average(kerasviz.filter_weights(model, "conv2d_1"))
    """
    a = _kernel(kernel).mean(axis=2)  # (kh, kw, out)
    n = _filter_count(max_filters, a.shape[-1], "max_filters")
    scaled = _normalize(a, normalize, axis=(0, 1))
    vmax = 255 if normalize == "standardize" else 1
    cols = math.ceil(math.sqrt(n)) if cols is None else cols
    fig, axes = _panels(n, cols, fig, panel_size, title)
    for f, ax in enumerate(axes):
        ax.imshow(scaled[..., f], cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(str(f), fontsize=7)
    return _finish(fig, path, dpi)


# --------------------------------------------------------------------------- images


def gallery(
    images: Any,
    titles: Sequence[str] | None = None,
    *,
    cols: int | None = None,
    cmap: str | Colormap = "gray",
    title: str | None = None,
    fig: Figure | SubFigure | None = None,
    path: Any = None,
    dpi: int = DPI,
    panel_size: float = 2.0,
) -> Figure:
    """Images side by side with titles, e.g. inversions per layer or an image and its attack.

    Args:
        images: ``(n, h, w[, c])`` or a list of images of any sizes (e.g. receptive-field
            crops). Each image is converted with :func:`to_uint8` on its own.
        titles: one per image.
        cmap: used for single-channel images.
    """
    items = list(images)
    if not items:
        raise ValueError("Expected `images` to hold at least one image. Received: none.")
    if titles is not None and len(titles) != len(items):
        raise ValueError(
            f"Expected `titles` to have one entry per image ({len(items)}). Received: "
            f"{len(titles)}."
        )
    cols = min(len(items), 6) if cols is None else cols
    fig, axes = _panels(len(items), cols, fig, panel_size, title)
    for i, (ax, item) in enumerate(zip(axes, items, strict=True)):
        a = np.asarray(item)
        _check_rank(a, (2, 3), f"images[{i}]", "an image (h, w) or (h, w, c)")
        pixels = to_uint8(a)
        if pixels.ndim == 3 and pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
        ax.imshow(pixels, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    return _finish(fig, path, dpi)


def overlay(
    image: Any,
    heatmap: Any,
    *,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    normalize: str | None = "minmax",
) -> np.ndarray:
    """Blend a colour-mapped heatmap over an image: ``(1 - alpha) * image + alpha * cmap(map)``.

    Args:
        image: ``(h, w)`` or ``(h, w, c)``; uint8, floats in [0, 1], or any range (min-max).
        heatmap: ``(h, w)`` or ``(h, w, 1)`` at the image's resolution (project CAMs with
            ``kerasviz.backproject`` first; nothing is resized here).
        normalize: a :func:`normalize` method for the heatmap, or None for a map already in
            [0, 1] (values outside are clipped).

    Returns:
        uint8 RGB ``(h, w, 3)``.

    Example:
        >>> plot.save(plot.overlay(image, cam, alpha=0.4), "out/cam.png")
    """
    rgb = _rgb(image)
    heat = _map2d(heatmap, "heatmap")
    if heat.shape != rgb.shape[:2]:
        raise ValueError(
            f"Expected `heatmap` to have the image's size {rgb.shape[:2]} (back-project it "
            f"first). Received: shape {heat.shape}."
        )
    if not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise ValueError(f"Expected `alpha` to be a number in [0, 1]. Received: {alpha!r}.")
    colored = _colormap(cmap)(_normalized_or_clipped(heat, normalize, "heatmap"))[..., :3]
    return np.rint(((1.0 - alpha) * rgb + alpha * colored) * 255.0).astype(np.uint8)


def _batched(image: Any, maps: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Images as ``(n, h, w[, c])`` and maps as ``(n, h, w[, c])``, from one image or a batch."""
    a = np.asarray(image)
    single = a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 3, 4))
    if single:
        return a[None], {name: np.asarray(m)[None] for name, m in maps.items()}
    _check_rank(a, (4,), "image", "(h, w), (h, w, c) or a batch (n, h, w, c)")
    batched = {}
    for name, m in maps.items():
        m = np.asarray(m)
        if m.ndim < 3 or m.shape[0] != a.shape[0]:
            raise ValueError(
                f"Expected `maps[{name!r}]` to hold one map per image ({a.shape[0]}). Received: "
                f"shape {m.shape}."
            )
        batched[name] = m
    return a, batched


def heatmaps(
    image: Any,
    maps: Mapping[str, Any],
    *,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    normalize: str | None = "minmax",
    reduce: str = "abs_max",
    title: str | None = None,
    fig: Figure | SubFigure | None = None,
    path: Any = None,
    dpi: int = DPI,
    panel_size: float = 2.2,
) -> Figure:
    """The image followed by one overlay per named map, in one row per image.

    For comparisons: Grad-CAM with exact back-projection vs a resize, saliency vs integrated
    gradients, the CAMs of several layers.

    Args:
        image: ``(h, w[, c])``, or a batch ``(n, h, w, c)`` giving one row per image.
        maps: ``{method name: map}``, each ``(h, w)``, or ``(h, w, c)`` attributions reduced over
            channels with ``reduce`` (see :func:`reduce_channels`); batched like ``image``.
        normalize: applied to each map on its own (see :func:`overlay`); ``alpha=1`` shows the
            maps without the image.

    Example:
        >>> plot.heatmaps(image, {"grad_cam": cam, "bilinear": cam_resized}, path="cams.png")
    """
    if not isinstance(maps, Mapping) or not maps:
        raise ValueError(
            f"Expected `maps` to be a non-empty dict {{name: map}}. Received: {type(maps).__name__}."
        )
    _check_choice(reduce, REDUCTIONS, "reduce")
    images, batched = _batched(image, maps)
    names = list(batched)
    cols = 1 + len(names)
    fig, axes = _panels(len(images) * cols, cols, fig, panel_size, title, rows=len(images))
    for i, img in enumerate(images):
        row = axes[i * cols : (i + 1) * cols]
        row[0].imshow(to_uint8(img).squeeze(), cmap="gray", vmin=0, vmax=255)
        if i == 0:
            row[0].set_title("image", fontsize=9)
        for ax, name in zip(row[1:], names, strict=True):
            heat = _map2d(batched[name][i], f"maps[{name!r}]", reduce)
            ax.imshow(overlay(img, heat, alpha=alpha, cmap=cmap, normalize=normalize))
            if i == 0:
                ax.set_title(name, fontsize=9)
    return _finish(fig, path, dpi)


def _add_colorbar(ax: Axes, cmap: Any, ticks: list[float], labels: list[str]) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = ax.get_figure().colorbar(
        ScalarMappable(norm=Normalize(0, 1), cmap=_colormap(cmap)), ax=ax, shrink=0.85
    )
    bar.set_ticks(ticks)
    bar.set_ticklabels(labels)


def signed_map(
    image: Any,
    positive: Any,
    negative: Any = None,
    *,
    labels: tuple[str, str] = ("positive", "negative"),
    alpha: float = 0.6,
    cmap: str | Colormap = "RdBu_r",
    title: str | None = None,
    ax: Axes | None = None,
    path: Any = None,
    dpi: int = DPI,
) -> Figure:
    """The signed CAM of two classes (the cat-vs-dog workflow) on a diverging colormap.

    The map shown is ``positive - negative`` (or ``positive`` alone when it is already signed,
    e.g. a CAM with ``relu=False``), scaled with the ``"signed"`` normalization: one absolute
    scale, 0 at 0.5 (the neutral middle colour), evidence for ``labels[0]`` towards 1 and for
    ``labels[1]`` towards 0. A colorbar names both ends.

    Example:
        >>> cat = kerasviz.grad_cam(model, image, 0, relu=False)
        >>> dog = kerasviz.grad_cam(model, image, 1, relu=False)
        >>> plot.signed_map(image, cat, dog, labels=("cat", "dog"))
    """
    signed = _as_float(_map2d(positive, "positive"), "positive")
    if negative is not None:
        other = _as_float(_map2d(negative, "negative"), "negative")
        if other.shape != signed.shape:
            raise ValueError(
                f"Expected `negative` to have the shape of `positive` {signed.shape}. Received: "
                f"{other.shape}."
            )
        signed = signed - other
    blended = overlay(image, signed, alpha=alpha, cmap=cmap, normalize="signed")
    if len(labels) != 2:
        raise ValueError(
            f"Expected `labels` to be two names (positive, negative). Received: {labels!r}."
        )
    fig, ax = _single(ax, (4.4, 3.6))
    ax.imshow(blended)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    _add_colorbar(ax, cmap, [0.0, 0.5, 1.0], [labels[1], "0", labels[0]])
    return _finish(fig, path, dpi)


def attribution(
    image: Any,
    attribution: Any,
    *,
    reduce: str = "abs_max",
    signed: bool = False,
    alpha: float = 0.6,
    cmap: str | Colormap | None = None,
    colorbar: bool = True,
    title: str | None = None,
    ax: Axes | None = None,
    path: Any = None,
    dpi: int = DPI,
) -> Figure:
    """A gradient-style attribution (saliency, SmoothGrad, integrated gradients) as a heatmap.

    The channels are reduced with :func:`reduce_channels`. Unsigned maps use ``"minmax"`` and
    "inferno"; ``signed=True`` uses the ``"signed"`` normalization and "RdBu_r" (0 is white).
    The map is blended over ``image`` with ``alpha``; ``image=None`` or ``alpha=1`` shows it
    alone.

    Example:
        >>> plot.attribution(image, kerasviz.integrated_gradients(model, image), signed=True)
    """
    a = np.asarray(attribution)
    heat = reduce_channels(a, reduce, signed=signed) if a.ndim == 3 else a
    _check_rank(heat, (2,), "attribution", "an attribution (h, w) or (h, w, c)")
    method = "signed" if signed else "minmax"
    cmap = ("RdBu_r" if signed else "inferno") if cmap is None else cmap
    fig, ax = _single(ax, (4.4, 3.6))
    if image is None:
        ax.imshow(normalize(heat, method), cmap=_colormap(cmap), vmin=0, vmax=1)
    else:
        ax.imshow(overlay(image, heat, alpha=alpha, cmap=cmap, normalize=method))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    if colorbar:
        ticks = ([0.0, 0.5, 1.0], ["-max", "0", "+max"]) if signed else ([0.0, 1.0], ["min", "max"])
        _add_colorbar(ax, cmap, *ticks)
    return _finish(fig, path, dpi)


def receptive_field_boxes(
    image: Any,
    boxes: Any,
    *,
    labels: Sequence[str] | None = None,
    colors: Sequence[Any] | None = None,
    linewidth: float = 1.5,
    title: str | None = None,
    ax: Axes | None = None,
    path: Any = None,
    dpi: int = DPI,
) -> Figure:
    """Receptive-field boxes ``(top, left, bottom, right)`` drawn on an image.

    Boxes are in input pixels with bottom and right exclusive, as ``ReceptiveField.box(i, j)``
    returns them; each rectangle follows the outer pixel edges exactly.

    Example:
        >>> rf = kerasviz.receptive_field(model, "conv2d_3")
        >>> plot.receptive_field_boxes(image, [rf.box(0, 0), rf.box(10, 20)])
    """
    from matplotlib.patches import Rectangle

    rgb = _rgb(image)
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or len(b) == 0:
        raise ValueError(
            f"Expected `boxes` as (top, left, bottom, right) rows, shape (k, 4). Received: shape "
            f"{np.shape(boxes)}."
        )
    if np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1]):
        raise ValueError(
            f"Expected every box to have bottom > top and right > left. Received: {b.tolist()}."
        )
    if labels is not None and len(labels) != len(b):
        raise ValueError(
            f"Expected `labels` to have one entry per box ({len(b)}). Received: {len(labels)}."
        )
    fig, ax = _single(ax, (4.0, 4.0))
    ax.imshow(rgb)
    palette = colors if colors is not None else [_colormap("tab10")(i % 10) for i in range(len(b))]
    for k, (top, left, bottom, right) in enumerate(b):
        # Pixel i spans [i - 0.5, i + 0.5] in imshow's coordinates.
        ax.add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                right - left,
                bottom - top,
                fill=False,
                edgecolor=palette[k % len(palette)],
                linewidth=linewidth,
                label=None if labels is None else labels[k],
            )
        )
    if labels is not None:
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)


# --------------------------------------------------------------------------- curves


def curve(
    xs: Sequence[Any],
    ys: Any,
    *,
    labels: Sequence[str] | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    marker: str | None = "o",
    ax: Axes | None = None,
    path: Any = None,
    dpi: int = DPI,
) -> Figure:
    """Line plot of one or several series over ``xs`` (numbers, or names such as layers).

    Args:
        xs: x positions; strings become evenly spaced category ticks.
        ys: one series, a ``(k, len(xs))`` array with ``labels``, or ``{label: series}``.

    Example:
        >>> plot.curve(layer_names, {"SSIM": ssims}, ylabel="SSIM", title="inversion vs depth")
    """
    if isinstance(ys, Mapping):
        labels = list(ys)
        series = [np.asarray(v, dtype=np.float64) for v in ys.values()]
    else:
        arr = np.asarray(ys, dtype=np.float64)
        series = [arr] if arr.ndim == 1 else list(arr)
    xs = list(xs)
    if not xs or any(s.ndim != 1 or len(s) != len(xs) for s in series):
        raise ValueError(
            f"Expected every series in `ys` to have len(xs) = {len(xs)} values. Received: "
            f"{[s.shape for s in series]}."
        )
    if labels is not None and len(labels) != len(series):
        raise ValueError(
            f"Expected `labels` to have one entry per series ({len(series)}). Received: "
            f"{len(labels)}."
        )
    categorical = any(isinstance(x, str) for x in xs)
    positions = np.arange(len(xs)) if categorical else np.asarray(xs, dtype=np.float64)
    fig, ax = _single(ax, (5.0, 3.4))
    for k, s in enumerate(series):
        ax.plot(positions, s, marker=marker, label=None if labels is None else labels[k])
    if categorical:
        ax.set_xticks(positions, [str(x) for x in xs], rotation=45, ha="right", fontsize=8)
    if labels is not None:
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel or "")
    ax.set_ylabel(ylabel or "")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return _finish(fig, path, dpi)


def deletion_curves(
    curves: Mapping[str, Any],
    *,
    fractions: Any = None,
    kind: str = "deletion",
    aucs: Mapping[str, float] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    path: Any = None,
    dpi: int = DPI,
) -> Figure:
    """Deletion or insertion curves (Petsiuk et al., 2018): score against the fraction changed.

    Args:
        curves: ``{method: scores}``, the model's score after each step, starting at 0 changed.
        fractions: the x values; None for ``linspace(0, 1, len(scores))``.
        kind: "deletion" or "insertion" (the axis label).
        aucs: the AUC to print per method; None for the trapezoidal area under each curve.

    Example:
        >>> plot.deletion_curves({"grad_cam": scores_a, "saliency": scores_b})
    """
    kind = _check_choice(kind, ("deletion", "insertion"), "kind")
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(
            f"Expected `curves` to be a non-empty dict {{method: scores}}. Received: "
            f"{type(curves).__name__}."
        )
    first = np.asarray(next(iter(curves.values())), dtype=np.float64)
    xs = np.linspace(0, 1, len(first)) if fractions is None else np.asarray(fractions, float)
    labels = []
    for name, scores in curves.items():
        if aucs is not None and name in aucs:
            area = float(aucs[name])
        else:
            area = float(np.trapezoid(np.asarray(scores, dtype=np.float64), xs))
        labels.append(f"{name} (AUC {area:.3f})")
    verb = "deleted" if kind == "deletion" else "inserted"
    return curve(
        list(xs),
        [np.asarray(s, dtype=np.float64) for s in curves.values()],
        labels=labels,
        xlabel=f"fraction of pixels {verb}",
        ylabel="score",
        title=title or f"{kind} curves",
        marker=None,
        ax=ax,
        path=path,
        dpi=dpi,
    )
