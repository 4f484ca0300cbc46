"""Feature inversion: the image whose features at a layer match a given image's (Mahendran &
Vedaldi), optimized by the same compiled loop as :func:`kerasviz.maximize`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._inputs import as_batch
from kerasviz._layers import LayerSpec, resolve_layer
from kerasviz.features import feature_maps
from kerasviz.optimize.loop import (
    OptimizationResult,
    _check_positive_int,
    _check_range,
    _start_params,
    canvas_shape,
    run_optimization,
)
from kerasviz.optimize.params import Parametrization, get_parametrization
from kerasviz.optimize.regularizers import alpha_norm, check_regularizers, total_variation
from kerasviz.optimize.transforms import check_transforms


class _InversionScorer:
    """Score = minus the normalized squared distance ``||phi(x) - phi0||^2 / ||phi0||^2``."""

    logits = False

    def __init__(self, path: str, targets: np.ndarray):
        self.layers = [path]
        self.key = ("invert", path)
        flat = targets.reshape(targets.shape[0], -1).astype(np.float64)
        norms = np.maximum(np.sum(flat * flat, axis=1), 1e-12).astype(np.float32)
        self.arrays = [targets.astype(np.float32), norms]
        self.labels = [f"inversion of image {i} at {path!r}" for i in range(targets.shape[0])]

    def score(self, outputs, logits, arrays):
        target, norm = arrays
        diff = tf.reshape(outputs[0] - target, [tf.shape(target)[0], -1])
        return -tf.reduce_sum(tf.square(diff), axis=1) / norm


def invert(
    model: keras.Model,
    images: Any,
    layer: LayerSpec,
    *,
    steps: int = 200,
    alpha: float = 6.0,
    alpha_weight: float = 1e-3,
    tv_weight: float = 0.5,
    beta: float = 2.0,
    start: str | np.ndarray = "noise",
    parametrization: str | Parametrization = "pixel",
    transforms: Sequence = (),
    optimizer: Any = None,
    learning_rate: float | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int | None = None,
    snapshot_every: int | None = None,
    callback: Callable | None = None,
    progress: bool | None = None,
) -> OptimizationResult:
    """Reconstructs images from their features at ``layer``.

    Minimizes ``||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 + alpha_weight * mean(|2u - 1|^alpha)
    + tv_weight * mean((du_x^2 + du_y^2)^(beta / 2))`` where ``u`` is ``x`` mapped to
    ``[0, 1]`` (see :mod:`kerasviz.optimize.regularizers`). All images are reconstructed as
    one batch.

    Args:
        model: the model.
        images: ``(h, w, c)`` or ``(n, h, w, c)`` in ``value_range``.
        layer: the layer whose features are matched.
        steps: optimization steps.
        alpha, alpha_weight: the alpha-norm prior (Mahendran & Vedaldi use alpha = 6).
        tv_weight, beta: the total-variation prior.
        start, parametrization, transforms, optimizer, learning_rate, value_range, seed,
            batch_size, snapshot_every, callback, progress: as in :func:`kerasviz.maximize`.

    Returns:
        :class:`~kerasviz.optimize.loop.OptimizationResult`: ``images`` the reconstructions
        and ``history`` (the normalized feature distance at every step, ``(n, steps)``) and
        ``snapshots``, all without the batch axis for a single image.

    Reference: Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting
    Them", CVPR 2015.

    Example:
        >>> rec = kerasviz.invert(model, photo, "block2_conv2", steps=300).images
        >>> kerasviz.metrics.ssim(rec, photo)
    """
    steps = _check_positive_int(steps, "steps")
    value_range = _check_range(value_range)
    batch = as_batch(model, images, "images")
    x0 = batch.arrays[0]
    lo, hi = value_range
    tol = 1e-4 * (hi - lo)
    if x0.min() < lo - tol or x0.max() > hi + tol:
        raise ValueError(
            f"Expected `images` inside value_range={value_range}. Received: values in "
            f"[{x0.min():g}, {x0.max():g}]."
        )
    path, _ = resolve_layer(model, layer)
    canvas, model_hw = canvas_shape(model, x0.shape[1:3])
    param = get_parametrization(parametrization)
    transforms = check_transforms(transforms, canvas[0], canvas[1])
    regularizers = check_regularizers(
        (alpha_norm(alpha, alpha_weight), total_variation(tv_weight, beta))
    )
    targets = feature_maps(model, x0, [path], batch_size=batch_size)[path]
    scorer = _InversionScorer(path, targets)
    start_params = _start_params(start, param, canvas, value_range, int(seed))
    if start_params.shape[0] not in (1, batch.n):
        raise ValueError(
            f"Expected `start` to hold one image or one per input image ({batch.n}). "
            f"Received: {start_params.shape[0]}."
        )
    result = run_optimization(
        model,
        scorer,
        batch.n,
        canvas=canvas,
        model_hw=model_hw,
        start_params=start_params,
        steps=steps,
        param=param,
        transforms=transforms,
        regularizers=regularizers,
        optimizer=optimizer,
        learning_rate=learning_rate,
        value_range=value_range,
        seed=int(seed),
        batch_size=batch_size,
        snapshot_every=snapshot_every,
        callback=callback,
        progress=progress,
        name="target",
    )
    result.history = -result.history
    if batch.single:
        result.images = result.images[0]
        result.history = result.history[0]
        if result.snapshots is not None:
            result.snapshots = result.snapshots[0]
    return result
