"""Adversarial images: FGSM and PGD on the cross-entropy of the model's logits.

Both take the gradient of the cross-entropy between the logits (a final softmax or sigmoid is
bypassed) and a class, with the library's one probability rule (:mod:`kerasviz._targets`):
the predicted class (untargeted, the default: its loss is increased) or ``targets``
(``targeted=True``: the target class's loss is decreased). A one-unit head is two classes, 0
(score ``-z``) and 1 (score ``z``). ``epsilon`` and ``step_size`` are in the model's input
units. Inputs must lie inside ``value_range`` (a ValueError otherwise; nothing is clipped
silently); the adversarial images are kept inside it.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import boolean, in_value_range, integer, number, positive_int, value_range
from kerasviz._engine import fix_predictions, setup
from kerasviz._inputs import Batch, run_chunked
from kerasviz._probe import Probe
from kerasviz._targets import ScoreRule, Target, Targets


def _loss_gradient(probe: Probe, rule: ScoreRule, x: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """d(summed cross-entropy of the ``indices`` classes) / dx, float32 like ``x``."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        _, logits = probe([x])
        loss = tf.reduce_sum(rule.nll(logits, indices))
    return tf.cast(tape.gradient(loss, x), tf.float32)


def _fgsm(probe: Probe, rule: ScoreRule, inputs, indices, settings):
    eps, sign, lo, hi = tf.unstack(settings)
    x = inputs[0]
    return tf.clip_by_value(
        x + sign * eps * tf.sign(_loss_gradient(probe, rule, x, indices)), lo, hi
    )


def _pgd(probe: Probe, rule: ScoreRule, inputs, indices, noise, settings, steps):
    eps, step_size, sign, lo, hi = tf.unstack(settings)
    x = inputs[0]

    def project(candidate):
        return tf.clip_by_value(tf.clip_by_value(candidate, x - eps, x + eps), lo, hi)

    def body(i, adv):
        grad = _loss_gradient(probe, rule, adv, indices)
        return i + 1, project(adv + sign * step_size * tf.sign(grad))

    return tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), project(x + noise)))[1]


def _setup(model, inputs, targets, targeted, bounds, epsilon, output):
    """Checked arguments: ``(batch, probe, target, (low, high), epsilon, sign)``."""
    bounds = value_range(bounds)
    epsilon = number(epsilon, "epsilon", low=0)
    targeted = boolean(targeted, "targeted")
    if callable(targets):
        raise ValueError("Expected `targets` to be class indices or None. Received: a callable.")
    if targeted and targets is None:
        raise ValueError(
            "Expected `targets` (the classes to reach) when targeted=True. Received: None."
        )
    batch, probe, target = setup(model, inputs, targets, output=output)
    if len(batch.arrays) != 1:
        raise ValueError(
            f"Expected `model` to take one input. Received: {len(batch.arrays)} inputs."
        )
    in_value_range(batch.arrays[0], bounds, "inputs")  # as_batch already rejected NaN and Inf
    return batch, probe, target, bounds, epsilon, -1.0 if targeted else 1.0


def _run(fn, batch: Batch, target: Target, batch_size, *extra, constants=()):
    out = run_chunked(
        lambda chunk, *rows: fn(chunk, *rows, *constants),
        batch.arrays,
        batch_size,
        extra=[target.indices, *extra],
    )
    return batch.squeeze(out)


def fgsm(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    epsilon: float,
    targeted: bool = False,
    value_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int | None = None,
    output: int | str | None = None,
) -> np.ndarray:
    """Fast gradient sign method: ``x + epsilon * sign(grad of the cross-entropy)``.

    Args:
        model: a classifier with one input.
        inputs: ``(n, h, w, c)`` images or one image, in ``value_range`` (uint8 included).
        targets: untargeted: the classes whose loss is increased (None: the predicted class);
            targeted: the classes to reach (required). An int or one per image.
        epsilon: the L-inf size of the perturbation, in input units (>= 0).
        targeted: step *down* the target class's loss instead of up the label's.
        value_range: the model's input range ``(low, high)``; e.g. ``(0, 255)`` for 8-bit
            images fed to a model that rescales inside. Results are kept inside it.
        batch_size: rows per forward/backward pass; None for all at once.
        output: which model output to attack, for models with several (index or name).

    Returns:
        float32 adversarial images, the shape of ``inputs``; ``|x_adv - x| <= epsilon``.

    Raises:
        ValueError: inputs outside ``value_range``, a negative or non-finite ``epsilon``,
            ``targeted`` without ``targets``, a callable target, or a bad ``output``.

    Reference: Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015.

    Example:
        >>> adv = kerasviz.fgsm(model, images, epsilon=2 / 255)
    """
    batch, probe, target, (lo, hi), eps, sign = _setup(
        model, inputs, targets, targeted, value_range, epsilon, output
    )
    settings = tf.constant([eps, sign, lo, hi], tf.float32)
    return _run(probe.step(_fgsm, target.rule), batch, target, batch_size, constants=[settings])


def pgd(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    epsilon: float,
    step_size: float | None = None,
    steps: int = 10,
    targeted: bool = False,
    random_start: bool = True,
    value_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> np.ndarray:
    """Projected gradient descent: iterated sign steps, projected on the L-inf epsilon ball.

    The predicted class (``targets=None``) is read once on the clean images and held fixed.

    Args:
        model, inputs, targets, epsilon, targeted, value_range, batch_size, output: as in
            :func:`fgsm`.
        step_size: each step's size in input units (default ``2.5 * epsilon / steps``, Madry
            et al.).
        steps: iterations (>= 1), run in one compiled loop per chunk.
        random_start: start from a seeded uniform point of the ball instead of the image.
        seed: the random start's seed (each image gets its own noise, whatever the chunking).

    Returns:
        float32 adversarial images, the shape of ``inputs``; ``|x_adv - x| <= epsilon``.

    Raises:
        ValueError: as :func:`fgsm`, and for ``steps < 1`` or ``step_size <= 0``.

    Reference: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
    ICLR 2018.

    Example:
        >>> adv = kerasviz.pgd(model, images, epsilon=4 / 255, steps=20)
    """
    steps = positive_int(steps, "steps")
    seed = integer(seed, "seed")
    batch, probe, target, (lo, hi), eps, sign = _setup(
        model, inputs, targets, targeted, value_range, epsilon, output
    )
    step = 2.5 * eps / steps if step_size is None else step_size
    step = number(step, "step_size", low=0, open_low=True)
    x = batch.arrays[0]
    noise = np.zeros_like(x)
    if boolean(random_start, "random_start"):
        noise = np.random.default_rng(seed).uniform(-eps, eps, x.shape).astype(np.float32)
    target = fix_predictions(probe, batch, target, batch_size)
    settings = tf.constant([eps, step, sign, lo, hi], tf.float32)
    fn = probe.step(_pgd, target.rule)
    constants = [settings, tf.constant(steps, tf.int32)]
    return _run(fn, batch, target, batch_size, noise, constants=constants)
