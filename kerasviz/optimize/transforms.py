"""Random, differentiable image transforms applied before each forward pass (robustness).

Each transform maps unit-space images ``(rows, h, w, c)`` to transformed images, drawing its
random parameters from a stateless seed ``(2,)`` that the loop derives from ``seed`` and the
step index. Every row of a batch gets the *same* draw, so a row's result never depends on the
other rows or on how the batch is chunked. All are exact-gradient operations (slices, gathers,
bilinear sampling). :func:`pad` grows the canvas; the loop crops the canvas back to its centre
after the last transform.

Cost: :func:`apply_transforms` runs a chain of jitters, scales and rotations as ONE bilinear
resampling of the whole batch (one gather of the four corners of every output pixel, on a
pixel-major ``(h * w, rows * c)`` view), not one resampling per transform. Each transform
contributes its coordinate map (output pixel -> source position, with its own border rule:
reflection for jitter, clamping for scale and rotation), and the maps are composed on the
small ``(h, w)`` grid. The geometry and its random draws are exactly those of the transforms
applied one after the other; only the interpolation differs: the image is interpolated once
instead of once per scale or rotation (less blur). A jitter-only chain stays an exact shift.

Reference: Olah et al., "Feature Visualization", Distill 2017.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

from kerasviz._checks import integer, number


class Transform:
    """Base class: ``__call__(images, seed) -> images`` and ``check(h, w)``.

    A transform that keeps the canvas size and moves pixels may also define
    ``source(sy, sx, h, w, seed) -> (sy, sx)``: where, in its ``(h, w)`` input canvas, the
    output positions ``(sy, sx)`` (float32 grids of any one shape) take their values from.
    :func:`apply_transforms` then composes it with its neighbours into one resampling.
    """

    #: True when ``source`` returns non-integer positions for integer ones (interpolation).
    interpolates = False

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def check(self, h: int, w: int) -> tuple[int, int]:
        """Validates against the incoming canvas size; returns the outgoing size."""
        return h, w

    source = None  # type: ignore[assignment]  # see the class docstring


def _reflect(t: tf.Tensor, n: int) -> tf.Tensor:
    """Positions of a ``SYMMETRIC``-padded axis of size ``n`` mapped onto ``[0, n - 1]``.

    Index ``-1`` reads pixel 0 and ``n`` reads pixel ``n - 1`` (edge repeated), so a position
    between them and the edge pixel reads the edge pixel: after the reflection ``t -> -1 - t``
    the clamp gives exactly the bilinear value of the padded signal. One reflection suffices
    for shifts smaller than ``n`` (``Jitter.check``).
    """
    t = tf.where(t < 0.0, -1.0 - t, t)
    t = tf.where(t > n - 1.0, 2.0 * n - 1.0 - t, t)
    return tf.clip_by_value(t, 0.0, n - 1.0)


@dataclass(frozen=True)
class Jitter(Transform):
    pixels: int

    def check(self, h, w):
        if self.pixels >= min(h, w):
            raise ValueError(
                f"Expected jitter `pixels` to be smaller than the canvas ({h}x{w}). "
                f"Received: pixels={self.pixels}."
            )
        return h, w

    def _offsets(self, seed):
        return tf.random.stateless_uniform([2], seed, 0, 2 * self.pixels + 1, dtype=tf.int32)

    def __call__(self, images, seed):
        p = self.pixels
        if p == 0:
            return images
        shape = tf.shape(images)
        h, w = images.shape[1], images.shape[2]
        offsets = self._offsets(seed)
        padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], mode="SYMMETRIC")
        return tf.slice(padded, [0, offsets[0], offsets[1], 0], [shape[0], h, w, shape[3]])

    def source(self, sy, sx, h, w, seed):
        if self.pixels == 0:
            return sy, sx
        shift = tf.cast(self._offsets(seed) - self.pixels, tf.float32)
        return _reflect(sy + shift[0], h), _reflect(sx + shift[1], w)


@dataclass(frozen=True)
class Pad(Transform):
    pixels: int
    value: float = 0.5

    def check(self, h, w):
        return h + 2 * self.pixels, w + 2 * self.pixels

    def __call__(self, images, seed):
        p = self.pixels
        return tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=self.value)


def _grid(h: int, w: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The ``(h, w)`` float32 row and column positions of every pixel."""
    return tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32), indexing="ij")


def _sample(images: tf.Tensor, sy: tf.Tensor, sx: tf.Tensor) -> tf.Tensor:
    """Bilinear sampling of every row at the shared source positions ``(ho, wo)``, edges clamped.

    One gather of the four corners on a pixel-major ``(h * w, rows * c)`` view: each gathered
    slice is a contiguous ``rows * c`` vector, and the gradient is one segment sum.
    """
    h, w, c = images.shape[1], images.shape[2], images.shape[3]
    ho, wo = sy.shape[0], sy.shape[1]
    sy = tf.clip_by_value(sy, 0.0, h - 1.0)
    sx = tf.clip_by_value(sx, 0.0, w - 1.0)
    y0, x0 = tf.floor(sy), tf.floor(sx)
    wy, wx = sy - y0, sx - x0
    y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1, x1 = tf.minimum(y0 + 1, h - 1), tf.minimum(x0 + 1, w - 1)
    index = tf.reshape(tf.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1]), [-1])
    weight = tf.stack([(1.0 - wy) * (1.0 - wx), (1.0 - wy) * wx, wy * (1.0 - wx), wy * wx])
    weight = tf.cast(tf.reshape(weight, [4, ho * wo, 1]), images.dtype)
    pixels = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [h * w, -1])
    corners = tf.reshape(tf.gather(pixels, index), [4, ho * wo, -1])
    out = tf.reduce_sum(corners * weight, axis=0)
    return tf.transpose(tf.reshape(out, [ho, wo, -1, c]), [2, 0, 1, 3])


