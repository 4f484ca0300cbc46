"""Random, differentiable image transforms applied before each forward pass (robustness).

Each transform maps unit-space images ``(rows, h, w, c)`` to transformed images, drawing its
random parameters from a stateless seed ``(2,)`` that the loop derives from ``seed`` and the
step index. Every row of a batch gets the *same* draw, so a row's result never depends on the
other rows or on how the batch is chunked. All are exact-gradient operations (slices, gathers,
bilinear sampling). :func:`pad` grows the canvas; the loop crops the canvas back to its centre
after the last transform. Reference: Olah et al., "Feature Visualization", Distill 2017.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

from kerasviz._checks import integer, number


class Transform:
    """Base class: ``__call__(images, seed) -> images`` and ``check(h, w)``."""

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def check(self, h: int, w: int) -> tuple[int, int]:
        """Validates against the incoming canvas size; returns the outgoing size."""
        return h, w


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

    def __call__(self, images, seed):
        p = self.pixels
        if p == 0:
            return images
        shape = tf.shape(images)
        h, w = images.shape[1], images.shape[2]
        offsets = tf.random.stateless_uniform([2], seed, 0, 2 * p + 1, dtype=tf.int32)
        padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], mode="SYMMETRIC")
        return tf.slice(padded, [0, offsets[0], offsets[1], 0], [shape[0], h, w, shape[3]])


@dataclass(frozen=True)
class Pad(Transform):
    pixels: int
    value: float = 0.5

    def check(self, h, w):
        return h + 2 * self.pixels, w + 2 * self.pixels

    def __call__(self, images, seed):
        p = self.pixels
        return tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=self.value)


def _resample(images: tf.Tensor, sy: tf.Tensor, sx: tf.Tensor) -> tf.Tensor:
    """Bilinear sampling of every row at the shared source coordinates ``(h, w)``, edges clamped."""
    h, w, c = images.shape[1], images.shape[2], images.shape[3]
    flat = tf.reshape(images, [-1, h * w, c])
    sy = tf.clip_by_value(sy, 0.0, h - 1.0)
    sx = tf.clip_by_value(sx, 0.0, w - 1.0)
    y0, x0 = tf.floor(sy), tf.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1, x1 = tf.minimum(y0 + 1, h - 1), tf.minimum(x0 + 1, w - 1)

    def at(yy, xx):
        return tf.reshape(tf.gather(flat, tf.reshape(yy * w + xx, [-1]), axis=1), [-1, h, w, c])

    top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


def _affine(images: tf.Tensor, inverse: tf.Tensor) -> tf.Tensor:
    """Samples output pixel ``p`` at ``centre + inverse @ (p - centre)``; ``inverse`` is 2x2."""
    h, w = images.shape[1], images.shape[2]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = tf.meshgrid(
        tf.range(h, dtype=tf.float32) - cy, tf.range(w, dtype=tf.float32) - cx, indexing="ij"
    )
    sy = cy + inverse[0, 0] * yy + inverse[0, 1] * xx
    sx = cx + inverse[1, 0] * yy + inverse[1, 1] * xx
    return _resample(images, sy, sx)


def _choice(values: Sequence[float], seed: tf.Tensor) -> tf.Tensor:
    k = tf.random.stateless_uniform([], seed, 0, len(values), dtype=tf.int32)
    return tf.gather(tf.constant(values, tf.float32), k)


@dataclass(frozen=True)
class Scale(Transform):
    factors: tuple

    def __call__(self, images, seed):
        s = _choice(self.factors, seed)
        inverse = tf.reshape(tf.stack([1.0 / s, 0.0, 0.0, 1.0 / s]), [2, 2])
        return _affine(images, inverse)


@dataclass(frozen=True)
class Rotate(Transform):
    degrees: float | tuple

    def __call__(self, images, seed):
        if isinstance(self.degrees, tuple):
            angle = _choice(self.degrees, seed)
        else:
            angle = tf.random.stateless_uniform([], seed, -self.degrees, self.degrees)
        theta = angle * (math.pi / 180.0)
        cos, sin = tf.cos(theta), tf.sin(theta)
        # (y, x) coordinates: rotating the content by +theta samples at R(-theta) p.
        inverse = tf.reshape(tf.stack([cos, sin, -sin, cos]), [2, 2])
        return _affine(images, inverse)


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


def apply_transforms(transforms: tuple, images: tf.Tensor, seed: tf.Tensor, step: tf.Tensor):
    """Runs the pipeline with one stateless seed per (step, transform); crops back to size."""
    h, w = images.shape[1], images.shape[2]
    for k, t in enumerate(transforms):
        t_seed = tf.stack([seed, tf.cast(step, tf.int64) * 64 + k])
        images = t(images, t_seed)
    dh, dw = images.shape[1] - h, images.shape[2] - w
    if dh or dw:
        images = images[:, dh // 2 : dh // 2 + h, dw // 2 : dw // 2 + w, :]
    return images
