"""The attribution engine: what every method shares between its arguments and its result.

A method call runs the same path (docs/architecture.md draws it):

1. :func:`setup` checks the inputs into a :class:`~kerasviz._inputs.Batch`, takes the cached
   :class:`~kerasviz._probe.Probe` view of the model for the layers the method reads, and
   resolves ``targets`` once into a :class:`~kerasviz._targets.Target`.
2. The method's compiled step is ``probe.step(body, *static)``: a module-level ``body(probe,
   *static, *tensors)``, traced once per input signature and cached by ``(body, *static)``.
3. The step runs over row chunks: :func:`~kerasviz._inputs.run_chunked` for one row per image,
   :func:`run_expanded` for methods that expand each image into many rows (noise samples, path
   points, masks) built on the device from the row range of the chunk.
4. Results are copied to numpy once, and :func:`one_or_list` removes the batch axis again for
   a single image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import optional_positive_int
from kerasviz._inputs import Batch, as_batch, run_chunked
from kerasviz._probe import Probe, get_probe
from kerasviz._targets import ScoreRule, Target, Targets, resolve_targets

#: Rows per compiled pass for expanded methods when ``batch_size`` is None (at least the batch).
DEFAULT_ROWS = 32


def setup(
    model: keras.Model,
    inputs: Any,
    targets: Targets,
    layers: Sequence[Any] = (),
    output: int | str | None = None,
    *,
    pre_relu: bool = False,
) -> tuple[Batch, Probe, Target]:
    """Checked inputs, the probe for ``layers`` and the resolved targets of one call."""
    batch = as_batch(model, inputs)
    probe = get_probe(model, layers, output=output, pre_relu=pre_relu)
    target = resolve_targets(
        targets, batch.n, probe.logits_size(batch.arrays), sigmoid=probe.sigmoid
    )
    return batch, probe, target


def _scores_body(probe: Probe, rule: ScoreRule, inputs, indices):
    _, logits = probe(inputs)
    return rule.scores(logits, indices), rule.choose(logits, indices)


def target_scores(
    probe: Probe, arrays: Sequence[np.ndarray], target: Target, batch_size: int | None
) -> tuple[np.ndarray, Target]:
    """Scores ``(n,)`` of the images, and the target with the predicted classes filled in."""
    fn = probe.step(_scores_body, target.rule)
    scores, chosen = run_chunked(fn, list(arrays), batch_size, extra=[target.indices])
    return scores, target.with_indices(chosen)


def fix_predictions(probe: Probe, batch: Batch, target: Target, batch_size: int | None) -> Target:
    """Resolves "the predicted class" on the clean images, to hold it fixed for every noisy
    copy, path point or masked image derived from them."""
    if not target.needs_prediction:
        return target
    return target_scores(probe, batch.arrays, target, batch_size)[1]


def rows_per_pass(batch_size: int | None, n: int, total: int) -> int:
    """Rows per compiled pass over an expansion of ``total`` rows from ``n`` images."""
    batch_size = optional_positive_int(batch_size, "batch_size")
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


def run_rows(fn: Callable, total: int, rows: int, *args) -> tf.Tensor:
    """Runs ``fn(*args, start, stop)`` over ``[0, total)`` in chunks; concatenates the rows."""
    parts = [
        fn(*args, tf.constant(start, tf.int32), tf.constant(min(start + rows, total), tf.int32))
        for start in range(0, total, rows)
    ]
    return tf.concat(parts, axis=0)


def expanded_rows(start, stop, per_image):
    """Row ids of a chunk, their image ids, local image ids, and the number of images touched."""
    rows = tf.range(start, stop)
    images = rows // per_image
    first = start // per_image
    count = (stop - 1) // per_image - first + 1
    return rows, images, images - first, count


def one_or_list(batch: Batch, values: list):
    """One array for a single-input model, else the list; the batch axis removed if needed."""
    return batch.squeeze(values[0] if len(values) == 1 else list(values))


def input_gradients(probe: Probe, rows: list, indices, rule: ScoreRule) -> list:
    """d(target score of each row) / d(rows), one float32 tensor per model input.

    Runs inside compiled code. Rows are watched as they are; the model casts them itself, so
    the gradient flows through any mixed-precision cast.
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(rows)
        _, logits = probe(rows)
        scores = rule.scores(logits, indices)
    grads = tape.gradient(scores, rows, unconnected_gradients="zero")
    return [tf.cast(g, tf.float32) for g in grads]
