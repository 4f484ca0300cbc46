"""Occlusion: how much the target score drops when a patch of the image is covered.

Every image is occluded at every patch position; the ``n * positions`` occluded images are
built on the device from the images and the patch offsets, scored in chunks of ``batch_size``
rows, and each pixel gets the mean score drop over the patches that cover it.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import number
from kerasviz._engine import (
    expanded_rows,
    one_or_list,
    rows_per_pass,
    run_expanded,
    setup,
    target_scores,
)
from kerasviz._probe import Probe
from kerasviz._targets import ScoreRule, Targets


def _pair(value: Any, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else value
    ok = (
        isinstance(pair, tuple | list)
        and len(pair) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in pair)
        and min(pair) >= 1
    )
    if not ok:
        raise ValueError(
            f"Expected `{name}` to be a positive int or a pair (height, width) of them. "
            f"Received: {name}={value!r}."
        )
    return int(pair[0]), int(pair[1])


def patch_positions(size: int, patch: int, stride: int) -> np.ndarray:
    """Patch offsets along one axis: every ``stride``, plus one flush with the far edge."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return np.asarray(starts, np.int32)


def _occlusion(
    probe: Probe,
    rule: ScoreRule,
    image: int,
    ys: tuple,
    xs: tuple,
    patch: tuple,
    fill: float,
    inputs,
    clean,
    indices,
    start,
    stop,
):
    positions = len(ys) * len(xs)
    rows, images, local, count = expanded_rows(start, stop, positions)
    p = rows % positions
    y0 = tf.gather(ys, p // len(xs))[:, None]
    x0 = tf.gather(xs, p % len(xs))[:, None]
    height, width = inputs[image].shape[1:3]
    yy, xx = tf.range(height)[None], tf.range(width)[None]
    in_y = (yy >= y0) & (yy < y0 + patch[0])
    in_x = (xx >= x0) & (xx < x0 + patch[1])
    mask = tf.cast(in_y[:, :, None] & in_x[:, None, :], tf.float32)  # (rows, H, W)
    batch = [tf.gather(x, images) for x in inputs]
    m = mask[..., None]
    batch[image] = batch[image] * (1.0 - m) + fill * m
    _, logits = probe(batch)
    drop = tf.gather(clean, images) - rule.scores(logits, tf.gather(indices, images))
    return [tf.math.unsorted_segment_sum(drop[:, None, None] * mask, local, count)]


def occlusion(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    patch: int | tuple[int, int] = 8,
    stride: int | tuple[int, int] = 4,
    fill: float = 0.0,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Occlusion sensitivity: the mean drop of the target logit over the patches covering a pixel.

    Patches of ``patch`` pixels, filled with ``fill``, slide with ``stride``; a last position
    flush with the right and bottom edges is added when the stride does not land there, so
    every pixel is covered. Positive values: covering the pixel lowers the score.

    Args:
        model: a Sequential or functional Keras model (nested models included).
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)``; a list for several inputs.
            Each image input (rank 4) is occluded in turn while the others stay as given;
            inputs that are not images (tabular features, say) are never occluded.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (predicted
            class of the clean image).
        patch: patch size, an int or ``(height, width)``.
        stride: step between patches, an int or ``(height, width)``.
        fill: the value of occluded pixels.
        batch_size: rows (occluded images) per forward pass; None: ``max(n, 32)``.
        output: which model output to explain, for models with several.

    Returns:
        float32 ``(n, H, W)``, or a list with one per image input when the model has several.

    Raises:
        ValueError: for a patch larger than the images, or a model without image inputs.

    Reference: Zeiler and Fergus, "Visualizing and Understanding Convolutional Networks" (2014).

    Example:
        >>> drops = kerasviz.occlusion(model, images, patch=16, stride=8, batch_size=256)
    """
    patch, stride = _pair(patch, "patch"), _pair(stride, "stride")
    fill = number(fill, "fill")
    batch, probe, target = setup(model, inputs, targets, output=output)
    image_inputs = [k for k, x in enumerate(batch.arrays) if x.ndim == 4]
    if not image_inputs:
        raise ValueError(
            "Expected `inputs` to include images (n, H, W, C) for occlusion. Received: shapes "
            f"{[x.shape for x in batch.arrays]}."
        )
    clean, target = target_scores(probe, batch.arrays, target, batch_size)
    n = batch.n
    xs_t = [tf.constant(a) for a in batch.arrays]
    clean_t, indices_t = tf.constant(clean), tf.constant(target.indices)
    results = []
    for k in image_inputs:
        x = batch.arrays[k]
        name = "inputs" if len(batch.arrays) == 1 else f"inputs[{k}]"
        height, width = x.shape[1:3]
        if patch[0] > height or patch[1] > width:
            raise ValueError(
                f"Expected `patch` to fit in the images of {name} ({height}x{width}). "
                f"Received: patch={patch}."
            )
        ys = patch_positions(height, patch[0], stride[0])
        xs = patch_positions(width, patch[1], stride[1])
        positions = len(ys) * len(xs)
        fn = probe.step(
            _occlusion, target.rule, k, tuple(ys.tolist()), tuple(xs.tolist()), patch, fill
        )
        total = n * positions
        rows = rows_per_pass(batch_size, n, total)
        (sums,) = run_expanded(fn, total, rows, n, positions, xs_t, clean_t, indices_t)
        cover_y = np.zeros(height)
        cover_x = np.zeros(width)
        for y in ys:
            cover_y[y : y + patch[0]] += 1
        for x0 in xs:
            cover_x[x0 : x0 + patch[1]] += 1
        counts = np.multiply.outer(cover_y, cover_x)
        results.append((sums.numpy() / counts).astype(np.float32))
    return one_or_list(batch, results)
