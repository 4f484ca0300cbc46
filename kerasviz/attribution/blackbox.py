"""Black-box explanations: LIME, KernelSHAP and RISE. They need only ``model(x)``.

All three perturb each image many times and read the target's score on every perturbed copy;
none takes a gradient, so they work on any model, subclassed ones included, and when
gradients mislead. They are only as fast as their batching (FIELD.md), so the perturbations
are never built or scored one at a time:

- a small **bank** of perturbations is drawn on the host once per call: one row of superpixel
  on/off bits per LIME or KernelSHAP sample, one coarse binary grid and shift per RISE mask;
- one compiled step per chunk of ``batch_size`` rows builds the perturbed images on the device
  from the images, the baselines, the superpixel labels and the bank rows of its row range,
  and scores them in one forward pass (:func:`~kerasviz._engine.run_rows`,
  :func:`~kerasviz._engine.run_expanded`);
- the scores come back to the host once, where LIME's weighted ridge and KernelSHAP's
  constrained weighted least squares are solved per image (a few superpixels: tiny systems).

**Removed pixels.** A superpixel or mask cell that is switched off takes the value of the
``baseline`` image there: ``x * m + baseline * (1 - m)``. LIME and KernelSHAP default to each
superpixel's own mean colour (the ``lime`` package's default, ``hide_color=None``); RISE
defaults to 0, the paper's ``x * M``. A number or an image (any shape broadcastable to the
images ``(n, H, W, C)``) is accepted too.

**Scores.** By default the target's probability, as the three papers and the ``lime`` and
``shap`` packages explain a classifier's output (the one rule of :mod:`kerasviz._targets`:
softmax over the logits, ``sigmoid`` for a one-unit or sigmoid head);
``probabilities=False`` explains the logit. A callable target's own value is used as is. A
subclassed model's output is taken as its logits, as everywhere in kerasviz: pass
``probabilities=False`` when it outputs probabilities already.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import boolean, integer, number, positive_int
from kerasviz._engine import (
    expanded_rows,
    fix_predictions,
    rows_per_pass,
    run_expanded,
    run_rows,
    setup,
)
from kerasviz._inputs import Batch
from kerasviz._probe import Probe
from kerasviz._targets import ScoreRule, Targets

Segmenter = Callable[[np.ndarray], np.ndarray]

#: Grid cells per image side of RISE's masks when ``cell`` is None (Petsiuk et al.: s = 7).
RISE_GRID = 7


@dataclass(frozen=True, eq=False)
class SuperpixelAttribution:
    """The result of :func:`lime` and :func:`kernel_shap`: one weight per superpixel.

    For a single image passed without a batch axis, every field loses its batch axis too.

    Attributes:
        maps: float32 ``(n, H, W)``: every pixel carries its superpixel's weight.
        weights: float32 ``(n, S)``: one weight per superpixel, ``S`` the most superpixels of
            any image; zeros beyond an image's own ``num_segments``.
        segments: int32 ``(n, H, W)``: superpixel labels ``0 .. num_segments - 1``
            (``maps[i] == weights[i][segments[i]]``).
        num_segments: int32 ``(n,)``: superpixels per image.
        intercept: float32 ``(n,)``: LIME's fitted intercept; for KernelSHAP ``f(baseline)``,
            the score with every superpixel removed (``phi_0``).
        score: float32 ``(n,)``: ``f(x)``, the target's score on the unperturbed image.
    """

    maps: np.ndarray
    weights: np.ndarray
    segments: np.ndarray
    num_segments: np.ndarray
    intercept: np.ndarray
    score: np.ndarray


# ---------------------------------------------------------------------------------------------
# Inputs, superpixels and baselines


def _images(model: keras.Model, inputs: Any, targets: Targets, output: Any):
    """Checked images ``(n, H, W, C)`` of a one-input model, the plain probe and the target."""
    batch, probe, target = setup(model, inputs, targets, output=output)
    if len(batch.arrays) != 1 or batch.arrays[0].ndim != 4:
        raise ValueError(
            "Expected a model with one image input (n, H, W, C) for a black-box explanation. "
            f"Received: inputs of shapes {[a.shape for a in batch.arrays]}."
        )
    return batch, probe, target


def _unit_range(image: np.ndarray) -> np.ndarray:
    """The image min-max scaled to [0, 1]: SLIC's colour conversion expects that range."""
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def _slic(count: int) -> Segmenter:
    try:
        from skimage.segmentation import slic
    except ImportError:  # pragma: no cover - the extra is installed with the tests
        raise ValueError(
            f"Expected scikit-image for `segments={count}` (SLIC superpixels). Received: it is "
            "not installed. Install it with `pip install kerasviz[blackbox]`, or pass "
            "`segments` as a label array or a function of an image."
        ) from None

    def segment(image: np.ndarray) -> np.ndarray:
        image = _unit_range(image)
        channels = image.shape[-1]
        if channels == 1:
            return slic(image[..., 0], n_segments=count, channel_axis=None, start_label=0)
        return slic(
            image,
            n_segments=count,
            channel_axis=-1,
            convert2lab=channels == 3,
            start_label=0,
        )

    return segment


