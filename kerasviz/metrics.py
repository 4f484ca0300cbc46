"""Evaluation: is a map faithful, and does it point at the object?

Each metric returns one value per image; its docstring gives the definition, the direction
(higher or lower is better) and the source.

- Localization against ground-truth masks: :func:`pointing_game` (strict, or the standard 15 px
  at 224 px), :func:`energy_pointing_game`, :func:`iou_at`. Higher is better.
- Faithfulness to the model, every perturbed image built on the device and scored in compiled
  batched passes with the engine's one probability rule: :func:`deletion_auc` and
  :func:`insertion_auc` (Petsiuk et al., 2018); :func:`road`, MoRF and LeRF with
  :func:`noisy_linear_imputation` (Rong et al., 2022); :func:`average_drop` and
  :func:`increase_in_confidence` (Chattopadhay et al., 2018); :func:`infidelity` (Yeh et al.,
  2019).
- Robustness: :func:`max_sensitivity` (Yeh et al., 2019), the method rerun on noisy copies.
- Complexity: :func:`sparseness` (Gini; Chalasani et al., 2020) and :func:`entropy` (Bhatt et
  al., 2020).
- The model-parameter randomization sanity check: :func:`randomization_check` (Adebayo et al.,
  2018), run on a copy of the model; its cascading curve over the layers.
- Image similarity for reconstructions: :func:`ssim`, :func:`psnr`.

Maps are raw (unnormalized) arrays ``(n, h, w)``; a single map ``(h, w)`` gives a float back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import boolean, choice, integer, number, positive_int
from kerasviz._engine import expanded_rows, fix_predictions, rows_per_pass, run_rows, setup
from kerasviz._gaussian import gaussian_blur
from kerasviz._graph import is_graph_model, iter_layers
from kerasviz._inputs import chunk_slices, run_chunked
from kerasviz._probe import Probe
from kerasviz._targets import ScoreRule, Targets


def _finite_pair(
    a: Any, b: Any, valid: Callable[[np.ndarray], bool], expected: str
) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as float64 arrays of one shape, each numeric, finite and ``valid``; the
    errors name the argument and say ``expected``."""
    arrays = []
    for name, x in (("a", a), ("b", b)):
        array = np.asarray(x)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(
                f"Expected `{name}` to be numeric. Received: an array of dtype {array.dtype}."
            )
        array = array.astype(np.float64)
        if not valid(array):
            raise ValueError(f"Expected `{name}` to be {expected}. Received: shape {array.shape}.")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"Expected `{name}` to be finite. Received: values with NaN or Inf.")
        arrays.append(array)
    a, b = arrays
    if a.shape != b.shape:
        raise ValueError(
            f"Expected `a` and `b` to have the same shape. Received: {a.shape} and {b.shape}."
        )
    return a, b


