"""Feature inversion: the image whose features at a layer match a given image's (Mahendran &
Vedaldi), optimized by the same compiled loop as :func:`kerasviz.maximize`, with feature
matching as one more objective kind."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import in_value_range
from kerasviz._inputs import as_batch, run_chunked
from kerasviz._layers import LayerSpec, resolve_layer
from kerasviz._probe import Probe, get_probe
from kerasviz.optimize.loop import (
    OptimizationResult,
    OptimizationSettings,
    canvas_shape,
    image_input,
    run_optimization,
    start_params,
)
from kerasviz.optimize.objectives import Objective, Term, plan
from kerasviz.optimize.regularizers import alpha_norm, total_variation


@dataclass(frozen=True, eq=False, repr=False)
class FeatureMatch(Term):
    """``-||phi(x) - features||^2 / ||features||^2``, ``phi`` the output of ``layer``."""

    layer: LayerSpec
    features: np.ndarray
    name = "feature_match"

    @property
    def layers(self) -> tuple:
        return (self.layer,)

    def params(self, where):
        if self.features.shape != where.shapes[0]:
            raise ValueError(
                f"Expected `features` of shape {where.shapes[0]} for layer {where.paths[0]!r}. "
                f"Received: shape {self.features.shape}."
            )
        norm = max(float(np.sum(np.square(self.features, dtype=np.float64))), 1e-12)
        return self.features.astype(np.float32), np.float32(norm)

    @staticmethod
    def score(static, outputs, logits, features, norm):
        diff = tf.reshape(outputs[0] - features, [tf.shape(features)[0], -1])
        return -tf.reduce_sum(tf.square(diff), axis=1) / norm


def _layer_outputs(probe: Probe, inputs):
    return probe(inputs)[0][0]


#: invert's defaults where they differ from :class:`OptimizationSettings`.
_INVERT = {"steps": 200, "transforms": (), "regularizers": ()}


def invert(
    model: keras.Model,
    inputs: Any,
    layer: LayerSpec,
    *,
    alpha: float = 6.0,
    alpha_weight: float = 1e-3,
    tv_weight: float = 0.5,
    beta: float = 2.0,
    start: str | np.ndarray = "noise",
    **settings: Any,
) -> OptimizationResult:
    """Reconstructs images from their features at ``layer``.

    Minimizes ``||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 + alpha_weight * mean(|2u - 1|^alpha)
    + tv_weight * mean((du_x^2 + du_y^2)^(beta / 2))`` where ``u`` is ``x`` mapped to
    ``[0, 1]`` (see :mod:`kerasviz.optimize.regularizers`). All images are reconstructed as
    one batch.

    Args:
        model: a Sequential or functional model with one image input.
        inputs: ``(h, w, c)`` or ``(n, h, w, c)`` images in ``value_range`` (uint8 included).
        layer: the layer whose features are matched.
        alpha, alpha_weight: the alpha-norm prior (Mahendran & Vedaldi use alpha = 6).
        tv_weight, beta: the total-variation prior.
        start: as in :func:`kerasviz.maximize` (default ``"noise"``).
        **settings: as in :func:`kerasviz.maximize`; defaults ``steps=200``, no transforms;
            ``regularizers`` are added to the two priors.

    Returns:
        :class:`~kerasviz.optimize.loop.OptimizationResult`: ``images`` the float32
        reconstructions, ``history`` the normalized feature distance at every step
        ``(n, steps)`` and ``snapshots``, all without the batch axis for a single image.

    Raises:
        ValueError: an invalid setting or layer, or ``inputs`` outside ``value_range``.

    Reference: Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting
    Them", CVPR 2015.

    Example:
        >>> rec = kerasviz.invert(model, photo, "block2_conv2", steps=300).images
        >>> kerasviz.metrics.ssim(rec, photo)
    """
    s = OptimizationSettings(**{**_INVERT, **settings})
    priors = (alpha_norm(alpha, alpha_weight), total_variation(tv_weight, beta))
    s = dataclasses.replace(s, regularizers=priors + s.regularizers)
    image_input(model)
    batch = as_batch(model, inputs)
    x0 = batch.arrays[0]
    in_value_range(x0, s.value_range, "inputs")
    path, _ = resolve_layer(model, layer, "layer")
    canvas, model_hw = canvas_shape(model, x0.shape[1:3])
    probe = get_probe(model, [path], logits=False)
    features = run_chunked(probe.step(_layer_outputs), batch.arrays, s.batch_size)
    objectives = [Objective(FeatureMatch(path, f)) for f in features]
    p = plan(model, objectives, x0.shape[1:])
    result = run_optimization(
        model, p, s, start_params(start, s, canvas), canvas, model_hw, pre_relu=False
    )
    result.history = -result.history
    if batch.single:
        result.images, result.history = result.images[0], result.history[0]
        if result.snapshots is not None:
            result.snapshots = result.snapshots[0]
    return result