def superpixels(images: np.ndarray, segments: Any) -> tuple[np.ndarray, np.ndarray]:
    """Superpixel labels of images ``(n, H, W, C)``, renumbered ``0 .. k - 1`` per image.

    Args:
        images: float32 ``(n, H, W, C)``.
        segments: an int >= 2, the number of SLIC superpixels wanted (scikit-image's
            ``slic`` on the image min-max scaled to [0, 1], in Lab for RGB); a function
            ``image (H, W, C) -> labels (H, W)`` (for example quickshift, ``lambda im:
            skimage.segmentation.quickshift(im, kernel_size=4, max_dist=200, ratio=0.2)``);
            or integer labels ``(H, W)`` shared by every image or ``(n, H, W)``.

    Returns:
        ``(labels, counts)``: int32 ``(n, H, W)`` and int32 ``(n,)``.

    Raises:
        ValueError: for another kind of ``segments``, labels of the wrong shape, or a
            segmentation with one segment (nothing to compare).

    Reference: Achanta et al., "SLIC Superpixels Compared to State-of-the-Art Superpixel
    Methods" (2012).
    """
    n, height, width = images.shape[:3]
    if isinstance(segments, int | np.integer) and not isinstance(segments, bool):
        segments = _slic(integer(segments, "segments", minimum=2))
    if callable(segments):
        raw = [np.asarray(segments(image)) for image in images]
        for r in raw:
            if r.shape != (height, width):
                raise ValueError(
                    f"Expected the `segments` function to return labels of shape "
                    f"{(height, width)} per image. Received: shape {r.shape}."
                )
    else:
        array = np.asarray(segments)
        if array.dtype == object or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                "Expected `segments` to be an int (SLIC superpixels), a function of an image, or "
                f"integer labels (H, W) or (n, H, W). Received: {segments!r}."
            )
        if array.shape == (height, width):
            array = np.broadcast_to(array, (n, height, width))
        if array.shape != (n, height, width):
            raise ValueError(
                f"Expected `segments` labels of shape {(height, width)} or {(n, height, width)}. "
                f"Received: shape {array.shape}."
            )
        raw = list(array)
    labels = np.empty((n, height, width), np.int32)
    counts = np.empty((n,), np.int32)
    for i, r in enumerate(raw):
        unique, inverse = np.unique(r, return_inverse=True)
        labels[i] = inverse.reshape(height, width)
        counts[i] = len(unique)
    if counts.min() < 2:
        i = int(np.argmin(counts))
        raise ValueError(
            "Expected a segmentation with at least two segments per image, to compare switching "
            f"them on and off. Received: a segmentation with one segment for image {i}. Pass "
            "more `segments`, or labels that split the image."
        )
    return labels, counts


