"""Exact receptive fields of every unit of every layer, and exact back-projection onto the input.

A unit ``i`` of a layer nominally sees the input interval ``[start + i * stride, start + i *
stride + size)`` along each spatial axis (Araujo et al. 2019). :func:`receptive_field` walks
the model's graph with a field in place of each tensor, nested models included, and carries
two things per spatial axis:

* the nominal ``size``, ``stride`` and ``start``, composed layer by layer as in Araujo et al.;
* the exact input interval of every unit (:attr:`ReceptiveField.bounds`): the bounding
  interval of the input pixels the unit depends on. It differs from the nominal interval
  clipped to the image where padding reaches over pixels that a ``Cropping`` layer removed,
  where a strided ``valid`` layer never reads the last rows or columns, and where a dilated
  kernel's taps at the border fall in the padding. Boxes, :func:`backproject` and
  :func:`crop_to_receptive_field` use these intervals, so a pixel that a unit cannot see is
  never in its box.

Layers with a rule (convolutions, pooling, padding, cropping, merges, position-wise layers,
``TimeDistributed`` and operations on the channel axis) are followed exactly. Any other layer
(a custom layer, ``Lambda``, ``LayerScale``, ``StochasticDepth``, a ``keras.ops`` node, a
user ``Layer`` subclass that convolves) has its geometry *measured*: it is run alone on a
random input of its actual input shape, the support of the Jacobian of a few output positions
is read in one batched gradient, and a stride, offset and tap pattern that explain every probed
unit (the border ones clipped as by ``same`` padding) is fitted and checked. A layer whose
every output depends on its whole input along an axis (attention, a global mean added back,
a Dense over the flattened map reshaped to a map) gets a global field along that axis
(stride 0). A layer with no such explanation is not translation-equivariant, and asking for
a field through it raises a ValueError that names the layer and the ways out for CAMs
(``upsample="bilinear"`` or ``upsample=None``). Measurements are cached per layer and input
shape (weak keys), and the whole walk per model and input size.

:func:`backproject` then maps any layer map onto the input: each input pixel gets the mean of
the values of all units whose field covers it, the stack-of-fields definition, computed
separably in O(n * H * W) memory.

Reference: Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill (2019).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import weakref
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._graph import model_inputs, run_graph
from kerasviz._layers import LayerSpec, resolve_layer

# Appended to every "no receptive field" error: what a CAM user can do instead.
WAYS_OUT = (
    "CAM functions can still run without a receptive field: pass upsample='bilinear' (a "
    "plain resize of the map onto the input) or upsample=None (the map at the layer's own "
    "resolution)."
)

Bounds = tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]

#: The back-projection rules of :func:`backproject`.
BACKPROJECT_METHODS = ("mean", "effective", "centered")


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of the units of one layer, per spatial axis ``(y, x)``.

    Nominally, unit ``i`` along an axis covers input coordinates ``[start + i * stride, start +
    i * stride + size)`` (Araujo et al. 2019); ``start`` is negative where ``same`` or zero
    padding reaches outside the image. What the unit can actually see is ``bounds``: per axis
    and per unit, the bounding interval of the input pixels it depends on. It is the nominal
    interval clipped to the image and, where a layer crops, leaves rows unread (a strided
    ``valid`` layer) or skips border pixels with a dilated kernel, tighter. A *global* field
    (global pooling, Flatten + Dense, a value without spatial axes) has ``stride == 0`` on
    every axis, ``start == 0`` and ``size == input_size``: every unit sees the whole input.

    Attributes:
        size: nominal field extent in input pixels.
        stride: input pixels between neighbouring units (0 for a global axis).
        start: input coordinate where unit 0's nominal field begins.
        input_size: spatial size of the model input the field refers to.
        map_size: spatial size of the layer's output; ``(1, ...)`` for an output without
            spatial axes.
        input_index: which model input the field refers to (0 for single-input models).
        extent: per axis ``(low, high)``, high exclusive: the input pixels that some unit
            depends on, the union of all boxes. As an argument, a window that every box is
            clipped to (default: the whole input); stored as the union of the clipped boxes
            (``(0, 0)`` if no unit sees anything).
        bounds: per axis ``(lows, highs)``, one int per unit along that axis: unit ``i``'s
            box along the axis is ``[lows[i], highs[i])`` (empty when equal). They grow with
            ``i``, except near a border where a dilated kernel skips pixels. As an argument,
            None derives them from the nominal field clipped to ``extent``;
            :func:`receptive_field` passes the exact ones.
        paths: the units' path counts to the input pixels, for ``backproject(...,
            method="effective")``; set by :func:`receptive_field` (None for a field built
            by hand). Not compared: two fields with equal boxes are equal.

    Raises:
        ValueError: lengths differ between the per-axis entries, a size is not positive, a
            stride is negative, or ``bounds`` do not fit the map and the input.

    Example:
        >>> rf = kerasviz.receptive_field(model, "conv2d_1")
        >>> rf.size, rf.stride, rf.start
        ((5, 5), (1, 1), (0, 0))
        >>> rf.box(0, 0)
        (0, 0, 5, 5)
    """

    size: tuple[int, ...]
    stride: tuple[int, ...]
    start: tuple[int, ...]
    input_size: tuple[int, ...]
    map_size: tuple[int, ...]
    input_index: int = 0
    extent: tuple[tuple[int, int], ...] | None = None
    bounds: Bounds | None = None
    paths: PathCounts | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        fields = {
            "size": self.size,
            "stride": self.stride,
            "start": self.start,
            "input_size": self.input_size,
            "map_size": self.map_size,
        }
        for name, value in fields.items():
            object.__setattr__(self, name, tuple(int(v) for v in value))
        lengths = {name: len(getattr(self, name)) for name in fields}
        if len(set(lengths.values())) != 1 or not self.size:
            raise ValueError(
                "Expected `size`, `stride`, `start`, `input_size` and `map_size` to have one "
                f"entry per spatial axis. Received lengths {lengths}."
            )
        if min(self.size) < 1 or min(self.input_size) < 1 or min(self.map_size) < 1:
            raise ValueError(
                "Expected `size`, `input_size` and `map_size` to be positive. Received: "
                f"size={self.size}, input_size={self.input_size}, map_size={self.map_size}."
            )
        if min(self.stride) < 0:
            raise ValueError(f"Expected `stride` to be >= 0. Received: stride={self.stride}.")
        window = self._window()
        per_axis = self._checked_bounds() if self.bounds is not None else self._nominal_bounds()
        bounds, extent = [], []
        for (low, high), (lo, hi) in zip(per_axis, window, strict=True):
            low = np.clip(low, lo, hi)
            high = np.maximum(np.clip(high, lo, hi), low)
            seen = high > low
            extent.append((int(low[seen].min()), int(high[seen].max())) if seen.any() else (0, 0))
            bounds.append((tuple(int(v) for v in low), tuple(int(v) for v in high)))
        object.__setattr__(self, "bounds", tuple(bounds))
        object.__setattr__(self, "extent", tuple(extent))

    def _window(self) -> list[tuple[int, int]]:
        if self.extent is None:
            return [(0, n) for n in self.input_size]
        try:
            window = [(int(lo), int(hi)) for lo, hi in self.extent]
        except (TypeError, ValueError):
            window = None
        if window is None or len(window) != len(self.size):
            raise ValueError(
                f"Expected `extent` to hold one (low, high) pair per spatial axis "
                f"({len(self.size)}). Received: extent={self.extent!r}."
            )
        return [
            (min(max(lo, 0), n), min(max(hi, 0), n))
            for (lo, hi), n in zip(window, self.input_size, strict=True)
        ]

    def _nominal_bounds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for size, stride, start, m in zip(
            self.size, self.stride, self.start, self.map_size, strict=True
        ):
            low = start + np.arange(m, dtype=np.int64) * stride
            out.append((low, low + size))
        return out

    def _checked_bounds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        try:
            pairs = [(np.asarray(lo, np.int64), np.asarray(hi, np.int64)) for lo, hi in self.bounds]
        except (TypeError, ValueError):
            pairs = None
        if pairs is None or len(pairs) != len(self.size):
            raise ValueError(
                f"Expected `bounds` to hold one (lows, highs) pair per spatial axis "
                f"({len(self.size)}). Received: bounds of type {type(self.bounds).__name__}."
            )
        for axis, ((low, high), m, n) in enumerate(
            zip(pairs, self.map_size, self.input_size, strict=True)
        ):
            ok = low.shape == high.shape == (m,)
            ok = ok and bool((low >= 0).all() and (high <= n).all() and (low <= high).all())
            if not ok:
                raise ValueError(
                    f"Expected `bounds` on axis {axis} to be {m} (low, high) pairs with "
                    f"0 <= low <= high <= {n}. Received: lows={low.tolist()}, "
                    f"highs={high.tolist()}."
                )
            out.append((low, high))
        return out

    @property
    def ndim(self) -> int:
        """The number of spatial axes."""
        return len(self.size)

    @property
    def is_global(self) -> bool:
        """True when every unit sees the whole input."""
        return all(s == 0 for s in self.stride)

    def _check_index(self, index: tuple) -> tuple[int, ...]:
        if len(index) != self.ndim or not all(
            isinstance(i, int | np.integer) and not isinstance(i, bool) for i in index
        ):
            raise ValueError(
                f"Expected one integer index per spatial axis ({self.ndim}). Received: {index}."
            )
        if not all(0 <= i < m for i, m in zip(index, self.map_size, strict=True)):
            raise ValueError(
                f"Expected a unit position inside the layer's map of size {self.map_size}. "
                f"Received: position={tuple(int(i) for i in index)}."
            )
        return tuple(int(i) for i in index)

    def box(self, *index: int) -> tuple[int, ...]:
        """The input pixels unit ``index`` can see: ``(top, left, bottom, right)`` for 2D.

        Bottom and right are exclusive; the box is empty (low == high on some axis) for a unit
        that reads only padding. For other ranks: all lower bounds, then all upper ones.

        Raises:
            ValueError: ``index`` does not give one in-range integer per spatial axis.
        """
        index = self._check_index(index)
        lows = tuple(low[i] for i, (low, _) in zip(index, self.bounds, strict=True))
        highs = tuple(high[i] for i, (_, high) in zip(index, self.bounds, strict=True))
        return (*lows, *highs)

    def center(self, *index: int) -> tuple[float, ...]:
        """The centre ``(y, x)`` of the unit's nominal field in input pixels, not clipped."""
        index = self._check_index(index)
        return tuple(
            float(start + i * stride + (size - 1) / 2)
            for i, size, stride, start in zip(
                index, self.size, self.stride, self.start, strict=True
            )
        )

    def intervals(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` int64 arrays over all units along ``axis`` (high exclusive).

        The units' boxes along that axis (:attr:`bounds` as arrays).
        """
        low, high = self.bounds[axis]
        return np.array(low, np.int64), np.array(high, np.int64)


# ---------------------------------------------------------------------------------------------
# Back-projection


@functools.lru_cache(maxsize=64)
def _coverage(rf: ReceptiveField) -> tuple[tuple, np.ndarray]:
    """Per axis, how to sum the units covering each input pixel; and the covering counts.

    Fields are boxes, so pixel ``(y, x)`` is covered by unit ``(i, j)`` exactly when row ``y``
    is covered by ``i`` and column ``x`` by ``j``: coverage factorizes per axis. Where the
    units' bounds never decrease along an axis (always, except where a dilated kernel skips
    border pixels), the units covering a pixel are a contiguous range ``[first, last)`` and
    their sum is a difference of two prefix sums: ``("range", first, last)``. Elsewhere the
    axis is summed with its ``(pixels, units)`` 0/1 coverage matrix: ``("matrix", a)``.
    """
    plans, per_axis = [], []
    for axis in range(rf.ndim):
        low, high = rf.intervals(axis)
        pixels = np.arange(rf.input_size[axis])
        if (np.diff(low) >= 0).all() and (np.diff(high) >= 0).all():
            first = np.searchsorted(high, pixels, side="right")  # first unit ending after it
            last = np.searchsorted(low, pixels, side="right")  # units starting at or before it
            last = np.maximum(last, first)
            plan = ("range", first, last)
            count = last - first
        else:
            matrix = ((low <= pixels[:, None]) & (pixels[:, None] < high)).astype(np.float64)
            plan = ("matrix", matrix)
            count = matrix.sum(axis=1)
        for arr in plan[1:]:
            arr.setflags(write=False)
        plans.append(plan)
        per_axis.append(count.astype(np.float64))
    counts = functools.reduce(np.multiply.outer, per_axis)
    counts.setflags(write=False)
    return tuple(plans), counts


@functools.lru_cache(maxsize=64)
def _inverse(rf: ReceptiveField) -> tuple[np.ndarray, np.ndarray]:
    """``1 / count`` of covering units per input pixel (0 where none), and the uncovered mask."""
    _, counts = _coverage(rf)
    inverse = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0), 0.0)
    uncovered = counts == 0
    for arr in (inverse, uncovered):
        arr.setflags(write=False)
    return inverse, uncovered


@functools.lru_cache(maxsize=64)
def _centers(rf: ReceptiveField, axis: int) -> np.ndarray:
    """The field centres ``start + i * stride + (size - 1) / 2`` of all units along ``axis``,
    in input pixels (float64)."""
    size, stride, start = rf.size[axis], rf.stride[axis], rf.start[axis]
    return start + stride * np.arange(rf.map_size[axis]) + (size - 1) / 2


def _tents(rf: ReceptiveField) -> tuple[tuple, np.ndarray, np.ndarray]:
    """The plan of ``method="centered"``: per axis a ``("matrix", a)`` step, ``a[p, i] = max(0,
    1 - |p - c_i| / stride)`` with ``c_i`` unit ``i``'s field centre (a global axis: ones); no
    per-pixel scale (None); and the pixels no tent reaches."""
    plans, reached = [], []
    for axis in range(rf.ndim):
        n, m, stride = rf.input_size[axis], rf.map_size[axis], rf.stride[axis]
        if stride == 0:  # a global axis: one unit that sees every pixel
            a = np.ones((n, m))
        else:
            a = np.maximum(0.0, 1.0 - np.abs(np.arange(n)[:, None] - _centers(rf, axis)) / stride)
        a.setflags(write=False)
        plans.append(("matrix", a))
        reached.append(a.sum(axis=1) > 0)
    uncovered = ~functools.reduce(np.logical_and.outer, reached)
    uncovered.setflags(write=False)
    return tuple(plans), None, uncovered


def _sum_plan(rf: ReceptiveField, method: str) -> tuple[tuple, np.ndarray | None, np.ndarray]:
    """Per-axis sum steps, per-pixel scale (None for none) and uncovered mask of the ``"mean"``
    or ``"centered"`` rule."""
    if method == "centered":
        return _tents(rf)
    plans, _ = _coverage(rf)
    return (plans, *_inverse(rf))


# ---------------------------------------------------------------------------------------------
# Path counts: the effective receptive field of the network's linearized geometry

#: A 2D sum of more separable terms than this is compressed once, at the end (deep residual
#: networks); one of more than ``_HARD_CAP`` terms also on the way, to bound memory.
_MAX_TERMS = 1024
_HARD_CAP = 4096
#: Singular values below this share of the largest are dropped when compressing.
_RANK_TOLERANCE = 1e-13

Term = tuple[float, tuple[np.ndarray, ...]]  # (log of a positive factor, per-axis matrices)


class PathCounts:
    """The number of paths from each unit of a layer to each input pixel.

    The *linearized geometry* of the network keeps, of every layer on the way, only its
    geometry with one channel: a convolution or pooling window becomes an all-ones kernel of
    the same size, stride, dilation and padding (padding carries no path); padding and
    cropping shift; position-wise layers are the identity; a merge (Add, Concatenate, ...) sums
    its branches. The path count ``P(u, p)`` from unit ``u`` to input pixel ``p`` is the
    derivative of that linear network's unit ``u`` with respect to pixel ``p``: the chain of
    transposed all-ones convolutions, computed exactly. It is the effective receptive field
    of Luo et al. (2016) for uniform weights, concentrated at the field's centre.

    **Where it is exact.** A window is a product of per-axis windows, and so is its validity
    at the border (a tap is valid when it is valid on every axis), so along a chain of windows
    ``P`` is a product over the spatial axes of per-axis ``(units, pixels)`` matrices: one
    separable term. A merge sums its branches' terms (a residual block has two); equal terms
    are combined. This is exact for convolutions (dilated and strided included), pooling,
    padding, cropping, position-wise layers, merges and measured layers (their fitted
    window). Squeeze-and-excitation gates are channel weighting and add no spatial path, and a
    Multiply of two spatial branches is counted like an Add (its geometry). ResNet50's last
    block has 560 terms; a 2D sum of more than 1024 is compressed once to its numerical rank
    by a truncated SVD (relative tolerance 1e-13 of the largest singular value): exact to
    float64 precision relative to the largest count.

    Example:
        >>> rf = kerasviz.receptive_field(model, "conv4")
        >>> rf.paths.counts().shape  # (*map_size, *input_size), for small fields
        (58, 58, 128, 128)
    """

    __slots__ = ("_geo", "_terms", "_compressed", "_plan")

    def __init__(self, geo: tuple) -> None:
        self._geo = tuple(geo)
        self._terms: list[Term] | None = None
        self._compressed = False
        self._plan = None

    def terms(self) -> list[Term]:
        """The separable terms ``(log_scale, (matrix per axis))``: ``P`` is the sum over the
        terms of ``exp(log_scale)`` times the outer product of the per-axis ``(units,
        pixels)`` float64 matrices."""
        if self._terms is None:
            self._terms, self._compressed = _path_terms(self._geo)
        return self._terms

    def counts(self) -> np.ndarray:
        """The dense path counts ``(*map_size, *input_size)`` float64 (use for small fields)."""
        terms = self.terms()
        d = len(self._geo)
        shape = tuple(a.units for a in self._geo) + tuple(int(f.shape[1]) for f in terms[0][1])
        total = np.zeros(shape)
        for log_scale, factors in terms:
            outer = functools.reduce(np.multiply.outer, factors)  # (m0, n0, m1, n1, ...)
            order = [2 * a for a in range(d)] + [2 * a + 1 for a in range(d)]
            total += np.exp(log_scale) * np.transpose(outer, order)
        return total

    def plan(self) -> tuple:
        """What :func:`backproject` needs: per term the transposed per-axis matrices ``(pixels,
        units)`` (relative scales folded in), ``1 / sum_u P(u, p)`` per pixel (0 where no
        unit reaches it), the mask of pixels no unit reaches, and for 2D the terms stacked
        for two matrix products: ``(T * H, h)`` and ``(T * w, W)``."""
        if self._plan is None:
            terms = self.terms()
            sizes = tuple(int(n) for n in _input_sizes(self._geo, terms))
            if not terms:
                inverse = np.zeros(sizes)
                self._plan = ((), inverse, np.ones(sizes, bool), None)
            else:
                logs = np.array([log_scale for log_scale, _ in terms])
                scales = np.exp(logs - logs.max())
                transposed, denominator = [], np.zeros(sizes)
                for scale, (_, factors) in zip(scales, terms, strict=True):
                    factors = (factors[0] * scale, *factors[1:])
                    transposed.append(tuple(np.ascontiguousarray(f.T) for f in factors))
                    denominator += functools.reduce(
                        np.multiply.outer, [f.sum(axis=0) for f in factors]
                    )
                limit = 1e-12 * denominator.max() if self._compressed else 0.0
                uncovered = denominator <= limit
                inverse = np.where(uncovered, 0.0, 1.0 / np.where(uncovered, 1.0, denominator))
                stacked = None
                if len(sizes) == 2:
                    stacked = (
                        np.concatenate([t[0] for t in transposed], axis=0),
                        np.concatenate([np.ascontiguousarray(t[1].T) for t in transposed]),
                    )
                self._plan = (tuple(transposed), inverse, uncovered, stacked)
            for part in (self._plan[1], self._plan[2]):
                part.setflags(write=False)
        return self._plan


def _input_sizes(geo: tuple, terms: list[Term]) -> tuple[int, ...]:
    if terms:
        return tuple(f.shape[1] for f in terms[0][1])
    sizes = []
    for axis in geo:  # follow the axis back to the input: its identity has the input's size
        while axis.via is not None:
            axis = axis.via[1] if axis.via[0] == "slide" else axis.via[1][0]
        sizes.append(axis.units)
    return tuple(sizes)


def _normalized(log_scale: float, factors: list[np.ndarray]) -> Term | None:
    """The term with each matrix scaled to a largest magnitude of 1; None for a zero term."""
    out = []
    for f in factors:
        top = float(np.abs(f).max()) if f.size else 0.0
        if top == 0.0:
            return None
        out.append(f / top)
        log_scale += np.log(top)
    return float(log_scale), tuple(out)


def _slide_matrix(factor: np.ndarray, reads: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Path counts through one window: output unit ``i`` sums the rows ``reads[i][valid[i]]``."""
    return (factor[reads] * valid[..., None]).sum(axis=1)


def _combined(terms: list[Term]) -> list[Term]:
    """Equal terms added up (their log scales by logaddexp)."""
    merged: dict[bytes, Term] = {}
    for log_scale, factors in terms:
        key = b"".join(f.tobytes() + str(f.shape).encode() for f in factors)
        if key in merged:
            log_scale = float(np.logaddexp(merged[key][0], log_scale))
        merged[key] = (log_scale, factors)
    return list(merged.values())


def _compressed_2d(terms: list[Term]) -> list[Term]:
    """A 2D sum of separable terms rewritten as its truncated SVD (numerical rank)."""
    logs = np.array([log_scale for log_scale, _ in terms])
    top = logs.max()
    (m0, n0), (m1, n1) = terms[0][1][0].shape, terms[0][1][1].shape
    a = np.stack([f[0].ravel() for _, f in terms], axis=1) * np.exp(logs - top)
    b = np.stack([f[1].ravel() for _, f in terms], axis=1)
    qa, ra = np.linalg.qr(a)
    qb, rb = np.linalg.qr(b)
    u, sigma, vt = np.linalg.svd(ra @ rb.T)
    rank = max(1, int((sigma > _RANK_TOLERANCE * sigma[0]).sum()))
    left = (qa @ u[:, :rank]) * sigma[:rank]
    right = qb @ vt[:rank].T
    out = []
    for k in range(rank):
        term = _normalized(top, [left[:, k].reshape(m0, n0), right[:, k].reshape(m1, n1)])
        if term is not None:
            out.append(term)
    return out


def _path_step(axes: tuple) -> tuple[str, list[tuple]]:
    """How a tuple of axes (one per spatial axis) was made: ``("slide", [before])`` when some
    axes are windows over earlier ones, ``("union", branches)`` for the latest merge among
    them (its branches' axes paired), ``("input", [])`` for the input itself. Windows on
    different axes commute, so all of them are stepped back at once."""
    slides = [a.via is not None and a.via[0] == "slide" for a in axes]
    if any(slides):
        return "slide", [tuple(a.via[1] if s else a for a, s in zip(axes, slides, strict=True))]
    merges = [a.via[2] for a in axes if a.via is not None]
    if not merges:
        return "input", []
    latest = max(merges)
    hit = [a.via is not None and a.via[2] == latest for a in axes]
    count = len(next(a.via[1] for a, h in zip(axes, hit, strict=True) if h))
    branches = [
        tuple(a.via[1][b] if h else a for a, h in zip(axes, hit, strict=True)) for b in range(count)
    ]
    return "union", branches


def _path_terms(geo: tuple) -> tuple[list[Term], bool]:
    """The separable terms of the path counts of the units of ``geo`` (see
    :class:`PathCounts`), and whether a compression was needed. Walks the graph of axis
    tuples back to the input depth-first without recursion, each tuple once."""
    memo: dict[tuple[int, ...], list[Term]] = {}
    compressed = False

    def key(axes):
        return tuple(id(a) for a in axes)

    stack: list[tuple[tuple, bool]] = [(tuple(geo), False)]
    while stack:
        axes, ready = stack.pop()
        k = key(axes)
        if k in memo:
            continue
        kind, before = _path_step(axes)
        if kind == "input":
            memo[k] = [(0.0, tuple(np.eye(a.units) for a in axes))]
            continue
        if not ready:
            stack.append((axes, True))
            stack.extend((b, False) for b in before if key(b) not in memo)
            continue
        if kind == "slide":
            terms = []
            for log_scale, factors in memo[key(before[0])]:
                moved = [
                    _slide_matrix(f, a.via[2], a.via[3])
                    if a.via is not None and a.via[0] == "slide"
                    else f
                    for a, f in zip(axes, factors, strict=True)
                ]
                term = _normalized(log_scale, moved)
                if term is not None:
                    terms.append(term)
        else:
            terms = _combined([t for b in before for t in memo[key(b)]])
            if len(axes) == 2 and len(terms) > _HARD_CAP:
                terms, compressed = _compressed_2d(terms), True
        memo[k] = terms
    terms = memo[key(tuple(geo))]
    if len(geo) == 2 and len(terms) > _MAX_TERMS:
        terms, compressed = _compressed_2d(terms), True
    return terms, compressed


def _effective_plan(rf: ReceptiveField):
    """The path-count plan of ``rf``, or None where it equals the mean rule (a global field)."""
    if rf.paths is None:
        if rf.is_global or all(m == 1 for m in rf.map_size):
            return None
        raise ValueError(
            "Expected `rf` from kerasviz.receptive_field(model, layer) for "
            "method='effective': it carries the units' path counts. Received: a "
            "ReceptiveField built by hand (paths=None); use method='mean'."
        )
    return rf.paths.plan()


def _layout(shape: tuple, rf: ReceptiveField, input_size, argname: str = "values"):
    """Checks shapes; returns (has_batch_axis, has_channel_axis)."""
    if not isinstance(rf, ReceptiveField):
        raise ValueError(
            f"Expected `rf` to be a ReceptiveField. Received: {type(rf).__name__}. Use "
            "kerasviz.receptive_field(model, layer)."
        )
    if input_size is not None:
        size = (input_size,) if isinstance(input_size, int | np.integer) else input_size
        if tuple(int(s) for s in size) != rf.input_size:
            raise ValueError(
                f"Expected `input_size` to match the receptive field's input size "
                f"{rf.input_size}. Received: input_size={tuple(size)}."
            )
    d = rf.ndim
    rank = len(shape)
    if rank not in (d, d + 1, d + 2):
        raise ValueError(
            f"Expected `{argname}` shaped {_forms(rf)}. Received: an array of shape {shape}."
        )
    lead = 0 if rank == d else 1
    spatial = tuple(shape[lead : lead + d])
    if spatial != rf.map_size:
        raise ValueError(
            f"Expected `{argname}` to have the layer's map size {rf.map_size} on its spatial "
            f"axes, shaped {_forms(rf)}. Received: an array of shape {shape}."
        )
    return lead == 1, rank == d + 2


def _forms(rf: ReceptiveField) -> str:
    m = ", ".join(str(s) for s in rf.map_size)
    return f"({m}), (n, {m}) or (n, {m}, c)"


def _check_method(method: Any) -> str:
    if method not in BACKPROJECT_METHODS:
        raise ValueError(
            f"Expected `method` to be one of {list(BACKPROJECT_METHODS)}. Received: {method!r}."
        )
    return method


def _effective_tf(x: tf.Tensor, plan: tuple, sizes: tuple) -> tf.Tensor:
    """``sum_u P(u, p) x_u`` for float64 ``x`` ``(n, *map_size[, c])``: ``(n, *sizes[, c])``.

    2D: two matrix products with the stacked terms; other ranks: one tensordot per axis and
    term."""
    terms, _, _, stacked = plan
    rank = len(x.shape)
    if stacked is not None and terms:
        first, second = (tf.constant(a, tf.float64) for a in stacked)
        channels = rank == 4
        m = tuple(x.shape[1:3])
        y = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, *m]) if channels else x
        u = tf.matmul(first, y)  # (N, T * H, w), the matrix broadcast over the batch
        count, h_out, n_rows = len(terms), sizes[0], tf.shape(y)[0]
        u = tf.reshape(
            tf.transpose(tf.reshape(u, [n_rows, count, h_out, m[1]]), [0, 2, 1, 3]),
            [n_rows, h_out, count * m[1]],
        )
        out = tf.matmul(u, second)  # (N, H, W)
        if channels:
            out = tf.transpose(tf.reshape(out, [tf.shape(x)[0], -1, *sizes]), [0, 2, 3, 1])
        return out
    summed = None
    for transposed in terms:
        y = x
        for ax, t in enumerate(transposed, start=1):
            moved = tf.tensordot(tf.constant(t, tf.float64), y, axes=[[1], [ax]])
            y = tf.transpose(moved, [*range(1, ax + 1), 0, *range(ax + 1, rank)])
        summed = y if summed is None else summed + y
    if summed is None:  # no unit reaches any pixel
        summed = tf.zeros_like(x[(slice(None), *(slice(0, 1),) * len(sizes))])
    return summed


def backproject(
    values: Any,
    rf: ReceptiveField,
    input_size: Any = None,
    *,
    fill: float = 0.0,
    method: str = "mean",
) -> np.ndarray:
    """Projects layer maps onto the input through the exact receptive fields of their units.

    ``method="mean"``: each input pixel gets the mean of the values of all units whose field,
    clipped to the input, covers it: the definition "stack one image per unit, filled with its
    value inside its field, and average over the units that cover each pixel", computed
    separably (the units covering a pixel form a box of units, summed by prefix sums along
    each axis) in O(n * H * W) time and memory (an axis whose bounds a dilated kernel leaves
    unsorted is summed with its ``(H, h)`` coverage matrix instead); nothing of size H * W *
    h * w is allocated.

    ``method="effective"``: the same average, each unit weighted at each pixel by its number
    of paths to the pixel in the network's linearized geometry (:class:`PathCounts`): pixel
    ``p`` gets ``sum_u P(u, p) v_u / sum_u P(u, p)``. A unit's value spreads over its whole
    field but mostly near the centre, where its effective receptive field lies (Luo et al.,
    2016); dividing by the total count keeps border pixels, reached by fewer paths, on the
    same scale as central ones. Computed per separable term as one matrix product per axis.
    It needs a field from :func:`receptive_field`, which carries the path counts.

    ``method="centered"``: bilinear interpolation between the units' field centres. Unit ``i``
    along an axis spreads its value with a tent of half-width one stride around its field's
    centre ``c_i = start + i * stride + (size - 1) / 2``: pixel ``p`` gets ``sum_i max(0, 1 -
    |p - c_i| / stride) v_i`` (separable over the axes). Between the outermost centres the
    weights sum to 1, as in a bilinear resize; beyond them the value fades to 0 within one
    stride. A bilinear resize with half-pixel centres assumes ``c_i = (i + 0.5) H / h - 0.5``,
    which is off by up to several pixels where padding or ``valid`` layers move the fields
    (3.5 px on ``shapes_nested``, up to 6 px on ``shapes_cnn``); anchored at the true centres,
    the same interpolation wins the localization benchmark (docs/localization.md).

    Pixels that no unit covers get ``fill``: rows a strided ``valid`` layer never reads,
    pixels a ``Cropping`` layer removed, and gaps where the stride is larger than the field
    (for ``"effective"``, also the holes of a dilated first layer; for ``"centered"``, the
    pixels more than one stride beyond the outermost centres).

    Args:
        values: maps shaped ``(h, w)``, ``(n, h, w)`` or ``(n, h, w, c)`` for a 2D layer (one
            spatial axis fewer for Conv1D); numpy or tf.Tensor. ``(h, w)`` must equal
            ``rf.map_size``.
        rf: the layer's :class:`ReceptiveField`.
        input_size: the input's spatial size; checked against ``rf.input_size`` when given.
        fill: the value of pixels that no unit covers.
        method: ``"mean"`` (every covering unit counts equally), ``"effective"`` (units
            weighted by their path counts) or ``"centered"`` (bilinear between field centres).

    Returns:
        float32 array ``(H, W)``, ``(n, H, W)`` or ``(n, H, W, c)``.

    Raises:
        ValueError: shapes that do not fit ``rf``, non-finite values, an unknown ``method``,
            or ``"effective"`` with a field built by hand.

    Reference: Araujo et al., "Computing Receptive Fields of Convolutional Neural Networks",
    Distill (2019); Luo et al., "Understanding the Effective Receptive Field in Deep
    Convolutional Neural Networks", NeurIPS (2016).

    Example:
        >>> rf = kerasviz.receptive_field(model, "conv2d_3")
        >>> heat = kerasviz.backproject(cams, rf)  # (8, 58, 58) -> (8, 128, 128)
        >>> soft = kerasviz.backproject(cams, rf, method="effective")
    """
    method = _check_method(method)
    x = np.asarray(values)
    batched, channels = _layout(x.shape, rf, input_size)
    if not np.isfinite(x).all():
        raise ValueError(
            "Expected `values` to be finite. Received: an array with "
            f"{int(np.size(x) - np.isfinite(x).sum())} NaN or infinite entries."
        )
    if not batched:
        x = x[None]
    plan = _effective_plan(rf) if method == "effective" else None
    if plan is not None:
        _, inverse, uncovered, _ = plan
        if channels:
            inverse, uncovered = inverse[..., None], uncovered[..., None]
        # TensorFlow's batched matrix products, eagerly: several times numpy's broadcast matmul
        summed = _effective_tf(tf.constant(x, tf.float64), plan, rf.input_size).numpy()
        out = (summed * inverse).astype(np.float32)
        if fill != 0 and uncovered.any():
            out = np.where(uncovered, np.float32(fill), out)
        return out if batched else out[0]
    plans, inverse, uncovered = _sum_plan(rf, method)
    summed = x.astype(np.float64)
    for ax, plan in enumerate(plans, start=1):
        if plan[0] == "range":
            # a zero first, then prefix sums: the units [first, last) sum to a difference
            pad = [(0, 0)] * summed.ndim
            pad[ax] = (1, 0)
            prefix = np.cumsum(np.pad(summed, pad), axis=ax)
            summed = np.take(prefix, plan[2], axis=ax) - np.take(prefix, plan[1], axis=ax)
        else:
            summed = np.moveaxis(np.tensordot(plan[1], summed, axes=([1], [ax])), 0, ax)
    if channels:
        uncovered = uncovered[..., None]
        inverse = None if inverse is None else inverse[..., None]
    out = (summed if inverse is None else summed * inverse).astype(np.float32)
    if fill != 0 and uncovered.any():
        out = np.where(uncovered, np.float32(fill), out)
    return out if batched else out[0]


def backproject_tf(
    values: tf.Tensor,
    rf: ReceptiveField,
    input_size: Any = None,
    *,
    fill: float = 0.0,
    method: str = "mean",
) -> tf.Tensor:
    """:func:`backproject` on TensorFlow tensors, usable inside a ``tf.function``.

    Same shapes, methods and definitions as :func:`backproject`; returns a float32
    ``tf.Tensor``. The static spatial shape of ``values`` must be known, and the values finite
    (they are summed as prefix sums, so one NaN would spread beyond its unit's field). Axes
    whose unit bounds are not sorted (a dilated kernel at the border) are summed with a
    coverage matrix; ``"effective"`` is one matrix product per axis and separable term.

    Example:
        >>> heat = backproject_tf(tf.random.uniform((8, 58, 58)), rf, method="effective")
    """
    method = _check_method(method)
    values = tf.convert_to_tensor(values)
    batched, channels = _layout(tuple(values.shape), rf, input_size)
    # float64 inside: prefix sums cancel, and the maps are small next to the model's work. The
    # centered rule's weights are non-negative, so nothing cancels: float32 there.
    dtype = tf.float32 if method == "centered" else tf.float64
    x = tf.cast(values, dtype)
    if not batched:
        x = x[None]
    rank = len(x.shape)
    plan = _effective_plan(rf) if method == "effective" else None
    if plan is not None:
        _, inverse, uncovered, _ = plan
        summed = _effective_tf(x, plan, rf.input_size)
        if channels:
            inverse, uncovered = inverse[..., None], uncovered[..., None]
        out = tf.cast(summed * tf.constant(inverse, tf.float64), tf.float32)
        if fill != 0 and uncovered.any():
            out = tf.where(tf.constant(uncovered), tf.cast(fill, tf.float32), out)
        return out if batched else out[0]
    plans, inverse, uncovered = _sum_plan(rf, method)
    for ax, plan in enumerate(plans, start=1):
        if plan[0] == "range":
            pad = [[0, 0]] * rank
            pad[ax] = [1, 0]
            prefix = tf.cumsum(tf.pad(x, pad), axis=ax)
            x = tf.gather(prefix, plan[2], axis=ax) - tf.gather(prefix, plan[1], axis=ax)
        else:
            moved = tf.tensordot(tf.constant(plan[1], dtype), x, axes=[[1], [ax]])
            x = tf.transpose(moved, [*range(1, ax + 1), 0, *range(ax + 1, rank)])
    if channels:
        uncovered = uncovered[..., None]
        inverse = None if inverse is None else inverse[..., None]
    out = tf.cast(x if inverse is None else x * tf.constant(inverse, dtype), tf.float32)
    if fill != 0 and uncovered.any():
        out = tf.where(tf.constant(uncovered), tf.cast(fill, tf.float32), out)
    return out if batched else out[0]


def resize_bilinear(values: Any, input_size: Any) -> np.ndarray:
    """The naive comparison for :func:`backproject`: a bilinear resize with half-pixel centres.

    Args:
        values: maps ``(h, w)``, ``(n, h, w)`` or ``(n, h, w, c)``.
        input_size: ``(H, W)``, or a :class:`ReceptiveField` whose ``input_size`` is used.

    Returns:
        float32 array ``(H, W)``, ``(n, H, W)`` or ``(n, H, W, c)`` (``tf.image.resize``,
        bilinear, no antialiasing).

    Example:
        >>> naive = kerasviz.resize_bilinear(cams, (128, 128))
    """
    if isinstance(input_size, ReceptiveField):
        input_size = input_size.input_size
    size = tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            f"Expected `input_size` to be (height, width). Received: input_size={input_size}."
        )
    x = np.asarray(values, dtype=np.float32)
    if x.ndim not in (2, 3, 4):
        raise ValueError(
            "Expected `values` shaped (h, w), (n, h, w) or (n, h, w, c). Received: an array "
            f"of shape {x.shape}."
        )
    squeeze_batch = x.ndim == 2
    squeeze_channel = x.ndim in (2, 3)
    if squeeze_batch:
        x = x[None]
    if squeeze_channel:
        x = x[..., None]
    out = tf.image.resize(x, size, method="bilinear", antialias=False).numpy()
    if squeeze_channel:
        out = out[..., 0]
    return out[0] if squeeze_batch else out


def crop_to_receptive_field(
    image: Any, rf: ReceptiveField, position: tuple[int, ...] | None = None
) -> np.ndarray:
    """Cuts an image, or a batch, to the clipped receptive field of one unit.

    Args:
        image: ``(H, W, C)`` or ``(n, H, W, C)`` with ``(H, W) == rf.input_size``.
        rf: the layer's :class:`ReceptiveField`.
        position: the unit ``(i, j)``; None for the centre unit ``(h // 2, w // 2)``.

    Returns:
        The crop ``(bottom - top, right - left, C)``, with the batch axis when given one.

    Example:
        >>> patch = kerasviz.crop_to_receptive_field(image, rf, (3, 4))
    """
    x = np.asarray(image)
    d = rf.ndim
    if x.ndim not in (d + 1, d + 2):
        raise ValueError(
            f"Expected `image` shaped (*{rf.input_size}, c) or (n, *{rf.input_size}, c). "
            f"Received: an array of shape {x.shape}."
        )
    lead = x.ndim - d - 1
    if tuple(x.shape[lead : lead + d]) != rf.input_size:
        raise ValueError(
            f"Expected `image` to have the receptive field's input size {rf.input_size}. "
            f"Received: an array of shape {x.shape}."
        )
    if position is None:
        position = tuple(m // 2 for m in rf.map_size)
    elif isinstance(position, int | np.integer):
        position = (position,)
    box = rf.box(*tuple(position))
    index = (slice(None),) * lead + tuple(
        slice(lo, hi) for lo, hi in zip(box[:d], box[d:], strict=True)
    )
    return x[index].copy()


# ---------------------------------------------------------------------------------------------
# Receptive fields by walking the graph

_BIG = np.iinfo(np.int64).max


class _Axis:
    """One spatial axis of a field: nominal ``(size, stride, start)`` and every unit's exact
    bounding interval ``[low[i], high[i])`` in input pixels (``low == high``: sees nothing).

    ``via`` records how the axis was made, for the path counts of :func:`_path_terms`: None
    for an input axis, ``("slide", prev, reads, valid)`` for a sliding window over ``prev``
    (output unit ``i`` reads ``prev``'s units ``reads[i][valid[i]]``), ``("union", axes,
    merge)`` for a merge of branches (``merge`` identifies the merge across its axes)."""

    __slots__ = ("size", "stride", "start", "low", "high", "via")

    def __init__(self, size: int, stride: int, start: int, low, high, via=None):
        self.size, self.stride, self.start = int(size), int(stride), int(start)
        self.low = np.asarray(low, np.int64)
        self.high = np.asarray(high, np.int64)
        self.via = via

    @classmethod
    def identity(cls, n: int) -> _Axis:
        units = np.arange(n, dtype=np.int64)
        return cls(1, 1, 0, units, units + 1)

    @property
    def units(self) -> int:
        return len(self.low)

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, _Axis)
            and (self.size, self.stride, self.start) == (other.size, other.stride, other.start)
            and np.array_equal(self.low, other.low)
            and np.array_equal(self.high, other.high)
        )

    __hash__ = None


def _fill_empty(low, high, empty):
    """Gives units that see nothing an empty interval, placed where it keeps the bounds sorted
    if they are (back-projection then sums contiguous ranges of units)."""
    if empty.any():
        low, high = low.copy(), high.copy()
        if empty.all():
            low[:], high[:] = 0, 0
        else:
            before = np.maximum.accumulate(np.where(empty, -_BIG, high))
            place = np.where(before == -_BIG, low[~empty][0], before)
            low[empty], high[empty] = place[empty], place[empty]
    return low, high


def _slide(prev: _Axis, taps, stride: int, offset: int, m_out: int, path: str) -> _Axis:
    """A sliding window over ``prev``'s units: output unit ``i`` reads input units
    ``offset + i * stride + t`` for ``t`` in ``taps`` (sorted, ``taps[0] == 0``); those
    outside the map are padding. Convolutions, pooling, padding, cropping and measured layers
    are all this. Nominally the field grows by ``taps[-1]`` input strides (Araujo et al.)."""
    taps = np.asarray(taps, np.int64)
    j = offset + np.arange(m_out, dtype=np.int64)[:, None] * stride + taps[None, :]
    jc = np.clip(j, 0, prev.units - 1)
    valid = (j >= 0) & (j < prev.units) & (prev.high > prev.low)[jc]
    low = np.where(valid, prev.low[jc], _BIG).min(axis=1)
    high = np.where(valid, prev.high[jc], -_BIG).max(axis=1)
    low, high = _fill_empty(low, high, ~valid.any(axis=1))
    return _Axis(
        prev.size + int(taps[-1]) * prev.stride,
        prev.stride * stride,
        prev.start + offset * prev.stride,
        low,
        high,
        ("slide", prev, jc, (j >= 0) & (j < prev.units)),
    )


# Numbers the merges in the order the walks make them (a later merge has a larger number).
_MERGES = itertools.count()


def _union_axes(axes: list[_Axis], axis: int, path: str, merge: int = -1) -> _Axis:
    """Each unit sees what it sees through any branch (Add, Concatenate, ...). ``merge``
    numbers the merge, the same on all its axes (the path counts pair the branches' axes)."""
    strides = {a.stride for a in axes}
    if len(strides) == 1:
        low = min(a.start for a in axes)
        high = max(a.start + a.size for a in axes)
        nominal = (high - low, strides.pop(), low)
    else:
        # a global branch (stride 0) that covers every other branch's units dominates
        flat = [a for a in axes if a.stride == 0]
        low = min((a.start for a in flat), default=0)
        high = max((a.start + a.size for a in flat), default=0)
        covered = all(
            a.stride == 0
            or (low <= a.start and a.start + (a.units - 1) * a.stride + a.size <= high)
            for a in axes
        )
        if not flat or not covered:
            raise _TraceError(
                f"layer {path!r} merges branches with different strides {sorted(strides)} "
                f"on spatial axis {axis}, so its units' fields are not evenly spaced"
            )
        nominal = (high - low, 0, low)
    lows = np.stack([a.low for a in axes])
    highs = np.stack([a.high for a in axes])
    seen = highs > lows
    low = np.where(seen, lows, _BIG).min(axis=0)
    high = np.where(seen, highs, -_BIG).max(axis=0)
    low, high = _fill_empty(low, high, ~seen.any(axis=0))
    return _Axis(*nominal, low, high, ("union", tuple(axes), merge))


class _Flow:
    """What flows through the walk in place of a tensor.

    ``geo`` holds one :class:`_Axis` per spatial axis, or None for a global field (every unit
    sees the whole input). The spatial axes are the tensor's axes ``1 .. len(geo)``; any axes
    after them (usually one channel axis, none after a channel is indexed away, as in
    ``preprocess_input``) are not spatial. ``spec`` is the symbolic tensor with the value's
    shape, ``sources`` the model inputs the field refers to, ``error`` why no field exists
    (the error travels on, and is raised only when a layer that depends on it is asked for).
    """

    __slots__ = ("geo", "spec", "sources", "error")

    def __init__(self, geo, spec, sources=frozenset(), error=None):
        self.geo = geo
        self.spec = spec
        self.sources = frozenset(sources)
        self.error = error

    @property
    def spatial(self) -> tuple:
        if self.geo is not None:
            return tuple(self.spec.shape[1 : 1 + len(self.geo)])
        return tuple(self.spec.shape[1:-1])

    @property
    def channels_last(self) -> bool:
        """Spatial axes followed by exactly one channel axis: what Keras layers expect."""
        return self.geo is None or len(self.spec.shape) == len(self.geo) + 2


class _TraceError(Exception):
    pass


class _Unclear(Exception):
    """A measurement that found no consistent geometry (it may be retried with more draws)."""


def _layer_types(*names: str) -> tuple[type, ...]:
    return tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


_TRANSPOSED = _layer_types("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
_RESAMPLING = _layer_types(
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing", "RandomCrop", "CenterCrop"
)
_CONV = _layer_types(
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
)
_POOL = _layer_types(
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
)
_GLOBAL = _layer_types(
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "Flatten",
)
_PADDING = _layer_types("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
_CROPPING = _layer_types("Cropping1D", "Cropping2D", "Cropping3D")
# Layers that act at each position (normalization statistics, like squeeze-and-excitation
# gates, count as channel weighting). Random augmentations are the identity at inference.
_POSITION_WISE = _layer_types(
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "RMSNormalization",
    "SpectralNormalization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "Dropout",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Rescaling",
    "Normalization",
    "Identity",
    "Dense",
    "Masking",
    "RandomFlip",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "RandomContrast",
    "RandomBrightness",
)
_MERGE = _layer_types("Add", "Subtract", "Average", "Maximum", "Minimum", "Multiply", "Concatenate")
# Functional-API operations (``x + y``, ``keras.ops.relu(x)``) recorded as graph nodes.
_OP_MERGE = {"Add", "Subtract", "Multiply", "Maximum", "Minimum", "Divide", "TrueDivide"}
_OP_ELEMENTWISE = {
    "Relu",
    "Relu6",
    "Sigmoid",
    "HardSigmoid",
    "Silu",
    "HardSilu",
    "Gelu",
    "Elu",
    "Selu",
    "Softplus",
    "Softsign",
    "LeakyRelu",
    "Mish",
    "Tanh",
    "Abs",
    "Absolute",
    "Exp",
    "Log",
    "Sqrt",
    "Square",
    "Negative",
    "Cast",
    "Clip",
}


def _op_name(layer: Any) -> str | None:
    """The class name of a ``keras.ops`` operation node, None for a layer."""
    cls = type(layer)
    if isinstance(layer, keras.layers.Layer) or not cls.__module__.startswith("keras.src.ops"):
        return None
    return cls.__name__


def _same_pad_before(n: int, k_eff: int, s: int) -> int:
    """TensorFlow's ``same`` padding puts the odd pixel at the end (bottom/right)."""
    total = max(k_eff - s, 0) if n % s == 0 else max(k_eff - n % s, 0)
    return total // 2


def _sliding(flow: _Flow, path: str, out_spatial, kernel, strides, dilation, padding) -> tuple:
    geo = []
    for axis, (prev, n, m) in enumerate(zip(flow.geo, flow.spatial, out_spatial, strict=True)):
        k_eff = dilation[axis] * (kernel[axis] - 1) + 1
        s = strides[axis]
        if padding == "valid":
            before = 0
        elif padding == "same":
            before = _same_pad_before(n, k_eff, s)
        elif padding == "causal":
            before = k_eff - 1
        else:
            raise _TraceError(f"layer {path!r} has unknown padding {padding!r}")
        taps = np.arange(kernel[axis]) * dilation[axis]
        geo.append(_slide(prev, taps, s, -before, m, path))
    return tuple(geo)


def _pairs(value, d: int) -> list[tuple[int, int]]:
    """ZeroPadding/Cropping amounts as ``(before, after)`` per spatial axis."""
    if d == 1:
        value = (value,)
    return [(int(a), int(b)) for a, b in value]


def _union(flows: list[_Flow], path: str) -> tuple | None:
    if any(f.geo is None for f in flows):
        return None
    first = flows[0].geo
    if any(len(f.geo) != len(first) for f in flows):
        raise _TraceError(f"layer {path!r} merges inputs with different numbers of spatial axes")
    merge = next(_MERGES)
    return tuple(
        _union_axes([f.geo[axis] for f in flows], axis, path, merge) for axis in range(len(first))
    )


def _is_gate(flow: _Flow, out_spatial: tuple) -> bool:
    """A squeeze-and-excitation style gate: global, or 1x1 (or no spatial axes) broadcast."""
    if flow.geo is None:
        return True
    return all(s == 1 for s in flow.spatial) and flow.spatial != out_spatial


def _merge(layer, path: str, flows: list[_Flow], out_spatial: tuple, gating: bool):
    if gating and len(flows) > 1:
        kept = [f for f in flows if not _is_gate(f, out_spatial)]
        if kept:
            flows = kept
    for f in flows:
        if f.geo is not None and f.spatial != out_spatial:
            raise _TraceError(
                f"layer {path!r} broadcasts an input of spatial shape {f.spatial} to "
                f"{out_spatial}; only squeeze-and-excitation gates (Multiply) can be broadcast"
            )
    if isinstance(layer, keras.layers.Concatenate):
        rank = len(flows[0].spec.shape)
        if layer.axis not in (-1, rank - 1):
            raise _TraceError(
                f"layer {path!r} concatenates along axis {layer.axis}, not the channel axis"
            )
    return _union(flows, path), flows


def _keep(flow: _Flow, path: str, out_spatial: tuple):
    if flow.geo is not None and flow.spatial != out_spatial:
        raise _TraceError(
            f"layer {path!r} changes the spatial shape from {flow.spatial} to {out_spatial}"
        )
    return flow.geo


def _full_slice(k) -> bool:
    return isinstance(k, slice) and k.start is None and k.stop is None and k.step in (None, 1)


def _indexes_channels_only(key, rank: int, d: int) -> bool:
    """True when ``x[key]`` leaves the batch and the ``d`` spatial axes whole."""
    key = key if isinstance(key, tuple) else (key,)
    ellipses = [i for i, k in enumerate(key) if k is Ellipsis]
    if len(ellipses) > 1 or any(k is None for k in key):
        return False
    if ellipses:
        i = ellipses[0]
        key = key[:i] + (slice(None),) * (rank - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (rank - len(key))
    return len(key) == rank and all(_full_slice(k) for k in key[: 1 + d])


def _op_geometry(name: str, layer, path: str, args, live, flows, out_shape, d):
    """Rules for operations recorded in a functional graph; None where there is none."""
    out_spatial = tuple(out_shape[1 : 1 + d])
    rank = len(out_shape)
    same_rank = all(len(f.spec.shape) == rank for f in live)
    gating = name == "Multiply"
    aligned = all(f.spatial == out_spatial or (gating and _is_gate(f, out_spatial)) for f in live)
    if name in _OP_MERGE and same_rank and aligned:  # other broadcasts are measured
        return _merge(layer, path, flows, out_spatial, gating=gating)
    if name in _OP_ELEMENTWISE and len(flows) == 1 and same_rank:
        return _keep(flows[0], path, out_spatial), flows
    if name in ("Concatenate", "Stack"):
        axis = getattr(layer, "axis", 0)
        axis = axis + rank if axis < 0 else axis
        if axis > d and all(f.spatial == out_spatial for f in live):
            return _merge(layer, path, flows, out_spatial, gating=False)
    if name == "GetItem" and len(args) == 2 and len(flows) == 1:
        if _indexes_channels_only(args[1], len(flows[0].spec.shape), d):
            return _keep(flows[0], path, out_spatial), flows
    return None


def _geometry(layer, path: str, args: tuple, kwargs: dict, flows: list[_Flow], out):
    """The output field of one leaf layer; returns ``(geo, flows_it_depends_on)``."""
    live = [f for f in flows if f.geo is not None]
    if not live:
        return None, flows
    d = len(live[0].geo)
    if any(len(f.geo) != d for f in live):
        raise _TraceError(f"layer {path!r} combines inputs with different numbers of spatial axes")
    out_shape = tuple(out.shape)
    if len(out_shape) < 1 + d:  # no spatial axes left: global pooling, a reduction, ...
        return None, flows
    out_spatial = tuple(out_shape[1 : 1 + d])
    if any(s is None for s in out_spatial):
        raise _TraceError(f"layer {path!r} has an output of unknown spatial size {out_spatial}")
    name = _op_name(layer)
    if name is not None:
        found = _op_geometry(name, layer, path, args, live, flows, out_shape, d)
        if found is not None:
            return found
    elif isinstance(layer, _GLOBAL):
        return None, flows
    aligned = all(f.channels_last for f in live)
    if aligned and len(out_shape) < 3:  # (batch, h, w, c) -> (batch, features)
        return None, flows
    if name is not None:
        return _measured(layer, path, args, kwargs, flows, out)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        raise _TraceError(f"layer {path!r} uses data_format='channels_first'")
    if isinstance(layer, keras.layers.TimeDistributed):
        return _time_distributed(layer, path, flows, live)
    known = _MERGE + _TRANSPOSED + _RESAMPLING + _CONV + _POOL + _PADDING + _CROPPING
    known += _POSITION_WISE + (keras.layers.Reshape,)
    if not isinstance(layer, known) or not aligned or len(out_shape) != d + 2:
        return _measured(layer, path, args, kwargs, flows, out)
    if isinstance(layer, _MERGE):
        return _merge(
            layer, path, flows, out_spatial, gating=isinstance(layer, keras.layers.Multiply)
        )
    if len(flows) != 1:
        raise _TraceError(f"layer {path!r} of type {type(layer).__name__} takes several inputs")
    (flow,) = flows
    if isinstance(layer, _TRANSPOSED + _RESAMPLING):
        raise _TraceError(
            f"layer {path!r} of type {type(layer).__name__} resamples its input: its units' "
            "fields are not evenly spaced at an integer stride"
        )
    if isinstance(layer, _CONV):
        geo = _sliding(
            flow,
            path,
            out_spatial,
            layer.kernel_size,
            layer.strides,
            layer.dilation_rate,
            layer.padding,
        )
        return geo, flows
    if isinstance(layer, _POOL):
        ones = (1,) * len(layer.pool_size)
        geo = _sliding(flow, path, out_spatial, layer.pool_size, layer.strides, ones, layer.padding)
        return geo, flows
    if isinstance(layer, _PADDING + _CROPPING):
        padding = isinstance(layer, _PADDING)
        amounts = _pairs(layer.padding if padding else layer.cropping, d)
        sign = -1 if padding else 1
        geo = tuple(
            _slide(prev, [0], 1, sign * before, m, path)
            for prev, (before, _), m in zip(flow.geo, amounts, out_spatial, strict=True)
        )
        return geo, flows
    return _keep(flow, path, out_spatial), flows


def _time_distributed(layer, path: str, flows: list[_Flow], live: list[_Flow]):
    """``TimeDistributed(inner)``: axis 1 (time) keeps its field, and the spatial axes after
    it take the inner layer's geometry, found by its own rule or measured."""
    if len(flows) != 1 or not live[0].channels_last:
        raise _TraceError(
            f"layer {path!r} of type TimeDistributed expects one (batch, time, ..., channels) input"
        )
    (flow,) = flows
    time, rest = flow.geo[0], flow.geo[1:]
    inner = layer.layer
    shape = tuple(flow.spec.shape)
    spec = keras.KerasTensor((shape[0], *shape[2:]), dtype=flow.spec.dtype)
    if not rest:  # (batch, time, features): the inner layer maps each step's vector
        return (time,), flows
    inner_flow = _Flow(rest, spec, flow.sources)
    try:
        inner_out = keras.tree.flatten(inner.compute_output_spec(spec))[0]
    except Exception as exc:
        raise _TraceError(f"the output shape of layer {path!r} is unknown ({exc})") from exc
    geo, _ = _geometry(inner, f"{path}/{inner.name}", (inner_flow,), {}, [inner_flow], inner_out)
    if geo is None or len(geo) != len(rest):
        raise _TraceError(
            f"layer {path!r} wraps {type(inner).__name__}, whose output has no spatial axes: "
            "the time axis alone has no field"
        )
    return (time, *geo), flows


# ---------------------------------------------------------------------------------------------
# Measured geometry: layers without a rule

# layer -> {(input shapes, dtypes, output shape): per-input local geometry, or an error}
_MEASURED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DRAWS = (1, 16)  # random inputs per probe; more only when the first try is unclear
_PROBE_BYTES = 1 << 27  # working set of one probe chunk


def _measured(layer, path: str, args: tuple, kwargs: dict, flows: list[_Flow], out):
    """The field after a layer without a rule, from its measured geometry (see
    :func:`_measure`), composed with each spatial input's field as a convolution would."""
    live = [f for f in flows if f.geo is not None]
    d = len(live[0].geo)
    out_spatial = tuple(out.shape[1 : 1 + d])
    # gates (global or 1x1 inputs broadcast over the map) are channel weighting, as for Multiply
    targets = [f for f in live if not _is_gate(f, out_spatial)] or live
    local = _cached_measure(layer, path, args, kwargs, flows, targets, out)
    used, branches = [], []
    for flow, geometry in zip(targets, local, strict=True):
        if geometry is None:  # the output does not depend on this input at all
            continue
        used.append(flow)
        branches.append(
            tuple(
                _slide(prev, taps, stride, offset, m, path)
                for prev, (stride, offset, taps), m in zip(
                    flow.geo, geometry, out_spatial, strict=True
                )
            )
        )
    if not branches:
        raise _TraceError(
            f"layer {path!r} of type {type(layer).__name__} has no known receptive-field rule, "
            "and its output does not depend on its spatial inputs"
        )
    merge = next(_MERGES)
    geo = tuple(_union_axes([b[axis] for b in branches], axis, path, merge) for axis in range(d))
    return geo, used


def _cached_measure(layer, path, args, kwargs, flows, targets, out):
    key = (
        tuple((tuple(f.spec.shape[1:]), str(f.spec.dtype)) for f in flows),
        tuple(flows.index(t) for t in targets),
        tuple(out.shape[1:]),
    )
    try:
        per_layer = _MEASURED.setdefault(layer, {})
    except TypeError:  # not weakly referenceable: measure every time
        per_layer = {}
    if key not in per_layer:
        try:
            per_layer[key] = _measure(layer, path, args, kwargs, flows, targets, out)
        except _TraceError as exc:
            per_layer[key] = (path, str(exc))
    found = per_layer[key]
    if isinstance(found, tuple):  # an error, measured when the layer was reached as `first`
        first, message = found
        raise _TraceError(message.replace(repr(first), repr(path)))
    return found


def _measure(layer, path, args, kwargs, flows, targets, out) -> list:
    """Measures how each output position of ``layer`` depends on each target input.

    The layer runs alone on random inputs of its actual input shape: float64, or the
    layer's own float dtype where Keras would cast to it anyway. One batched gradient gives
    the Jacobian support of a few dozen output positions (corners, borders, centre, the
    lines through the centre, mixed positions), one batch row each. Per spatial axis,
    :func:`_fit_axis` finds a stride, offset and tap pattern that explain every probed unit,
    border units clipped as by ``same`` padding (a unit whose window lies wholly in the
    padding may see nothing); then the units that the fit puts on a border are probed and
    checked too. A ReLU can zero a gradient at one input, not at all of them: when a try is
    unclear, it is repeated with sixteen random inputs per position, their supports united.

    Returns:
        Per target: None if the output never depends on it, else per spatial axis
        ``(stride, offset, taps)``. Stride 0 marks an axis along which every unit depends
        on the whole input (attention, a global mean broadcast back): a global axis.

    Raises:
        _TraceError: the layer cannot run alone, or no geometry explains its dependence.
    """
    d = len(targets[0].geo)
    m_out = tuple(int(s) for s in out.shape[1 : 1 + d])
    reason = ""
    for draws in _DRAWS:
        try:
            return _measure_once(layer, path, args, kwargs, flows, targets, m_out, draws)
        except _Unclear as exc:
            reason = str(exc)
    raise _TraceError(
        f"layer {path!r} of type {type(layer).__name__} has no known receptive-field rule, and "
        f"its measured input dependence is not translation-equivariant: {reason}"
    )


def _probe_positions(m_out: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Corners, the centre, units along each axis through the centre, and mixed positions."""
    mids = [m // 2 for m in m_out]
    per_axis = []
    for m in m_out:
        picks = (0, 1, 2, m // 4, m // 2 - 1, m // 2, m // 2 + 1, (3 * m) // 4, m - 3, m - 2, m - 1)
        per_axis.append(sorted({i for i in picks if 0 <= i < m}))
    positions = [tuple(mids)]
    for axis, picks in enumerate(per_axis):
        for i in picks:
            positions.append(tuple(i if a == axis else mids[a] for a in range(len(m_out))))
    positions += list(itertools.product(*[(0, m - 1) for m in m_out]))
    for t in range(6):
        positions.append(tuple(p[(t * (a + 1)) % len(p)] for a, p in enumerate(per_axis)))
    return list(dict.fromkeys(positions))


def _measure_once(layer, path, args, kwargs, flows, targets, m_out, draws) -> list:
    d = len(m_out)
    positions = _probe_positions(m_out)
    supports = _supports(layer, path, args, kwargs, flows, targets, positions, draws)
    index = np.array(positions)
    fits = []
    for t, flow in enumerate(targets):
        seen = supports[t][0].any(axis=1)  # a unit that sees nothing sees nothing on any axis
        if not seen.any():
            fits.append(None)
            continue
        fit = [
            _fit_axis(index[seen], axis, supports[t][axis][seen], m_out[axis], flow.spatial[axis])
            for axis in range(d)
        ]
        _check(fit, positions, supports[t], flow.spatial)
        fits.append(fit)
    # every unit the fits place on a border, probed and checked (others at the centre)
    mids = [m // 2 for m in m_out]
    probed = [set(index[:, axis].tolist()) for axis in range(d)]
    extra = set()
    for fit, flow in zip(fits, targets, strict=True):
        for axis, (stride, offset, taps) in enumerate(fit or []):
            if stride == 0:
                continue
            first = offset + np.arange(m_out[axis]) * stride
            border = (first < 0) | (first + taps[-1] >= flow.spatial[axis])
            for i in np.flatnonzero(border).tolist():
                if i not in probed[axis]:
                    extra.add(tuple(i if a == axis else mids[a] for a in range(d)))
    if extra:
        extra = sorted(extra)
        more = _supports(layer, path, args, kwargs, flows, targets, extra, draws)
        for t, (fit, flow) in enumerate(zip(fits, targets, strict=True)):
            if fit is not None:
                _check(fit, extra, more[t], flow.spatial)
            elif more[t][0].any():
                raise _Unclear("the output depends on an input at some units only")
    return [
        None if fit is None else [(s, o, tuple(int(v) for v in taps)) for s, o, taps in fit]
        for fit in fits
    ]


def _check(fit, positions, support, spatial) -> None:
    """Raises _Unclear unless each probed unit depends on exactly the predicted positions; a
    unit may see nothing only where its window lies wholly in the padding on some axis."""
    d = len(fit)
    for row, position in enumerate(positions):
        expected = [_predict(fit[a], position[a], spatial[a]) for a in range(d)]
        observed = [support[a][row] for a in range(d)]
        if not observed[0].any():
            if all(e.any() for e in expected):
                raise _Unclear(
                    f"unit {tuple(position)} depends on no input position, though its window "
                    "lies inside the input"
                )
            continue
        for axis in range(d):
            if not np.array_equal(observed[axis], expected[axis]):
                raise _Unclear(
                    f"unit {tuple(position)} depends on input positions "
                    f"{np.flatnonzero(observed[axis]).tolist()} along spatial axis {axis}, not "
                    f"the {np.flatnonzero(expected[axis]).tolist()} that the other units' "
                    "stride and offset predict"
                )


def _predict(fit, i: int, n: int) -> np.ndarray:
    stride, offset, taps = fit
    where = offset + i * stride + np.asarray(taps)
    expected = np.zeros(n, bool)
    expected[where[(where >= 0) & (where < n)]] = True
    return expected


def _fit_axis(index: np.ndarray, axis: int, support: np.ndarray, m: int, n: int):
    """``(stride, offset, taps)`` with unit ``i`` depending on input positions ``offset + i *
    stride + taps``, clipped to ``[0, n)``, for every probed unit along ``axis``.

    Args:
        index: ``(P, d)`` probed unit positions.
        support: ``(P, n)`` bool, the input positions along ``axis`` each probe depends on
            (units that see something).
        m, n: output and input sizes along ``axis``.

    Raises:
        _Unclear: units with the same index along ``axis`` depend on different positions (the
            axis is mixed with another), or no geometry fits.
    """
    seen: dict[int, np.ndarray] = {}
    for position, row in zip(index, support, strict=True):
        i = int(position[axis])
        if i in seen and not np.array_equal(seen[i], row):
            raise _Unclear(
                f"units at index {i} along spatial axis {axis} depend on different input "
                "positions depending on their other coordinates"
            )
        seen[i] = row
    units = sorted(seen)
    if all(seen[i].all() for i in units):  # every unit sees the whole axis
        return (0, 0, np.arange(n)) if m > 1 else (1, 0, np.arange(n))
    where = {i: np.flatnonzero(seen[i]) for i in units}
    if len(units) == 1:
        (i,) = units
        return (1, int(where[i][0]) - i, where[i] - where[i][0])
    strides = []
    for a, b in itertools.combinations(units, 2):
        for delta in (where[b][0] - where[a][0], where[b][-1] - where[a][-1]):
            if delta > 0 and delta % (b - a) == 0:
                strides.append(int(delta // (b - a)))
    for stride, _ in sorted(
        ((s, strides.count(s)) for s in set(strides)), key=lambda item: -item[1]
    ):
        for offset in dict.fromkeys(int(where[i][0]) - i * stride for i in reversed(units)):
            taps = np.unique(np.concatenate([where[i] - offset - i * stride for i in units]))
            if taps[0] < 0:
                continue
            fit = (stride, offset + int(taps[0]), taps - taps[0])
            if all(np.array_equal(_predict(fit, i, n), seen[i]) for i in units):
                return fit
    described = ", ".join(f"unit {i}: {where[i].tolist()}" for i in units[:4])
    raise _Unclear(
        f"no stride and offset explain which input positions the units depend on along "
        f"spatial axis {axis} ({described}, ...)"
    )


def _supports(layer, path, args, kwargs, flows, targets, positions, draws) -> list:
    """Per target and spatial axis, ``(len(positions), n)`` bool: the input positions along
    that axis on which each probed output position depends (for any random draw)."""
    d = len(targets[0].geo)
    rows = np.repeat(np.asarray(positions, np.int64), draws, axis=0)
    shapes = [tuple(f.spec.shape[1:]) for f in flows]
    if any(s is None for shape in shapes for s in shape):
        raise _TraceError(f"layer {path!r} has an input of unknown shape {shapes}")
    per_row = 8 * max(int(np.prod(s)) for s in shapes) * (4 + len(flows))
    chunk = max(1, _PROBE_BYTES // per_row)
    parts = [
        _support_chunk(layer, path, args, kwargs, flows, targets, rows[i : i + chunk], d)
        for i in range(0, len(rows), chunk)
    ]
    out = []
    for t in range(len(targets)):
        per_axis = []
        for axis in range(d):
            sup = np.concatenate([p[t][axis] for p in parts])
            per_axis.append(sup.reshape(len(positions), draws, -1).any(axis=1))
        out.append(per_axis)
    return out


def _probe_dtype(layer):
    """float64, except for a Keras layer that casts its inputs to its own float dtype anyway
    (then float64 would only cost time and memory)."""
    if isinstance(layer, keras.layers.Layer) and getattr(layer, "autocast", False):
        compute = keras.backend.standardize_dtype(layer.compute_dtype)
        if compute.startswith("float"):
            return tf.as_dtype(compute)
    return tf.float64


def _support_chunk(layer, path, args, kwargs, flows, targets, rows, d):
    if not tf.executing_eagerly():
        # inside a tf.function trace: measure in a fresh thread, which runs eagerly (an
        # init_scope would pause the gradient tape)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            job = pool.submit(_support_chunk, layer, path, args, kwargs, flows, targets, rows, d)
            return job.result()
    n_rows = len(rows)
    kwargs = dict(kwargs)
    if getattr(layer, "_call_has_training_arg", False) and "training" not in kwargs:
        kwargs["training"] = False
    index = np.concatenate([np.arange(n_rows)[:, None], rows], axis=1)
    seed = tf.constant([n_rows, int(rows.sum()) % 1_000_003], tf.int64)
    grads, error = None, None
    for dtype in dict.fromkeys([_probe_dtype(layer), None]):
        values = {
            id(f): tf.cast(
                tf.random.stateless_normal(
                    (n_rows, *f.spec.shape[1:]), seed + [0, k], dtype=dtype or tf.float32
                ),
                dtype or f.spec.dtype,
            )
            for k, f in enumerate(flows)
        }
        concrete = keras.tree.map_structure(
            lambda v, values=values: values[id(v)] if isinstance(v, _Flow) else v,
            (args, kwargs),
            none_is_leaf=True,
        )
        try:
            with tf.GradientTape() as tape:
                for f in targets:
                    tape.watch(values[id(f)])
                y = keras.tree.flatten(layer(*concrete[0], **concrete[1]))[0]
                picked = tf.gather_nd(tf.cast(y, tf.float64), index)
                weights = tf.random.stateless_uniform(
                    tf.shape(picked), seed + [1, 0], 0.5, 1.5, tf.float64
                )
                objective = tf.reduce_sum(picked * weights)
            grads = tape.gradient(objective, [values[id(f)] for f in targets])
            break
        except Exception as exc:
            error = exc
    if grads is None:
        raise _TraceError(
            f"layer {path!r} of type {type(layer).__name__} has no known receptive-field "
            f"rule, and running it alone to measure its geometry failed ({error})"
        )
    result = []
    for f, g in zip(targets, grads, strict=True):
        n = tuple(f.spatial)
        if g is None:
            result.append([np.zeros((n_rows, n[a]), bool) for a in range(d)])
            continue
        nonzero = tf.not_equal(g, 0)
        trailing = list(range(1 + d, len(g.shape)))
        if trailing:
            nonzero = tf.reduce_any(nonzero, axis=trailing)
        result.append(
            [
                tf.reduce_any(nonzero, axis=[1 + b for b in range(d) if b != a]).numpy()
                if d > 1
                else nonzero.numpy()
                for a in range(d)
            ]
        )
    return result


# ---------------------------------------------------------------------------------------------
# The walk


def _specs(structure):
    return keras.tree.map_structure(
        lambda v: v.spec if isinstance(v, _Flow) else v, structure, none_is_leaf=True
    )


def _error_outputs(layer, message: str, spec=None):
    if spec is not None:
        return keras.tree.pack_sequence_as(
            spec, [_Flow(None, s, error=message) for s in keras.tree.flatten(spec)]
        )
    nodes = getattr(layer, "_inbound_nodes", None) or []
    count = len(keras.tree.flatten(nodes[0].outputs)) if nodes else 1
    flows = [_Flow(None, None, error=message) for _ in range(count)]
    return flows[0] if count == 1 else flows


def _flow_call(layer, path: str, args: tuple, kwargs: dict):
    """``run_graph``'s stand-in for a layer call: from input fields to output fields."""
    flows = [v for v in keras.tree.flatten((args, kwargs)) if isinstance(v, _Flow)]
    errors = [f.error for f in flows if f.error is not None]
    if errors:
        return _error_outputs(layer, errors[0])
    try:
        spec = layer.compute_output_spec(*_specs(args), **_specs(kwargs))
    except Exception as exc:  # a layer that cannot run on a symbolic input of this shape
        return _error_outputs(layer, f"the output shape of layer {path!r} is unknown ({exc})")
    specs = keras.tree.flatten(spec)
    try:
        geo, used = _geometry(layer, path, args, kwargs, flows, specs[0])
    except _TraceError as exc:
        return _error_outputs(layer, str(exc), spec)
    sources = frozenset().union(*(f.sources for f in used))
    outputs = []
    for s in specs:
        if geo is None or tuple(s.shape[1 : 1 + len(geo)]) == tuple(
            specs[0].shape[1 : 1 + len(geo)]
        ):
            outputs.append(_Flow(geo, s, sources))
        else:
            message = f"output {len(outputs)} of layer {path!r} has another spatial shape"
            outputs.append(_Flow(None, s, error=message))
    return keras.tree.pack_sequence_as(spec, outputs)


class _Table:
    """One walk of a model at one input size: the flows per layer path, and built fields."""

    __slots__ = ("records", "fields")

    def __init__(self):
        self.records: dict[str, list[_Flow]] = {}
        self.fields: dict[str, ReceptiveField] = {}


# model -> {input_size: _Table}; weak keys, so the cache never keeps a model alive.
_FIELDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _input_flows(model, input_size) -> list[_Flow]:
    refs = model_inputs(model)
    spatial = [i for i, ref in enumerate(refs) if len(ref.shape) >= 3]
    if input_size is not None and len(spatial) != 1:
        raise ValueError(
            "Expected `input_size` only for a model with one spatial input. Received: "
            f"input_size={input_size} for a model with {len(spatial)} spatial inputs."
        )
    flows = []
    for index, ref in enumerate(refs):
        shape = tuple(ref.shape)
        d = len(shape) - 2
        if d < 1:
            flows.append(_Flow(None, keras.KerasTensor(shape, dtype=ref.dtype)))
            continue
        if input_size is not None:
            if len(input_size) != d or any(
                known is not None and known != size
                for known, size in zip(shape[1:-1], input_size, strict=False)
            ):
                raise ValueError(
                    f"Expected `input_size` to give the {d} spatial sizes of the model input "
                    f"{shape}. Received: input_size={input_size}."
                )
            shape = (shape[0], *input_size, shape[-1])
        spec = keras.KerasTensor(shape, dtype=ref.dtype)
        if any(s is None for s in shape[1:-1]):
            message = (
                f"the model input {ref.name!r} has unknown spatial size {shape[1:-1]}; pass "
                f"`input_size=` with its {d} spatial sizes"
            )
            flows.append(_Flow(None, spec, {index}, error=message))
            continue
        geo = tuple(_Axis.identity(n) for n in shape[1:-1])
        flows.append(_Flow(geo, spec, {index}))
    return flows


def _field_table(model, input_size) -> _Table:
    per_model = _FIELDS.setdefault(model, {})
    table = per_model.get(input_size)
    if table is None:
        table = _Table()

        def visit(layer, path, outputs):
            table.records.setdefault(path, []).append(keras.tree.flatten(outputs)[0])

        run_graph(model, _input_flows(model, input_size), _flow_call, visit=visit)
        per_model[input_size] = table
    return table


def receptive_field(
    model: keras.Model, layer: LayerSpec, *, input_size: tuple[int, ...] | None = None
) -> ReceptiveField:
    """The exact receptive field of the units of ``layer``, in input pixels.

    Derived by walking the model's graph (nested models included) with a field in place of
    each tensor, carrying per spatial axis the nominal size, stride and start (Araujo et al.)
    and every unit's exact input interval. Convolutions (any subclass of Keras'
    Conv/Depthwise/Separable layers) and pooling follow their kernel, stride, dilation and
    padding, with TensorFlow's asymmetric ``same`` padding (the odd pixel goes to the
    bottom/right); ZeroPadding and Cropping shift the field, and padding never reaches over
    cropped pixels; normalization, activations, Dropout, Rescaling and Dense on a spatial
    tensor keep it; Add/Concatenate/Average/Maximum/Subtract take the union of their branches;
    a Multiply by a global or 1x1 branch (squeeze-and-excitation) is channel weighting and is
    ignored; indexing, stacking and concatenating on the channel axis keep the field;
    ``TimeDistributed`` keeps the time axis and applies the wrapped layer's geometry to the
    axes after it; global pooling, Flatten and anything without spatial axes give a global
    field. Any other layer or operation has its geometry measured from its Jacobian (see the
    module docstring); one whose output depends on its whole input gets a global field along
    that axis. Measurements are cached per layer and input shape, and the walk per model and
    input size.

    Args:
        model: a Sequential or functional model, with a single spatial input (or a layer that
            depends on only one of several inputs). Spatial axes are the input's axes between
            the batch and the last (channel) axis: ``(h, w)`` for images, ``(t, h, w)`` for
            video, ``(length,)`` for Conv1D.
        layer: a name, ``"outer/inner"`` path, index or Layer object.
        input_size: the spatial input size, for models built with unknown (None) sizes.

    Returns:
        A :class:`ReceptiveField`; ``box(i, j)`` gives unit ``(i, j)``'s input box.

    Raises:
        ValueError: the layer is not in the model or not reached from its inputs; it
            depends on several spatial inputs or none; the input size is unknown and
            ``input_size`` not given; or a layer on the way has no field: transposed
            convolutions and resampling, a merge of branches with different strides, and a
            measured layer that is not translation-equivariant. The message names the layer
            (path and type) and the ways out, ``upsample="bilinear"`` or ``upsample=None``
            for CAMs.

    Reference: Araujo et al., "Computing Receptive Fields of Convolutional Neural Networks",
    Distill (2019).

    Example:
        >>> rf = kerasviz.receptive_field(model, "block3_conv3")
        >>> rf.size, rf.stride, rf.start
        ((40, 40), (4, 4), (-18, -18))
    """
    path, _ = resolve_layer(model, layer)
    if input_size is not None:
        if isinstance(input_size, int | np.integer):
            input_size = (input_size,)
        input_size = tuple(int(s) for s in input_size)
    table = _field_table(model, input_size)
    field = table.fields.get(path)
    if field is None:
        field = _build_field(model, path, table.records.get(path), input_size)
        table.fields[path] = field
    return field


def _build_field(model, path: str, records, input_size) -> ReceptiveField:
    if not records:
        raise ValueError(
            f"Expected `layer` to be reached from the inputs of model {model.name!r}. "
            f"Received: layer={path!r}, which the model's graph never calls."
        )
    flow = records[0]
    for other in records[1:]:
        if other.error is None and flow.error is None:
            same = (other.geo, other.spatial, other.sources) == (
                flow.geo,
                flow.spatial,
                flow.sources,
            )
        else:
            same = other.error == flow.error
        if not same:
            raise ValueError(
                f"Expected `layer` to be called once, or always on inputs with the same field. "
                f"Received: layer={path!r}, called {len(records)} times with different fields."
            )
    if flow.error is not None:
        raise ValueError(
            f"Cannot compute the receptive field of layer={path!r}: {flow.error}. {WAYS_OUT}"
        )
    return _to_field(model, path, flow, input_size)


def _to_field(model, path: str, flow: _Flow, input_size) -> ReceptiveField:
    refs = model_inputs(model)
    if len(flow.sources) != 1:
        names = [refs[i].name for i in sorted(flow.sources)]
        what = f"several model inputs {names}" if names else "no spatial model input"
        raise ValueError(
            f"Expected `layer` to depend on exactly one spatial model input. Received: "
            f"layer={path!r}, which depends on {what}."
        )
    (index,) = flow.sources
    shape = tuple(refs[index].shape[1:-1])
    if input_size is not None:
        shape = input_size
    d = len(shape)
    if flow.geo is None:
        map_size = flow.spatial if len(flow.spatial) == d else (1,) * d
        map_size = tuple(1 if s is None else s for s in map_size)
        return ReceptiveField(shape, (0,) * d, (0,) * d, shape, map_size, index)
    return ReceptiveField(
        tuple(a.size for a in flow.geo),
        tuple(a.stride for a in flow.geo),
        tuple(a.start for a in flow.geo),
        shape,
        flow.spatial,
        index,
        bounds=tuple((tuple(a.low.tolist()), tuple(a.high.tolist())) for a in flow.geo),
        paths=PathCounts(flow.geo),
    )
