"""Evaluation: is a map faithful, and does it point at the object?

- Localization against ground-truth masks: :func:`pointing_game`, :func:`energy_pointing_game`,
  :func:`iou_at`.
- Faithfulness to the model: :func:`deletion_auc` and :func:`insertion_auc` (Petsiuk et al.,
  2018), scored on all perturbed images in batched, compiled forward passes.
- The model-parameter randomization sanity check: :func:`randomization_check` (Adebayo et al.,
  2018), run on a copy of the model.
- Image similarity for reconstructions: :func:`ssim`, :func:`psnr`.

Maps are raw (unnormalized) arrays ``(n, h, w)``; a single map ``(h, w)`` gives a float back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import choice, integer, number, positive_int
from kerasviz._engine import fix_predictions, setup
from kerasviz._gaussian import gaussian_blur
from kerasviz._graph import is_graph_model, iter_layers
from kerasviz._inputs import chunk_slices
from kerasviz._probe import Probe
from kerasviz._targets import ScoreRule, Targets


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
    return number(max_val, "max_val", low=0, open_low=True)


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


# ---------------------------------------------------------------- maps and masks


def _as_maps(maps: Any, argname: str = "maps") -> tuple[np.ndarray, bool]:
    """``(n, h, w)`` float64 maps and whether one map ``(h, w)`` was given.

    A trailing channel axis of size 1 is dropped.
    """
    array = np.asarray(maps)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(
            f"Expected `{argname}` to be numeric. Received: an array of dtype {array.dtype}."
        )
    array = array.astype(np.float64)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(
            f"Expected `{argname}` to have shape (n, h, w) or (h, w) (one value per pixel). "
            f"Received: shape {np.shape(maps)}."
        )
    single = array.ndim == 2
    if single:
        array = array[None]
    if array.size == 0:
        raise ValueError(f"Expected `{argname}` to be non-empty. Received: shape {array.shape}.")
    if np.isnan(array).any():
        bad = np.flatnonzero(np.isnan(array).reshape(len(array), -1).any(axis=1))
        raise ValueError(
            f"Expected `{argname}` to contain no NaN. Received: NaN in the maps at indices "
            f"{bad.tolist()}."
        )
    return array, single


def _maps_and_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Checked maps ``(n, h, w)`` and boolean masks of the same shape (nonzero = inside)."""
    maps, single = _as_maps(maps)
    array = np.asarray(masks)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2 and single:
        array = array[None]
    if array.shape != maps.shape:
        raise ValueError(
            f"Expected `masks` to have the shape of `maps` {maps.shape[-3 + single :]} "
            f"(one mask per map). Received: shape {np.shape(masks)}."
        )
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise ValueError("Expected `masks` to contain no NaN. Received: NaN values.")
    array = array != 0
    empty = np.flatnonzero(~array.reshape(len(array), -1).any(axis=1))
    if empty.size:
        raise ValueError(
            "Expected every mask to contain at least one pixel. Received: empty masks at "
            f"indices {empty.tolist()}."
        )
    return maps, array, single


