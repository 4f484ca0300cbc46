"""Gradient attributions: saliency, SmoothGrad and integrated gradients.

All three differentiate one score per image (a logit, or a callable's value on the logits; see
:mod:`kerasviz._targets`) with respect to the model inputs.

SmoothGrad and integrated gradients expand each image into ``samples`` noisy copies or
``steps`` points on a path. The expanded rows are never built on the host: a compiled step
receives the images once, plus the row range ``[start, stop)`` of the current chunk as two
scalar tensors, builds those rows on the device, and returns the gradient sums per image. So
every chunk reuses one trace, and only the final result is copied to numpy.

When ``targets`` is None, the predicted class is read once on the clean images and then held
fixed for every noisy copy or path point.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import choice, integer, number, positive_int
from kerasviz._engine import (
    expanded_rows,
    fix_predictions,
    input_gradients,
    one_or_list,
    rows_per_pass,
    run_expanded,
    setup,
    target_scores,
)
from kerasviz._gaussian import gaussian_blur
from kerasviz._inputs import run_chunked
from kerasviz._probe import Probe
from kerasviz._targets import ScoreRule, Targets

_REDUCE = ("abs_max", None)
_BASELINES = ("black", "white", "noise", "blur")


def check_reduce(reduce: str | None) -> None:
    choice(reduce, _REDUCE, "reduce")


def _reduce(gradients: np.ndarray, reduce: str | None) -> np.ndarray:
    """``abs_max`` over the channel axis of inputs with spatial axes ``(n, *spatial, c)``;
    inputs without them (tabular features ``(n, f)``) have no channels and stay as they are."""
    if reduce is None or gradients.ndim < 3:
        return gradients
    return np.max(np.abs(gradients), axis=-1)


# ---------------------------------------------------------------------------------------------
# Saliency


def _saliency(probe: Probe, rule: ScoreRule, inputs, indices):
    return input_gradients(probe, inputs, indices, rule)


def saliency(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    batch_size: int | None = None,
    reduce: str | None = "abs_max",
    output: int | str | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Vanilla gradients of the target logit with respect to the input pixels.

    Args:
        model: a Sequential or functional Keras model (nested models included).
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)``; a list for several inputs.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (predicted).
        batch_size: rows per forward pass; None for all images at once.
        reduce: ``"abs_max"`` for the maximum of ``|gradient|`` over channels ``(n, H, W)``,
            None for the raw gradients ``(n, H, W, C)``. Inputs without spatial axes (tabular
            features) are never reduced.
        output: which model output to explain, for models with several.

    Returns:
        float32 array, or a list with one per model input.

    Reference: Simonyan et al., "Deep Inside Convolutional Networks" (2014).

    Example:
        >>> maps = kerasviz.saliency(model, images, targets=3)  # (n, H, W)
    """
    check_reduce(reduce)
    batch, probe, target = setup(model, inputs, targets, output=output)
    fn = probe.step(_saliency, target.rule)
    grads = run_chunked(fn, batch.arrays, batch_size, extra=[target.indices])
    return one_or_list(batch, [_reduce(g, reduce) for g in grads])


# ---------------------------------------------------------------------------------------------
# SmoothGrad


def _smoothgrad(
    probe: Probe, rule: ScoreRule, samples: int, inputs, sigmas, noises, indices, start, stop
):
    rows, images, local, count = expanded_rows(start, stop, samples)
    draws = rows % samples
    noisy = []
    for x, sigma, noise in zip(inputs, sigmas, noises, strict=True):
        scale = tf.reshape(tf.gather(sigma, images), [-1] + [1] * (x.shape.rank - 1))
        noisy.append(tf.gather(x, images) + scale * tf.gather(noise, draws))
    grads = input_gradients(probe, noisy, tf.gather(indices, images), rule)
    return [tf.math.unsorted_segment_sum(g, local, count) for g in grads]


