"""Penalties on the optimized image: alpha-norm / L2, total variation and blur.

Each regularizer maps unit-space images ``(rows, h, w, c)`` (values in ``[0, 1]``, before the
transforms) to a ``(rows,)`` penalty that is subtracted from the objective (added to the loss).
Penalties are means over pixels, so their weights do not depend on the image size or the
model's value range. Reference: Mahendran & Vedaldi, "Understanding Deep Image Representations
by Inverting Them", CVPR 2015.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kerasviz._checks import number
from kerasviz._gaussian import gaussian_blur


class Regularizer:
    """Base class: ``__call__(unit_images) -> (rows,)`` penalty."""

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class AlphaNorm(Regularizer):
    alpha: float
    weight: float

    def __call__(self, images):
        if self.alpha == 2.0:
            value = tf.square(2.0 * images - 1.0)
        else:
            centred = tf.abs(2.0 * images - 1.0)  # [-1, 1] around the middle of the range
            value = tf.pow(centred + 1e-12, self.alpha)
        return self.weight * tf.reduce_mean(value, axis=[1, 2, 3])


@dataclass(frozen=True)
class TotalVariation(Regularizer):
    weight: float
    beta: float = 2.0

    def __call__(self, images):
        # Both differences as one 2x2 depthwise convolution (channel k -> outputs 2k: dy,
        # 2k + 1: dx): one op and its one gradient instead of three slices and their pads.
        c = images.shape[-1]
        kernel = np.zeros((2, 2, c, 2), np.float32)
        kernel[0, 0], kernel[1, 0, :, 0], kernel[0, 1, :, 1] = -1.0, 1.0, 1.0
        diffs = tf.nn.depthwise_conv2d(
            images, tf.constant(kernel, images.dtype), [1, 1, 1, 1], "VALID"
        )
        if self.beta == 2.0:
            # mean over (h-1, w-1, c) of dy^2 + dx^2 = 2 * mean over the 2c differences
            return 2.0 * self.weight * tf.reduce_mean(tf.square(diffs), axis=[1, 2, 3])
        pairs = tf.reshape(tf.square(diffs), tf.concat([tf.shape(diffs)[:3], [c, 2]], 0))
        squared = tf.reduce_sum(pairs, axis=-1)
        # The epsilon keeps the gradient finite on flat regions (a gray start) for beta < 2.
        value = tf.pow(squared + 1e-8, self.beta / 2.0)
        return self.weight * tf.reduce_mean(value, axis=[1, 2, 3])


@dataclass(frozen=True)
class Blur(Regularizer):
    weight: float
    sigma: float = 1.0

    def __call__(self, images):
        blurred = gaussian_blur(images, self.sigma)
        return self.weight * tf.reduce_mean(tf.square(images - blurred), axis=[1, 2, 3])


def alpha_norm(alpha: float = 6.0, weight: float = 1.0) -> AlphaNorm:
    """``weight * mean(|2x - 1| ** alpha)``: keeps unit-space pixels near the middle (gray).

    Mahendran & Vedaldi use ``alpha = 6``: it mostly punishes extreme values.

    Raises:
        ValueError: ``alpha < 1`` or ``weight < 0``.
    """
    return AlphaNorm(number(alpha, "alpha", low=1), number(weight, "weight", low=0))


def l2(weight: float = 1.0) -> AlphaNorm:
    """``weight * mean((2x - 1) ** 2)``: :func:`alpha_norm` with ``alpha = 2``."""
    return alpha_norm(2.0, weight)


def total_variation(weight: float = 1.0, beta: float = 2.0) -> TotalVariation:
    """``weight * mean((dx**2 + dy**2) ** (beta / 2))`` over pixels: smooth images.

    ``beta = 2`` is the squared TV of Mahendran & Vedaldi; ``beta = 1`` is the classic TV.

    Raises:
        ValueError: ``beta <= 0`` or ``weight < 0``.
    """
    beta = number(beta, "beta", low=0, open_low=True)
    return TotalVariation(number(weight, "weight", low=0), beta)


def blur(weight: float = 1.0, sigma: float = 1.0) -> Blur:
    """``weight * mean((x - gaussian_blur(x, sigma)) ** 2)``: penalizes high frequencies.

    ``sigma`` is in pixels. A differentiable form of the "blur every few steps" of Yosinski et
    al. (2015).

    Raises:
        ValueError: ``sigma <= 0`` or ``weight < 0``.
    """
    sigma = number(sigma, "sigma", low=0, open_low=True)
    return Blur(number(weight, "weight", low=0), sigma)


#: Mild smoothing used by :func:`kerasviz.maximize` unless told otherwise.
DEFAULT_REGULARIZERS = (l2(0.01), total_variation(0.05))


def check_regularizers(regularizers) -> tuple:
    """Validates ``regularizers``; returns them as a tuple (``()`` or None turns them off)."""
    regularizers = tuple(regularizers or ())
    for k, r in enumerate(regularizers):
        if not isinstance(r, Regularizer):
            raise ValueError(
                "Expected `regularizers` to hold kerasviz regularizers (l2, alpha_norm, "
                f"total_variation, blur). Received: regularizers[{k}]={r!r}."
            )
    return regularizers


def penalty(regularizers: tuple, images: tf.Tensor) -> tf.Tensor:
    """The summed ``(rows,)`` penalty of ``regularizers`` on unit-space ``images``."""
    total = tf.zeros(tf.shape(images)[:1], tf.float32)
    for r in regularizers:
        total += r(images)
    return total
