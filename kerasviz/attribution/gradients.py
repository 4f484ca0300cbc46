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

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._inputs import as_batch, chunk_slices, run_chunked
from kerasviz._probe import Probe, compiled, get_probe, note_trace
from kerasviz._targets import ARGMAX, Targets, callable_key, select_scores, target_indices

_REDUCE = ("abs_max", None)
_BASELINES = ("black", "white", "noise", "blur")

#: Rows per compiled pass for expanded methods when ``batch_size`` is None (at least the batch).
DEFAULT_ROWS = 32


# ---------------------------------------------------------------------------------------------
# Shared machinery (also used by the CAM and occlusion modules)


def setup(model: keras.Model, inputs: Any, targets: Targets, layers=(), output=None):
    """Checked inputs, the probe, and the per-image target indices (``ARGMAX`` for None)."""
    batch = as_batch(model, inputs)
    probe = get_probe(model, layers, output=output)
    if callable(targets):
        indices = np.full((batch.n,), ARGMAX, np.int32)
    else:
        indices = target_indices(targets, batch.n, probe.num_classes)
    return batch, probe, indices


def _scores_factory(targets: Targets) -> Callable[[Probe], Callable]:
    def factory(probe: Probe):
        def scores(inputs, indices):
            note_trace("attribution_scores")
            _, logits = probe(inputs)
            flat = tf.reshape(logits, [tf.shape(logits)[0], -1])
            predicted = tf.argmax(flat, axis=-1, output_type=tf.int32)
            chosen = tf.where(indices < 0, predicted, indices)
            return select_scores(logits, chosen, targets), chosen

        return compiled(scores)

    return factory


