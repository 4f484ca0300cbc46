"""Occlusion: how much the target score drops when a patch of the image is covered.

Every image is occluded at every patch position; the ``n * positions`` occluded images are
built on the device from the images and the patch offsets, scored in chunks of ``batch_size``
rows, and each pixel gets the mean score drop over the patches that cover it. Signals (1D) and
volumes (3D) are occluded the same way, with patches of their rank.
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


def _sizes(value: Any, name: str, rank: int) -> tuple[int, ...]:
    """An int, or one int per spatial axis (``rank`` of them), every one at least 1."""
    sizes = (value,) * rank if isinstance(value, int | np.integer) else value
    ok = (
        isinstance(sizes, tuple | list)
        and len(sizes) == rank
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in sizes)
        and min(sizes) >= 1
    )
    if not ok:
        axes = "(height, width)" if rank == 2 else f"one per spatial axis ({rank})"
        raise ValueError(
            f"Expected `{name}` to be a positive int or a tuple of them, {axes}. "
            f"Received: {name}={value!r}."
        )
    return tuple(int(v) for v in sizes)


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
    offsets: tuple,
    patch: tuple,
    fill: float,
    inputs,
    clean,
    indices,
    start,
    stop,
):
    positions = int(np.prod([len(o) for o in offsets]))
    rows, images, local, count = expanded_rows(start, stop, positions)
    p = rows % positions
    rank = len(offsets)
    # The patch of row r covers, along each axis, [offset, offset + patch); positions run in
    # C order over the axes. The mask is the outer product of the per-axis intervals.
    mask = None
    stride = positions
    for axis, (axis_offsets, size) in enumerate(zip(offsets, patch, strict=True)):
        stride //= len(axis_offsets)
        start_at = tf.gather(axis_offsets, (p // stride) % len(axis_offsets))[:, None]
        length = tf.shape(inputs[image])[axis + 1]
        coords = tf.range(length)[None]
        inside = (coords >= start_at) & (coords < start_at + size)  # (rows, length)
        shape = [-1] + [1] * rank
        shape[axis + 1] = length
        inside = tf.reshape(inside, shape)
        mask = inside if mask is None else mask & inside
    mask = tf.cast(mask, tf.float32)  # (rows, *spatial)
    batch = [tf.gather(x, images) for x in inputs]
    m = mask[..., None]
    batch[image] = batch[image] * (1.0 - m) + fill * m
    _, logits = probe(batch)
    drop = tf.gather(clean, images) - rule.scores(logits, tf.gather(indices, images))
    drop = tf.reshape(drop, [-1] + [1] * rank)
    return [tf.math.unsorted_segment_sum(drop * mask, local, count)]


def occlusion(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    patch: int | tuple[int, ...] = 8,
    stride: int | tuple[int, ...] = 4,
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
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)`` (signals ``(n, T, C)``
            and volumes ``(n, D, H, W, C)`` too); a list for several inputs. Each input with
            spatial axes is occluded in turn while the others stay as given; inputs without
            them (tabular features, say) are never occluded.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (predicted
            class of the clean image).
        patch: patch size, an int or one per spatial axis (``(height, width)`` for images).
        stride: step between patches, an int or one per spatial axis.
        fill: the value of occluded pixels.
        batch_size: rows (occluded images) per forward pass; None: ``max(n, 32)``.
        output: which model output to explain, for models with several.

    Returns:
        float32 ``(n, H, W)`` (``(n, *spatial)``), or a list with one per occluded input when
        the model has several.

    Raises:
        ValueError: for a patch larger than the images, or a model without spatial inputs.

    Reference: Zeiler and Fergus, "Visualizing and Understanding Convolutional Networks" (2014).

    Example:
        >>> drops = kerasviz.occlusion(model, images, patch=16, stride=8, batch_size=256)
    """
    fill = number(fill, "fill")
    batch, probe, target = setup(model, inputs, targets, output=output)
    spatial_inputs = [k for k, x in enumerate(batch.arrays) if x.ndim >= 3]
    if not spatial_inputs:
        raise ValueError(
            "Expected `inputs` to include images, signals or volumes (n, *spatial, channels) "
            f"for occlusion. Received: shapes {[x.shape for x in batch.arrays]}."
        )
    checked = {}
    for k in spatial_inputs:
        rank = batch.arrays[k].ndim - 2
        checked[k] = _sizes(patch, "patch", rank), _sizes(stride, "stride", rank)
    clean, target = target_scores(probe, batch.arrays, target, batch_size)
    n = batch.n
    xs_t = [tf.constant(a) for a in batch.arrays]
    clean_t, indices_t = tf.constant(clean), tf.constant(target.indices)
    results = []
    for k in spatial_inputs:
        spatial = batch.arrays[k].shape[1:-1]
        patch_k, stride_k = checked[k]
        name = "inputs" if len(batch.arrays) == 1 else f"inputs[{k}]"
        if any(p > s for p, s in zip(patch_k, spatial, strict=True)):
            raise ValueError(
                f"Expected `patch` to fit in the images of {name} {tuple(spatial)}. "
                f"Received: patch={patch_k}."
            )
        offsets = tuple(
            tuple(patch_positions(s, p, t).tolist())
            for s, p, t in zip(spatial, patch_k, stride_k, strict=True)
        )
        positions = int(np.prod([len(o) for o in offsets]))
        fn = probe.step(_occlusion, target.rule, k, offsets, patch_k, fill)
        total = n * positions
        rows = rows_per_pass(batch_size, n, total)
        (sums,) = run_expanded(fn, total, rows, n, positions, xs_t, clean_t, indices_t)
        counts = np.ones(())
        for axis_offsets, p, s in zip(offsets, patch_k, spatial, strict=True):
            cover = np.zeros(s)
            for o in axis_offsets:
                cover[o : o + p] += 1
            counts = np.multiply.outer(counts, cover)
        results.append((sums.numpy() / counts).astype(np.float32))
    return one_or_list(batch, results)
