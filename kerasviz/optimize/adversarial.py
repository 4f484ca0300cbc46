"""Adversarial images: FGSM and PGD on the cross-entropy of the model's logits.

Both take the gradient of the softmax cross-entropy between the logits (a final softmax or
sigmoid is bypassed) and a label: the predicted class (untargeted, the default: the loss is
increased) or ``targets`` (``targeted=True``: the loss of the target class is decreased). A
single-logit (sigmoid) model is treated as two classes with logits ``(0, z)``. ``epsilon`` and
``step_size`` are in the model's input units; results are clipped to ``value_range``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._inputs import as_batch, chunk_slices
from kerasviz._probe import get_probe
from kerasviz._targets import ScoreRule, Targets, resolve_targets


def _loss_gradient(probe, rule: ScoreRule, x: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """d(cross-entropy of ``labels``) / dx, with the library's one probability rule."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, logits = probe([x])
        total = tf.reduce_sum(rule.nll(logits, labels))
    return tape.gradient(total, x)


def _fgsm(probe, rule: ScoreRule, x, indices, settings):
    eps, sign, lo, hi = (settings[:, i, None, None, None] for i in range(4))
    _, logits = probe([x])
    labels = rule.choose(logits, indices)
    grad = _loss_gradient(probe, rule, x, labels)
    return tf.clip_by_value(x + sign * eps * tf.sign(grad), lo, hi)


def _pgd(probe, rule: ScoreRule, x, indices, noise, settings, steps):
    eps, step_size, sign, lo, hi = (settings[:, i, None, None, None] for i in range(5))
    _, logits = probe([x])
    labels = rule.choose(logits, indices)

    def project(candidate):
        return tf.clip_by_value(tf.clip_by_value(candidate, x - eps, x + eps), lo, hi)

    def body(i, adv):
        grad = _loss_gradient(probe, rule, adv, labels)
        return i + 1, project(adv + sign * step_size * tf.sign(grad))

    _, adv = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), project(x + noise)))
    return adv


def _setup(model, images, targets, targeted, value_range, epsilon):
    batch = as_batch(model, images, "images")
    if len(batch.arrays) != 1 or batch.arrays[0].ndim != 4:
        raise ValueError(
            "Expected `model` to take one image input (batch, h, w, c). Received: "
            f"{len(batch.arrays)} input(s)."
        )
    x = batch.arrays[0]
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        lo, hi = np.nan, np.nan
    if not lo < hi:
        raise ValueError(
            f"Expected `value_range` to be (low, high) with low < high. Received: {value_range!r}."
        )
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon >= 0:
        raise ValueError(f"Expected `epsilon` to be a number >= 0. Received: {epsilon!r}.")
    probe = get_probe(model, (), logits=True)
    if targeted and targets is None:
        raise ValueError(
            "Expected `targets` (the classes to reach) when targeted=True. Received: None."
        )
    if callable(targets):
        raise ValueError("Expected `targets` to be class indices or None. Received: a callable.")
    target = resolve_targets(targets, batch.n, probe.logits_size(batch.arrays), probe.sigmoid)
    return batch, x, probe, target, (lo, hi)


def fgsm(
    model: keras.Model,
    images: Any,
    targets: Targets = None,
    *,
    epsilon: float,
    targeted: bool = False,
    value_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int | None = None,
) -> np.ndarray:
    """Fast gradient sign method: ``x + epsilon * sign(grad of the cross-entropy)``.

    Args:
        model: a classifier with one image input.
        images: ``(n, h, w, c)`` or one image, in ``value_range``.
        targets: untargeted: the labels whose loss is increased (None: the predicted class);
            targeted: the classes to reach (required).
        epsilon: the L-inf size of the perturbation, in input units.
        targeted: step *down* the target class's loss instead of up the label's.
        value_range: results are clipped to it.
        batch_size: rows per forward/backward pass.

    Returns:
        Adversarial images, same shape as ``images``; ``|x_adv - x| <= epsilon`` everywhere.

    Reference: Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015.

    Example:
        >>> adv = kerasviz.fgsm(model, images, epsilon=2 / 255)
    """
    batch, x, probe, target, (lo, hi) = _setup(
        model, images, targets, targeted, value_range, epsilon
    )
    settings = np.tile(
        np.asarray([[epsilon, -1.0 if targeted else 1.0, lo, hi]], np.float32), (batch.n, 1)
    )
    fn = probe.step(_fgsm, target.rule)
    indices = target.indices
    results = [
        fn(tf.constant(x[rows]), tf.constant(indices[rows]), tf.constant(settings[rows]))
        for rows in chunk_slices(batch.n, batch_size)
    ]
    return batch.squeeze(tf.concat(results, axis=0).numpy())


def pgd(
    model: keras.Model,
    images: Any,
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
) -> np.ndarray:
    """Projected gradient descent: iterated sign steps, projected on the L-inf epsilon ball.

    Args:
        model, images, targets, epsilon, targeted, value_range, batch_size: as in :func:`fgsm`.
        step_size: each step's size (default ``2.5 * epsilon / steps``, Madry et al.).
        steps: iterations (>= 1), run in one compiled loop per chunk.
        random_start: start from a seeded uniform point of the ball instead of the image.
        seed: the random start's seed (each image gets its own noise, whatever the chunking).

    Returns:
        Adversarial images, same shape as ``images``; ``|x_adv - x| <= epsilon`` everywhere.

    Reference: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
    ICLR 2018.

    Example:
        >>> adv = kerasviz.pgd(model, images, epsilon=4 / 255, steps=20)
    """
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"Expected `steps` to be an int >= 1. Received: steps={steps!r}.")
    batch, x, probe, target, (lo, hi) = _setup(
        model, images, targets, targeted, value_range, epsilon
    )
    if step_size is None:
        step_size = 2.5 * epsilon / steps
    if isinstance(step_size, bool) or not isinstance(step_size, int | float) or not step_size > 0:
        raise ValueError(f"Expected `step_size` to be a positive number. Received: {step_size!r}.")
    noise = np.zeros_like(x)
    if random_start:
        noise = np.random.default_rng(seed).uniform(-epsilon, epsilon, x.shape).astype(np.float32)
    settings = np.tile(
        np.asarray([[epsilon, step_size, -1.0 if targeted else 1.0, lo, hi]], np.float32),
        (batch.n, 1),
    )
    fn = probe.step(_pgd, target.rule)
    indices = target.indices
    steps_t = tf.constant(int(steps), tf.int32)
    results = [
        fn(
            tf.constant(x[rows]),
            tf.constant(indices[rows]),
            tf.constant(noise[rows]),
            tf.constant(settings[rows]),
            steps_t,
        )
        for rows in chunk_slices(batch.n, batch_size)
    ]
    return batch.squeeze(tf.concat(results, axis=0).numpy())
