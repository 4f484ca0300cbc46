"""Evaluation: image similarity (SSIM, PSNR) for reconstructions."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


def _image_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Two float64 batches ``(n, h, w, c)`` of equal shape, and whether a single image was given.

    ``(h, w)`` is one grayscale image, ``(h, w, c)`` one image, ``(n, h, w, c)`` a batch.
    """
    arrays = []
    for name, x in (("a", a), ("b", b)):
        array = np.asarray(x, dtype=np.float64)
        if array.ndim not in (2, 3, 4):
            raise ValueError(
                f"Expected `{name}` to be an image (h, w), (h, w, c) or a batch (n, h, w, c). "
                f"Received: shape {array.shape}."
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"Expected `{name}` to be finite. Received: values with NaN or Inf.")
        arrays.append(array)
    a, b = arrays
    if a.shape != b.shape:
        raise ValueError(
            f"Expected `a` and `b` to have the same shape. Received: {a.shape} and {b.shape}."
        )
    single = a.ndim < 4
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.shape[0] == 0 or a.size == 0:
        raise ValueError(f"Expected non-empty images. Received: shape {a.shape}.")
    return a, b, single


def _check_max_val(max_val: float) -> float:
    if isinstance(max_val, bool) or not np.isscalar(max_val) or not max_val > 0:
        raise ValueError(f"Expected `max_val` to be a positive number. Received: {max_val!r}.")
    return float(max_val)


def ssim(a: Any, b: Any, *, max_val: float = 1.0) -> np.ndarray | float:
    """Structural similarity of each pair of images (Wang et al., 2004), via ``tf.image.ssim``.

    The standard 11x11 Gaussian window (sigma 1.5) is used; for images smaller than 11 pixels
    the window shrinks to the image size.

    Args:
        a, b: images ``(n, h, w, c)``, or one image ``(h, w, c)`` or ``(h, w)``.
        max_val: the dynamic range of the pixel values (1.0 for images in [0, 1], 255 for bytes).

    Returns:
        ``(n,)`` SSIM values in [-1, 1] (1 for identical images); a float for one image.

    Example:
        >>> kerasviz.metrics.ssim(reconstruction, image)
        0.83
    """
    max_val = _check_max_val(max_val)
    a, b, single = _image_pair(a, b)
    filter_size = int(min(11, a.shape[1], a.shape[2]))
    values = tf.image.ssim(
        tf.constant(a, tf.float32),
        tf.constant(b, tf.float32),
        max_val=max_val,
        filter_size=filter_size,
    ).numpy()
    values = values.astype(np.float64)
    return float(values[0]) if single else values


def psnr(a: Any, b: Any, *, max_val: float = 1.0) -> np.ndarray | float:
    """Peak signal-to-noise ratio in dB: ``10 log10(max_val^2 / MSE)`` per pair of images.

    Identical images have an MSE of 0 and a PSNR of ``inf`` (no cap is applied).

    Args:
        a, b: images ``(n, h, w, c)``, or one image ``(h, w, c)`` or ``(h, w)``.
        max_val: the dynamic range of the pixel values.

    Returns:
        ``(n,)`` PSNR values in dB; a float for one image.

    Example:
        >>> kerasviz.metrics.psnr(image + 0.1, image)  # MSE 0.01 -> 20 dB
        20.0
    """
    max_val = _check_max_val(max_val)
    a, b, single = _image_pair(a, b)
    diff = a - b
    mse = np.mean(diff.reshape(diff.shape[0], -1) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(max_val**2 / mse)
    return float(values[0]) if single else values
