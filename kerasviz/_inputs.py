"""Turning user inputs (numpy, tf.Tensor, tf.data, one image or a batch) into checked batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import optional_positive_int
from kerasviz._graph import check_graph_model, is_graph_model, model_inputs


@dataclass
class Batch:
    """Checked model inputs: one float32 array per model input, all with the same batch size."""

    arrays: list[np.ndarray]
    single: bool  # the user gave one image without a batch axis

    @property
    def n(self) -> int:
        return self.arrays[0].shape[0]

    def squeeze(self, value):
        """Removes the batch axis again from a result when the user gave a single image."""
        if not self.single:
            return value
        if isinstance(value, dict):
            return {k: self.squeeze(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.squeeze(v) for v in value)
        return value[0]


_WHAT_TO_PASS = (
    "a numpy array or tf.Tensor of images (n, ...) or one image, a list of same-shape images "
    "(stacked), a tf.data.Dataset of images or (images, labels) batched or not, or, for a "
    "model with several inputs, a list or dict with one array per input"
)


def _features(element: Any, inputs: int) -> Any:
    """The model inputs of a dataset element (or element spec), for a model with ``inputs``
    inputs: ``x`` of ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, w)``. For several inputs, ``x`` is
    a tuple or dict of them, and a bare tuple of ``inputs`` tensors is the inputs themselves."""
    if isinstance(element, tuple):
        bare = inputs > 1 and len(element) == inputs
        if bare and not any(isinstance(e, tuple | list | dict) for e in element):
            return element
        return element[0]
    return element


def _from_dataset(dataset: tf.data.Dataset, ranks: list[int] | None):
    """Reads a dataset into numpy, batched or unbatched, with or without labels.

    An element whose rank is one less than the model input's is one image (an unbatched
    dataset); for a model without known inputs, a leading ``None`` axis marks a batch.
    """
    inputs = len(ranks) if ranks is not None else 1
    spec = keras.tree.flatten(_features(dataset.element_spec, inputs))
    if ranks is not None and len(spec) == len(ranks):
        unbatched = all(s.shape.rank == r - 1 for s, r in zip(spec, ranks, strict=True))
    else:
        unbatched = not (spec and spec[0].shape.rank and spec[0].shape[0] is None)
    if unbatched:
        dataset = dataset.batch(256)
    parts = []
    for element in dataset:
        parts.append(keras.tree.map_structure(np.asarray, _features(element, inputs)))
    if not parts:
        raise ValueError(
            "Expected `inputs` to hold at least one image. Received: an empty dataset."
        )
    return keras.tree.map_structure(lambda *xs: np.concatenate(xs, axis=0), *parts)


def _stack_images(items: Sequence[Any], rank: int | None, argname: str):
    """A list for a one-input model: one batch array, or a list of images to stack.

    ``rank`` is the model input's rank (batch axis included), None when unknown (a subclassed
    model, whose list is always a list of images).
    """
    arrays = [np.asarray(x) for x in items]
    if rank is not None and len(arrays) == 1 and arrays[0].ndim == rank:
        return arrays[0]
    if arrays and rank is None:
        rank = arrays[0].ndim + 1
    if arrays and all(a.ndim == rank - 1 for a in arrays):
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(
                f"Expected `{argname}` to be a list of images of one shape, to stack into a "
                f"batch. Received: images of shapes {sorted(shapes)}. Resize them first."
            )
        return np.stack(arrays)
    raise ValueError(
        f"Expected `{argname}` to be {_WHAT_TO_PASS}. Received: a list of "
        f"{len(arrays)} arrays of shapes {[a.shape for a in arrays]} for a model with one "
        f"input of rank {rank}."
    )


def _opaque_batch(model: keras.Model, inputs: Any, argname: str) -> Batch:
    """Inputs of a subclassed model, whose input shapes are unknown: always a batch."""
    if isinstance(inputs, tf.data.Dataset):
        inputs = _from_dataset(inputs, None)
    if isinstance(inputs, list | tuple):
        inputs = _stack_images(inputs, None, argname)
    if isinstance(inputs, str | bytes | dict) or inputs is None:
        raise ValueError(
            f"Expected `{argname}` to be a batch (n, ...) for the subclassed model "
            f"{model.name!r}: {_WHAT_TO_PASS}. Received: {type(inputs).__name__}."
        )
    array = np.asarray(inputs)
    if array.ndim < 2:
        raise ValueError(
            f"Expected `{argname}` to be a batch (n, ...) for the subclassed model "
            f"{model.name!r}. Received: shape {array.shape}."
        )
    array, _ = _check_one(array, (None,) * array.ndim, argname)
    return Batch([array], single=False)


def as_batch(model: keras.Model, inputs: Any, argname: str = "inputs") -> Batch:
    """Checks ``inputs`` against the model's input specs and returns a float32 :class:`Batch`.

    Accepts numpy arrays (uint8 included, as 0..255 values), tf.Tensors, a list of same-shape
    images (stacked), a tf.data.Dataset of ``x``, ``(x, y)`` or ``(x, y, w)`` elements, batched
    or not, and a list or dict for models with several inputs. A single image without a batch
    axis is accepted; :meth:`Batch.squeeze` removes the axis from results again. A subclassed
    model's inputs are always a batch.

    Raises:
        ValueError: naming ``argname``, for any other structure, a wrong rank, size or channel
            count, non-numeric, empty or non-finite inputs.
    """
    if not is_graph_model(model):
        return _opaque_batch(model, inputs, argname)
    check_graph_model(model)
    specs = model_inputs(model)
    ranks = [len(s.shape) for s in specs]
    if isinstance(inputs, tf.data.Dataset):
        inputs = _from_dataset(inputs, ranks)
    if isinstance(inputs, dict):
        names = [getattr(s, "name", None) for s in specs]
        if any(n not in inputs for n in names):
            raise ValueError(
                f"Expected `{argname}` to be {_WHAT_TO_PASS}; a dict maps the model's input "
                f"names {names} to arrays. Received: a dict with keys {list(inputs)}."
            )
        inputs = [inputs[n] for n in names]
    if len(specs) == 1:
        if isinstance(inputs, list | tuple):
            inputs = _stack_images(inputs, ranks[0], argname)
        inputs = [inputs]
    if not isinstance(inputs, list | tuple) or len(inputs) != len(specs):
        got = len(inputs) if isinstance(inputs, list | tuple) else 1
        raise ValueError(
            f"Expected `{argname}` to hold {len(specs)} arrays, one per model input. "
            f"Received: {got}."
        )
    arrays, singles = [], []
    for k, (x, spec) in enumerate(zip(inputs, specs, strict=True)):
        name = argname if len(specs) == 1 else f"{argname}[{k}]"
        array, single = _check_one(x, tuple(spec.shape), name)
        arrays.append(array)
        singles.append(single)
    if len({a.shape[0] for a in arrays}) != 1:
        raise ValueError(
            f"Expected every array of `{argname}` to have the same batch size. Received: "
            f"{[a.shape[0] for a in arrays]}."
        )
    return Batch(arrays, single=all(singles))


def _check_one(x: Any, shape: tuple, name: str) -> tuple[np.ndarray, bool]:
    if isinstance(x, str | bytes | dict) or x is None:
        raise ValueError(f"Expected `{name}` to be {_WHAT_TO_PASS}. Received: {type(x).__name__}.")
    try:
        array = np.asarray(x)
    except ValueError:
        raise ValueError(
            f"Expected `{name}` to be {_WHAT_TO_PASS}. Received: a ragged {type(x).__name__}."
        ) from None
    if array.dtype == object:
        raise ValueError(f"Expected `{name}` to be {_WHAT_TO_PASS}. Received: {type(x).__name__}.")
    if np.iscomplexobj(array) or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(
            f"Expected `{name}` to be numeric. Received: an array of dtype {array.dtype}."
        )
    per_image = shape[1:]
    single = array.ndim == len(shape) - 1 and all(
        want is None or got == want for got, want in zip(array.shape, per_image, strict=True)
    )
    if single:
        array = array[None]
    if array.ndim != len(shape):
        raise ValueError(
            f"Expected `{name}` to have rank {len(shape)} (a batch), or rank {len(shape) - 1} for "
            f"one image of shape {per_image}, for a model input of shape {shape}. "
            f"Received: shape {array.shape}."
        )
    if array.shape[0] == 0:
        raise ValueError(f"Expected `{name}` to hold at least one image. Received: an empty batch.")
    if shape[-1] is not None and array.shape[-1] != shape[-1]:
        raise ValueError(
            f"Expected `{name}` to have {shape[-1]} channels (last axis) for a model input of "
            f"shape {shape}. Received: shape {array.shape}."
        )
    for axis in range(1, len(shape) - 1):
        if shape[axis] is not None and array.shape[axis] != shape[axis]:
            raise ValueError(
                f"Expected `{name}` to have spatial size {shape[1:-1]} for a fixed-size model "
                f"input of shape {shape}. Received: shape {array.shape}."
            )
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"Expected `{name}` to be finite. Received: values with NaN or Inf.")
    return array, single


def chunk_slices(n: int, batch_size: int | None) -> list[slice]:
    """Row slices of at most ``batch_size`` rows (all rows at once when None)."""
    batch_size = optional_positive_int(batch_size, "batch_size")
    size = n if batch_size is None else batch_size
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def run_chunked(
    fn: Callable[..., Any],
    arrays: Sequence[np.ndarray],
    batch_size: int | None,
    extra: Sequence[np.ndarray] = (),
):
    """Calls ``fn(chunk_arrays, *chunk_extra)`` per chunk and concatenates the outputs into numpy.

    ``fn`` returns a structure of tensors with a leading batch axis. Results stay on the
    device until every chunk has run; the transfer to numpy happens once at the end.
    """
    n = arrays[0].shape[0]
    results = []
    for rows in chunk_slices(n, batch_size):
        chunk = [tf.constant(a[rows]) for a in arrays]
        results.append(fn(chunk, *[tf.constant(e[rows]) for e in extra]))
    if len(results) == 1:
        return keras.tree.map_structure(lambda t: np.asarray(t), results[0])
    return keras.tree.map_structure(lambda *ts: tf.concat(ts, axis=0).numpy(), *results)