def target_scores(
    probe: Probe,
    arrays: Sequence[np.ndarray],
    indices: np.ndarray,
    targets: Targets,
    batch_size: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(n,)`` of the clean images, and the indices with ``ARGMAX`` resolved."""
    fn = probe.function(("scores", callable_key(targets)), _scores_factory(targets))
    scores, chosen = run_chunked(fn, list(arrays), batch_size, extra=[indices])
    return scores, chosen.astype(np.int32)


def rows_per_pass(batch_size: int | None, n: int, total: int) -> int:
    """Rows per compiled pass over an expansion of ``total`` rows from ``n`` images."""
    chunk_slices(1, batch_size)  # validates batch_size
    if batch_size is None:
        return min(total, max(n, DEFAULT_ROWS))
    return batch_size


def run_expanded(
    fn: Callable, total: int, rows: int, n: int, per_image: int, *args
) -> list[tf.Tensor]:
    """Runs ``fn(*args, start, stop)`` over ``[0, total)`` in chunks; sums its outputs per image.

    ``fn`` returns a list of tensors holding one row per image touched by the chunk (images
    ``start // per_image`` to ``(stop - 1) // per_image``). The partial sums stay on the device
    and are combined once at the end into tensors with ``n`` rows.
    """
    parts, firsts = [], []
    for start in range(0, total, rows):
        stop = min(start + rows, total)
        parts.append(fn(*args, tf.constant(start, tf.int32), tf.constant(stop, tf.int32)))
        firsts.append(start // per_image)
    combined = []
    for k in range(len(parts[0])):
        values = tf.concat([p[k] for p in parts], axis=0)
        ids = tf.concat(
            [tf.range(f, f + tf.shape(p[k])[0]) for f, p in zip(firsts, parts, strict=True)], 0
        )
        combined.append(tf.math.unsorted_segment_sum(values, ids, n))
    return combined


def expanded_rows(start, stop, per_image):
    """Row ids of a chunk, their image ids, local image ids, and the number of images touched."""
    rows = tf.range(start, stop)
    images = rows // per_image
    first = start // per_image
    count = (stop - 1) // per_image - first + 1
    return rows, images, images - first, count


def one_or_list(batch, values: list):
    """One array for a single-input model, else the list; the batch axis removed if needed."""
    return batch.squeeze(values[0] if len(values) == 1 else list(values))


def _input_gradients(probe, rows: list, indices, targets: Targets) -> list:
    """d(target logit of each row) / d(rows), one tensor per model input; inside compiled code."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(rows)
        _, logits = probe(rows)
        scores = select_scores(logits, indices, targets)
    return tape.gradient(scores, rows, unconnected_gradients="zero")


def check_reduce(reduce: str | None) -> None:
    if reduce not in _REDUCE:
        raise ValueError(f"Expected `reduce` to be one of {_REDUCE}. Received: reduce={reduce!r}.")


def _reduce(gradients: np.ndarray, reduce: str | None) -> np.ndarray:
    if reduce is None:
        return gradients
    return np.max(np.abs(gradients), axis=-1)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"Expected `{name}` to be an int >= 1. Received: {name}={value!r}.")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Saliency


def _saliency_factory(targets: Targets) -> Callable[[Probe], Callable]:
    def factory(probe: Probe):
        def step(inputs, indices):
            note_trace("saliency")
            return _input_gradients(probe, inputs, indices, targets)

        return compiled(step)

    return factory


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
            None for the raw gradients ``(n, H, W, C)``.
        output: which model output to explain, for models with several.

    Returns:
        float32 array, or a list with one per model input.

    Reference: Simonyan et al., "Deep Inside Convolutional Networks" (2014).

    Example:
        >>> maps = kerasviz.saliency(model, images, targets=3)  # (n, H, W)
    """
    check_reduce(reduce)
    batch, probe, indices = setup(model, inputs, targets, output=output)
    fn = probe.function(("saliency", callable_key(targets)), _saliency_factory(targets))
    grads = run_chunked(fn, batch.arrays, batch_size, extra=[indices])
    return one_or_list(batch, [_reduce(g, reduce) for g in grads])


# ---------------------------------------------------------------------------------------------
# SmoothGrad


def _smoothgrad_factory(targets: Targets, samples: int) -> Callable[[Probe], Callable]:
    def factory(probe: Probe):
        def step(inputs, sigmas, noises, indices, start, stop):
            note_trace("smoothgrad")
            rows, images, local, count = expanded_rows(start, stop, samples)
            draws = rows % samples
            noisy = []
            for x, sigma, noise in zip(inputs, sigmas, noises, strict=True):
                scale = tf.reshape(tf.gather(sigma, images), [-1] + [1] * (x.shape.rank - 1))
                noisy.append(tf.gather(x, images) + scale * tf.gather(noise, draws))
            grads = _input_gradients(probe, noisy, tf.gather(indices, images), targets)
            return [tf.math.unsorted_segment_sum(g, local, count) for g in grads]

        return compiled(step)

    return factory


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
    samples = _positive_int(samples, "samples")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or noise < 0:
        raise ValueError(f"Expected `noise` to be a float >= 0. Received: noise={noise!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"Expected `seed` to be an int. Received: seed={seed!r}.")
    batch, probe, indices = setup(model, inputs, targets, output=output)
    if not callable(targets) and (indices < 0).any():  # predicted class, held for all draws
        _, indices = target_scores(probe, batch.arrays, indices, targets, batch_size)
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
    key = ("smoothgrad", samples, callable_key(targets))
    fn = probe.function(key, _smoothgrad_factory(targets, samples))
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
        tf.constant(indices),
    )
    return one_or_list(batch, [_reduce((s / samples).numpy(), reduce) for s in sums])


# ---------------------------------------------------------------------------------------------
# Integrated gradients


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Per-channel Gaussian blur of ``(n, H, W, C)`` images with reflected borders."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    out = tf.constant(x)
    channels = x.shape[-1]
    for axis in (1, 2):
        size = x.shape[axis]
        # Reflect padding needs pad < size; repeat it for small images.
        remaining, pads = radius, []
        while remaining > 0:
            pads.append(min(remaining, size - 1) if size > 1 else remaining)
            remaining -= pads[-1]
        for pad in pads:
            spec = [[0, 0]] * 4
            spec[axis] = [pad, pad]
            out = tf.pad(out, spec, mode="REFLECT" if size > 1 else "SYMMETRIC")
        shape = (len(taps), 1) if axis == 1 else (1, len(taps))
        kernel = np.tile(taps.reshape(*shape, 1, 1), (1, 1, channels, 1))
        out = tf.nn.depthwise_conv2d(out, kernel, [1, 1, 1, 1], "VALID")
    return out.numpy()


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
        return _gaussian_blur(x, blur_sigma)
    array = np.asarray(spec, dtype=np.float32)
    try:
        return np.broadcast_to(array, x.shape).copy()
    except ValueError:
        raise ValueError(
            f"Expected `{name}` to be broadcastable to the inputs' shape {x.shape}. Received: "
            f"an array of shape {array.shape}."
        ) from None


def _ig_factory(targets: Targets, steps: int) -> Callable[[Probe], Callable]:
    def factory(probe: Probe):
        def step(inputs, baselines, indices, start, stop):
            note_trace("integrated_gradients")
            rows, images, local, count = expanded_rows(start, stop, steps)
            # Midpoint Riemann rule: alpha_k = (k + 1/2) / steps.
            alphas = (tf.cast(rows % steps, tf.float32) + 0.5) / steps
            path = []
            for x, b in zip(inputs, baselines, strict=True):
                a = tf.reshape(alphas, [-1] + [1] * (x.shape.rank - 1))
                xb, bb = tf.gather(x, images), tf.gather(b, images)
                path.append(bb + a * (xb - bb))
            grads = _input_gradients(probe, path, tf.gather(indices, images), targets)
            return [tf.math.unsorted_segment_sum(g, local, count) for g in grads]

        return compiled(step)

    return factory


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
    steps = _positive_int(steps, "steps")
    batch, probe, indices = setup(model, inputs, targets, output=output)
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
    if return_delta or (not callable(targets) and (indices < 0).any()):
        fx, indices = target_scores(probe, arrays, indices, targets, batch_size)
    n = batch.n
    key = ("integrated_gradients", steps, callable_key(targets))
    fn = probe.function(key, _ig_factory(targets, steps))
    total = n * steps
    sums = run_expanded(
        fn,
        total,
        rows_per_pass(batch_size, n, total),
        n,
        steps,
        [tf.constant(a) for a in arrays],
        [tf.constant(b) for b in baselines],
        tf.constant(indices),
    )
    attributions = [
        (x - b) * (s / steps).numpy() for x, b, s in zip(arrays, baselines, sums, strict=True)
    ]
    result = one_or_list(batch, attributions)
    if not return_delta:
        return result
    fb, _ = target_scores(probe, baselines, indices, targets, batch_size)
    total_attr = sum(a.reshape(n, -1).astype(np.float64).sum(axis=1) for a in attributions)
    delta = (total_attr - (fx.astype(np.float64) - fb)).astype(np.float32)
    return result, batch.squeeze(delta)
