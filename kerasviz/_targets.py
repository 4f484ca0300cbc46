"""What to explain: an int, a per-sample sequence, a callable on logits, or None for argmax."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

Targets = int | Sequence[int] | np.ndarray | Callable[[Any], Any] | None

#: Marks "the predicted class" in an index array; resolved on the device from the logits.
ARGMAX = -1


def target_indices(targets: Targets, n: int, num_classes: int | None) -> np.ndarray:
    """Per-sample class indices (int32, shape ``(n,)``), ``ARGMAX`` where the prediction is used.

    Callables are not handled here; see :func:`is_callable_target`.
    """
    if targets is None:
        return np.full((n,), ARGMAX, np.int32)
    if isinstance(targets, bool) or isinstance(targets, float):
        raise ValueError(
            f"Expected `targets` to be an int, a sequence of ints, a callable or None. Received: {targets!r}."
        )
    array = np.asarray(targets)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            "Expected `targets` to be an int, a sequence of ints, a callable or None. "
            f"Received: {targets!r}."
        )
    if array.ndim == 0:
        array = np.full((n,), int(array))
    if array.shape != (n,):
        raise ValueError(
            f"Expected `targets` to hold one class index per sample ({n}). Received: shape "
            f"{array.shape}."
        )
    limit = num_classes if num_classes is not None else np.inf
    bad = (array < 0) | (array >= limit)
    if bad.any():
        raise ValueError(
            f"Expected `targets` to be class indices in [0, {num_classes - 1}] for a model with "
            f"{num_classes} outputs. Received: {array[bad].tolist()}."
        )
    return array.astype(np.int32)


def is_callable_target(targets: Targets) -> bool:
    return callable(targets)


def select_scores(logits: tf.Tensor, indices: tf.Tensor, targets: Targets = None) -> tf.Tensor:
    """One score per sample, shape ``(batch,)``: the chosen logit, or ``targets(logits)``.

    Runs inside compiled functions; ``ARGMAX`` entries take the predicted class.
    """
    if callable(targets):
        scores = tf.convert_to_tensor(targets(logits))
        return tf.reshape(tf.cast(scores, tf.float32), [-1])
    flat = tf.reshape(logits, [tf.shape(logits)[0], -1])
    predicted = tf.argmax(tf.stop_gradient(flat), axis=-1, output_type=tf.int32)
    chosen = tf.where(indices < 0, predicted, indices)
    return tf.gather(flat, chosen, batch_dims=1)


def callable_key(targets: Targets) -> Any:
    """The part of a compiled function's cache key that depends on ``targets``."""
    return targets if callable(targets) else None
