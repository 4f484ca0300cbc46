"""Reference-based attributions: input x gradient, DeepLIFT (rescale) and GradientSHAP.

Each explains the target logit (pre-softmax, as every kerasviz method) and returns
attributions shaped like the inputs, in units of the logit. DeepLIFT and GradientSHAP compare
the input with a reference: the baselines of :func:`kerasviz.integrated_gradients`.

- :func:`input_x_gradient`: ``x * d logit / d x``, one compiled pass per chunk.
- :func:`deeplift`: one compiled pass per chunk over the inputs and their baselines stacked
  (``2n`` rows). Linear layers keep their gradient; every elementwise nonlinearity's gradient
  becomes the multiplier ``(f(x) - f(x0)) / (x - x0)`` (the rescale rule), max pooling shares
  the output's difference between the winners at the input and at the reference, and a
  product ``a * b`` uses the exact split ``(b + b0)/2`` and ``(a + a0)/2``. The graph is
  walked as for LRP (:mod:`~kerasviz.attribution.lrp`), with the same layer table.
- :func:`gradient_shap`: expected gradients over a baseline distribution: for each of
  ``samples`` draws, a baseline, a point ``b + alpha (x~ - b)`` with ``alpha ~ U(0, 1)`` and
  ``x~`` the input plus optional Gaussian noise; the mean of ``(x~ - b) * gradient``. The
  ``n * samples`` rows are built on the device and run in chunks.
"""

from __future__ import annotations

import collections
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import integer, number, positive_int
from kerasviz._engine import (
    expanded_rows,
    fix_predictions,
    input_gradients,
    one_or_list,
    rows_per_pass,
    run_expanded,
    setup,
)
from kerasviz._graph import run_graph
from kerasviz._inputs import Batch, run_chunked
from kerasviz._probe import Probe, linear_part
from kerasviz._targets import ScoreRule, Targets
from kerasviz.attribution.gradients import _baseline
from kerasviz.attribution.lrp import (
    GraphPlan,
    probe_graph_plan,
    split_tensors,
    unbroadcast,
    with_variables,
)
from kerasviz.attribution.lrp_rules import divide, is_linear_activation

#: Below this input difference a nonlinearity's multiplier is its gradient (the limit).
MIN_DIFFERENCE = 1e-7


def _check_graph(probe: Probe, method: str) -> None:
    if not probe.graph:
        raise ValueError(
            f"Expected `model` to be a Sequential or functional Keras model for {method}. "
            f"Received: a subclassed model of type {type(probe.model).__name__}, whose layer "
            "graph is hidden."
        )


# ---------------------------------------------------------------------------------------------
# Input x gradient


def _input_x_gradient(probe: Probe, rule: ScoreRule, inputs, indices):
    grads = input_gradients(probe, inputs, indices, rule)
    return [tf.cast(x, tf.float32) * g for x, g in zip(inputs, grads, strict=True)]