def _segment_means(images: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each pixel replaced by its superpixel's mean colour ``(n, H, W, C)``."""
    out = np.empty_like(images)
    channels = images.shape[-1]
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        flat = label.reshape(-1)
        sizes = np.bincount(flat, minlength=counts[i])
        means = np.stack(
            [
                np.bincount(flat, image[..., c].reshape(-1), minlength=counts[i]) / sizes
                for c in range(channels)
            ],
            axis=-1,
        )
        out[i] = means[label]
    return out


def _baseline(baseline: Any, images: np.ndarray) -> np.ndarray:
    """A number or an array broadcast to the images' shape, float32."""
    if isinstance(baseline, int | float | np.integer | np.floating) and not isinstance(
        baseline, bool
    ):
        return np.full_like(images, number(baseline, "baseline"))
    array = np.asarray(baseline) if not isinstance(baseline, str | bytes) else None
    if array is None or array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"Expected `baseline` to be a number or an image broadcastable to the images "
            f"{images.shape}. Received: {baseline!r}."
        )
    try:
        out = np.broadcast_to(array.astype(np.float32), images.shape).copy()
    except ValueError:
        raise ValueError(
            f"Expected `baseline` to be a number or an image broadcastable to the images "
            f"{images.shape}. Received: an array of shape {array.shape}."
        ) from None
    if not np.all(np.isfinite(out)):
        raise ValueError("Expected `baseline` to be finite. Received: values with NaN or Inf.")
    return out


def _seed(seed: Any) -> int:
    """The checked seed; None draws one, so that every image of the call shares it."""
    if seed is None:
        return int(np.random.default_rng().integers(2**62))
    return integer(seed, "seed")


def _finish(batch: Batch, **fields: np.ndarray) -> SuperpixelAttribution:
    return SuperpixelAttribution(**{k: batch.squeeze(v) for k, v in fields.items()})


# ---------------------------------------------------------------------------------------------
# Scoring superpixel coalitions on the device


def _coalitions(
    probe: Probe,
    rule: ScoreRule,
    probabilities: bool,
    per_image: int,
    images,
    baselines,
    labels,
    bank,
    indices,
    start,
    stop,
):
    rows = tf.range(start, stop)
    which = rows // per_image
    on = tf.cast(tf.gather(bank, rows), tf.float32)  # (rows, S): superpixels kept
    mask = tf.gather(on, tf.gather(labels, which), batch_dims=1)[..., None]  # (rows, H, W, 1)
    x, b = tf.gather(images, which), tf.gather(baselines, which)
    _, logits = probe([b + (x - b) * mask])
    chosen = tf.gather(indices, which)
    return rule.probabilities(logits, chosen) if probabilities else rule.scores(logits, chosen)


def _score_bank(
    probe: Probe,
    rule: ScoreRule,
    probabilities: bool,
    images: np.ndarray,
    baselines: np.ndarray,
    labels: np.ndarray,
    bank: np.ndarray,
    indices: np.ndarray,
    batch_size: int | None,
) -> np.ndarray:
    """Scores ``(n, rows)`` of every bank row ``(n, rows, S)`` of on/off superpixel bits."""
    n, per_image = bank.shape[:2]
    total = n * per_image
    fn = probe.step(_coalitions, rule, probabilities, per_image)
    scores = run_rows(
        fn,
        total,
        rows_per_pass(batch_size, n, total),
        tf.constant(images),
        tf.constant(baselines),
        tf.constant(labels),
        tf.constant(bank.reshape(total, -1)),
        tf.constant(indices),
    )
    return scores.numpy().astype(np.float64).reshape(n, per_image)


def _prepare(model, inputs, targets, segments, baseline, output, batch_size):
    batch, probe, target = _images(model, inputs, targets, output)
    images = batch.arrays[0]
    labels, counts = superpixels(images, segments)
    if baseline is None:
        baselines = _segment_means(images, labels, counts)
    else:
        baselines = _baseline(baseline, images)
    target = fix_predictions(probe, batch, target, batch_size)
    return batch, probe, target, images, labels, counts, baselines


