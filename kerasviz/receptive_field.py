"""Exact receptive fields of every unit of every layer, and exact back-projection onto the input.

A unit ``i`` of a layer sees the input interval ``[start + i * stride, start + i * stride + size)``
along each spatial axis. :func:`receptive_field` derives ``size``, ``stride`` and ``start`` by
walking the model's graph with a receptive field in place of each tensor, so every padding rule
(TensorFlow's asymmetric ``same`` included), dilation, merge and nested model is followed
exactly. :func:`backproject` then maps any layer map onto the input: each input pixel gets the
mean of the values of all units whose (clipped) field covers it, the stack-of-fields definition,
computed separably in O(n * H * W) memory.

Reference: Araujo, Norris and Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill (2019).
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._graph import model_inputs, run_graph
from kerasviz._layers import LayerSpec, resolve_layer


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of the units of one layer, per spatial axis ``(y, x)``.

    Unit ``i`` along an axis covers input coordinates ``[start + i * stride, start + i * stride
    + size)``, before clipping to the input. ``start`` is negative where ``same`` or zero
    padding reaches outside the image. A *global* field (global pooling, Flatten + Dense, a
    value without spatial axes) has ``stride == 0`` on every axis, ``start == 0`` and ``size ==
    input_size``: every unit sees the whole input.

    Attributes:
        size: field extent in input pixels.
        stride: input pixels between neighbouring units (0 for a global field).
        start: input coordinate where unit 0's field begins.
        input_size: spatial size of the model input the field refers to.
        map_size: spatial size of the layer's output; ``(1, ...)`` for an output without
            spatial axes.
        input_index: which model input the field refers to (0 for single-input models).

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
        lengths = {name: len(value) for name, value in fields.items()}
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
        """The unit's field clipped to the input: ``(top, left, bottom, right)`` for 2D.

        Bottom and right are exclusive. For other ranks: all lower bounds, then all upper ones.
        """
        index = self._check_index(index)
        lows, highs = [], []
        for i, size, stride, start, n in zip(
            index, self.size, self.stride, self.start, self.input_size, strict=True
        ):
            low = start + i * stride
            lows.append(min(max(low, 0), n))
            highs.append(min(max(low + size, 0), n))
        return (*lows, *highs)

    def center(self, *index: int) -> tuple[float, ...]:
        """The unit's field centre ``(y, x)`` in input pixel coordinates, not clipped."""
        index = self._check_index(index)
        return tuple(
            float(start + i * stride + (size - 1) / 2)
            for i, size, stride, start in zip(
                index, self.size, self.stride, self.start, strict=True
            )
        )

    def intervals(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Clipped ``(low, high)`` int arrays over all units along ``axis`` (high exclusive)."""
        units = np.arange(self.map_size[axis])
        low = self.start[axis] + units * self.stride[axis]
        n = self.input_size[axis]
        return np.clip(low, 0, n), np.clip(low + self.size[axis], 0, n)


# ---------------------------------------------------------------------------------------------
# Back-projection


@functools.lru_cache(maxsize=64)
def _coverage(rf: ReceptiveField) -> tuple[tuple[tuple[np.ndarray, np.ndarray], ...], np.ndarray]:
    """Per axis, the range ``[first, last)`` of units covering each input pixel; and the counts.

    Fields are boxes, so pixel ``(y, x)`` is covered by unit ``(i, j)`` exactly when row ``y``
    is covered by ``i`` and column ``x`` by ``j``: coverage factorizes per axis. Along an axis,
    clipped field bounds never decrease with the unit index, so the units covering a pixel are
    a contiguous range, and the sum of their values is a difference of two prefix sums.
    """
    ranges, per_axis = [], []
    for axis in range(rf.ndim):
        low, high = rf.intervals(axis)
        pixels = np.arange(rf.input_size[axis])
        first = np.searchsorted(high, pixels, side="right")  # first unit ending after the pixel
        last = np.searchsorted(low, pixels, side="right")  # units starting at or before it
        last = np.maximum(last, first)
        for arr in (first, last):
            arr.setflags(write=False)
        ranges.append((first, last))
        per_axis.append((last - first).astype(np.float64))
    counts = functools.reduce(np.multiply.outer, per_axis)
    counts.setflags(write=False)
    return tuple(ranges), counts


@functools.lru_cache(maxsize=64)
def _inverse(rf: ReceptiveField) -> tuple[np.ndarray, np.ndarray]:
    """``1 / count`` of covering units per input pixel (0 where none), and the uncovered mask."""
    _, counts = _coverage(rf)
    inverse = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0), 0.0)
    uncovered = counts == 0
    for arr in (inverse, uncovered):
        arr.setflags(write=False)
    return inverse, uncovered


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


def backproject(
    values: Any, rf: ReceptiveField, input_size: Any = None, *, fill: float = 0.0
) -> np.ndarray:
    """Projects layer maps onto the input through the exact receptive fields of their units.

    Each input pixel gets the mean of the values of all units whose field, clipped to the
    input, covers it: the definition "stack one image per unit, filled with its value inside its
    field, and average over the units that cover each pixel", computed separably (the units
    covering a pixel form a box of units, summed by prefix sums along each axis) in O(n * H * W)
    time and memory; nothing of size H * W * h * w is allocated. Pixels that no unit covers
    (possible with ``valid`` padding and a stride larger than the field) get ``fill``.

    Args:
        values: maps shaped ``(h, w)``, ``(n, h, w)`` or ``(n, h, w, c)`` for a 2D layer (one
            spatial axis fewer for Conv1D); numpy or tf.Tensor. ``(h, w)`` must equal
            ``rf.map_size``.
        rf: the layer's :class:`ReceptiveField`.
        input_size: the input's spatial size; checked against ``rf.input_size`` when given.
        fill: the value of pixels that no unit covers.

    Returns:
        float32 array ``(H, W)``, ``(n, H, W)`` or ``(n, H, W, c)``.

    Reference: Araujo et al., "Computing Receptive Fields of Convolutional Neural Networks",
    Distill (2019).

    Example:
        >>> rf = kerasviz.receptive_field(model, "conv2d_3")
        >>> heat = kerasviz.backproject(cams, rf)  # (8, 58, 58) -> (8, 128, 128)
    """
    x = np.asarray(values)
    batched, channels = _layout(x.shape, rf, input_size)
    if not np.isfinite(x).all():
        raise ValueError(
            "Expected `values` to be finite. Received: an array with "
            f"{int(np.size(x) - np.isfinite(x).sum())} NaN or infinite entries."
        )
    if not batched:
        x = x[None]
    ranges, _ = _coverage(rf)
    d = rf.ndim
    # integral image: a zero row/column first, then prefix sums along every spatial axis.
    shape = list(x.shape)
    for ax in range(1, d + 1):
        shape[ax] += 1
    prefix = np.zeros(shape, np.float64)
    prefix[(slice(None),) + (slice(1, None),) * d] = x
    for ax in range(1, d + 1):
        np.cumsum(prefix, axis=ax, out=prefix)
    # the units covering pixel p along an axis are [first[p], last[p]): difference of prefixes
    for ax, (first, last) in enumerate(ranges, start=1):
        prefix = np.take(prefix, last, axis=ax) - np.take(prefix, first, axis=ax)
    inverse, uncovered = _inverse(rf)
    if channels:
        inverse, uncovered = inverse[..., None], uncovered[..., None]
    out = (prefix * inverse).astype(np.float32)
    if fill != 0 and uncovered.any():
        out = np.where(uncovered, np.float32(fill), out)
    return out if batched else out[0]


def backproject_tf(
    values: tf.Tensor, rf: ReceptiveField, input_size: Any = None, *, fill: float = 0.0
) -> tf.Tensor:
    """:func:`backproject` on TensorFlow tensors, usable inside a ``tf.function``.

    Same shapes and definition as :func:`backproject`; returns a float32 ``tf.Tensor``. The
    static spatial shape of ``values`` must be known, and the values finite (they are summed
    as prefix sums, so one NaN would spread beyond its unit's field).

    Example:
        >>> heat = backproject_tf(tf.random.uniform((8, 58, 58)), rf)
    """
    values = tf.convert_to_tensor(values)
    batched, channels = _layout(tuple(values.shape), rf, input_size)
    # float64 inside: prefix sums cancel, and the maps are small next to the model's work
    x = tf.cast(values, tf.float64)
    if not batched:
        x = x[None]
    ranges, _ = _coverage(rf)
    d = rf.ndim
    rank = len(x.shape)
    x = tf.pad(x, [[0, 0]] + [[1, 0]] * d + [[0, 0]] * (rank - 1 - d))
    for ax in range(1, d + 1):
        x = tf.cumsum(x, axis=ax)
    for ax, (first, last) in enumerate(ranges, start=1):
        x = tf.gather(x, last, axis=ax) - tf.gather(x, first, axis=ax)
    inverse, uncovered = _inverse(rf)
    if channels:
        inverse, uncovered = inverse[..., None], uncovered[..., None]
    out = tf.cast(x * tf.constant(inverse, tf.float64), tf.float32)
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


class _Flow:
    """What flows through the walk in place of a tensor.

    ``geo`` holds ``(size, stride, start)`` per spatial axis, or None for a global field (every
    unit sees the whole input). ``spec`` is the symbolic tensor with the value's shape,
    ``sources`` the model inputs the field refers to, ``error`` why no field exists (the
    error travels on, and is raised only when a layer that depends on it is asked for).
    """

    __slots__ = ("geo", "spec", "sources", "error")

    def __init__(self, geo, spec, sources=frozenset(), error=None):
        self.geo = geo
        self.spec = spec
        self.sources = frozenset(sources)
        self.error = error

    @property
    def spatial(self) -> tuple:
        return tuple(self.spec.shape[1:-1])


class _TraceError(Exception):
    pass


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


def _same_pad_before(n: int | None, k_eff: int, s: int, path: str) -> int:
    """TensorFlow's ``same`` padding puts the odd pixel at the end (bottom/right)."""
    if n is None:
        raise _TraceError(
            f"layer {path!r} uses 'same' padding on an axis of unknown size; pass "
            "`input_size=` to receptive_field"
        )
    total = max(k_eff - s, 0) if n % s == 0 else max(k_eff - n % s, 0)
    return total // 2


def _sliding(flow: _Flow, path: str, kernel, strides, dilation, padding) -> tuple:
    if flow.geo is None:
        return None
    geo = []
    for axis, (size, stride, start) in enumerate(flow.geo):
        k_eff = dilation[axis] * (kernel[axis] - 1) + 1
        s = strides[axis]
        if padding == "valid":
            before = 0
        elif padding == "same":
            before = _same_pad_before(flow.spatial[axis], k_eff, s, path)
        elif padding == "causal":
            before = k_eff - 1
        else:
            raise _TraceError(f"layer {path!r} has unknown padding {padding!r}")
        geo.append((size + (k_eff - 1) * stride, stride * s, start - before * stride))
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
    geo = []
    for axis in range(len(first)):
        strides = {f.geo[axis][1] for f in flows}
        if len(strides) > 1:
            raise _TraceError(
                f"layer {path!r} merges branches with different strides {sorted(strides)} "
                f"on spatial axis {axis}, so its units' fields are not evenly spaced"
            )
        low = min(f.geo[axis][2] for f in flows)
        high = max(f.geo[axis][2] + f.geo[axis][0] for f in flows)
        geo.append((high - low, strides.pop(), low))
    return tuple(geo)


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


def _geometry(layer, path: str, flows: list[_Flow], out_spatial: tuple):
    """The output field of one leaf layer; returns ``(geo, flows_it_depends_on)``."""
    name = _op_name(layer)
    if name is not None:
        if name in _OP_MERGE:
            return _merge(layer, path, flows, out_spatial, gating=name == "Multiply")
        if name == "Concatenate" and getattr(layer, "axis", None) in (-1, len(out_spatial) + 1):
            return _merge(layer, path, flows, out_spatial, gating=False)
        if name in _OP_ELEMENTWISE and len(flows) == 1:
            return _keep(flows[0], path, out_spatial), flows
        raise _TraceError(
            f"layer {path!r} of type {type(layer).__name__} is an operation whose receptive "
            "field is not known"
        )
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format == "channels_first":
        raise _TraceError(f"layer {path!r} uses data_format='channels_first'")
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
        return _sliding(
            flow, path, layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding
        ), flows
    if isinstance(layer, _POOL):
        d = len(layer.pool_size)
        return _sliding(flow, path, layer.pool_size, layer.strides, (1,) * d, layer.padding), flows
    if isinstance(layer, _GLOBAL):
        return None, flows
    if isinstance(layer, _PADDING + _CROPPING):
        if flow.geo is None:
            return None, flows
        padding = isinstance(layer, _PADDING)
        amounts = _pairs(layer.padding if padding else layer.cropping, len(flow.geo))
        sign = -1 if padding else 1
        geo = tuple(
            (size, stride, start + sign * before * stride)
            for (size, stride, start), (before, _) in zip(flow.geo, amounts, strict=True)
        )
        return geo, flows
    if isinstance(layer, keras.layers.Reshape) and flow.geo is None:
        return None, flows
    if isinstance(layer, _POSITION_WISE + (keras.layers.Reshape,)):
        return _keep(flow, path, out_spatial), flows
    raise _TraceError(
        f"layer {path!r} of type {type(layer).__name__} has no known receptive-field rule"
    )


def _keep(flow: _Flow, path: str, out_spatial: tuple):
    if flow.geo is not None and flow.spatial != out_spatial:
        raise _TraceError(
            f"layer {path!r} changes the spatial shape from {flow.spatial} to {out_spatial}"
        )
    return flow.geo


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
    out_spatial = tuple(specs[0].shape[1:-1])
    try:
        if len(specs[0].shape) < 3:
            geo, used = None, flows
        else:
            geo, used = _geometry(layer, path, flows, out_spatial)
    except _TraceError as exc:
        return _error_outputs(layer, str(exc), spec)
    sources = frozenset().union(*(f.sources for f in used))
    return keras.tree.pack_sequence_as(spec, [_Flow(geo, s, sources) for s in specs])


# model -> {input_size: {path: [flow, ...]}}; weak keys, so the cache never keeps a model alive.
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
        geo = ((1, 1, 0),) * d
        flows.append(_Flow(geo, keras.KerasTensor(shape, dtype=ref.dtype), {index}))
    return flows


def _field_table(model, input_size) -> dict[str, list[_Flow]]:
    per_model = _FIELDS.setdefault(model, {})
    table = per_model.get(input_size)
    if table is None:
        table = {}

        def visit(layer, path, outputs):
            table.setdefault(path, []).append(keras.tree.flatten(outputs)[0])

        run_graph(model, _input_flows(model, input_size), _flow_call, visit=visit)
        per_model[input_size] = table
    return table


def receptive_field(
    model: keras.Model, layer: LayerSpec, *, input_size: tuple[int, ...] | None = None
) -> ReceptiveField:
    """The exact receptive field of the units of ``layer``, in input pixels.

    Derived by walking the model's graph (nested models included) with a field in place of
    each tensor. Convolutions (any subclass of Keras' Conv/Depthwise/Separable layers) and
    pooling follow their kernel, stride, dilation and padding, with TensorFlow's asymmetric
    ``same`` padding (the odd pixel goes to the bottom/right); ZeroPadding and Cropping shift
    the field; normalization, activations, Dropout, Rescaling and Dense on a spatial tensor
    keep it; Add/Concatenate/Average/Maximum/Subtract take the union of their branches; a
    Multiply by a global or 1x1 branch (squeeze-and-excitation) is channel weighting and is
    ignored; global pooling, Flatten and anything without spatial axes give a global field.
    Transposed convolutions, upsampling and unknown layers raise a ValueError naming the layer.

    Args:
        model: a Sequential or functional model, with a single spatial input (or a layer that
            depends on only one of several inputs).
        layer: a name, ``"outer/inner"`` path, index or Layer object.
        input_size: the spatial input size, for models built with unknown (None) sizes.

    Returns:
        A :class:`ReceptiveField`; ``box(i, j)`` gives unit ``(i, j)``'s clipped input box.

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
    records = _field_table(model, input_size).get(path)
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
        raise ValueError(f"Cannot compute the receptive field of layer={path!r}: {flow.error}.")
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
    if any(s is None for s in shape):
        raise ValueError(
            f"Expected a model input of known spatial size to place layer={path!r}'s field. "
            f"Received: an input of spatial shape {shape}. Pass `input_size=(height, width)`."
        )
    d = len(shape)
    if flow.geo is None:
        map_size = flow.spatial if len(flow.spatial) == d else (1,) * d
        map_size = tuple(1 if s is None else s for s in map_size)
        return ReceptiveField(shape, (0,) * d, (0,) * d, shape, map_size, index)
    size, stride, start = zip(*flow.geo, strict=True)
    if any(s is None for s in flow.spatial):
        raise ValueError(
            f"Expected layer={path!r} to have a known spatial output size. Received: "
            f"{flow.spatial}. Pass `input_size=`."
        )
    return ReceptiveField(size, stride, start, shape, flow.spatial, index)