def _out(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def _dilate(masks: np.ndarray, tolerance: int) -> np.ndarray:
    """Masks grown by a disc of radius ``tolerance`` pixels (Euclidean distance)."""
    if tolerance == 0:
        return masks
    r = np.arange(-tolerance, tolerance + 1)
    disc = (r[:, None] ** 2 + r[None, :] ** 2) <= tolerance**2
    # Grey dilation adds the filter and takes the maximum: 0 inside the disc, -1 outside, so only
    # mask pixels within the disc can lift a result to 1.
    kernel = np.where(disc, 0.0, -1.0).astype(np.float32)[:, :, None]
    grown = tf.nn.dilation2d(
        tf.constant(masks[..., None], tf.float32),
        tf.constant(kernel),
        strides=[1, 1, 1, 1],
        padding="SAME",
        data_format="NHWC",
        dilations=[1, 1, 1, 1],
    )
    return grown.numpy()[..., 0] > 0.5


def pointing_game(maps: Any, masks: Any, *, tolerance: int = 0) -> np.ndarray | float:
    """Hit (1) when the map's maximum lies inside the mask, else miss (0) (Zhang et al., 2016).

    Ties: when several pixels share the maximum (a plateau, as piecewise-constant maps such as
    receptive-field back-projections have), the tie is broken uniformly at random and the
    expected hit is returned: the share of the tied maxima inside the mask. A unique maximum
    scores exactly 0 or 1, a plateau half inside scores 0.5, and a constant map scores the
    mask's share of the image (chance), never a free hit.

    Args:
        maps: maps ``(n, h, w)`` or one map ``(h, w)``; raw values, any scale.
        masks: ground truth of the same shape, boolean or 0/1 (nonzero = object).
        tolerance: a hit may lie up to this many pixels (Euclidean) outside the mask
            (the original paper uses 15 px at 224 px).

    Returns:
        ``(n,)`` floats in [0, 1] (0/1 for unique maxima); a float for one map. Its mean is
        the pointing accuracy.

    Example:
        >>> kerasviz.metrics.pointing_game(cams, masks, tolerance=4).mean()
        0.92
    """
    maps, masks, single = _maps_and_masks(maps, masks)
    tolerance = integer(tolerance, "tolerance", minimum=0)
    n = len(maps)
    flat = maps.reshape(n, -1)
    at_max = flat == flat.max(axis=1, keepdims=True)
    inside = _dilate(masks, int(tolerance)).reshape(n, -1)
    hits = (at_max & inside).sum(axis=1) / at_max.sum(axis=1)
    return _out(hits.astype(np.float64), single)


def energy_pointing_game(maps: Any, masks: Any) -> np.ndarray | float:
    """The share of the map's positive energy that falls inside the mask (Wang et al., 2020).

    ``sum(max(map, 0) * mask) / sum(max(map, 0))``; a map with no positive value scores 0.

    Args:
        maps: maps ``(n, h, w)`` or one map ``(h, w)``.
        masks: ground truth of the same shape, boolean or 0/1.

    Returns:
        ``(n,)`` values in [0, 1]; a float for one map.

    Example:
        >>> kerasviz.metrics.energy_pointing_game(cams, masks).mean()
        0.61
    """
    maps, masks, single = _maps_and_masks(maps, masks)
    positive = np.maximum(maps, 0.0).reshape(len(maps), -1)
    total = positive.sum(axis=1)
    inside = (positive * masks.reshape(len(maps), -1)).sum(axis=1)
    share = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return _out(share, single)


def iou_at(maps: Any, masks: Any, quantile: float) -> np.ndarray | float:
    """Intersection over union of the map's top pixels with the mask.

    The top pixels are those at or above the map's value at rank ``k``, where ``k =
    max(1, round((1 - quantile) * h * w))``; pixels tied with that value are all kept, so a
    binary map equal to the mask scores 1 whenever ``k`` is at most the mask's size.

    Args:
        maps: maps ``(n, h, w)`` or one map ``(h, w)``.
        masks: ground truth of the same shape, boolean or 0/1.
        quantile: in [0, 1); 0.9 keeps the top 10% of the pixels.

    Returns:
        ``(n,)`` IoU values in [0, 1]; a float for one map.

    Example:
        >>> kerasviz.metrics.iou_at(cams, masks, 0.9).mean()
        0.44
    """
    maps, masks, single = _maps_and_masks(maps, masks)
    quantile = number(quantile, "quantile", 0, 1, open_high=True)
    n = len(maps)
    flat = maps.reshape(n, -1)
    k = max(1, int(round((1.0 - quantile) * flat.shape[1])))
    threshold = -np.sort(-flat, axis=1)[:, k - 1 : k]
    top = flat >= threshold
    truth = masks.reshape(n, -1)
    union = (top | truth).sum(axis=1)
    iou = (top & truth).sum(axis=1) / union
    return _out(iou.astype(np.float64), single)


# ---------------------------------------------------------------- deletion / insertion


def _baselines(baseline: Any, images: np.ndarray) -> np.ndarray:
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(
                f'Expected `baseline` to be a number, an array or "blur". Received: {baseline!r}.'
            )
        return gaussian_blur(images, sigma=5.0, radius=5).numpy()
    array = np.asarray(baseline, dtype=np.float32)
    try:
        out = np.broadcast_to(array, images.shape)
    except ValueError:
        raise ValueError(
            f'Expected `baseline` to be a number, "blur" or an array broadcastable to the '
            f"inputs' shape {images.shape}. Received: shape {array.shape}."
        ) from None
    if not np.all(np.isfinite(out)):
        raise ValueError("Expected `baseline` to be finite. Received: values with NaN or Inf.")
    return np.ascontiguousarray(out)


def _perturbation_scores(
    probe: Probe, rule: ScoreRule, mode: str, images, baselines, ranks, image_index, counts, classes
):
    x = tf.gather(images, image_index)
    b = tf.gather(baselines, image_index)
    # The first `count` pixels in the map's order are removed (deletion) or present
    # (insertion); a pixel is all channels at one position.
    chosen = (tf.gather(ranks, image_index) < counts[:, None, None])[..., None]
    x = tf.where(chosen, b, x) if mode == "deletion" else tf.where(chosen, x, b)
    _, logits = probe([x])
    return rule.probabilities(logits, classes)


def _perturbation_curves(
    mode: str,
    model: keras.Model,
    inputs: Any,
    maps: Any,
    targets: Targets,
    steps: int,
    baseline: Any,
    batch_size: int | None,
    output: int | str | None,
):
    steps = positive_int(steps, "steps")
    batch, probe, target = setup(model, inputs, targets, output=output)
    if len(batch.arrays) != 1 or batch.arrays[0].ndim != 4:
        raise ValueError(
            f"Expected `model` to have one image input (batch, h, w, c) for {mode}. Received: "
            f"inputs of shapes {[a.shape for a in batch.arrays]}."
        )
    images = batch.arrays[0]
    n, h, w = images.shape[:3]
    maps, _ = _as_maps(maps)
    if maps.shape != (n, h, w):
        raise ValueError(
            f"Expected `maps` to have one value per input pixel, shape {(n, h, w)}. Received: "
            f"shape {maps.shape}."
        )
    baselines = _baselines(baseline, images)
    # The class is read once on the clean images and held for every perturbed copy.
    classes = fix_predictions(probe, batch, target, batch_size).indices
    # Rank 0 is the most important pixel; a stable sort keeps ties in raster order.
    order = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(h * w)[None, :], axis=1)
    ranks = ranks.reshape(n, h, w).astype(np.int32)
    counts = (np.arange(steps + 1) * (h * w)) // steps
    image_index = np.repeat(np.arange(n, dtype=np.int32), steps + 1)
    row_counts = np.tile(counts, n).astype(np.int32)
    row_classes = classes[image_index]
    fn = probe.step(_perturbation_scores, target.rule, mode)
    shared = [tf.constant(images), tf.constant(baselines), tf.constant(ranks)]
    scores = []
    for rows in chunk_slices(len(image_index), batch_size):
        scores.append(
            fn(
                *shared,
                tf.constant(image_index[rows]),
                tf.constant(row_counts[rows]),
                tf.constant(row_classes[rows]),
            )
        )
    curves = tf.concat(scores, axis=0).numpy().astype(np.float64).reshape(n, steps + 1)
    auc = np.trapezoid(curves, np.linspace(0.0, 1.0, steps + 1), axis=1)
    return auc, curves, batch


