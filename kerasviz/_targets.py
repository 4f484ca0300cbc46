"""What to explain, resolved once per call: :class:`Target` and its :class:`ScoreRule`.

Users pass ``targets`` as an int, one int per image, a callable ``logits -> (n,)`` scores, or
None for the predicted class. :func:`resolve_targets` turns that into one :class:`Target`
value that every method uses: the per-image class indices (``ARGMAX`` where the prediction is
used, resolved on the device), and the :class:`ScoreRule`, which owns the score function, the
predicted-class rule and the one probability rule.

**One-logit heads.** A model whose output has one unit (a sigmoid or a bare logit ``z``) is a
two-class model: class 1 (positive) scores ``z`` and class 0 (negative) scores ``-z``. The
predicted class is 1 where ``z > 0``.

**The probability rule.** A class's probability is ``sigmoid(score)`` for a one-unit head and
for a head with a sigmoid activation (multi-label), and the softmax over the logits otherwise.
A callable target's own value is used as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

Targets = int | Sequence[int] | np.ndarray | Callable[[Any], Any] | None

#: Marks "the predicted class" in an index array; resolved on the device from the logits.
ARGMAX = -1

_EXPECTED = "an int, a sequence of ints, a callable or None"


_ONE_PER_IMAGE = (
    "Expected a callable `targets` to return one score per image, shape (n,), from logits of "
    "shape (n, classes)"
)


def _one_per_image(scores: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """``scores`` checked to hold one value per row of ``logits`` (a summed score would mix
    the images: occlusion and the metrics need each image's own)."""
    n, got = logits.shape[0], scores.shape[0]
    if n is not None and got is not None:
        if n != got:
            raise ValueError(f"{_ONE_PER_IMAGE}. Received: {got} scores for {n} images.")
        return scores
    check = tf.debugging.assert_equal(tf.shape(scores)[0], tf.shape(logits)[0], _ONE_PER_IMAGE)
    with tf.control_dependencies([check]):
        return tf.identity(scores)


@dataclass(frozen=True)
class ScoreRule:
    """How logits become one score per image. Hashable: it keys compiled steps.

    Attributes:
        fn: a callable target ``logits -> (batch,)``, or None for class indices.
        binary: the model has one output unit (classes 0 = ``-z`` and 1 = ``z``).
        sigmoid: the model's head is a sigmoid: probabilities are ``sigmoid(logit)``.
    """

    fn: Callable | None = None
    binary: bool = False
    sigmoid: bool = False

    def class_logits(self, logits: tf.Tensor) -> tf.Tensor:
        """``(batch, classes)`` scores per class: ``[-z, z]`` for a one-logit head."""
        flat = tf.reshape(tf.cast(logits, tf.float32), [tf.shape(logits)[0], -1])
        return tf.concat([-flat, flat], axis=-1) if self.binary else flat

    def predicted(self, logits: tf.Tensor) -> tf.Tensor:
        """The predicted class per image, int32 ``(batch,)``."""
        return tf.argmax(tf.stop_gradient(self.class_logits(logits)), axis=-1, output_type=tf.int32)

    def choose(self, logits: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        """``indices`` with ``ARGMAX`` entries replaced by the predicted class."""
        return tf.where(indices < 0, self.predicted(logits), indices)

    def scores(self, logits: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        """One float32 score per image ``(batch,)``: the chosen class's logit, or ``fn``."""
        if self.fn is not None:
            scores = tf.reshape(tf.cast(tf.convert_to_tensor(self.fn(logits)), tf.float32), [-1])
            return _one_per_image(scores, logits)
        return tf.gather(self.class_logits(logits), self.choose(logits, indices), batch_dims=1)

    def probabilities(self, logits: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        """The chosen class's probability ``(batch,)``; a callable's own value as is.

        Softmax over the classes, or ``sigmoid(score)`` for a one-logit head.
        """
        if self.fn is not None:
            return self.scores(logits, indices)
        if self.binary or self.sigmoid:
            return tf.sigmoid(self.scores(logits, indices))
        chosen = self.choose(logits, indices)
        return tf.gather(tf.nn.softmax(self.class_logits(logits)), chosen, batch_dims=1)

    def nll(self, logits: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        """``-log probability`` of the chosen class ``(batch,)``, computed stably."""
        if self.fn is not None:
            raise ValueError("Expected class indices for a loss. Received: a callable target.")
        if self.binary or self.sigmoid:
            return tf.nn.softplus(-self.scores(logits, indices))
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            self.choose(logits, indices), self.class_logits(logits)
        )


@dataclass(frozen=True, eq=False)
class Target:
    """The resolved ``targets`` of one call.

    Attributes:
        indices: int32 ``(n,)`` class indices, ``ARGMAX`` where the predicted class is used
            (all ``ARGMAX`` for a callable target).
        rule: the :class:`ScoreRule` shared by every step of the call.
    """

    indices: np.ndarray
    rule: ScoreRule

    @property
    def needs_prediction(self) -> bool:
        """True when some index still waits for the predicted class."""
        return self.rule.fn is None and bool((self.indices < 0).any())

    def with_indices(self, indices: np.ndarray) -> Target:
        return Target(np.asarray(indices, np.int32), self.rule)


def num_classes_of(logits_size: int | None) -> tuple[int | None, bool]:
    """``(classes, binary)`` for a model output of ``logits_size`` units."""
    if logits_size == 1:
        return 2, True
    return logits_size, False


def resolve_targets(
    targets: Targets, n: int, logits_size: int | None, sigmoid: bool = False
) -> Target:
    """Checks ``targets`` for ``n`` images of a model with ``logits_size`` output units.

    ``sigmoid`` says the model's head is a sigmoid (see the probability rule above).

    Raises:
        ValueError: for a float, a bool, a wrong length or a class index out of range.
    """
    classes, binary = num_classes_of(logits_size)
    if callable(targets):
        return Target(np.full((n,), ARGMAX, np.int32), ScoreRule(targets, binary, sigmoid))
    rule = ScoreRule(None, binary, sigmoid)
    if targets is None:
        return Target(np.full((n,), ARGMAX, np.int32), rule)
    array = np.asarray(targets)
    if isinstance(targets, bool | float) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"Expected `targets` to be {_EXPECTED}. Received: {targets!r}.")
    if array.ndim == 0:
        array = np.full((n,), int(array))
    if array.shape != (n,):
        raise ValueError(
            f"Expected `targets` to hold one class index per sample ({n}). Received: shape "
            f"{array.shape}."
        )
    limit = classes if classes is not None else np.inf
    bad = (array < 0) | (array >= limit)
    if bad.any():
        what = " (0 negative, 1 positive, for a one-unit head)" if binary else ""
        raise ValueError(
            f"Expected `targets` to be class indices in [0, {classes - 1}]{what} for a model "
            f"with {logits_size} output units. Received: {array[bad].tolist()}."
        )
    return Target(array.astype(np.int32), rule)
