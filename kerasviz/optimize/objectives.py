"""What to maximize: objective kinds as small classes, many objectives scored as one batch.

An :class:`Objective` is a weighted sum of terms; ``0.5 * a + b``, ``a - b`` and ``-a`` build
new ones. Each term is an instance of a :class:`Term` subclass, its *kind*: :class:`Channel`,
:class:`Neuron`, :class:`Logit`, :class:`LayerNorm`, :class:`Direction`, :class:`Custom` (and
feature matching in :mod:`kerasviz.optimize.inversion`). A kind declares the layers it reads
and the constant arrays it needs, and scores a batch of rows. A new kind is one class.

A list of objectives is one batch: row ``i`` of the images is scored by objective ``i``.
:func:`plan` gathers the terms of one kind that read the same layers (and share the kind's
``static()`` settings) into one group of ``K`` slots, ``K`` the most such terms in any row:
the group's arrays are a weight ``(n, K)`` and each of the kind's params stacked to ``(n, K,
...)``; a row without the term has weight 0. The compiled code is keyed by the groups'
structure (:class:`Scorer`), never by the weights or indices, so two lists of the same
structure share one trace, and every row is scored in one pass, without a loop over rows.

Selected filters. A kind that reads one channel of its one layer names that param in
``channel_param`` (:class:`Channel` does). When the layer is a plain ``keras.layers.Conv2D``
(:func:`selected_filters_layer`), its group reads the layer's *input* from the probe instead of
its output, and computes only the filters the rows ask for: ``activation(conv(input,
kernel[..., channels]) + bias[channels])``, with the kernel and bias read live in the layer's
compute dtype. ``rows * K`` filters for ``rows`` rows (each row's own, one conv) instead of all
of them: the rest of the layer is skipped, forward and backward. The values are the layer's
own, to float round-off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasviz._inputs import as_batch, run_chunked
from kerasviz._layers import LayerSpec, output_shape, resolve_layer
from kerasviz._probe import Probe, get_probe
from kerasviz._targets import ScoreRule, num_classes_of

# ---------------------------------------------------------------- kinds


@dataclass(frozen=True)
class Where:
    """What a term is checked against (see :meth:`Term.params`).

    Attributes:
        paths: the resolved paths of the term's ``layers``.
        shapes: their output shapes without the batch axis, for the optimized input size.
        classes: the model's class count (2 for a one-unit head), None if no term reads logits.
    """

    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    classes: int | None


class Term:
    """One kind of objective term. Subclass it (a frozen dataclass, say) to add a kind.

    A kind declares:

    - ``layers``: the layer specs it reads (names, paths, indices or layers), a tuple;
    - ``logits``: True when it reads the pre-softmax scores;
    - ``params(where)``: the term's constant arrays (no batch axis), checked against the model
      (:class:`Where`); they are stacked over rows, so every term of a kind must give the same
      shapes for the same layers;
    - ``static()``: hashable settings shared by every row, passed to ``score`` (default ``()``);
    - ``channel_param``: for a kind that reads one channel of its one layer and nothing else of
      it, the position of that channel's index among ``params`` (default None). On a plain
      Conv2D layer, ``score`` then gets a map of only the selected channels and that param
      remapped into it, so it runs unchanged on fewer filters (see the module docstring);
    - ``score(static, outputs, logits, *params)``, a static method run inside compiled code on
      a batch of rows: ``outputs`` holds the float32 outputs ``(rows, ...)`` of ``layers``,
      ``logits`` the ``(rows, units)`` scores (None unless ``logits``), each param has a
      leading rows axis. It returns ``(rows,)`` scores.
    """

    layers: tuple = ()
    logits: bool = False
    channel_param: int | None = None

    def params(self, where: Where) -> tuple:
        return ()

    def static(self) -> tuple:
        return ()

    @staticmethod
    def score(static: tuple, outputs: list, logits: Any, *params: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        values = [getattr(self, f.name) for f in fields(self)] if is_dataclass(self) else []
        shown = [
            f"<array of shape {np.shape(v)}>" if isinstance(v, np.ndarray) else repr(v)
            for v in values
            if v is not None
        ]
        name = getattr(self, "name", type(self).__name__.lower())
        return f"{name}({', '.join(shown)})"


def _check_index(index: Any, limit: int, argname: str, where: str) -> int:
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise ValueError(f"Expected `{argname}` to be an int. Received: {argname}={index!r}.")
    if not 0 <= index < limit:
        raise ValueError(
            f"Expected `{argname}` to be in [0, {limit - 1}] for {where}. "
            f"Received: {argname}={index}."
        )
    return int(index)


def _channel(index: Any, where: Where) -> int:
    channels = where.shapes[0][-1]
    return _check_index(
        index, channels, "index", f"layer {where.paths[0]!r} with {channels} channels"
    )


def _per_channel_mean(x: tf.Tensor) -> tf.Tensor:
    """``(rows, ..., C) -> (rows, C)``: the mean over every position."""
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1, x.shape[-1]]), axis=1)


@dataclass(frozen=True, eq=False, repr=False)
class _LayerTerm(Term):
    layer: LayerSpec

    @property
    def layers(self) -> tuple:
        return (self.layer,)


@dataclass(frozen=True, eq=False, repr=False)
class Channel(_LayerTerm):
    """The mean of channel ``index`` of ``layer`` over every position.

    On a plain Conv2D layer only the selected filters are computed (``channel_param``).
    """

    index: int
    channel_param = 0

    def params(self, where):
        return (np.int32(_channel(self.index, where)),)

    @staticmethod
    def score(static, outputs, logits, index):
        return tf.gather(_per_channel_mean(outputs[0]), index, batch_dims=1)


@dataclass(frozen=True, eq=False, repr=False)
class Neuron(_LayerTerm):
    """Channel ``index`` of ``layer`` at ``position`` (the map's centre when None)."""

    index: int
    position: tuple | None = None

    def params(self, where):
        spatial, channels = where.shapes[0][:-1], where.shapes[0][-1]
        position = tuple(s // 2 for s in spatial) if self.position is None else self.position
        if len(position) != len(spatial) or any(
            isinstance(p, bool) or not isinstance(p, int | np.integer) or not 0 <= p < s
            for p, s in zip(position, spatial, strict=False)
        ):
            raise ValueError(
                f"Expected `position` to be {len(spatial)} ints inside the {spatial} map of layer "
                f"{where.paths[0]!r}. Received: position={position!r}."
            )
        flat = np.ravel_multi_index(position, spatial) if spatial else 0
        return (np.int32(flat * channels + _channel(self.index, where)),)

    @staticmethod
    def score(static, outputs, logits, flat_index):
        act = outputs[0]
        return tf.gather(tf.reshape(act, [tf.shape(act)[0], -1]), flat_index, batch_dims=1)


@dataclass(frozen=True, eq=False, repr=False)
class LayerNorm(_LayerTerm):
    """The mean of the squared outputs of ``layer`` (DeepDream)."""

    name = "layer_norm"

    @staticmethod
    def score(static, outputs, logits):
        act = outputs[0]
        return tf.reduce_mean(tf.square(tf.reshape(act, [tf.shape(act)[0], -1])), axis=1)


@dataclass(frozen=True, eq=False, repr=False)
class Direction(_LayerTerm):
    """The dot product of each position's channel vector with ``vector``, averaged over space."""

    vector: np.ndarray

    def params(self, where):
        channels = where.shapes[0][-1]
        vec = np.asarray(self.vector, np.float32).reshape(-1)
        if vec.shape[0] != channels or not np.all(np.isfinite(vec)):
            raise ValueError(
                f"Expected `vector` to hold {channels} finite values, one per channel of layer "
                f"{where.paths[0]!r}. Received: shape {np.shape(self.vector)}."
            )
        return (vec,)

    @staticmethod
    def score(static, outputs, logits, vector):
        return tf.reduce_sum(_per_channel_mean(outputs[0]) * vector, axis=-1)


@dataclass(frozen=True, eq=False, repr=False)
class Logit(Term):
    """The pre-softmax score of ``class_index``; a one-unit head is classes 0 (``-z``) and 1
    (``z``), as everywhere in kerasviz (:mod:`kerasviz._targets`)."""

    class_index: int
    logits = True

    def params(self, where):
        index = _check_index(self.class_index, where.classes, "class_index", "the model's logits")
        return (np.int32(index),)

    @staticmethod
    def score(static, outputs, logits, index):
        rule = ScoreRule(binary=int(np.prod(logits.shape[1:])) == 1)
        return tf.gather(rule.class_logits(logits), index, batch_dims=1)


@dataclass(frozen=True, eq=False, repr=False)
class Custom(Term):
    """``fn(layer_outputs, logits) -> (rows,)``; ``fn`` is the static part (keys the trace)."""

    fn: Callable
    layers: tuple = ()
    logits: bool = False

    def static(self):
        return (self.fn,)

    @staticmethod
    def score(static, outputs, logits):
        return static[0](list(outputs), logits)

    def __repr__(self) -> str:
        return f"custom({getattr(self.fn, '__name__', 'fn')}, layers={list(self.layers)!r})"


# ---------------------------------------------------------------- objectives


class Objective:
    """A weighted sum of terms; scores one row of a batch.

    Build objectives with :func:`channel`, :func:`neuron`, :func:`logit`, :func:`layer_norm`,
    :func:`direction`, :func:`custom` or ``Objective(term)`` for any :class:`Term`, and combine
    them: ``0.5 * a + b``, ``a - b``, ``-a``, ``a / 2``, ``sum([a, b, c])``.
    """

    def __init__(self, terms: Term | Sequence[tuple[float, Term]]):
        if isinstance(terms, Term):
            terms = [(1.0, terms)]
        self.terms = tuple((float(w), t) for w, t in terms)

    def __add__(self, other: Any) -> Objective:
        if isinstance(other, int | float) and other == 0:
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    __radd__ = __add__

    def __mul__(self, weight: Any) -> Objective:
        if isinstance(weight, bool) or not isinstance(weight, int | float | np.number):
            return NotImplemented
        return Objective([(w * float(weight), t) for w, t in self.terms])

    __rmul__ = __mul__

    def __truediv__(self, weight: Any) -> Objective:
        return (
            self * (1.0 / weight) if isinstance(weight, int | float | np.number) else NotImplemented
        )

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Any) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __repr__(self) -> str:
        return " + ".join(repr(t) if w == 1.0 else f"{w:g} * {t!r}" for w, t in self.terms)


def channel(layer: LayerSpec, index: int) -> Objective:
    """The mean of one feature map (channel ``index`` of ``layer``), over all positions.

    On a plain ``keras.layers.Conv2D`` (:func:`selected_filters_layer`) a batch of channel
    objectives computes only its selected filters from the layer's input, not the whole layer;
    the values are the same to float round-off.

    Example:
        >>> objs = [kerasviz.channel("block3_conv1", i) for i in range(64)]
    """
    return Objective(Channel(layer, index))


def neuron(layer: LayerSpec, index: int, position: Sequence[int] | None = None) -> Objective:
    """One unit: channel ``index`` of ``layer`` at ``position`` (the map's centre when None).

    ``position`` has one int per spatial axis, e.g. ``(row, col)``; layers without spatial
    axes (Dense) take ``position=None``.
    """
    return Objective(Neuron(layer, index, None if position is None else tuple(position)))


def logit(class_index: int) -> Objective:
    """The pre-softmax score of ``class_index`` (a final softmax/sigmoid is bypassed)."""
    return Objective(Logit(class_index))


def layer_norm(layer: LayerSpec) -> Objective:
    """The DeepDream objective: the mean of the squared activations of ``layer``."""
    return Objective(LayerNorm(layer))


def direction(layer: LayerSpec, vector: Any) -> Objective:
    """The dot product of each position's channel vector with ``vector``, averaged over space."""
    return Objective(Direction(layer, np.asarray(vector, dtype=np.float32)))


def custom(
    fn: Callable[[list, Any], Any], layers: Sequence[LayerSpec] = (), logits: bool = False
) -> Objective:
    """Any differentiable score: ``fn(layer_outputs, logits) -> (batch,)``.

    ``layer_outputs`` is the list of ``layers``' outputs (float32 tensors) and ``logits`` the
    pre-softmax scores when ``logits=True`` (else None). ``fn`` runs inside compiled code and
    must use TensorFlow/keras.ops operations; it is part of the compiled function's cache key.
    """
    if not callable(fn):
        raise ValueError(f"Expected `fn` to be callable. Received: {fn!r}.")
    return Objective(Custom(fn, tuple(layers), bool(logits)))


def as_objectives(objectives: Any, argname: str = "objectives") -> list[Objective]:
    """A list of :class:`Objective` with at least one term each (one alone becomes a list)."""
    if isinstance(objectives, Objective):
        objectives = [objectives]
    if not isinstance(objectives, list | tuple) or not objectives:
        raise ValueError(
            f"Expected `{argname}` to be an Objective or a non-empty list of them. "
            f"Received: {objectives!r}."
        )
    for k, obj in enumerate(objectives):
        if not isinstance(obj, Objective) or not obj.terms:
            raise ValueError(
                f"Expected `{argname}` to be Objective values with at least one term "
                f"(kerasviz.channel, neuron, logit, ...). Received: {argname}[{k}]={obj!r}."
            )
    return list(objectives)


# ---------------------------------------------------------------- batching


@dataclass(frozen=True)
class _Group:
    kind: type
    static: tuple
    layers: tuple[int, ...]  # positions in Scorer.layers (in Scorer.inputs when conv)
    logits: bool
    slots: int
    params: int
    conv: bool = False  # selected filters computed from the layer's input


#: Activations that mix channels; a Conv2D with one is never computed per selected filter.
_CHANNEL_MIXING = frozenset({"softmax", "log_softmax", "glu", "sparsemax"})


def selected_filters_layer(layer: Any) -> bool:
    """True when the selected filters of ``layer`` can be computed alone from its input.

    That is a layer of type exactly ``keras.layers.Conv2D`` (a subclass may change ``call``),
    ``channels_last``, ``groups=1``, not quantized, whose activation is a built-in keras
    activation acting on each value alone (not softmax, log_softmax, glu or sparsemax). Any
    strides, padding and dilation.
    """
    if type(layer) is not keras.layers.Conv2D:
        return False
    if layer.data_format != "channels_last" or layer.groups != 1:
        return False
    if getattr(layer, "quantization_mode", None):
        return False
    name = getattr(layer.activation, "__name__", None)
    if name is None or name in _CHANNEL_MIXING:
        return False
    try:
        return keras.activations.get(name) is layer.activation
    except ValueError:
        return False


def _selected_filters(probe: Probe, j: int, x: tf.Tensor, index: tf.Tensor):
    """Layer ``probe.input_layers[j]`` on its input ``x`` for the channels ``index`` ``(rows,
    K)`` only: ``([map (rows, ..., m)], positions (rows, K) of each row's channels in it)``.

    The map is what the probe gives for that layer (after the activation, or before a final
    ReLU with ``pre_relu``, or before a bypassed head activation), as float32. ``m = rows * K``
    when that is fewer than the layer's filters (and ``rows`` is known when tracing), else all.
    """
    layer, path = probe.input_layers[j], probe.input_paths[j]
    rows, slots = index.shape
    kernel, bias = layer.kernel, layer.bias if layer.use_bias else None
    if rows is not None and rows * slots < layer.filters:
        chosen = tf.reshape(index, [-1])
        kernel = ops.take(kernel, chosen, axis=-1)
        bias = None if bias is None else ops.take(bias, chosen, axis=0)
        index = tf.reshape(tf.range(rows * slots, dtype=index.dtype), [rows, slots])
    # Variables read here, inside the compiled step: always the current weights.
    dtype = layer.compute_dtype
    y = layer.convolution_op(ops.cast(x, dtype), ops.cast(kernel, dtype))
    if bias is not None:
        y = y + ops.cast(bias, dtype)
    skip = probe.bypassed == path or (
        probe.pre_relu and getattr(layer.activation, "__name__", None) == "relu"
    )
    if not skip:
        y = layer.activation(y)
    return [tf.cast(y, tf.float32)], index


@dataclass(frozen=True)
class Scorer:
    """The structure of a batch of objectives; hashable, it keys compiled steps.

    ``scorer(probe, inputs, arrays) -> (rows,)`` runs inside compiled code: it runs ``probe``
    (built with ``layers``, ``logits`` and ``inputs_of=inputs``) on ``inputs`` and scores the
    rows; ``arrays`` are the plan's arrays (rows first): per group a weight ``(rows, K)`` and
    its params ``(rows, K, ...)``. :attr:`inputs` are the layers whose selected filters are
    computed from their input (see the module docstring).
    """

    layers: tuple[str, ...]
    logits: bool
    groups: tuple[_Group, ...]
    inputs: tuple[str, ...] = ()

    def __call__(self, probe: Probe, inputs: Sequence[Any], arrays: Sequence[tf.Tensor]):
        raw, logits = probe.raw(inputs)
        outputs = [tf.cast(o, tf.float32) for o in raw[: len(self.layers)]]
        layer_inputs = raw[len(self.layers) :]
        total, at = 0.0, 0
        for g in self.groups:
            weights, params = arrays[at], list(arrays[at + 1 : at + 1 + g.params])
            at += 1 + g.params
            if g.conv:
                c, j = g.kind.channel_param, g.layers[0]
                outs, params[c] = _selected_filters(probe, j, layer_inputs[j], params[c])
            else:
                outs = [outputs[k] for k in g.layers]
            for k in range(g.slots):
                value = g.kind.score(
                    g.static, outs, logits if g.logits else None, *[p[:, k] for p in params]
                )
                value = tf.reshape(tf.cast(value, tf.float32), [-1])
                w = weights[:, k]
                # A score that is NaN on rows it does not belong to must not leak there.
                total += tf.where(w != 0, w * value, tf.zeros_like(value))
        return total


@dataclass(eq=False)
class Plan:
    """Objectives resolved against a model: the :class:`Scorer` and its per-row arrays."""

    scorer: Scorer
    arrays: list[np.ndarray]
    labels: list[str]


def _map_shapes(model: keras.Model, paths: list[str], input_shape: tuple) -> dict[str, tuple]:
    """Output shapes (without batch axis) of ``paths`` for a model input of ``input_shape``."""
    shapes = {p: tuple(output_shape(resolve_layer(model, p)[1])[1:]) for p in paths}
    unknown = [p for p, s in shapes.items() if None in s]
    if unknown:
        probe = get_probe(model, unknown, logits=False)
        specs = probe.view.compute_output_spec(keras.KerasTensor((1, *input_shape)))
        specs = specs if isinstance(specs, list | tuple) else [specs]
        shapes.update({p: tuple(s.shape[1:]) for p, s in zip(probe.paths, specs, strict=True)})
    return shapes


def plan(model: keras.Model, objectives: Sequence[Objective], input_shape: tuple) -> Plan:
    """Checks every term against ``model`` and builds the batch: row ``i`` scores objective ``i``.

    Args:
        model: the model.
        objectives: one objective per row.
        input_shape: the model input's ``(h, w, c)`` the images will have (sets map sizes).

    Raises:
        ValueError: unknown layer, channel index out of range, neuron position outside the
        map, direction of the wrong length, class index out of range (from the kinds).
    """
    n = len(objectives)
    rows = []
    for obj in objectives:
        row = []
        for weight, term in obj.terms:
            argname = "layer" if len(term.layers) == 1 else "layers"
            paths = tuple(resolve_layer(model, s, argname)[0] for s in term.layers)
            row.append((weight, term, paths))
        rows.append(row)
    layers = list(dict.fromkeys(p for row in rows for _, _, paths in row for p in paths))
    shapes = _map_shapes(model, layers, input_shape)
    conv_ok = {p: selected_filters_layer(resolve_layer(model, p)[1]) for p in layers}
    logits = any(t.logits for row in rows for _, t, _ in row)
    classes = num_classes_of(get_probe(model).num_classes)[0] if logits else None

    groups: dict[tuple, list[list]] = {}
    for r, row in enumerate(rows):
        for weight, term, paths in row:
            key = (type(term), term.static(), paths, bool(term.logits))
            where = Where(paths, tuple(shapes[p] for p in paths), classes)
            params = tuple(np.asarray(p) for p in term.params(where))
            groups.setdefault(key, [[] for _ in range(n)])[r].append((weight, params))
    conv = {
        key: key[0].channel_param is not None and len(key[2]) == 1 and conv_ok[key[2][0]]
        for key in groups
    }
    outputs = list(dict.fromkeys(p for key in groups if not conv[key] for p in key[2]))
    inputs = list(dict.fromkeys(p for key in groups if conv[key] for p in key[2]))
    arrays, specs = [], []
    for (kind, static, paths, wants_logits), per_row in groups.items():
        slots = max(len(entries) for entries in per_row)
        first = next(params for entries in per_row for _, params in entries)
        weights = np.zeros((n, slots), np.float32)
        stacked = [np.zeros((n, slots, *p.shape), p.dtype) for p in first]
        for r, entries in enumerate(per_row):
            for k, (weight, params) in enumerate(entries):
                weights[r, k] = weight
                for target, p in zip(stacked, params, strict=True):
                    target[r, k] = p
        arrays += [weights, *stacked]
        fast = conv[(kind, static, paths, wants_logits)]
        layer_ids = tuple((inputs if fast else outputs).index(p) for p in paths)
        specs.append(_Group(kind, static, layer_ids, wants_logits, slots, len(first), fast))
    scorer = Scorer(tuple(outputs), logits, tuple(specs), tuple(inputs))
    return Plan(scorer, arrays, [repr(o) for o in objectives])


# ---------------------------------------------------------------- evaluation


def _score_objectives(probe: Probe, scorer: Scorer, inputs, *arrays):
    return scorer(probe, inputs, arrays)


def score_objectives(
    model: keras.Model,
    objectives: Objective | Sequence[Objective],
    inputs: Any,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """Each image's objective value: row ``i`` scored by objective ``i`` (or one for all).

    Layers are scored after their activation (what :func:`kerasviz.feature_maps` returns).

    Args:
        model: a Sequential or functional model.
        objectives: one objective (applied to every image) or one per image.
        inputs: ``(n, h, w, c)`` model inputs or one image.
        batch_size: rows per forward pass; None for all at once.

    Returns:
        ``(n,)`` float32 scores (a scalar for one image).

    Raises:
        ValueError: a count of objectives other than 1 or ``n``, or a term the model rejects.

    Example:
        >>> before = kerasviz.score_objectives(model, kerasviz.layer_norm("conv2"), photo)
    """
    batch = as_batch(model, inputs)
    objs = as_objectives(objectives)
    if len(objs) == 1:
        objs = objs * batch.n
    if len(objs) != batch.n:
        raise ValueError(
            f"Expected one objective for all images or one per image ({batch.n}). "
            f"Received: {len(objs)} objectives."
        )
    p = plan(model, objs, batch.arrays[0].shape[1:])
    probe = get_probe(model, p.scorer.layers, logits=p.scorer.logits, inputs_of=p.scorer.inputs)
    fn = probe.step(_score_objectives, p.scorer)
    return batch.squeeze(run_chunked(fn, batch.arrays, batch_size, extra=p.arrays))