def deletion_auc(
    model: keras.Model,
    inputs: Any,
    maps: Any,
    targets: Targets = None,
    *,
    steps: int = 20,
    baseline: Any = 0.0,
    batch_size: int | None = None,
    output: int | str | None = None,
    return_curves: bool = False,
):
    """Area under the deletion curve: the class probability as the most important pixels go.

    Pixels are removed in the order of the map, most important first (ties in raster order),
    in ``steps`` equal chunks; a removed pixel takes the baseline's value in every channel. The curve is the
    target class's probability (softmax of the logits, or sigmoid for a sigmoid or one-unit
    head; a callable ``targets`` is scored as it returns) at the removed fractions
    ``0, 1/steps, ..., 1``, and the AUC is its trapezoid integral over [0, 1]. Lower is better.
    All ``n * (steps + 1)`` perturbed images are built on the device and scored in compiled
    passes of ``batch_size`` rows (Petsiuk et al., 2018, "RISE").

    Args:
        model: a Sequential or functional model with one image input.
        inputs: images ``(n, h, w, c)`` or one image ``(h, w, c)``.
        maps: importance maps ``(n, h, w)`` (or ``(h, w)``) at the input's resolution.
        targets: the class to score per image; None for the class predicted on the input.
        steps: number of equal chunks of pixels (``steps + 1`` points on the curve).
        baseline: the value of removed pixels: a number, an array broadcastable to the inputs,
            or ``"blur"`` (a Gaussian blur of the image, sigma 5 px).
        batch_size: perturbed images per forward pass; None for all at once.
        output: which model output to score, for models with several.
        return_curves: also return the curves ``(n, steps + 1)``.

    Returns:
        ``(n,)`` AUCs (a float for one image), or ``(aucs, curves)`` with ``return_curves``.

    Example:
        >>> cams = kerasviz.grad_cam(model, images)
        >>> kerasviz.metrics.deletion_auc(model, images, cams, batch_size=256).mean()
        0.21
    """
    auc, curves, batch = _perturbation_curves(
        "deletion", model, inputs, maps, targets, steps, baseline, batch_size, output
    )
    result = _out(auc, batch.single)
    return (result, batch.squeeze(curves)) if return_curves else result