def smoothgrad(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    samples: int = 20,
    noise: float = 0.1,
    seed: int = 0,
    batch_size: int | None = None,
    reduce: str | None = "abs_max",
    output: int | str | None = None,
) -> np.ndarray | list[np.ndarray]:
    """SmoothGrad: the mean gradient over noisy copies of each image.

    The ``n * samples`` noisy rows are built on the device and run in chunks of ``batch_size``
    rows (None: ``max(n, 32)``). The noise is Gaussian with standard deviation ``noise * (max
    - min)`` of each image; draw ``k`` of every image scales the same seeded standard normal
    sample, so an image's result depends neither on the other images nor on the chunking.
    Raw gradients are averaged, then reduced (tf-keras-vis averages ``|gradient|`` instead;
    both agree when ``noise == 0``).

    Args:
        samples: noisy copies per image.
        noise: standard deviation as a fraction of each image's value range.
        seed: seed of the noise; results are reproducible and independent of ``batch_size``.
        reduce: ``"abs_max"`` (maximum of ``|mean gradient|`` over channels) or None.
        Others: as in :func:`saliency`.

    Returns:
        float32 ``(n, H, W)`` (``reduce="abs_max"``) or ``(n, H, W, C)``; a list per model input.

    Reference: Smilkov et al., "SmoothGrad: removing noise by adding noise" (2017).

    Example:
        >>> maps = kerasviz.smoothgrad(model, images, samples=50, noise=0.15, batch_size=64)
    """
    check_reduce(reduce)
    samples = positive_int(samples, "samples")
    noise = number(noise, "noise", low=0)
    seed = integer(seed, "seed")
    batch, probe, target = setup(model, inputs, targets, output=output)
    target = fix_predictions(probe, batch, target, batch_size)
    n = batch.n
    sigmas = [
        noise * (a.reshape(n, -1).max(axis=1) - a.reshape(n, -1).min(axis=1)) for a in batch.arrays
    ]
    # One bank of standard normal draws per input, shared by all images: draw k of an image
    # depends only on (seed, k), not on the image's position in the batch or the chunking.
    noises = [
        tf.random.stateless_normal((samples, *a.shape[1:]), seed=[seed, k])
        for k, a in enumerate(batch.arrays)
    ]
    fn = probe.step(_smoothgrad, target.rule, samples)
    total = n * samples
    sums = run_expanded(
        fn,
        total,
        rows_per_pass(batch_size, n, total),
        n,
        samples,
        [tf.constant(a) for a in batch.arrays],
        [tf.constant(s, tf.float32) for s in sigmas],
        noises,
        tf.constant(target.indices),
    )
    return one_or_list(batch, [_reduce((s / samples).numpy(), reduce) for s in sums])


# ---------------------------------------------------------------------------------------------
# Integrated gradients


def _baseline(
    spec: Any, x: np.ndarray, name: str, seed: int, blur_sigma: float, stream: int
) -> np.ndarray:
    n = x.shape[0]
    flat = x.reshape(n, -1)
    per_image = (n,) + (1,) * (x.ndim - 1)
    if isinstance(spec, str):
        if spec not in _BASELINES:
            raise ValueError(
                f"Expected `{name}` to be one of {_BASELINES} or an array. Received: {spec!r}."
            )
        if spec == "black":
            return np.zeros_like(x)
        if spec == "white":
            return np.broadcast_to(flat.max(axis=1).reshape(per_image), x.shape).copy()
        if spec == "noise":
            low, high = flat.min(axis=1).reshape(per_image), flat.max(axis=1).reshape(per_image)
            # One draw shared by all images, so a baseline does not depend on the batch.
            unit = np.random.default_rng([seed, stream]).random(x.shape[1:], dtype=np.float32)
            return (low + unit * (high - low)).astype(np.float32)
        if x.ndim != 4:
            raise ValueError(
                f"Expected images (n, H, W, C) for `{name}`='blur'. Received: shape {x.shape}."
            )
        return gaussian_blur(x, blur_sigma).numpy()
    array = np.asarray(spec, dtype=np.float32)
    try:
        return np.broadcast_to(array, x.shape).copy()
    except ValueError:
        raise ValueError(
            f"Expected `{name}` to be broadcastable to the inputs' shape {x.shape}. Received: "
            f"an array of shape {array.shape}."
        ) from None


