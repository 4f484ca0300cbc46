"""Parametrizations: how the optimized variables become images.

Every parametrization produces images in *unit space* ``[0, 1]``; the loop maps them linearly
onto the model's ``value_range``. Two are provided:

- :class:`Pixel`: the variables are the unit-space pixel values themselves. After every
  update they are clipped to ``[0, 1]`` (a projection, not a squash), so a pixel whose gradient
  stays exactly zero keeps exactly its start value.
- :class:`Fourier`: Lucid-style. The variables are the real and imaginary parts of each colour
  channel's 2D spectrum, scaled by ``1 / frequency`` so low frequencies dominate; the inverse
  FFT is mixed by a fixed colour-correlation matrix (decorrelated colours, RGB only) and
  squashed by a sigmoid. Reference: Olah et al., "Feature Visualization", Distill 2017.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

# Square root of the colour correlation of natural (ImageNet) images, as published with Lucid.
_COLOR_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
_COLOR = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))


class Parametrization:
    """Base class: ``shape`` of the variables, ``init`` from a start, ``to_unit``, ``project``."""

    name = "base"

    def shape(self, rows: int, h: int, w: int, c: int) -> tuple:
        raise NotImplementedError

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Variables that reproduce the unit-space images ``unit`` ``(n, h, w, c)``."""
        raise NotImplementedError

    def noise(self, rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
        """One row of seeded start variables (shape ``self.shape(1, h, w, c)[1:]``)."""
        raise NotImplementedError

    def to_unit(self, params: tf.Tensor, h: int, w: int, c: int) -> tf.Tensor:
        raise NotImplementedError

    def project(self, params: tf.Tensor) -> tf.Tensor:
        return params


@dataclass(frozen=True)
class Pixel(Parametrization):
    """Unit-space pixel values, clipped to ``[0, 1]`` after each step.

    The noise start is gray plus uniform noise of amplitude ``noise`` (in unit space).
    """

    noise_amplitude: float = 0.1
    name = "pixel"

    def shape(self, rows, h, w, c):
        return (rows, h, w, c)

    def from_unit(self, unit):
        return np.asarray(unit, np.float32)

    def noise(self, rng, h, w, c):
        a = self.noise_amplitude
        return (0.5 + rng.uniform(-a, a, size=(h, w, c))).astype(np.float32)

    def to_unit(self, params, h, w, c):
        return params

    def project(self, params):
        return tf.clip_by_value(params, 0.0, 1.0)


@tf.custom_gradient
def _as_complex(pairs: tf.Tensor) -> tf.Tensor:
    """``(..., 2)`` float32 (re, im) pairs as ``(...)`` complex64, without a copy."""

    def grad(upstream):
        # d/d(re) = real(g), d/d(im) = imag(g): the same memory read back as pairs.
        return tf.bitcast(tf.cast(upstream, tf.complex64), tf.float32)

    return tf.bitcast(pairs, tf.complex64), grad


def _frequencies(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


@dataclass(frozen=True)
class Fourier(Parametrization):
    """Spectrum variables ``(rows, c, h, w // 2 + 1, 2)`` scaled by ``1 / frequency ** decay``."""

    decay_power: float = 1.0
    noise_std: float = 0.01
    name = "fourier"

    def shape(self, rows, h, w, c):
        return (rows, c, h, w // 2 + 1, 2)

    def _scale(self, h: int, w: int) -> np.ndarray:
        scale = 1.0 / np.maximum(_frequencies(h, w), 1.0 / max(h, w)) ** self.decay_power
        return (scale * np.sqrt(h * w)).astype(np.float32)

    @staticmethod
    def _color(c: int) -> np.ndarray:
        return _COLOR if c == 3 else np.eye(c, dtype=np.float32)

    def noise(self, rng, h, w, c):
        return rng.normal(0.0, self.noise_std, size=self.shape(1, h, w, c)[1:]).astype(np.float32)

    def to_unit(self, params, h, w, c):
        # One view of the (re, im) pairs as complex numbers (no strided slices), one complex
        # scale, one batched irfft2d, one transpose and one (rows*h*w, c) @ (c, c) colour matmul.
        scale = tf.constant(self._scale(h, w).astype(np.complex64))
        spectrum = _as_complex(tf.cast(params, tf.float32)) * scale  # (rows, c, h, w // 2 + 1)
        image = tf.signal.irfft2d(spectrum, fft_length=[h, w])  # (rows, c, h, w)
        pixels = tf.reshape(tf.transpose(image, [0, 2, 3, 1]), [-1, c])
        mix = tf.constant(self._color(c).T / 4.0, tf.float32)
        return tf.sigmoid(tf.reshape(tf.matmul(pixels, mix), [-1, h, w, c]))

    def from_unit(self, unit):
        unit = np.clip(np.asarray(unit, np.float64), 1e-3, 1.0 - 1e-3)
        n, h, w, c = unit.shape
        logits = np.log(unit / (1.0 - unit))
        image = logits @ np.linalg.inv(self._color(c).T.astype(np.float64)) * 4.0
        spectrum = np.fft.rfft2(np.transpose(image, (0, 3, 1, 2)), s=(h, w))
        spectrum = spectrum / self._scale(h, w)  # irfft2d inverts numpy's rfft2 exactly
        return np.stack([spectrum.real, spectrum.imag], axis=-1).astype(np.float32)


PIXEL = Pixel()
FOURIER = Fourier()


def get_parametrization(value: str | Parametrization) -> Parametrization:
    """``"pixel"``, ``"fourier"`` or a :class:`Parametrization` instance."""
    if isinstance(value, Parametrization):
        return value
    if value == "pixel":
        return PIXEL
    if value == "fourier":
        return FOURIER
    raise ValueError(
        "Expected `parametrization` to be 'pixel', 'fourier' or a Parametrization. "
        f"Received: parametrization={value!r}."
    )
