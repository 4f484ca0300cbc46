"""The one Gaussian kernel and blur of kerasviz (baselines, regularizers, metrics, transforms)."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def gaussian_kernel(sigma: float, radius: int | None = None) -> np.ndarray:
    """A normalized 1D Gaussian, float32, of ``2 * radius + 1`` taps (radius ``ceil(3 sigma)``)."""
    if radius is None:
        radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def _pad_symmetric(x: tf.Tensor, axis: int, pad: int) -> tf.Tensor:
    """Mirror padding (edge pixel repeated) of any width, also wider than the image."""
    size = x.shape[axis]
    while pad > 0:
        step = min(pad, size)
        spec = [[0, 0]] * x.shape.rank
        spec[axis] = [step, step]
        x = tf.pad(x, spec, mode="SYMMETRIC")
        size += 2 * step
        pad -= step
    return x


def gaussian_blur(images, sigma: float, radius: int | None = None) -> tf.Tensor:
    """Separable per-channel Gaussian blur of ``(n, H, W, C)`` images, mirrored borders.

    Runs in TensorFlow (inside compiled code too) and keeps the input's dtype. ``sigma`` and
    ``radius`` are in pixels.
    """
    x = tf.convert_to_tensor(images)
    taps = tf.constant(gaussian_kernel(sigma, radius), dtype=x.dtype)
    r = (taps.shape[0] - 1) // 2
    channels = x.shape[-1]
    for axis in (1, 2):
        x = _pad_symmetric(x, axis, r)
        shape = [-1, 1, 1, 1] if axis == 1 else [1, -1, 1, 1]
        kernel = tf.tile(tf.reshape(taps, shape), [1, 1, channels, 1])
        x = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID")
    return x