def _affine_source(inverse: tf.Tensor, sy, sx, h: int, w: int):
    """Positions ``centre + inverse @ (p - centre)`` for output positions ``p``, clamped."""
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = sy - cy, sx - cx
    ty = cy + inverse[0, 0] * yy + inverse[0, 1] * xx
    tx = cx + inverse[1, 0] * yy + inverse[1, 1] * xx
    return tf.clip_by_value(ty, 0.0, h - 1.0), tf.clip_by_value(tx, 0.0, w - 1.0)


def _choice(values: Sequence[float], seed: tf.Tensor) -> tf.Tensor:
    k = tf.random.stateless_uniform([], seed, 0, len(values), dtype=tf.int32)
    return tf.gather(tf.constant(values, tf.float32), k)


class _Affine(Transform):
    """A zoom or rotation about the centre: one bilinear resampling, edges clamped."""

    interpolates = True

    def inverse(self, seed: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def source(self, sy, sx, h, w, seed):
        return _affine_source(self.inverse(seed), sy, sx, h, w)

    def __call__(self, images, seed):
        h, w = images.shape[1], images.shape[2]
        return _sample(images, *self.source(*_grid(h, w), h, w, seed))


@dataclass(frozen=True)
class Scale(_Affine):
    factors: tuple

    def inverse(self, seed):
        s = _choice(self.factors, seed)
        return tf.reshape(tf.stack([1.0 / s, 0.0, 0.0, 1.0 / s]), [2, 2])


@dataclass(frozen=True)
class Rotate(_Affine):
    degrees: float | tuple

    def inverse(self, seed):
        if isinstance(self.degrees, tuple):
            angle = _choice(self.degrees, seed)
        else:
            angle = tf.random.stateless_uniform([], seed, -self.degrees, self.degrees)
        theta = angle * (math.pi / 180.0)
        cos, sin = tf.cos(theta), tf.sin(theta)
        # (y, x) coordinates: rotating the content by +theta samples at R(-theta) p.
        return tf.reshape(tf.stack([cos, sin, -sin, cos]), [2, 2])


def jitter(pixels: int) -> Jitter:
    """Random integer shift in ``[-pixels, pixels]`` per axis; borders filled by reflection."""
    return Jitter(integer(pixels, "pixels", minimum=0))


def pad(pixels: int, value: float = 0.5) -> Pad:
    """Grows the canvas by ``pixels`` per side with the constant ``value`` (unit space).

    Later transforms move this border into view; the canvas is cropped back at the end.
    """
    return Pad(integer(pixels, "pixels", minimum=0), number(value, "value"))


def scale(factors: Sequence[float]) -> Scale:
    """Zoom about the centre by a factor drawn from ``factors``; the canvas size is kept."""
    values = tuple(number(f, "factors", low=0, open_low=True) for f in factors)
    if not values:
        raise ValueError("Expected `factors` to hold at least one number. Received: none.")
    return Scale(values)


def rotate(degrees: float | Sequence[float]) -> Rotate:
    """Rotation about the centre by an angle uniform in ``[-degrees, degrees]``, or drawn from
    a sequence of angles."""
    if isinstance(degrees, Sequence):
        return Rotate(tuple(number(d, "degrees") for d in degrees))
    return Rotate(abs(number(degrees, "degrees")))


#: Lucid's standard robustness transforms, scaled for small inputs.
DEFAULT_TRANSFORMS = (
    jitter(4),
    scale((0.9, 0.95, 1.0, 1.05, 1.1)),
    rotate(5),
    jitter(2),
)


def check_transforms(transforms, size: tuple[int, int] | None = None) -> tuple:
    """Validates ``transforms`` (for an ``(h, w)`` canvas when ``size`` is given); a tuple."""
    transforms = tuple(transforms or ())
    for k, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise ValueError(
                "Expected `transforms` to hold kerasviz transforms (jitter, scale, rotate, pad). "
                f"Received: transforms[{k}]={t!r}."
            )
        if size is not None:
            size = t.check(*size)
    return transforms


def _fused(transforms: Sequence[tuple[Transform, tf.Tensor]], images: tf.Tensor) -> tf.Tensor:
    """Runs ``(transform, seed)`` pairs that all define ``source`` as one resampling."""
    if not any(t.interpolates for t, _ in transforms):
        for t, t_seed in transforms:  # shifts only: exact slices are cheaper than a gather
            images = t(images, t_seed)
        return images
    h, w = images.shape[1], images.shape[2]
    sy, sx = _grid(h, w)
    for t, t_seed in reversed(transforms):  # from the output back to the input
        sy, sx = t.source(sy, sx, h, w, t_seed)
    return _sample(images, sy, sx)


def apply_transforms(transforms: tuple, images: tf.Tensor, seed: tf.Tensor, step: tf.Tensor):
    """Runs the pipeline with one stateless seed per (step, transform); crops back to size.

    Consecutive transforms with a ``source`` map (jitter, scale, rotate) run as one bilinear
    resampling of the whole batch; others (pad, user transforms) run on their own.
    """
    h, w = images.shape[1], images.shape[2]
    run: list[tuple[Transform, tf.Tensor]] = []
    for k, t in enumerate(transforms):
        t_seed = tf.stack([seed, tf.cast(step, tf.int64) * 64 + k])
        if t.source is not None:
            run.append((t, t_seed))
            continue
        if run:
            images, run = _fused(run, images), []
        images = t(images, t_seed)
    if run:
        images = _fused(run, images)
    dh, dw = images.shape[1] - h, images.shape[2] - w
    if dh or dw:
        images = images[:, dh // 2 : dh // 2 + h, dw // 2 : dw // 2 + w, :]
    return images