# ---------------------------------------------------------------------------------------------
# LIME


def _weighted_ridge(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float
) -> tuple[np.ndarray, float]:
    """Minimizes ``sum w (y - x beta - b)^2 + ridge |beta|^2``: ``(beta, b)``, in closed form.

    The intercept is not penalized: centring on the weighted means removes it (as
    scikit-learn's ``Ridge(alpha=ridge).fit(x, y, sample_weight=w)`` does).
    """
    total = w.sum()
    x_mean, y_mean = w @ x / total, w @ y / total
    xc, yc = x - x_mean, y - y_mean
    gram = (xc * w[:, None]).T @ xc + ridge * np.eye(x.shape[1])
    beta = np.linalg.lstsq(gram, (xc * w[:, None]).T @ yc, rcond=None)[0]
    return beta, float(y_mean - x_mean @ beta)


def lime(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    segments: int | Segmenter | np.ndarray = 50,
    samples: int = 1000,
    kernel_width: float = 0.25,
    ridge: float = 1.0,
    baseline: Any = None,
    probabilities: bool = True,
    seed: int | None = None,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> SuperpixelAttribution:
    """LIME: a weighted linear model of the score on which superpixels are kept.

    Each image is cut into superpixels. Sample 0 keeps all of them; every other sample keeps
    each superpixel with probability 1/2 (the ``lime`` package's image sampler). A sample
    ``z`` is weighted by ``sqrt(exp(-d(z)^2 / kernel_width^2))``, with ``d`` the cosine
    distance between ``z`` and the all-ones vector (the ``lime`` image kernel), and the
    scores are fit by ridge regression with an unpenalized intercept (``Ridge(alpha=ridge)``,
    solved in closed form). Superpixels switched off take the ``baseline``.

    Args:
        model: any Keras model with one image input, subclassed ones included.
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)``.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (the
            predicted class of the unperturbed image, held fixed for every sample).
        segments: an int (SLIC superpixels wanted, default 50), a function ``image -> labels
            (H, W)`` (quickshift, say) or integer labels ``(H, W)`` / ``(n, H, W)``; see
            :func:`superpixels`.
        samples: perturbed images per image (>= 1), the unperturbed one included.
        kernel_width: the width of the exponential kernel on the cosine distance (> 0).
        ridge: the L2 penalty of the fit (>= 0; 0 for plain weighted least squares).
        baseline: the value of removed pixels: None for each superpixel's mean colour, a
            number, or an image broadcastable to ``(n, H, W, C)``.
        probabilities: explain the target's probability (default) or, if False, its logit.
        seed: seed of the samples; None draws fresh ones. An image's result depends neither
            on ``batch_size`` nor on the other images.
        batch_size: rows (perturbed images) per forward pass; None: ``max(n, 32)``.
        output: which model output to explain, for models with several.

    Returns:
        :class:`SuperpixelAttribution`: ``maps (n, H, W)``, ``weights (n, S)``, the
        ``segments``, the fit's ``intercept`` and the unperturbed ``score``.

    Raises:
        ValueError: for ``samples < 1``, a segmentation with one segment, a model without one
            image input, or a bad ``kernel_width``, ``ridge`` or ``baseline``.

    Reference: Ribeiro et al., "Why Should I Trust You?": Explaining the Predictions of Any
    Classifier" (2016).

    Example:
        >>> result = kerasviz.lime(model, images, segments=50, samples=1000, seed=0)
        >>> result.maps.shape  # (n, H, W)
    """
    samples = positive_int(samples, "samples")
    kernel_width = number(kernel_width, "kernel_width", low=0, open_low=True)
    ridge = number(ridge, "ridge", low=0)
    probabilities = boolean(probabilities, "probabilities")
    seed = _seed(seed)
    batch, probe, target, images, labels, counts, baselines = _prepare(
        model, inputs, targets, segments, baseline, output, batch_size
    )
    n, most = batch.n, int(counts.max())
    # Each image draws from its own generator seeded alike: its samples depend on the seed and
    # its own superpixel count only, not on the other images in the batch.
    bank = np.zeros((n, samples, most), bool)
    for i, k in enumerate(counts):
        rng = np.random.default_rng(seed)
        bank[i, :, :k] = rng.integers(0, 2, size=(samples, k), dtype=np.uint8)
    bank[:, 0] = True
    scores = _score_bank(
        probe,
        target.rule,
        probabilities,
        images,
        baselines,
        labels,
        bank,
        target.indices,
        batch_size,
    )
    weights = np.zeros((n, most), np.float64)
    intercept = np.zeros((n,), np.float64)
    for i in range(n):
        z = bank[i, :, : counts[i]].astype(np.float64)
        # Cosine distance to the all-ones vector: 1 - |z| / (sqrt(|z|) sqrt(k)).
        distance = 1.0 - np.sqrt(z.sum(axis=1) / counts[i])
        kernel = np.sqrt(np.exp(-(distance**2) / kernel_width**2))
        beta, b = _weighted_ridge(z, scores[i], kernel, ridge)
        weights[i, : counts[i]] = beta
        intercept[i] = b
    weights = weights.astype(np.float32)
    return _finish(
        batch,
        maps=np.take_along_axis(weights, labels.reshape(n, -1), axis=1).reshape(labels.shape),
        weights=weights,
        segments=labels,
        num_segments=counts,
        intercept=intercept.astype(np.float32),
        score=scores[:, 0].astype(np.float32),
    )


# ---------------------------------------------------------------------------------------------
# KernelSHAP


def shapley_kernel(m: int, size: np.ndarray) -> np.ndarray:
    """The Shapley kernel ``(m - 1) / (C(m, s) s (m - s))`` of coalitions of ``size`` players
    out of ``m`` (infinite for the empty and the full coalition: enforced as constraints)."""
    size = np.asarray(size)
    binom = np.array([math.comb(m, int(s)) for s in size.reshape(-1)], np.float64)
    return (m - 1) / (binom.reshape(size.shape) * size * (m - size))


def _subsets(m: int, size: int) -> np.ndarray:
    """Every coalition of ``size`` players out of ``m``, ``(C(m, size), m)`` bool."""
    rows = np.zeros((math.comb(m, size), m), bool)
    for r, members in enumerate(itertools.combinations(range(m), size)):
        rows[r, list(members)] = True
    return rows


def shapley_coalitions(
    m: int, budget: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions of ``m`` players and their regression weights for KernelSHAP.

    The strategy of Lundberg and Lee's KernelExplainer: the Shapley kernel's mass per
    coalition size is highest for the smallest and largest coalitions, so sizes ``s`` and
    ``m - s`` are taken in pairs from the outside in, and every coalition of a pair of sizes
    is enumerated (with its exact kernel weight) while the budget affords it. The rest of the
    budget samples the remaining sizes in proportion to their kernel mass, a uniform coalition
    of that size and its complement (paired sampling), sharing the remaining mass equally.
    With ``budget >= 2^m - 2`` every coalition is enumerated, and the result is exact.

    Args:
        m: players (superpixels), >= 2.
        budget: coalitions to return at most (the empty and the full one excluded).
        rng: the random generator for the sampled part.

    Returns:
        ``(coalitions, weights)``: bool ``(r, m)`` and float64 ``(r,)``, ``r <= budget``.
    """
    if m < 31 and 2**m - 2 <= budget:
        codes = np.arange(1, 2**m - 1, dtype=np.int64)
        z = ((codes[:, None] >> np.arange(m)) & 1).astype(bool)
        return z, shapley_kernel(m, z.sum(axis=1))
    sizes = np.arange(1, (m - 1 + 1) // 2 + 1)  # one size per pair (s, m - s)
    paired = sizes < m - sizes
    mass = (m - 1) / (sizes * (m - sizes)) * np.where(paired, 2.0, 1.0)
    mass /= mass.sum()
    left, remaining = mass.copy(), budget
    parts, weights, enumerated = [], [], 0
    for k, s in enumerate(sizes):
        count = math.comb(m, int(s)) * (2 if paired[k] else 1)
        if remaining * left[k] / count < 1.0 - 1e-8:
            break
        enumerated += 1
        remaining -= count
        if left[k] < 1.0:
            left /= 1.0 - left[k]
        z = _subsets(m, int(s))
        if paired[k]:
            z = np.concatenate([z, ~z])
        parts.append(z)
        weights.append(np.full(len(z), mass[k] / count))
    if enumerated < len(sizes) and remaining > 0:
        rest = mass[enumerated:] / mass[enumerated:].sum()
        draws = (remaining + 1) // 2
        size = sizes[enumerated:][rng.choice(len(rest), size=draws, p=rest)]
        keys = rng.random((draws, m))
        ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
        z = ranks < size[:, None]
        z = np.concatenate([z, ~z])[:remaining]
        parts.append(z)
        weights.append(np.full(len(z), mass[enumerated:].sum() / len(z)))
    return np.concatenate(parts), np.concatenate(weights)


def _constrained_fit(
    z: np.ndarray, y: np.ndarray, w: np.ndarray, empty: float, full: float
) -> np.ndarray:
    """Weighted least squares of ``y - empty ~ z phi`` subject to ``sum(phi) = full - empty``.

    The constraint is eliminated by substituting the last player's value, as in
    KernelExplainer, so the efficiency axiom holds exactly.
    """
    delta = full - empty
    last = z[:, -1]
    x = z[:, :-1] - last[:, None]
    t = y - empty - last * delta
    root = np.sqrt(w)
    rest = np.linalg.lstsq(x * root[:, None], t * root, rcond=None)[0]
    return np.append(rest, delta - rest.sum())


def kernel_shap(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    segments: int | Segmenter | np.ndarray = 50,
    samples: int = 2048,
    baseline: Any = None,
    probabilities: bool = True,
    seed: int | None = None,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> SuperpixelAttribution:
    """KernelSHAP: Shapley values of the superpixels, by weighted least squares.

    The players are superpixels; a coalition keeps its superpixels and replaces the others by
    the ``baseline``. Coalitions are enumerated and sampled as in Lundberg and Lee's
    KernelExplainer (:func:`shapley_coalitions`), weighted by the Shapley kernel, and fit with
    the efficiency constraint enforced exactly: the weights of an image sum to ``f(x) -
    f(baseline)``. With ``samples >= 2^k - 2`` (``k`` superpixels) every coalition is scored
    and the weights are the exact Shapley values. No regularization (shap's
    ``l1_reg=False``).

    Args:
        samples: coalitions scored per image (>= 1), besides the full and the empty one.
        Others: as in :func:`lime`.

    Returns:
        :class:`SuperpixelAttribution`; ``intercept`` is ``f(baseline)`` and ``score`` is
        ``f(x)``, so ``weights.sum(-1) == score - intercept`` (up to float32 rounding).

    Raises:
        ValueError: for ``samples < 1``, a segmentation with one segment, a model without one
            image input, or a bad ``baseline``.

    Reference: Lundberg and Lee, "A Unified Approach to Interpreting Model Predictions" (2017).

    Example:
        >>> result = kerasviz.kernel_shap(model, images, segments=30, samples=2048, seed=0)
        >>> result.weights.sum(-1)  # == result.score - result.intercept
    """
    samples = positive_int(samples, "samples")
    probabilities = boolean(probabilities, "probabilities")
    seed = _seed(seed)
    batch, probe, target, images, labels, counts, baselines = _prepare(
        model, inputs, targets, segments, baseline, output, batch_size
    )
    n, most = batch.n, int(counts.max())
    # One generator per image, seeded alike: an image's coalitions do not depend on the batch.
    drawn = [shapley_coalitions(int(k), samples, np.random.default_rng(seed)) for k in counts]
    rows = 2 + max(len(z) for z, _ in drawn)
    # Row 0 keeps every superpixel, row 1 none; unused rows (fewer coalitions) weigh 0.
    bank = np.zeros((n, rows, most), bool)
    kernel = np.zeros((n, rows), np.float64)
    for i, (z, w) in enumerate(drawn):
        bank[i, 0] = True
        bank[i, 2 : 2 + len(z), : counts[i]] = z
        kernel[i, 2 : 2 + len(z)] = w
    scores = _score_bank(
        probe,
        target.rule,
        probabilities,
        images,
        baselines,
        labels,
        bank,
        target.indices,
        batch_size,
    )
    weights = np.zeros((n, most), np.float64)
    for i, (z, _) in enumerate(drawn):
        used = slice(2, 2 + len(z))
        weights[i, : counts[i]] = _constrained_fit(
            z.astype(np.float64), scores[i, used], kernel[i, used], scores[i, 1], scores[i, 0]
        )
    weights = weights.astype(np.float32)
    return _finish(
        batch,
        maps=np.take_along_axis(weights, labels.reshape(n, -1), axis=1).reshape(labels.shape),
        weights=weights,
        segments=labels,
        num_segments=counts,
        intercept=scores[:, 1].astype(np.float32),
        score=scores[:, 0].astype(np.float32),
    )


# ---------------------------------------------------------------------------------------------
# RISE


def _cells(cell: Any, height: int, width: int) -> tuple[int, int]:
    if cell is None:
        return math.ceil(height / RISE_GRID), math.ceil(width / RISE_GRID)
    sizes = (cell, cell) if isinstance(cell, int | np.integer) else cell
    ok = (
        isinstance(sizes, tuple | list)
        and len(sizes) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in sizes)
        and 1 <= sizes[0] <= height
        and 1 <= sizes[1] <= width
    )
    if not ok:
        raise ValueError(
            f"Expected `cell` to be None, a positive int or (height, width) in pixels, at most "
            f"the image size {(height, width)}. Received: cell={cell!r}."
        )
    return int(sizes[0]), int(sizes[1])


def _interpolation(cells: int, cell: int) -> np.ndarray:
    """``((cells) * cell, cells)`` bilinear upsampling weights with half-pixel centres."""
    size = cells * cell
    centres = np.clip((np.arange(size) + 0.5) / cell - 0.5, 0, cells - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, cells - 1)
    frac = centres - low
    weights = np.zeros((size, cells), np.float32)
    np.add.at(weights, (np.arange(size), low), 1 - frac)
    np.add.at(weights, (np.arange(size), high), frac)
    return weights


def _rise(
    probe: Probe,
    rule: ScoreRule,
    probabilities: bool,
    masks: int,
    images,
    baselines,
    grids,
    shifts,
    rows_y,
    rows_x,
    indices,
    start,
    stop,
):
    rows, which, local, count = expanded_rows(start, stop, masks)
    k = rows % masks
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    grid = tf.cast(tf.gather(grids, k), tf.float32)  # (rows, gh, gw)
    shift = tf.gather(shifts, k)
    # The upsampled grid cropped at the mask's shift: rows and columns of the interpolation.
    wy = tf.gather(rows_y, shift[:, :1] + tf.range(height)[None])  # (rows, H, gh)
    wx = tf.gather(rows_x, shift[:, 1:] + tf.range(width)[None])  # (rows, W, gw)
    mask = tf.einsum("rha,rab,rwb->rhw", wy, grid, wx)
    x, b = tf.gather(images, which), tf.gather(baselines, which)
    _, logits = probe([b + (x - b) * mask[..., None]])
    chosen = tf.gather(indices, which)
    scores = rule.probabilities(logits, chosen) if probabilities else rule.scores(logits, chosen)
    return [tf.math.unsorted_segment_sum(scores[:, None, None] * mask, local, count)]


def rise(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    masks: int = 4000,
    cell: int | tuple[int, int] | None = None,
    p: float = 0.5,
    baseline: Any = 0.0,
    probabilities: bool = True,
    seed: int | None = None,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> np.ndarray:
    """RISE: the mean of random smooth masks, each weighted by the score of the masked image.

    Each mask is a coarse binary grid, each cell kept with probability ``p``, upsampled
    bilinearly to ``(gh + 1) * cell`` pixels and cropped to the image at a uniformly random
    shift below one cell, so masks are smooth and not aligned to a grid (Petsiuk et al.). The
    saliency of pixel ``u`` is ``sum_i f(x masked by M_i) M_i(u) / (masks * p)``. The same
    masks serve every image; the ``n * masks`` masked images are built on the device from the
    small grids and shifts and scored in chunks of ``batch_size`` rows.

    Args:
        model: any Keras model with one image input, subclassed ones included.
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)``.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (the
            predicted class of the unmasked image, held fixed for every mask).
        masks: random masks per image (>= 1).
        cell: the grid cell in pixels, an int or ``(height, width)``; None for a 7 x 7 grid
            (``ceil(H / 7)`` by ``ceil(W / 7)`` pixels), the paper's setting.
        p: the probability that a cell is kept, in (0, 1).
        baseline: the value where a mask is 0: a number (default 0, the paper's ``x * M``) or
            an image broadcastable to ``(n, H, W, C)``.
        probabilities: weight masks by the target's probability (default, as in the paper)
            or, if False, by its logit.
        seed: seed of the masks, shared by every image; None draws fresh ones. An image's
            result depends neither on ``batch_size`` nor on the other images.
        batch_size: rows (masked images) per forward pass; None: ``max(n, 32)``.
        output: which model output to explain, for models with several.

    Returns:
        float32 saliency maps ``(n, H, W)`` at input resolution (raw, not normalized).

    Raises:
        ValueError: for ``masks < 1``, ``p`` outside (0, 1), a bad ``cell`` or ``baseline``,
            or a model without one image input.

    Reference: Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box
    Models" (2018).

    Example:
        >>> heat = kerasviz.rise(model, images, masks=4000, seed=0, batch_size=256)
    """
    masks = positive_int(masks, "masks")
    p = number(p, "p", low=0, high=1, open_low=True, open_high=True)
    probabilities = boolean(probabilities, "probabilities")
    seed = _seed(seed)
    batch, probe, target = _images(model, inputs, targets, output)
    images = batch.arrays[0]
    n, height, width = images.shape[:3]
    cell_h, cell_w = _cells(cell, height, width)
    baselines = _baseline(baseline, images)
    target = fix_predictions(probe, batch, target, batch_size)
    # One more cell than needed per axis: the random shift slides the crop within it.
    grid_h, grid_w = math.ceil(height / cell_h) + 1, math.ceil(width / cell_w) + 1
    rng = np.random.default_rng(seed)
    grids = rng.random((masks, grid_h, grid_w)) < p
    shifts = np.stack(
        [rng.integers(0, cell_h, masks), rng.integers(0, cell_w, masks)], axis=1
    ).astype(np.int32)
    fn = probe.step(_rise, target.rule, probabilities, masks)
    total = n * masks
    (sums,) = run_expanded(
        fn,
        total,
        rows_per_pass(batch_size, n, total),
        n,
        masks,
        tf.constant(images),
        tf.constant(baselines),
        tf.constant(grids),
        tf.constant(shifts),
        tf.constant(_interpolation(grid_h, cell_h)),
        tf.constant(_interpolation(grid_w, cell_w)),
        tf.constant(target.indices),
    )
    return batch.squeeze((sums.numpy() / (masks * p)).astype(np.float32))