def _integrated_gradients(
    probe: Probe, rule: ScoreRule, steps: int, inputs, baselines, indices, start, stop
):
    rows, images, local, count = expanded_rows(start, stop, steps)
    # Midpoint Riemann rule: alpha_k = (k + 1/2) / steps.
    alphas = (tf.cast(rows % steps, tf.float32) + 0.5) / steps
    path = []
    for x, b in zip(inputs, baselines, strict=True):
        a = tf.reshape(alphas, [-1] + [1] * (x.shape.rank - 1))
        xb, bb = tf.gather(x, images), tf.gather(b, images)
        path.append(bb + a * (xb - bb))
    grads = input_gradients(probe, path, tf.gather(indices, images), rule)
    return [tf.math.unsorted_segment_sum(g, local, count) for g in grads]


def integrated_gradients(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    baseline: Any = "black",
    steps: int = 50,
    batch_size: int | None = None,
    return_delta: bool = False,
    blur_sigma: float = 5.0,
    seed: int = 0,
    output: int | str | None = None,
):
    """Integrated gradients: ``(x - baseline) * mean of the gradients along the straight path``.

    The path integral uses the midpoint Riemann rule, ``alpha_k = (k + 1/2) / steps``. The
    ``n * steps`` path points are built on the device and run in chunks of ``batch_size``
    rows (None: ``max(n, 32)``); the full expansion is never materialized.

    Args:
        baseline: ``"black"`` (zeros), ``"white"`` (every value set to the image's maximum,
            1.0 for an image in [0, 1] that reaches 1), ``"noise"`` (uniform in the image's
            [min, max], seeded), ``"blur"`` (the image blurred by a Gaussian of ``blur_sigma``
            pixels), or an array broadcastable to the inputs. A list gives one per model input.
        steps: points on the path (>= 1).
        return_delta: also return the completeness gap per image,
            ``sum(attributions) - (f(x) - f(baseline))``.
        blur_sigma: the Gaussian's standard deviation for ``baseline="blur"``.
        seed: seed of the ``"noise"`` baseline.
        Others: as in :func:`saliency`.

    Returns:
        Attributions with the shape of the inputs (a list for several inputs); with
        ``return_delta``, the pair ``(attributions, delta)`` with ``delta`` shaped ``(n,)``.

    Reference: Sundararajan et al., "Axiomatic Attribution for Deep Networks" (2017).

    Example:
        >>> attr, delta = kerasviz.integrated_gradients(model, images, 3, return_delta=True)
    """
    steps = positive_int(steps, "steps")
    batch, probe, target = setup(model, inputs, targets, output=output)
    arrays = batch.arrays
    specs = baseline if isinstance(baseline, list | tuple) else [baseline] * len(arrays)
    if len(specs) != len(arrays):
        raise ValueError(
            f"Expected `baseline` to hold one baseline per model input ({len(arrays)}). "
            f"Received: {len(specs)}."
        )
    baselines = []
    for k, (spec, x) in enumerate(zip(specs, arrays, strict=True)):
        name = "baseline" if len(arrays) == 1 else f"baseline[{k}]"
        baselines.append(_baseline(spec, x, name, seed, blur_sigma, k))
    if return_delta or target.needs_prediction:
        fx, target = target_scores(probe, arrays, target, batch_size)
    n = batch.n
    fn = probe.step(_integrated_gradients, target.rule, steps)
    total = n * steps
    sums = run_expanded(
        fn,
        total,
        rows_per_pass(batch_size, n, total),
        n,
        steps,
        [tf.constant(a) for a in arrays],
        [tf.constant(b) for b in baselines],
        tf.constant(target.indices),
    )
    attributions = [
        (x - b) * (s / steps).numpy() for x, b, s in zip(arrays, baselines, sums, strict=True)
    ]
    result = one_or_list(batch, attributions)
    if not return_delta:
        return result
    fb, _ = target_scores(probe, baselines, target, batch_size)
    total_attr = sum(a.reshape(n, -1).astype(np.float64).sum(axis=1) for a in attributions)
    delta = (total_attr - (fx.astype(np.float64) - fb)).astype(np.float32)
    return result, batch.squeeze(delta)