def insertion_auc(
    model: keras.Model,
    inputs: Any,
    maps: Any,
    targets: Targets = None,
    *,
    steps: int = 20,
    baseline: Any = "blur",
    batch_size: int | None = None,
    output: int | str | None = None,
    return_curves: bool = False,
):
    """Area under the insertion curve: the class probability as the most important pixels return.

    Starts from the baseline (by default a blurred copy of the image, as in RISE) and puts the
    image's pixels back in the order of the map, most important first, in ``steps`` equal
    chunks. Higher is better. Everything else is as in :func:`deletion_auc` (Petsiuk et al.,
    2018).

    Returns:
        ``(n,)`` AUCs (a float for one image), or ``(aucs, curves)`` with ``return_curves``.

    Example:
        >>> kerasviz.metrics.insertion_auc(model, images, cams, batch_size=256).mean()
        0.67
    """
    auc, curves, batch = _perturbation_curves(
        "insertion", model, inputs, maps, targets, steps, baseline, batch_size, output
    )
    result = _out(auc, batch.single)
    return (result, batch.squeeze(curves)) if return_curves else result


# ---------------------------------------------------------------- randomization sanity check


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis of a 2D array, ties sharing their mean rank."""
    n, m = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    sorted_x = np.take_along_axis(x, order, axis=1)
    new_group = np.ones((n, m), dtype=bool)
    new_group[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    group = np.cumsum(new_group.ravel()) - 1  # groups never span rows: each row starts one
    ordinal = np.tile(np.arange(m, dtype=np.float64), n)
    mean_rank = np.bincount(group, weights=ordinal) / np.bincount(group)
    ranks = np.empty((n, m))
    np.put_along_axis(ranks, order, mean_rank[group].reshape(n, m), axis=1)
    return ranks


def spearman(a: Any, b: Any) -> np.ndarray:
    """Spearman rank correlation between ``a[i]`` and ``b[i]`` for each row (ties averaged).

    A constant map has no ranking; its correlation is defined as 0.

    Returns:
        ``(n,)`` correlations in [-1, 1].
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ra = _rankdata(a.reshape(len(a), -1))
    rb = _rankdata(b.reshape(len(b), -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    num = (ra * rb).sum(axis=1)
    return np.divide(num, denom, out=np.zeros_like(num), where=denom > 0)


@dataclass
class RandomizationResult:
    """The outcome of :func:`randomization_check`.

    Attributes:
        layers: paths of the randomized layers, in order (the logits layer first).
        correlations: ``(len(layers), n)`` Spearman correlations between each image's
            original map and its map after each step.
        order: ``"cascading"`` (steps accumulate) or ``"independent"`` (one layer at a time).
        threshold: the mean ``|rho|`` below which the maps count as changed.
    """

    layers: list[str]
    correlations: np.ndarray
    order: str
    threshold: float

    @property
    def mean_abs(self) -> np.ndarray:
        """``(len(layers),)`` mean absolute correlation per step."""
        return np.abs(self.correlations).mean(axis=1)

    @property
    def passed(self) -> bool:
        """True when the maps changed: the last step's mean ``|rho|`` is below ``threshold``.

        For the cascading order the last step has every layer randomized; for the independent
        order the minimum over the layers is used (some layer must matter).
        """
        final = self.mean_abs[-1] if self.order == "cascading" else self.mean_abs.min()
        return bool(final < self.threshold)


def _randomize(layer, rng: np.random.Generator) -> None:
    """New i.i.d. Gaussian values for each trainable variable, with its mean and std.

    Keeping each tensor's scale keeps activations in range; constant-initialized tensors
    (std 0, such as zero biases) keep their values, as a re-initialization would give.
    """
    for variable in layer.trainable_weights:
        value = keras.ops.convert_to_numpy(variable)
        std = value.std()
        if value.size > 1 and std > 0:
            fresh = rng.normal(value.mean(), std, value.shape).astype(value.dtype)
            variable.assign(fresh)


def randomization_check(
    method: Callable[..., Any],
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    order: str = "cascading",
    seed: int = 0,
    threshold: float = 0.5,
    **method_kwargs: Any,
) -> RandomizationResult:
    """The model-parameter randomization test (Adebayo et al., 2018), on a copy of the model.

    The model is cloned (``keras.models.clone_model`` plus ``set_weights``); the user's model is
    never touched. Layers with trainable weights (leaf layers, nested models included) are
    randomized from the top, logits layer first. With ``order="cascading"`` each step keeps
    the earlier randomizations; with ``"independent"`` each layer is randomized alone. After
    each step ``method(copy, inputs, targets, **method_kwargs)`` is recomputed and compared
    with the original map by Spearman rank correlation. ``targets=None`` is fixed to the
    original model's predicted classes, so every step explains the same class.

    A map that does not change when the weights it should explain are random (for example an
    edge detector of the input) explains nothing about the model, and fails.

    Args:
        method: ``method(model, inputs, targets, **method_kwargs) -> maps`` with a leading
            batch axis, e.g. ``kerasviz.grad_cam``.
        model: a Sequential or functional model.
        inputs: images ``(n, h, w, c)``.
        targets: classes to explain; None for the original model's predictions.
        order: ``"cascading"`` or ``"independent"``.
        seed: seeds the random weights (a numpy generator; Keras' global seed is not used).
        threshold: ``passed`` is True when the final mean ``|rho|`` falls below it.
        **method_kwargs: passed to ``method``, e.g. ``layer="conv2"``.

    Returns:
        A :class:`RandomizationResult` with ``layers``, ``correlations (steps, n)`` and
        ``passed``.

    Example:
        >>> result = kerasviz.metrics.randomization_check(kerasviz.grad_cam, model, images)
        >>> result.passed, result.mean_abs
        (True, array([0.12, 0.05, 0.03]))
    """
    choice(order, ("cascading", "independent"), "order")
    threshold = number(threshold, "threshold", low=0)
    if not callable(method):
        raise ValueError(f"Expected `method` to be callable. Received: {method!r}.")
    batch, probe, target = setup(model, inputs, targets)
    if targets is None:
        targets = fix_predictions(probe, batch, target, None).indices.astype(np.int64)
    inputs = batch.arrays if len(batch.arrays) > 1 else batch.arrays[0]
    original = np.asarray(method(model, inputs, targets, **method_kwargs), dtype=np.float64)
    if np.isnan(original).any():
        raise ValueError("Expected `method` to return maps without NaN on the original model.")

    copy = keras.models.clone_model(model)
    original_weights = model.get_weights()
    copy.set_weights(original_weights)
    layers = [
        (path, layer)
        for path, layer in iter_layers(copy)
        if not is_graph_model(layer) and layer.trainable_weights
    ][::-1]
    if not layers:
        raise ValueError("Expected `model` to have layers with trainable weights to randomize.")
    rng = np.random.default_rng(seed)
    correlations = []
    for _, layer in layers:
        if order == "independent":
            # Reset the same copy rather than cloning again: its compiled functions stay valid.
            copy.set_weights(original_weights)
        _randomize(layer, rng)
        maps = np.asarray(method(copy, inputs, targets, **method_kwargs), dtype=np.float64)
        if maps.shape != original.shape:
            raise ValueError(
                f"Expected `method` to return maps of one shape. Received: {original.shape} "
                f"then {maps.shape}."
            )
        correlations.append(spearman(original, np.nan_to_num(maps)))
    return RandomizationResult(
        layers=[path for path, _ in layers],
        correlations=np.stack(correlations),
        order=order,
        threshold=float(threshold),
    )


__all__ = [
    "RandomizationResult",
    "deletion_auc",
    "energy_pointing_game",
    "insertion_auc",
    "iou_at",
    "pointing_game",
    "psnr",
    "randomization_check",
    "spearman",
    "ssim",
]