def _image_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Two float64 batches ``(n, h, w, c)`` of equal shape, and whether a single image was given.

    ``(h, w)`` is one grayscale image, ``(h, w, c)`` one image, ``(n, h, w, c)`` a batch.
    """
    a, b = _finite_pair(
        a, b, lambda x: x.ndim in (2, 3, 4), "an image (h, w), (h, w, c) or a batch (n, h, w, c)"
    )
    single = a.ndim < 4
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.shape[0] == 0 or a.size == 0:
        raise ValueError(f"Expected `a` and `b` to be non-empty images. Received: shape {a.shape}.")
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
        ``(n,)`` SSIM values in [-1, 1] (1 for identical images; higher is more similar); a
        float for one image.

    Raises:
        ValueError: images of different shapes, empty, or not finite; ``max_val <= 0``.

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
        ``(n,)`` PSNR values in dB (higher is more similar); a float for one image.

    Raises:
        ValueError: images of different shapes, empty, or not finite; ``max_val <= 0``.

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

    A trailing channel axis of size 1 is dropped. NaN and infinite values are refused: they
    would turn every score built on sums, ranks or maxima into NaN or a silent tie.
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
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(len(array), -1).all(axis=1))
        raise ValueError(
            f"Expected `{argname}` to contain no NaN or Inf (finite values). Received: "
            f"non-finite values in the maps at indices {bad.tolist()}."
        )
    return array, single


def _maps_and_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Checked maps ``(n, h, w)`` and boolean masks of the same shape (nonzero = inside)."""
    maps, single = _as_maps(maps)
    array = np.asarray(masks)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(
            f"Expected `masks` to be boolean or numeric (nonzero = object). Received: an array "
            f"of dtype {array.dtype}."
        )
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2 and single:
        array = array[None]
    if array.shape != maps.shape:
        raise ValueError(
            f"Expected `masks` to have the shape of `maps` {maps.shape[-3 + single :]} "
            f"(one mask per map). Received: shape {np.shape(masks)}."
        )
    if np.issubdtype(array.dtype, np.inexact) and np.isnan(array).any():
        raise ValueError("Expected `masks` to contain no NaN. Received: NaN values.")
    array = array != 0
    empty = np.flatnonzero(~array.reshape(len(array), -1).any(axis=1))
    if empty.size:
        raise ValueError(
            "Expected every mask of `masks` to contain at least one pixel. Received: empty "
            f"masks at indices {empty.tolist()}."
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


#: The pointing game's standard tolerance: 15 px at 224 px (Zhang et al., 2016; TorchRay).
STANDARD_TOLERANCE = (15, 224)


def standard_tolerance(size: tuple[int, int]) -> int:
    """The pointing game's standard tolerance in pixels for ``(h, w)`` maps: 15 px at 224 px,
    scaled by the mean of the height and width (9 px at 128 px).

    Example:
        >>> kerasviz.metrics.standard_tolerance((128, 128))
        9
    """
    px, at = STANDARD_TOLERANCE
    return int(round(px * (int(size[0]) + int(size[1])) / 2 / at))


def _tolerance(tolerance: Any, size: tuple[int, int]) -> int:
    if isinstance(tolerance, str):
        if tolerance != "standard":
            raise ValueError(
                'Expected `tolerance` to be a number of pixels (int >= 0) or "standard" (15 px '
                f"at 224 px, scaled to the maps). Received: tolerance={tolerance!r}."
            )
        return standard_tolerance(size)
    return integer(tolerance, "tolerance", minimum=0)


def pointing_game(maps: Any, masks: Any, *, tolerance: int | str = 0) -> np.ndarray | float:
    """Hit (1) when the map's maximum lies inside the mask, else miss (0) (Zhang et al., 2016).

    Ties: when several pixels share the maximum (a plateau, as piecewise-constant maps such as
    receptive-field back-projections have), the tie is broken uniformly at random and the
    expected hit is returned: the share of the tied maxima inside the mask. A unique maximum
    scores exactly 0 or 1, a plateau half inside scores 0.5, and a constant map scores the
    mask's share of the image (chance), never a free hit.

    Args:
        maps: maps ``(n, h, w)`` or one map ``(h, w)``; raw values, any scale.
        masks: ground truth of the same shape, boolean or 0/1 (nonzero = object).
        tolerance: a hit may lie up to this many pixels (Euclidean) outside the mask: an int
            (0, the default, is strict: only hits on the mask count), or ``"standard"``, the
            field's 15 px at 224 px scaled to the maps (:func:`standard_tolerance`: 9 px at
            128 px), as in the tables of Zhang et al. and TorchRay. Report it with the figure.

    Returns:
        ``(n,)`` floats in [0, 1] (0/1 for unique maxima); a float for one map. Its mean is
        the pointing accuracy; higher is better.

    Raises:
        ValueError: maps and masks of different shapes, an empty batch or mask, NaN, or a
            negative ``tolerance`` or a string other than ``"standard"``.

    Example:
        >>> kerasviz.metrics.pointing_game(cams, masks, tolerance="standard").mean()
        0.98
    """
    maps, masks, single = _maps_and_masks(maps, masks)
    tolerance = _tolerance(tolerance, maps.shape[1:3])
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
        ``(n,)`` values in [0, 1] (1: all of the positive energy on the object; higher is
        better); a float for one map.

    Raises:
        ValueError: maps and masks of different shapes, an empty batch or mask, NaN or Inf.

    Reference: Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks", CVPR Workshops (2020).

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
        ``(n,)`` IoU values in [0, 1]; a float for one map. Higher is better.

    Raises:
        ValueError: maps and masks of different shapes, an empty batch or mask, NaN or Inf,
            or a ``quantile`` outside [0, 1).

    Reference: the thresholded-map localization of Zhou et al., "Learning Deep Features for
    Discriminative Localization", CVPR (2016), scored by IoU as in Selvaraju et al.
    (Grad-CAM, 2017).

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


def _image_setup(model, inputs, maps, targets, output, what: str):
    """Checked ``(batch, probe, target, images (n, h, w, c), maps (n, h, w) float64)`` for a
    metric that perturbs the images of a model with one image input."""
    batch, probe, target = setup(model, inputs, targets, output=output)
    if len(batch.arrays) != 1 or batch.arrays[0].ndim != 4:
        raise ValueError(
            f"Expected `model` to have one image input (batch, h, w, c) for {what}. Received: "
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
    return batch, probe, target, images, maps


def _ranks(maps: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` int32 ranks of the pixels: 0 is the most important; a stable sort keeps
    ties in raster order."""
    n, h, w = maps.shape
    order = np.argsort(-maps.reshape(n, -1), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(h * w)[None, :], axis=1)
    return ranks.reshape(n, h, w).astype(np.int32)


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
    batch, probe, target, images, maps = _image_setup(model, inputs, maps, targets, output, mode)
    n, h, w = images.shape[:3]
    baselines = _baselines(baseline, images)
    # The class is read once on the clean images and held for every perturbed copy.
    classes = fix_predictions(probe, batch, target, batch_size).indices
    ranks = _ranks(maps)
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


# ---------------------------------------------------------------- ROAD: noisy linear imputation

#: Neighbour weights of the noisy linear imputation (Rong et al., 2022): 1/6 for the four
#: direct neighbours, 1/12 for the four diagonal ones.
_NEIGHBOURS = np.array(
    [[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], np.float32
)
#: ROAD's removed fractions by default: 10% to 90% in steps of 10%.
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_COARSEST = 8  # pixels: the multigrid's coarsest grid


def _stencil(z: tf.Tensor) -> tf.Tensor:
    """The weighted sum of the 8 neighbours of every pixel of ``(R, H, W, 1)`` (zeros outside):
    ``([1 2 1] x [1 2 1] - 4 delta) / 12``, separable, by shifted adds."""
    p = tf.pad(z, [[0, 0], [1, 1], [1, 1], [0, 0]])
    rows = p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]
    both = rows[:, :, :-2] + 2.0 * rows[:, :, 1:-1] + rows[:, :, 2:]
    return (both - 4.0 * z) / 12.0


def _operator(unknown, weight):
    """``z -> L_UU z``: each unknown pixel's weighted sum of neighbours subtracted from its
    value times the sum of its neighbours' weights (``weight``)."""
    return lambda z: unknown * (weight * z - _stencil(z * unknown))


def _v_cycle(r, unknowns, weights, level: int, sweeps: int = 2, omega: float = 0.8):
    """One multigrid V-cycle for ``L z = r`` (the preconditioner): weighted Jacobi sweeps,
    the residual summed onto a grid of half the size (a coarse pixel is unknown when one of
    its pixels is; the stencil rediscretized there) and the coarse correction copied back."""
    unknown, weight = unknowns[level], weights[level]
    apply = _operator(unknown, weight)
    z = omega * r / weight
    for _ in range(sweeps - 1):
        z += omega * (r - apply(z)) / weight
    if level + 1 < len(unknowns):
        coarse = 4.0 * tf.nn.avg_pool2d(r - apply(z), 2, 2, "SAME") * unknowns[level + 1]
        e = _v_cycle(coarse, unknowns, weights, level + 1, sweeps, omega)
        h, w = r.shape[1], r.shape[2]
        z += tf.repeat(tf.repeat(e, 2, axis=1), 2, axis=2)[:, :h, :w] * unknown
    for _ in range(sweeps):
        z += omega * (r - apply(z)) / weight
    return z


def _harmonic_fill(values, unknown, tolerance: float, max_iterations: int):
    """``(R, H, W, 1)`` values with the unknown pixels solved by multigrid-preconditioned
    conjugate gradients.

    Each unknown pixel equals the weighted mean of its neighbours inside the image:
    ``s_i x_i - sum_j w_ij x_j = 0`` with ``s_i = sum_j w_ij``. On the unknown pixels ``U``
    that is ``L_UU x_U = b`` with ``b_i = sum_{j known} w_ij x_j``, symmetric and positive
    definite when some pixel is known. Each row stops when its residual falls below
    ``tolerance`` times its right-hand side (Euclidean norms): about 10 to 20 iterations.
    """
    axes = [1, 2, 3]
    unknowns = [unknown]
    while min(unknowns[-1].shape[1], unknowns[-1].shape[2]) > _COARSEST:
        unknowns.append(tf.nn.max_pool2d(unknowns[-1], 2, 2, "SAME"))
    weights = [_stencil(tf.ones_like(u[:1])) for u in unknowns]
    known_values = values * (1.0 - unknown)
    apply = _operator(unknown, weights[0])
    b = unknown * _stencil(known_values)
    limit = tolerance * tf.sqrt(tf.reduce_sum(b * b, axes))

    def active(r):
        return tf.sqrt(tf.reduce_sum(r * r, axes)) > limit

    y = _v_cycle(b, unknowns, weights, 0)
    ry = tf.reduce_sum(b * y, axes)

    def body(i, z, r, p, ry):
        go = tf.cast(active(r), z.dtype)[:, None, None, None]
        ap = apply(p)
        alpha = tf.math.divide_no_nan(ry, tf.reduce_sum(p * ap, axes))[:, None, None, None]
        z += go * alpha * p
        r -= go * alpha * ap
        y = _v_cycle(r, unknowns, weights, 0)
        ry_next = tf.reduce_sum(r * y, axes)
        beta = tf.math.divide_no_nan(ry_next, ry)[:, None, None, None]
        return i + 1, z, r, y + beta * p, ry_next

    def cond(i, z, r, p, ry):
        return (i < max_iterations) & tf.reduce_any(active(r))

    start = [tf.constant(0), tf.zeros_like(values), b, y, ry]
    _, z, *_ = tf.while_loop(cond, body, start)
    return known_values + z * unknown


def _impute(images, removed, tolerance: float, max_iterations: int):
    """Linear imputation of the ``removed`` pixels ``(R, H, W)`` of images ``(R, H, W, C)``,
    every channel solved with the same system; float32, inside compiled code."""
    x = tf.cast(images, tf.float32)
    channels = x.shape[-1]
    h, w = x.shape[1], x.shape[2]
    flat = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, h, w, 1])  # channels as rows
    mask = tf.repeat(tf.cast(removed, tf.float32)[:, None], channels, axis=1)
    filled = _harmonic_fill(flat, tf.reshape(mask, [-1, h, w, 1]), tolerance, max_iterations)
    return tf.transpose(tf.reshape(filled, [-1, channels, h, w]), [0, 2, 3, 1])


def _imputation_body(tolerance, max_iterations, images, removed, noise):
    filled = _impute(images, removed, tolerance, max_iterations)
    return filled + noise * tf.cast(removed, tf.float32)[..., None]


_IMPUTE = tf.function(_imputation_body)  # traced per image shape: the grids are static


def noisy_linear_imputation(
    images: Any,
    removed: Any,
    *,
    noise: float = 0.01,
    seed: int = 0,
    tolerance: float = 1e-4,
    max_iterations: int = 200,
) -> np.ndarray:
    """Fills the removed pixels from their neighbours, plus a little noise (Rong et al., 2022).

    Each removed pixel becomes the weighted mean of its 8 neighbours inside the image (1/6 for
    direct, 1/12 for diagonal ones), removed neighbours included: one sparse linear system
    per image, solved for all channels at once by multigrid-preconditioned conjugate
    gradients in compiled TensorFlow. Gaussian noise of standard deviation ``noise`` is then
    added to the removed pixels, so the filled region carries no trace of the removed
    pixels' shape that the model could read (ROAD's debiasing). Kept pixels are unchanged.

    Args:
        images: ``(n, h, w, c)`` or one image ``(h, w, c)``.
        removed: ``(n, h, w)`` (or ``(h, w)``) booleans, True where a pixel is removed; every
            image must keep at least one pixel.
        noise: the noise's standard deviation, in the images' units (0 for none).
        seed: seeds the noise (``tf.random.stateless_normal``).
        tolerance: the solver stops when each residual falls below this share of its
            right-hand side (pixel errors below 1e-3 for images in [0, 1] at 1e-4).
        max_iterations: conjugate-gradient iterations, at most.

    Returns:
        float32 images of the input's shape.

    Raises:
        ValueError: shapes that do not match, an image with every pixel removed, or bad
            settings.

    Reference: Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient
    Evaluation Strategy for Attribution Methods", ICML (2022).

    Example:
        >>> filled = kerasviz.metrics.noisy_linear_imputation(images, maps > 0.5)
    """
    x = np.asarray(images, dtype=np.float32)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4 or x.size == 0:
        raise ValueError(
            f"Expected `images` shaped (n, h, w, c) or (h, w, c), non-empty. Received: shape "
            f"{np.shape(images)}."
        )
    mask = np.asarray(removed)
    if single and mask.ndim == 2:
        mask = mask[None]
    if mask.shape != x.shape[:3]:
        raise ValueError(
            f"Expected `removed` to have one value per pixel of `images`, shape {x.shape[:3]}. "
            f"Received: shape {np.shape(removed)}."
        )
    mask = mask.astype(bool)
    full = np.flatnonzero(mask.reshape(len(mask), -1).all(axis=1))
    if full.size:
        raise ValueError(
            "Expected every image to keep at least one pixel (the imputation fills removed "
            f"pixels from kept ones). Received: all pixels removed at indices {full.tolist()}."
        )
    noise = number(noise, "noise", low=0)
    tolerance = number(tolerance, "tolerance", low=0, open_low=True)
    max_iterations = positive_int(max_iterations, "max_iterations")
    seed = integer(seed, "seed")
    draws = noise * tf.random.stateless_normal(x.shape, seed=[seed, 0])
    out = _IMPUTE(float(tolerance), int(max_iterations), x, mask, draws).numpy()
    return out[0] if single else out


def _road_scores(
    probe: Probe,
    rule: ScoreRule,
    order: str,
    tolerance: float,
    max_iterations: int,
    size: tuple[int, int],
    images,
    ranks,
    noise,
    image_index,
    fraction_index,
    counts,
    classes,
):
    # the image size is part of the step's key, so the multigrid's grids are static
    x = tf.ensure_shape(tf.gather(images, image_index), [None, *size, None])
    r = tf.gather(ranks, image_index)
    k = counts[:, None, None]
    pixels = tf.shape(r)[1] * tf.shape(r)[2]
    removed = r < k if order == "morf" else r >= pixels - k
    filled = _impute(x, removed, tolerance, max_iterations)
    filled += tf.gather(noise, fraction_index) * tf.cast(removed, tf.float32)[..., None]
    _, logits = probe([tf.cast(filled, x.dtype)])
    return rule.probabilities(logits, classes)


def road(
    model: keras.Model,
    inputs: Any,
    maps: Any,
    targets: Targets = None,
    *,
    order: str = "morf",
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = 0.01,
    seed: int = 0,
    tolerance: float = 1e-4,
    batch_size: int | None = None,
    output: int | str | None = None,
    return_curves: bool = False,
):
    """ROAD: the class probability as pixels are removed and filled by noisy linear imputation.

    For each fraction ``f`` of ``fractions``, the ``round(f * h * w)`` pixels that the map
    ranks highest (``order="morf"``, most relevant first) or lowest (``"lerf"``, least
    relevant first) are removed (ties in raster order) and filled by
    :func:`noisy_linear_imputation` (seeded noise of std ``noise``, the same draw for every
    image at one fraction); the target class's probability (softmax of the logits, or sigmoid
    for a one-unit or sigmoid head; a callable ``targets`` as it returns) is read on each filled
    image. The score is the mean over the fractions. Unlike deletion with a constant baseline,
    the filled pixels do not draw the removed region's outline, which a model can otherwise
    read (Remove And Debias). MoRF: lower is better (the evidence the map names matters);
    LeRF: higher is better (what the map calls irrelevant is). All ``n * len(fractions)``
    imputations and forward passes run on the device in compiled chunks of ``batch_size``
    rows.

    Args:
        model: a model with one image input.
        inputs: images ``(n, h, w, c)`` or one image ``(h, w, c)``.
        maps: importance maps ``(n, h, w)`` (or ``(h, w)``) at the input's resolution.
        targets: the class per image; None for the class predicted on the clean images.
        order: ``"morf"`` or ``"lerf"``.
        fractions: removed fractions, each in [0, 1); ``round(f * h * w)`` must leave at
            least one pixel.
        noise: standard deviation of the imputation noise, in the images' units.
        seed: seeds the noise.
        tolerance: the imputation solver's relative residual (see
            :func:`noisy_linear_imputation`).
        batch_size: imputed images per compiled pass; None for ``max(n, 32)``.
        output: which model output to score, for models with several.
        return_curves: also return the curves ``(n, len(fractions))``.

    Returns:
        ``(n,)`` mean probabilities (a float for one image), or ``(scores, curves)``.

    Raises:
        ValueError: maps not of the images' shape ``(n, h, w)``, an empty batch, NaN or Inf in
            the maps, fractions outside [0, 1) or removing every pixel, or bad settings.

    Reference: Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods", ICML (2022).

    Example:
        >>> morf = kerasviz.metrics.road(model, images, cams, order="morf").mean()
        >>> lerf = kerasviz.metrics.road(model, images, cams, order="lerf").mean()
    """
    order = choice(order, ("morf", "lerf"), "order")
    noise = number(noise, "noise", low=0)
    tolerance = number(tolerance, "tolerance", low=0, open_low=True)
    seed = integer(seed, "seed")
    fractions = np.asarray(fractions, dtype=np.float64).ravel()
    if fractions.size == 0 or not np.all((fractions >= 0) & (fractions < 1)):
        raise ValueError(
            "Expected `fractions` to be a non-empty sequence of fractions in [0, 1). "
            f"Received: {np.asarray(fractions).tolist()}."
        )
    batch, probe, target, images, maps = _image_setup(model, inputs, maps, targets, output, "ROAD")
    n, h, w, c = images.shape
    counts = np.round(fractions * h * w).astype(np.int32)
    if counts.max() >= h * w:
        # with no pixel left the imputation has nothing to fill from (the image would go 0)
        raise ValueError(
            f"Expected `fractions` to keep at least one of the {h * w} pixels of the "
            f"{h}x{w} images (fractions below {1 - 0.5 / (h * w):.6g}). Received: "
            f"{fractions.tolist()}."
        )
    classes = fix_predictions(probe, batch, target, batch_size).indices
    ranks = _ranks(maps)
    f = len(fractions)
    noise_draws = noise * tf.random.stateless_normal((f, h, w, c), seed=[seed, 0])
    image_index = np.repeat(np.arange(n, dtype=np.int32), f)
    fraction_index = np.tile(np.arange(f, dtype=np.int32), n)
    fn = probe.step(_road_scores, target.rule, order, float(tolerance), 200, (h, w))
    shared = [tf.constant(images), tf.constant(ranks), noise_draws]
    rows = rows_per_pass(batch_size, n, n * f)
    scores = []
    for chunk in chunk_slices(n * f, rows):
        scores.append(
            fn(
                *shared,
                tf.constant(image_index[chunk]),
                tf.constant(fraction_index[chunk]),
                tf.constant(counts[fraction_index[chunk]]),
                tf.constant(classes[image_index[chunk]]),
            )
        )
    curves = tf.concat(scores, axis=0).numpy().astype(np.float64).reshape(n, f)
    result = _out(curves.mean(axis=1), batch.single)
    return (result, batch.squeeze(curves)) if return_curves else result


# ---------------------------------------------------------------- average drop / increase


def _masked_probabilities(probe: Probe, rule: ScoreRule, inputs, maps, classes):
    """The target's probability on the image and on the image times its min-max normalized
    map (a constant map is all zeros)."""
    (images,) = inputs
    low = tf.reduce_min(maps, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
    weights = tf.math.divide_no_nan(maps - low, high - low)
    _, clean = probe([images])
    _, masked = probe([images * tf.cast(weights, images.dtype)[..., None]])
    return rule.probabilities(clean, classes), rule.probabilities(masked, classes)


def _confidence(model, inputs, maps, targets, batch_size, output, what):
    batch, probe, target, images, maps = _image_setup(model, inputs, maps, targets, output, what)
    classes = fix_predictions(probe, batch, target, batch_size).indices
    fn = probe.step(_masked_probabilities, target.rule)
    clean, masked = run_chunked(fn, [images], batch_size, extra=[maps.astype(np.float32), classes])
    return clean.astype(np.float64), masked.astype(np.float64), batch.single


def average_drop(
    model: keras.Model,
    inputs: Any,
    maps: Any,
    targets: Targets = None,
    *,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> np.ndarray | float:
    """Drop in confidence when the image is seen through its map (Chattopadhay et al., 2018).

    ``Y`` is the target's probability on the image, ``O`` on the image multiplied pixel by
    pixel with the map min-max normalized to [0, 1] (a constant map gives a black image). The
    drop is ``max(0, Y - O) / Y`` per image (0 where ``Y <= 0``, which only a callable
    ``targets`` returning raw scores can give); its mean times 100 is the paper's "average
    drop %". Lower is better: the region the map keeps holds the evidence.

    Args:
        model: a model with one image input.
        inputs: images ``(n, h, w, c)`` or one image.
        maps: maps ``(n, h, w)`` at the input's resolution.
        targets: the class per image; None for the predicted class.
        batch_size: images per compiled pass (two forward passes each).
        output: which model output to score.

    Returns:
        ``(n,)`` drops >= 0, at most 1 for probabilities (with a callable ``targets``
        returning raw scores, ``O`` can fall below 0 and the drop exceed 1); a float for one
        image.

    Raises:
        ValueError: maps not of the images' shape ``(n, h, w)``, an empty batch, NaN or Inf.

    Reference: Chattopadhay et al., "Grad-CAM++: Generalized Gradient-Based Visual
    Explanations for Deep Convolutional Networks", WACV (2018), section 5.1.

    Example:
        >>> 100 * kerasviz.metrics.average_drop(model, images, cams).mean()
        31.2
    """
    clean, masked, single = _confidence(
        model, inputs, maps, targets, batch_size, output, "average drop"
    )
    drop = np.divide(
        np.maximum(clean - masked, 0.0), clean, out=np.zeros_like(clean), where=clean > 0
    )
    return _out(drop, single)


def increase_in_confidence(
    model: keras.Model,
    inputs: Any,
    maps: Any,
    targets: Targets = None,
    *,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> np.ndarray | float:
    """Whether the image seen through its map scores higher (Chattopadhay et al., 2018).

    1 where ``O > Y`` (see :func:`average_drop`), else 0; its mean times 100 is the paper's
    "% increase in confidence". Higher is better.

    Returns:
        ``(n,)`` zeros and ones; a float for one image.

    Reference: Chattopadhay et al., "Grad-CAM++" (2018), section 5.1.

    Example:
        >>> 100 * kerasviz.metrics.increase_in_confidence(model, images, cams).mean()
        18.0
    """
    clean, masked, single = _confidence(
        model, inputs, maps, targets, batch_size, output, "increase in confidence"
    )
    return _out((masked > clean).astype(np.float64), single)


# ---------------------------------------------------------------- infidelity


def _probabilities(probe: Probe, rule: ScoreRule, inputs, classes):
    _, logits = probe(inputs)
    return rule.probabilities(logits, classes)


def _infidelity_rows(
    probe: Probe,
    rule: ScoreRule,
    samples: int,
    multiply_by_inputs: bool,
    images,
    maps,
    draws,
    spreads,
    clean,
    classes,
    start,
    stop,
):
    rows, image, _, _ = expanded_rows(start, stop, samples)
    x = tf.gather(images, image)
    # one draw per pixel, the same on every channel (the map has one value per pixel)
    z = tf.gather(draws, rows % samples) * tf.gather(spreads, image)[:, None, None]
    dot = tf.reduce_sum(z * tf.gather(maps, image), axis=[1, 2])
    z = tf.cast(z, x.dtype)[..., None]
    # multiplied by the inputs, I = x * z and the map is dotted with I / x = z
    perturbation = x * z if multiply_by_inputs else z
    _, logits = probe([x - perturbation])
    delta = tf.gather(clean, image) - rule.probabilities(logits, tf.gather(classes, image))
    return tf.stack([dot, delta], axis=1)


def infidelity(
    model: keras.Model,
    inputs: Any,
    maps: Any,
    targets: Targets = None,
    *,
    samples: int = 32,
    noise: float = 0.1,
    normalize: bool = True,
    multiply_by_inputs: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> np.ndarray | float:
    """Infidelity: how badly the map, read as a linear model, predicts the output's changes.

    ``INFD = E_I[(beta * I . map - (f(x) - f(x - I)))^2]`` over random perturbations ``I``
    (Yeh et al., 2019): Gaussian per pixel (the same on every channel), standard deviation
    ``noise`` times the image's value range, ``samples`` draws shared by all images. ``f`` is
    the target's probability (the engine's one rule; a callable ``targets`` as it returns).
    With ``normalize`` the map's scale is fitted, ``beta = E[I.map * df] / E[(I.map)^2]``
    (Yeh et al.'s optimal scaling), so only its shape counts; otherwise ``beta = 1``. Lower is
    better; a map that equals the gradient of a linear ``f`` (summed over channels) scores 0.

    Maps that are attributions multiplied by the input (gradient x input, integrated
    gradients, LRP: they split ``f(x)`` among the pixels rather than give its slope) are read
    with ``multiply_by_inputs=True``, as Captum does: the perturbation is relative, ``I = x *
    z`` with ``z`` Gaussian of standard deviation ``noise`` per pixel, and the map is dotted
    with ``I / x = z``. Then ``sum_c w * x`` per pixel scores 0 for a linear ``f = w . x``.
    The ``n * samples`` perturbed images are built on the device and scored in compiled
    chunks.

    Args:
        model: a model with one image input.
        inputs: images ``(n, h, w, c)`` or one image.
        maps: maps ``(n, h, w)`` at the input's resolution.
        targets: the class per image; None for the class predicted on the clean images.
        samples: perturbations per image.
        noise: their standard deviation, as a share of each image's ``max - min`` (with
            ``multiply_by_inputs``, as a share of each pixel's value).
        normalize: fit the map's scale (True) or take it as is.
        multiply_by_inputs: the maps are attributions times the input (see above).
        seed: seeds the perturbations.
        batch_size: perturbed images per compiled pass; None for ``max(n, 32)``.
        output: which model output to score.

    Returns:
        ``(n,)`` infidelities >= 0; a float for one image.

    Raises:
        ValueError: maps not of the images' shape ``(n, h, w)``, an empty batch, NaN or Inf in
            the maps, or bad settings.

    Reference: Yeh, Hsieh, Suggala, Inouye and Ravikumar, "On the (In)fidelity and Sensitivity
    of Explanations", NeurIPS (2019).

    Example:
        >>> kerasviz.metrics.infidelity(model, images, cams, samples=64).mean()
    """
    samples = positive_int(samples, "samples")
    noise = number(noise, "noise", low=0, open_low=True)
    normalize = boolean(normalize, "normalize")
    multiply_by_inputs = boolean(multiply_by_inputs, "multiply_by_inputs")
    seed = integer(seed, "seed")
    batch, probe, target, images, maps = _image_setup(
        model, inputs, maps, targets, output, "infidelity"
    )
    n, h, w = maps.shape
    classes = fix_predictions(probe, batch, target, batch_size).indices
    clean = run_chunked(
        probe.step(_probabilities, target.rule), [images], batch_size, extra=[classes]
    )
    if multiply_by_inputs:
        spreads = np.full(n, noise)
    else:
        flat = images.reshape(n, -1)
        spreads = noise * (flat.max(axis=1) - flat.min(axis=1))
    draws = tf.random.stateless_normal((samples, h, w), seed=[seed, 0])
    fn = probe.step(_infidelity_rows, target.rule, samples, multiply_by_inputs)
    values = run_rows(
        fn,
        n * samples,
        rows_per_pass(batch_size, n, n * samples),
        tf.constant(images),
        tf.constant(maps, tf.float32),
        draws,
        tf.constant(spreads, tf.float32),
        tf.constant(clean),
        tf.constant(classes),
    )
    values = values.numpy().astype(np.float64).reshape(n, samples, 2)
    dot, delta = values[..., 0], values[..., 1]
    if normalize:
        energy = (dot**2).mean(axis=1)
        beta = np.divide((dot * delta).mean(axis=1), energy, out=np.zeros(n), where=energy > 0)
    else:
        beta = np.ones(n)
    return _out(((beta[:, None] * dot - delta) ** 2).mean(axis=1), batch.single)


# ---------------------------------------------------------------- max-sensitivity


def max_sensitivity(
    method: Callable[..., Any],
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    radius: float = 0.02,
    samples: int = 10,
    normalize: bool = True,
    seed: int = 0,
    batch_size: int | None = None,
    **method_kwargs: Any,
) -> np.ndarray | float:
    """Max-sensitivity: the largest change of a map under small input noise (Yeh et al., 2019).

    ``SENS_max = max_k ||map(x + d_k) - map(x)|| (/ ||map(x)|| with normalize)`` over
    ``samples`` perturbations ``d_k`` drawn uniformly from the L-infinity ball of radius
    ``radius`` times the image's value range (the same draws for every image, stateless
    seeded); norms are Frobenius over all of a map's values. The targets are fixed to the
    classes of the clean images, so every copy explains the same class. Lower is better (a
    robust explanation). The perturbed copies of ``batch_size`` images at a time go to one
    ``method`` call: ``samples * batch_size`` images per call, never one call per sample.

    Args:
        method: ``method(model, images, targets, **method_kwargs) -> maps`` with a leading
            batch axis (``(n, h, w)`` or per channel), e.g. ``kerasviz.grad_cam``.
        model: the model.
        inputs: images ``(n, h, w, c)`` or one image.
        targets: classes to explain; None for the predicted ones.
        radius: the noise's bound, a share of each image's ``max - min``.
        samples: perturbations per image.
        normalize: divide by the clean map's norm (a map of norm 0 scores 0 if it never
            changes, else inf).
        seed: seeds the perturbations.
        batch_size: images (with all their perturbed copies) per call of ``method``; None for
            all at once.
        **method_kwargs: passed to ``method``.

    Returns:
        ``(n,)`` sensitivities >= 0; a float for one image.

    Raises:
        ValueError: an empty batch, a ``method`` that is not callable or returns maps that are
            not one per image of one shape or not finite, or bad settings.

    Reference: Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS
    (2019).

    Example:
        >>> kerasviz.metrics.max_sensitivity(kerasviz.grad_cam, model, images).mean()
    """
    if not callable(method):
        raise ValueError(f"Expected `method` to be callable. Received: {method!r}.")
    radius = number(radius, "radius", low=0, open_low=True)
    samples = positive_int(samples, "samples")
    normalize = boolean(normalize, "normalize")
    seed = integer(seed, "seed")
    batch, probe, target = setup(model, inputs, targets)
    if len(batch.arrays) != 1:
        raise ValueError(
            "Expected `model` to have one input for max-sensitivity. Received: inputs of "
            f"shapes {[a.shape for a in batch.arrays]}."
        )
    images = batch.arrays[0]
    n = len(images)
    classes = fix_predictions(probe, batch, target, None).indices
    fixed = classes.astype(np.int64) if target.rule.fn is None else targets
    flat = images.reshape(n, -1)
    spreads = radius * (flat.max(axis=1) - flat.min(axis=1))
    unit = tf.random.stateless_uniform(
        (samples, *images.shape[1:]), seed=[seed, 0], minval=-1.0, maxval=1.0
    ).numpy()
    worst = np.zeros(n)
    norms = np.zeros(n)
    for rows in chunk_slices(n, batch_size):
        x = images[rows]
        k = len(x)
        clean = np.asarray(method(model, x, _take(fixed, rows), **method_kwargs), np.float64)
        copies = x[:, None] + unit[None] * spreads[rows].reshape(k, *[1] * images.ndim)
        copies = copies.reshape(k * samples, *images.shape[1:]).astype(images.dtype)
        noisy = np.asarray(
            method(model, copies, _repeat(fixed, rows, samples), **method_kwargs), np.float64
        )
        shapes_ok = clean.ndim >= 2 and len(clean) == k and len(noisy) == k * samples
        if not shapes_ok or noisy.shape[1:] != clean.shape[1:]:
            raise ValueError(
                f"Expected `method` to return one map per image of one shape. Received: "
                f"{clean.shape} for {k} images, then {noisy.shape} for {k * samples}."
            )
        if not (np.all(np.isfinite(clean)) and np.all(np.isfinite(noisy))):
            raise ValueError(
                "Expected `method` to return finite maps (no NaN or Inf). Received: non-finite "
                "values."
            )
        change = noisy.reshape(k, samples, -1) - clean.reshape(k, 1, -1)
        worst[rows] = np.sqrt((change**2).sum(axis=2)).max(axis=1)
        norms[rows] = np.sqrt((clean.reshape(k, -1) ** 2).sum(axis=1))
    if normalize:
        with np.errstate(divide="ignore", invalid="ignore"):
            worst = np.where(worst == 0, 0.0, worst / norms)
    return _out(worst, batch.single)


def _take(targets: Any, rows: slice) -> Any:
    return targets if callable(targets) else np.asarray(targets)[rows]


def _repeat(targets: Any, rows: slice, samples: int) -> Any:
    return targets if callable(targets) else np.repeat(np.asarray(targets)[rows], samples)


# ---------------------------------------------------------------- complexity


def sparseness(maps: Any) -> np.ndarray | float:
    """Sparseness: the Gini index of the map's absolute values (Chalasani et al., 2020).

    With the ``d`` values ``|a|`` sorted in ascending order, ``G = sum_i (2 i - d - 1) a_i /
    (d sum_i a_i)``: 0 for a constant map (the evidence is everywhere), ``(d - 1) / d`` for a
    map with one nonzero pixel, about 1/3 for uniform noise. Higher is better (a concentrated
    map); an all-zero map scores 0.

    Args:
        maps: maps ``(n, h, w)`` or one map ``(h, w)``.

    Returns:
        ``(n,)`` values in [0, 1); a float for one map.

    Reference: Chalasani, Chen, Chowdhury, Wu and Jha, "Concise Explanations of Neural
    Networks using Adversarial Training", ICML (2020).

    Example:
        >>> kerasviz.metrics.sparseness(cams).mean()
    """
    maps, single = _as_maps(maps)
    a = np.sort(np.abs(maps.reshape(len(maps), -1)), axis=1)
    d = a.shape[1]
    total = a.sum(axis=1)
    weights = 2.0 * np.arange(1, d + 1) - d - 1
    gini = np.divide((a * weights).sum(axis=1), d * total, out=np.zeros(len(a)), where=total > 0)
    return _out(gini, single)


def entropy(maps: Any) -> np.ndarray | float:
    """Complexity: the entropy of the map's share of evidence per pixel (Bhatt et al., 2020).

    ``H = -sum_i p_i log p_i`` with ``p_i = |a_i| / sum_j |a_j|`` (natural log): 0 for one
    nonzero pixel, ``log(h * w)`` for a constant map. Lower is better (a simpler
    explanation); an all-zero map has no distribution and scores ``log(h * w)``, the maximum.

    Args:
        maps: maps ``(n, h, w)`` or one map ``(h, w)``.

    Returns:
        ``(n,)`` entropies in nats, in ``[0, log(h * w)]``; a float for one map.

    Reference: Bhatt, Weller and Moura, "Evaluating and Aggregating Feature-based Model
    Explanations", IJCAI (2020).

    Example:
        >>> kerasviz.metrics.entropy(cams).mean()
    """
    maps, single = _as_maps(maps)
    a = np.abs(maps.reshape(len(maps), -1))
    total = a.sum(axis=1, keepdims=True)
    p = np.divide(a, total, out=np.zeros_like(a), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    h = np.where(total[:, 0] > 0, h, np.log(a.shape[1]))
    return _out(h, single)


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

    The similarity measure of the randomization check (Adebayo et al., 2018): 1 for maps that
    rank the pixels alike, near 0 for unrelated maps. A constant map has no ranking: against a
    map that ranks its pixels the correlation is defined as 0, and two constant maps (all
    pixels tied in both) rank alike and score 1, so a map that stays blank whatever the
    weights is not mistaken for one that changed.

    Args:
        a, b: arrays ``(n, ...)`` of the same shape; each row (all values after the first
            axis) is one map.

    Returns:
        ``(n,)`` correlations in [-1, 1].

    Raises:
        ValueError: shapes that differ, fewer than 2 axes, an empty batch or map, NaN or Inf.

    Example:
        >>> kerasviz.metrics.spearman(maps, maps_after)
        array([0.12, 0.31])
    """
    a, b = _finite_pair(
        a,
        b,
        lambda x: x.ndim >= 2 and x.size > 0,
        "a non-empty batch of maps (n, ...), one map per row",
    )
    ra = _rankdata(a.reshape(len(a), -1))
    rb = _rankdata(b.reshape(len(b), -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    spread_a, spread_b = (ra**2).sum(axis=1), (rb**2).sum(axis=1)
    denom = np.sqrt(spread_a * spread_b)
    num = (ra * rb).sum(axis=1)
    rho = np.divide(num, denom, out=np.zeros_like(num), where=denom > 0)
    return np.where((spread_a == 0) & (spread_b == 0), 1.0, rho)


@dataclass
class RandomizationResult:
    """The outcome of :func:`randomization_check`.

    Attributes:
        layers: paths of the randomized layers, in order (the logits layer first).
        correlations: ``(len(layers), n)`` Spearman correlations between each image's
            original map and its map after each step.
        order: ``"cascading"`` (steps accumulate) or ``"independent"`` (one layer at a time).
        threshold: the mean ``|rho|`` below which the maps count as changed.
        similarities: ``(len(layers), n)`` SSIM between each image's original map and its map
            after each step, both min-max normalized to [0, 1] (Adebayo et al.'s second
            measure; 1 for an unchanged map).
    """

    layers: list[str]
    correlations: np.ndarray
    order: str
    threshold: float
    similarities: np.ndarray | None = None

    @property
    def curve(self) -> np.ndarray:
        """``(len(layers) + 1,)`` the cascading randomization curve: mean ``|rho|`` of the
        original model (1) and after each step, from the logits down (Adebayo et al., Fig. 2).
        A map that explains the model falls fast; one that does not stays near 1."""
        return np.concatenate([[1.0], self.mean_abs])

    @property
    def scores(self) -> np.ndarray:
        """``(n,)`` per image, the mean ``|rho|`` over the steps (the area under the curve
        after the first point): lower is better, the map depends on the weights."""
        return np.abs(self.correlations).mean(axis=0)

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
    max_layers: int | None = None,
    **method_kwargs: Any,
) -> RandomizationResult:
    """The model-parameter randomization test (Adebayo et al., 2018), on a copy of the model.

    The model is cloned (``keras.models.clone_model`` plus ``set_weights``); the user's model is
    never touched. Layers with learned weights (leaf layers, nested models included, frozen
    ones too; BatchNorm's moving statistics are kept) are randomized from the top, logits
    layer first. With ``order="cascading"`` each step keeps
    the earlier randomizations; with ``"independent"`` each layer is randomized alone. After
    each step ``method(copy, inputs, targets, **method_kwargs)`` is recomputed and compared
    with the original map by Spearman rank correlation. ``targets=None`` is fixed to the
    original model's predicted classes, so every step explains the same class.

    A map that does not change when the weights it should explain are random (for example an
    edge detector of the input) explains nothing about the model, and fails. The cascading
    order gives the curve over layers (:attr:`RandomizationResult.curve`, mean ``|rho|``
    from 1 down as more layers are randomized; lower is better) and per-image scores
    (:attr:`RandomizationResult.scores`); the SSIM of the normalized maps is kept too.

    Args:
        method: ``method(model, inputs, targets, **method_kwargs) -> maps`` with a leading
            batch axis, e.g. ``kerasviz.grad_cam``.
        model: a Sequential or functional model.
        inputs: images ``(n, h, w, c)``.
        targets: classes to explain; None for the original model's predictions.
        order: ``"cascading"`` or ``"independent"``.
        seed: seeds the random weights (a numpy generator; Keras' global seed is not used).
        threshold: ``passed`` is True when the final mean ``|rho|`` falls below it.
        max_layers: randomize only this many layers with weights, from the top (the cost is
            one explanation per layer: a cascade through the top blocks of a 200-layer model);
            None for every layer.
        **method_kwargs: passed to ``method``, e.g. ``layer="conv2"``.

    Returns:
        A :class:`RandomizationResult` with ``layers``, ``correlations (steps, n)``,
        ``similarities (steps, n)``, ``curve``, ``scores`` and ``passed``.

    Example:
        >>> result = kerasviz.metrics.randomization_check(kerasviz.grad_cam, model, images)
        >>> result.passed, result.mean_abs
        (True, array([0.12, 0.05, 0.03]))
    """
    choice(order, ("cascading", "independent"), "order")
    threshold = number(threshold, "threshold", low=0)
    if max_layers is not None:
        max_layers = positive_int(max_layers, "max_layers")
    if not callable(method):
        raise ValueError(f"Expected `method` to be callable. Received: {method!r}.")
    batch, probe, target = setup(model, inputs, targets)
    if targets is None:
        targets = fix_predictions(probe, batch, target, None).indices.astype(np.int64)
    inputs = batch.arrays if len(batch.arrays) > 1 else batch.arrays[0]
    original = np.asarray(method(model, inputs, targets, **method_kwargs), dtype=np.float64)
    n = len(batch.arrays[0])
    if original.ndim < 2 or len(original) != n:
        raise ValueError(
            f"Expected `method` to return one map per image, shape ({n}, ...). Received: shape "
            f"{original.shape}."
        )
    if not np.all(np.isfinite(original)):
        raise ValueError(
            "Expected `method` to return finite maps (no NaN or Inf) on the original model."
        )

    copy = keras.models.clone_model(model)
    original_weights = model.get_weights()
    copy.set_weights(original_weights)
    # Frozen layers (a transfer-learning backbone) hold weights the maps should depend on too;
    # unfreezing each layer of the private copy (a model's flag does not reach its layers)
    # lists their variables, BatchNorm's moving statistics aside.
    for _, layer in iter_layers(copy):
        layer.trainable = True
    layers = [
        (path, layer)
        for path, layer in iter_layers(copy)
        if not is_graph_model(layer) and layer.trainable_weights
    ][::-1][:max_layers]
    if not layers:
        raise ValueError("Expected `model` to have layers with trainable weights to randomize.")
    rng = np.random.default_rng(seed)
    correlations, similarities = [], []
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
        maps = np.nan_to_num(maps)
        correlations.append(spearman(original, maps))
        similarities.append(_map_ssim(original, maps))
    return RandomizationResult(
        layers=[path for path, _ in layers],
        correlations=np.stack(correlations),
        order=order,
        threshold=float(threshold),
        similarities=np.stack(similarities),
    )


def _map_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of maps ``(n, ...)`` reduced to ``(n, h, w)`` (max over trailing channels),
    each min-max normalized; NaN where the maps are not 2D."""

    def norm(x):
        x = np.abs(x).max(axis=-1) if x.ndim == 4 else x
        flat = x.reshape(len(x), -1)
        low, high = flat.min(axis=1), flat.max(axis=1)
        span = np.where(high > low, high - low, 1.0)
        return (x - low.reshape(-1, *[1] * (x.ndim - 1))) / span.reshape(-1, *[1] * (x.ndim - 1))

    if a.ndim not in (3, 4):
        return np.full(len(a), np.nan)
    return np.asarray(ssim(norm(a)[..., None], norm(b)[..., None], max_val=1.0))


__all__ = [
    "RandomizationResult",
    "average_drop",
    "deletion_auc",
    "energy_pointing_game",
    "entropy",
    "increase_in_confidence",
    "infidelity",
    "insertion_auc",
    "iou_at",
    "max_sensitivity",
    "noisy_linear_imputation",
    "pointing_game",
    "psnr",
    "randomization_check",
    "road",
    "sparseness",
    "spearman",
    "ssim",
    "standard_tolerance",
]
