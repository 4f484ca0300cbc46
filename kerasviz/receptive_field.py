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
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf


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
def _coverage(rf: ReceptiveField) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Per axis, the (input, map) 0/1 matrix of which unit covers which pixel; and the counts.

    Fields are boxes, so a pixel is covered by unit ``(i, j)`` exactly when row ``y`` is covered
    by ``i`` and column ``x`` by ``j``: the coverage of the whole map factorizes per axis.
    """
    mats = []
    for axis in range(rf.ndim):
        low, high = rf.intervals(axis)
        pixels = np.arange(rf.input_size[axis])[:, None]
        mat = ((pixels >= low[None, :]) & (pixels < high[None, :])).astype(np.float64)
        mat.setflags(write=False)
        mats.append(mat)
    counts = functools.reduce(np.multiply.outer, [m.sum(axis=1) for m in mats])
    counts.setflags(write=False)
    return tuple(mats), counts


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
    field, and average over the units that cover each pixel", computed separably as
    ``A_y @ V @ A_x.T / (count_y * count_x)`` with 0/1 coverage matrices ``A``, in O(n * H * W)
    memory. Pixels that no unit covers (possible with ``valid`` padding and a large stride)
    get ``fill``.

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
    x = np.asarray(values, dtype=np.float64)
    batched, channels = _layout(x.shape, rf, input_size)
    if not batched:
        x = x[None]
    mats, counts = _coverage(rf)
    for axis, mat in enumerate(mats):
        # tensordot puts the new (input) axis first; move it back to where the map axis was.
        x = np.moveaxis(np.tensordot(mat, x, axes=([1], [axis + 1])), 0, axis + 1)
    count = counts[None, ..., None] if channels else counts[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, x / np.maximum(count, 1), fill).astype(np.float32)
    return out if batched else out[0]


def backproject_tf(
    values: tf.Tensor, rf: ReceptiveField, input_size: Any = None, *, fill: float = 0.0
) -> tf.Tensor:
    """:func:`backproject` on TensorFlow tensors, usable inside a ``tf.function``.

    Same shapes and definition as :func:`backproject`; returns a float32 ``tf.Tensor``. The
    static spatial shape of ``values`` must be known.

    Example:
        >>> heat = backproject_tf(tf.random.uniform((8, 58, 58)), rf)
    """
    values = tf.convert_to_tensor(values)
    batched, channels = _layout(tuple(values.shape), rf, input_size)
    x = tf.cast(values, tf.float32)
    if not batched:
        x = x[None]
    mats, counts = _coverage(rf)
    d = rf.ndim
    letters = "abcdefgh"[:d]
    upper = letters.upper()
    for axis, mat in enumerate(mats):
        tail = "z" if channels else ""
        src = "n" + upper[:axis] + letters[axis:] + tail
        dst = "n" + upper[: axis + 1] + letters[axis + 1 :] + tail
        spec = f"{upper[axis]}{letters[axis]},{src}"
        x = tf.einsum(f"{spec}->{dst}", tf.constant(mat, tf.float32), x)
    count = counts[None, ..., None] if channels else counts[None]
    count = tf.constant(count, tf.float32)
    out = tf.where(count > 0, x / tf.maximum(count, 1.0), tf.cast(fill, tf.float32))
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