def input_x_gradient(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Input x gradient: each input value times the target logit's gradient at it.

    Equal to LRP-0 (and DeepLIFT with a zero baseline) on bias-free ReLU networks.

    Args:
        model: a Keras model (subclassed ones included).
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)``; a list for several inputs.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (predicted).
        batch_size: rows per compiled pass; None for all images at once.
        output: which model output to explain, for models with several.

    Returns:
        float32 attributions shaped like the inputs (a list for several inputs), in logit
        units.

    Reference: Shrikumar et al., "Not just a black box" (2016); Ancona et al., "Towards
    better understanding of gradient-based attribution methods" (2018).

    Example:
        >>> a = kerasviz.input_x_gradient(model, images, targets=3)  # (n, H, W, C)
    """
    batch, probe, target = setup(model, inputs, targets, output=output)
    fn = probe.step(_input_x_gradient, target.rule)
    result = run_chunked(fn, batch.arrays, batch_size, extra=[target.indices])
    return one_or_list(batch, list(result))


# ---------------------------------------------------------------------------------------------
# DeepLIFT


def _halves(t):
    """The input rows and the baseline rows of a stacked tensor, as float32."""
    return tf.split(tf.cast(t, tf.float32), 2, axis=0)


def _rescale(fn, x):
    """An elementwise nonlinearity with the rescale multiplier ``dy / dx`` as its gradient."""

    @tf.custom_gradient
    def op(t):
        y = fn(t)

        def grad(g, variables=None):
            x1, x0 = _halves(t)
            y1, y0 = _halves(y)
            g1, _ = _halves(g)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x1)
                yy = tf.cast(fn(x1), tf.float32)
            local = tape.gradient(yy, x1, output_gradients=g1)
            dx = x1 - x0
            m = tf.where(tf.abs(dx) > MIN_DIFFERENCE, g1 * divide(y1 - y0, dx), local)
            return with_variables(tf.cast(tf.concat([m, tf.zeros_like(x0)], 0), t.dtype), variables)

        return y, grad

    return op(x)


def _max_rule(layer, args, kwargs):
    """Max pooling: the output difference ``y - y0`` split at ``max(y, y0)``; the part above
    the reference goes to the input's winner, the rest to the reference's winner."""
    tensors, rebuild = split_tensors(args)

    @tf.custom_gradient
    def op(*ts):
        y = layer(*rebuild(ts), **kwargs)

        def grad(g, variables=None):
            pairs = [_halves(t) for t in ts]
            x1s, x0s = [p[0] for p in pairs], [p[1] for p in pairs]
            y1, y0 = _halves(y)
            g1, _ = _halves(g)
            top = tf.maximum(y1, y0)
            with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
                tape.watch(x1s + x0s)
                p1 = tf.cast(layer(*rebuild(x1s), **kwargs), tf.float32)
                p0 = tf.cast(layer(*rebuild(x0s), **kwargs), tf.float32)
            above = tape.gradient(p1, x1s, output_gradients=g1 * (top - y0))
            below = tape.gradient(p0, x0s, output_gradients=g1 * (y1 - top))
            local = tape.gradient(p1, x1s, output_gradients=g1)
            grads = []
            for x1, x0, a, b, lo, t in zip(x1s, x0s, above, below, local, ts, strict=True):
                dx = x1 - x0
                m = tf.where(tf.abs(dx) > MIN_DIFFERENCE, divide(a + b, dx), lo)
                grads.append(tf.cast(tf.concat([m, tf.zeros_like(x0)], 0), t.dtype))
            return with_variables(grads, variables)

        return y, grad

    return op(*tensors)


def _product(layer, args, kwargs):
    """``a * b``: ``d(ab) = da (b + b0)/2 + db (a + a0)/2`` exactly, so multipliers are the
    means of the other factor at the input and at the reference."""
    tensors, rebuild = split_tensors(args)

    @tf.custom_gradient
    def op(a, b):
        y = layer(*rebuild([a, b]), **kwargs)

        def grad(g, variables=None):
            a1, a0 = _halves(a)
            b1, b0 = _halves(b)
            g1, _ = _halves(g)
            ma = unbroadcast(g1 * (b1 + b0) / 2, a1)
            mb = unbroadcast(g1 * (a1 + a0) / 2, b1)
            grads = [
                tf.cast(tf.concat([ma, tf.zeros_like(a0)], 0), a.dtype),
                tf.cast(tf.concat([mb, tf.zeros_like(b0)], 0), b.dtype),
            ]
            return with_variables(grads, variables)

        return y, grad

    return op(*tensors)


def deeplift_graph(model: keras.Model, plan: GraphPlan, stacked: list):
    """Runs the DeepLIFT view on inputs stacked over their baselines (``2n`` rows)."""
    ordinal: collections.Counter = collections.Counter()

    def call(layer, path, args, kwargs):
        key = (path, ordinal[path])
        ordinal[path] += 1
        step = plan.steps[key]
        kind = step.kind
        if kind == "identity":
            return args[0]
        if kind == "linear":
            if step.head:
                return linear_part(layer, args[0])
            if is_linear_activation(layer):
                return layer(*args, **kwargs)
            return _rescale(layer.activation, linear_part(layer, args[0]))
        if kind == "activation":
            return _rescale(lambda t: layer(t, *args[1:], **kwargs), args[0])
        if kind == "max":
            return _max_rule(layer, args, kwargs)
        if kind == "multiply":
            tensors, _ = split_tensors(args)
            if len(tensors) == 1:  # scaling by a constant: linear
                return layer(*args, **kwargs)
            return _product(layer, args, kwargs)
        return layer(*args, **kwargs)  # linear maps: BatchNorm, affine, moves, sums

    return run_graph(model, list(stacked), call)[plan.output_index]


@tf.autograph.experimental.do_not_convert
def _deeplift_step(probe: Probe, rule: ScoreRule, inputs, indices, *baselines):
    plan = probe.cached(probe_graph_plan, False)
    n = tf.shape(inputs[0])[0]
    stacked = [tf.concat([x, b], 0) for x, b in zip(inputs, baselines, strict=True)]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(stacked)
        logits = tf.cast(deeplift_graph(probe.model, plan, stacked), tf.float32)
    # The predicted class (where asked for) is read on the inputs, in this same pass.
    chosen = rule.choose(logits[:n], indices)
    with tf.GradientTape(watch_accessed_variables=False) as inner:
        inner.watch(logits)
        scores = rule.scores(logits, tf.concat([chosen, chosen], 0))
        explained = scores[:n]
    seed = inner.gradient(explained, logits)
    grads = tape.gradient(logits, stacked, output_gradients=seed, unconnected_gradients="zero")
    attributions = [
        (tf.cast(x, tf.float32) - tf.cast(b, tf.float32)) * g[:n]
        for x, b, g in zip(inputs, baselines, grads, strict=True)
    ]
    return attributions, scores[:n], scores[n:]


def _baselines(spec: Any, batch: Batch, name: str, seed: int, blur_sigma: float) -> list:
    """One baseline array per model input, as integrated gradients takes them."""
    arrays = batch.arrays
    specs = spec if isinstance(spec, list | tuple) else [spec] * len(arrays)
    if len(specs) != len(arrays):
        raise ValueError(
            f"Expected `{name}` to hold one baseline per model input ({len(arrays)}). "
            f"Received: {len(specs)}."
        )
    return [
        _baseline(s, x, name if len(arrays) == 1 else f"{name}[{k}]", seed, blur_sigma, k)
        for k, (s, x) in enumerate(zip(specs, arrays, strict=True))
    ]


def deeplift(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    baseline: Any = "black",
    batch_size: int | None = None,
    return_delta: bool = False,
    blur_sigma: float = 5.0,
    seed: int = 0,
    output: int | str | None = None,
):
    """DeepLIFT with the rescale rule: contributions that sum to ``f(x) - f(baseline)``.

    Summation to delta is exact (up to float error) for every layer of the rule table:
    linear layers and sums keep their gradient, elementwise nonlinearities use
    ``(f(x) - f(x0)) / (x - x0)`` (their gradient where ``|x - x0| < 1e-7``), max pooling
    splits ``y - y0`` between the winners at the input and at the reference (as Captum), and
    ``Multiply`` uses the exact product split. A softmax or sigmoid head is bypassed.

    Args:
        model: a Sequential or functional Keras model (nested models included).
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)``; a list for several inputs.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (predicted,
            read once on the inputs).
        baseline: the reference: ``"black"``, ``"white"``, ``"noise"``, ``"blur"`` or an
            array, as in :func:`kerasviz.integrated_gradients`; a list for several inputs.
        batch_size: images per compiled pass (each pass runs twice as many rows).
        return_delta: also return ``sum(attributions) - (f(x) - f(baseline))`` per image.
        blur_sigma, seed: for the ``"blur"`` and ``"noise"`` baselines.
        output: which model output to explain, for models with several.

    Returns:
        float32 attributions shaped like the inputs (a list for several inputs), in logit
        units; with ``return_delta``, the pair ``(attributions, delta)``, ``delta`` ``(n,)``.

    Raises:
        ValueError: for a layer without a rule (see
            :data:`~kerasviz.attribution.lrp_rules.LAYER_KINDS`), a Multiply of more than two
            inputs, or a bad baseline, before any computation.

    Reference: Shrikumar et al., "Learning Important Features Through Propagating
    Activation Differences" (DeepLIFT, 2017).

    Example:
        >>> a, delta = kerasviz.deeplift(model, images, 3, baseline="blur", return_delta=True)
    """
    batch, probe, target = setup(model, inputs, targets, output=output)
    _check_graph(probe, "DeepLIFT")
    plan = probe.cached(probe_graph_plan, False)
    for step in plan.steps.values():
        if step.kind == "multiply" and len(step.inputs) > 2:
            raise ValueError(
                "Expected every Multiply to have two inputs for DeepLIFT. Received: layer "
                f"{step.path!r} with {len(step.inputs)}."
            )
    baselines = _baselines(baseline, batch, "baseline", seed, blur_sigma)
    fn = probe.step(_deeplift_step, target.rule)
    attributions, fx, fb = run_chunked(
        fn, batch.arrays, batch_size, extra=[target.indices, *baselines]
    )
    result = one_or_list(batch, list(attributions))
    if not return_delta:
        return result
    n = batch.n
    total = sum(np.asarray(a, np.float64).reshape(n, -1).sum(axis=1) for a in attributions)
    delta = (total - (fx.astype(np.float64) - fb)).astype(np.float32)
    return result, batch.squeeze(delta)


# ---------------------------------------------------------------------------------------------
# GradientSHAP


def _gradient_shap(
    probe: Probe,
    rule: ScoreRule,
    samples: int,
    per_image: tuple[bool, ...],
    noisy: bool,
    inputs,
    banks,
    picks,
    alphas,
    sigmas,
    noises,
    indices,
    start,
    stop,
):
    rows, images, local, count = expanded_rows(start, stop, samples)
    draws = rows % samples
    alpha = tf.gather(alphas, draws)
    points, steps = [], []
    for k, x in enumerate(inputs):
        shape = [-1] + [1] * (x.shape.rank - 1)
        xs = tf.gather(x, images)
        if noisy:
            xs = xs + tf.reshape(tf.gather(sigmas[k], images), shape) * tf.gather(noises[k], draws)
        which = images if per_image[k] else tf.gather(picks[k], draws)
        b = tf.gather(banks[k], which)
        points.append(b + tf.reshape(alpha, shape) * (xs - b))
        steps.append(xs - b)
    grads = input_gradients(probe, points, tf.gather(indices, images), rule)
    return [
        tf.math.unsorted_segment_sum(g * d, local, count) for g, d in zip(grads, steps, strict=True)
    ]


def _bank(spec: Any, x: np.ndarray, name: str, seed: int, blur_sigma: float, stream: int):
    """``(bank, per_image)``: a distribution ``(B, ...)`` shared by all images, or one
    baseline per image ``(n, ...)`` for the integrated-gradients names."""
    if isinstance(spec, str):
        return _baseline(spec, x, name, seed, blur_sigma, stream), True
    array = np.asarray(spec, dtype=np.float32)
    if array.ndim == x.ndim:
        if array.shape[1:] != x.shape[1:] or array.shape[0] == 0:
            raise ValueError(
                f"Expected `{name}` as a distribution to have shape (B, {', '.join(map(str, x.shape[1:]))}) "
                f"with B >= 1. Received: shape {array.shape}."
            )
        bank = array
    else:
        try:
            bank = np.broadcast_to(array, x.shape[1:])[None].copy()
        except ValueError:
            raise ValueError(
                f"Expected `{name}` to be a name, one baseline broadcastable to an input of "
                f"shape {x.shape[1:]}, or a distribution (B, *{x.shape[1:]}). Received: an "
                f"array of shape {array.shape}."
            ) from None
    if not np.all(np.isfinite(bank)):
        raise ValueError(f"Expected `{name}` to be finite. Received: values with NaN or Inf.")
    return bank, False


def gradient_shap(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    baselines: Any = "black",
    samples: int = 20,
    noise: float = 0.0,
    seed: int = 0,
    batch_size: int | None = None,
    blur_sigma: float = 5.0,
    output: int | str | None = None,
) -> np.ndarray | list[np.ndarray]:
    """GradientSHAP (expected gradients): ``E[(x~ - b) * gradient at b + alpha (x~ - b)]``.

    Each of the ``samples`` draws takes a baseline ``b`` from the distribution, ``alpha``
    uniform in [0, 1] and ``x~ = x + noise``; draw ``k`` is the same for every image (its
    result depends neither on the other images nor on the chunking). Baselines are drawn
    stratified: a random order of the distribution, repeated, so that ``samples`` a multiple
    of its size uses each baseline equally often. For a linear model the result is exactly
    ``(x - mean baseline) * w`` then (with ``noise=0``).

    Args:
        model: a Keras model (subclassed ones included).
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)``; a list for several inputs.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (predicted,
            read once on the inputs).
        baselines: a distribution ``(B, H, W, C)`` of baseline images (background data),
            one baseline broadcastable to an image, or an integrated-gradients name
            (``"black"``, ``"white"``, ``"noise"``, ``"blur"``: one baseline per image); a list
            for several inputs.
        samples: draws per image (>= 1).
        noise: standard deviation of the Gaussian noise added to the input, as a fraction
            of each image's value range (SmoothGrad's convention); 0 for none.
        seed: seed of the draws.
        batch_size: rows per compiled pass (None: ``max(n, 32)``).
        blur_sigma: for the ``"blur"`` baseline.
        output: which model output to explain, for models with several.

    Returns:
        float32 attributions shaped like the inputs (a list for several inputs), in logit
        units.

    References: Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions"
    (SHAP, 2017); Erion et al., "Improving performance of deep learning models with axiomatic
    attribution priors and expected gradients" (2021).

    Example:
        >>> a = kerasviz.gradient_shap(model, images, 3, baselines=background, samples=50)
    """
    samples = positive_int(samples, "samples")
    noise = number(noise, "noise", low=0)
    seed = integer(seed, "seed")
    batch, probe, target = setup(model, inputs, targets, output=output)
    arrays = batch.arrays
    specs = baselines if isinstance(baselines, list | tuple) else [baselines] * len(arrays)
    if len(specs) != len(arrays):
        raise ValueError(
            f"Expected `baselines` to hold one entry per model input ({len(arrays)}). "
            f"Received: {len(specs)}."
        )
    banks, per_image, picks = [], [], []
    for k, (spec, x) in enumerate(zip(specs, arrays, strict=True)):
        name = "baselines" if len(arrays) == 1 else f"baselines[{k}]"
        bank, own = _bank(spec, x, name, seed, blur_sigma, k)
        order = np.random.default_rng([seed, 1, k]).permutation(bank.shape[0])
        picks.append(tf.constant(order[np.arange(samples) % bank.shape[0]], tf.int32))
        banks.append(tf.constant(bank))
        per_image.append(own)
    alphas = tf.constant(np.random.default_rng([seed, 0]).random(samples, dtype=np.float32))
    target = fix_predictions(probe, batch, target, batch_size)
    n = batch.n
    noisy = noise > 0
    sigmas, noises = [], []
    if noisy:
        for k, a in enumerate(arrays):
            flat = a.reshape(n, -1)
            sigmas.append(tf.constant(noise * (flat.max(axis=1) - flat.min(axis=1)), tf.float32))
            noises.append(tf.random.stateless_normal((samples, *a.shape[1:]), seed=[seed, k]))
    fn = probe.step(_gradient_shap, target.rule, samples, tuple(per_image), noisy)
    total = n * samples
    sums = run_expanded(
        fn,
        total,
        rows_per_pass(batch_size, n, total),
        n,
        samples,
        [tf.constant(a) for a in arrays],
        banks,
        picks,
        alphas,
        sigmas,
        noises,
        tf.constant(target.indices),
    )
    return one_or_list(batch, [(s / samples).numpy() for s in sums])
