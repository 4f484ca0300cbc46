"""What to maximize: small composable objectives, resolved into one batched scoring function.

An :class:`Objective` is a weighted sum of terms (``channel``, ``neuron``, ``logit``,
``layer_norm``, ``direction``, ``custom``); ``0.5 * a + b``, ``a - b`` and ``-a`` build new
ones. A list of objectives is one batch: row ``i`` of the optimized images scores objective
``i``. :func:`resolve` turns the list into a :class:`ObjectivePlan`: per-row weight arrays plus
one scoring function whose structure (which layers, how many neuron slots) is all that the
compiled code depends on, so two lists with the same structure share one trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._layers import LayerSpec, output_shape, resolve_layer
from kerasviz._probe import compiled, get_probe, note_trace

# ---------------------------------------------------------------- terms and objectives


@dataclass(frozen=True, eq=False)
class _Term:
    kind: str  # channel | neuron | direction | layer_norm | logit | custom
    layer: Any = None
    index: Any = None
    position: Any = None
    vector: Any = None
    fn: Callable | None = None
    layers: tuple = ()
    logits: bool = False

    def __repr__(self) -> str:
        if self.kind == "channel":
            return f"channel({self.layer!r}, {self.index!r})"
        if self.kind == "neuron":
            pos = "" if self.position is None else f", position={self.position!r}"
            return f"neuron({self.layer!r}, {self.index!r}{pos})"
        if self.kind == "direction":
            return f"direction({self.layer!r}, <vector of {np.size(self.vector)}>)"
        if self.kind == "layer_norm":
            return f"layer_norm({self.layer!r})"
        if self.kind == "logit":
            return f"logit({self.index!r})"
        return f"custom({getattr(self.fn, '__name__', 'fn')}, layers={list(self.layers)!r})"


class Objective:
    """A weighted sum of terms; each term scores one row of a batch, shape ``(batch,)``.

    Build objectives with :func:`channel`, :func:`neuron`, :func:`logit`, :func:`layer_norm`,
    :func:`direction` and :func:`custom`, and combine them: ``0.5 * a + b``, ``a - b``, ``-a``,
    ``a / 2``, ``sum([a, b, c])``.
    """

    def __init__(self, terms: Sequence[tuple[float, _Term]]):
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
        if isinstance(weight, bool) or not isinstance(weight, int | float | np.number):
            return NotImplemented
        return self * (1.0 / float(weight))

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Any) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __repr__(self) -> str:
        parts = [repr(t) if w == 1.0 else f"{w:g} * {t!r}" for w, t in self.terms]
        return " + ".join(parts)


def channel(layer: LayerSpec, index: int) -> Objective:
    """The mean of one feature map (channel ``index`` of ``layer``), over all positions.

    Example:
        >>> objs = [kerasviz.channel("block3_conv1", i) for i in range(64)]
    """
    return Objective([(1.0, _Term("channel", layer=layer, index=index))])


def neuron(layer: LayerSpec, index: int, position: Sequence[int] | None = None) -> Objective:
    """One unit: channel ``index`` of ``layer`` at ``position`` (the map's centre when None).

    ``position`` has one int per spatial axis, e.g. ``(row, col)``; layers without spatial
    axes (Dense) take ``position=None``.
    """
    pos = None if position is None else tuple(position)
    return Objective([(1.0, _Term("neuron", layer=layer, index=index, position=pos))])


def logit(class_index: int) -> Objective:
    """The pre-softmax score of ``class_index`` (a final softmax/sigmoid is bypassed)."""
    return Objective([(1.0, _Term("logit", index=class_index))])


def layer_norm(layer: LayerSpec) -> Objective:
    """The DeepDream objective: the mean of the squared activations of ``layer``."""
    return Objective([(1.0, _Term("layer_norm", layer=layer))])


def direction(layer: LayerSpec, vector: Any) -> Objective:
    """The dot product of each position's channel vector with ``vector``, averaged over space."""
    array = np.asarray(vector, dtype=np.float32)
    return Objective([(1.0, _Term("direction", layer=layer, vector=array))])


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
    return Objective([(1.0, _Term("custom", fn=fn, layers=tuple(layers), logits=bool(logits)))])


def as_objectives(objectives: Any, argname: str = "objectives") -> list[Objective]:
    """A list of :class:`Objective` (one given alone becomes a list of one)."""
    if isinstance(objectives, Objective):
        return [objectives]
    if isinstance(objectives, list | tuple):
        objectives = list(objectives)
        if not objectives:
            raise ValueError(f"Expected `{argname}` to hold at least one objective. Received: [].")
        for k, obj in enumerate(objectives):
            if not isinstance(obj, Objective):
                raise ValueError(
                    f"Expected `{argname}` to be Objective values (kerasviz.channel, neuron, "
                    f"logit, ...). Received: {argname}[{k}]={obj!r} of type {type(obj).__name__}."
                )
        return objectives
    raise ValueError(
        f"Expected `{argname}` to be an Objective or a list of them. Received: {objectives!r}."
    )


# ---------------------------------------------------------------- resolution


@dataclass
class _LayerSlots:
    path: str
    channels: int
    spatial: tuple  # map size for the optimized input size
    mean: bool = False  # channel / direction terms: weights (n, C) on the spatial mean
    points: int = 0  # neuron terms: K slots of (n, K, C) weights at (n, K) flat positions
    norm: bool = False  # layer_norm terms: (n,) weights


@dataclass
class ObjectivePlan:
    """Resolved objectives: what the probe must return and per-row weight arrays.

    ``score(outputs, logits, arrays)`` runs inside compiled code and returns ``(rows,)``; it
    depends only on :attr:`key`, never on the arrays' values.
    """

    layers: list[str]
    logits: bool
    key: tuple
    arrays: list[np.ndarray]
    slots: list[_LayerSlots] = field(default_factory=list)
    customs: list[tuple[Callable, tuple[int, ...], bool]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    logit_weights: bool = False

    def score(self, outputs: Sequence[tf.Tensor], logits: Any, arrays: Sequence[tf.Tensor]):
        arrays = iter(arrays)
        total = 0.0
        for slot, act in zip(self.slots, outputs, strict=False):
            rows = tf.shape(act)[0]
            flat = tf.reshape(act, [rows, -1, slot.channels])
            if slot.mean:
                total += tf.reduce_sum(tf.reduce_mean(flat, axis=1) * next(arrays), axis=-1)
            if slot.points:
                weights, positions = next(arrays), next(arrays)
                values = tf.gather(flat, positions, batch_dims=1)  # (rows, K, C)
                total += tf.reduce_sum(values * weights, axis=[1, 2])
            if slot.norm:
                total += next(arrays) * tf.reduce_mean(tf.square(flat), axis=[1, 2])
        if self.logit_weights:
            flat_logits = tf.reshape(logits, [tf.shape(logits)[0], -1])
            total += tf.reduce_sum(flat_logits * next(arrays), axis=-1)
        if self.customs:
            coefs = next(arrays)
            for j, (fn, idx, wants_logits) in enumerate(self.customs):
                value = fn([outputs[i] for i in idx], logits if wants_logits else None)
                value = tf.reshape(tf.cast(value, tf.float32), [-1])
                c = coefs[:, j]
                # A custom score that is NaN on rows it does not belong to must not leak there.
                total += tf.where(c != 0, c * value, tf.zeros_like(value))
        return total


def _map_shapes(model: keras.Model, paths: list[str], input_shape: tuple) -> dict[str, tuple]:
    """Output shapes (without batch axis) of ``paths`` for a model input of ``input_shape``."""
    shapes, unknown = {}, []
    for path in paths:
        shape = output_shape(resolve_layer(model, path)[1])[1:]
        if all(s is not None for s in shape):
            shapes[path] = tuple(shape)
        else:
            unknown.append(path)
    if unknown:
        probe = get_probe(model, unknown, logits=False)
        specs = probe.view.compute_output_spec(keras.KerasTensor((1, *input_shape)))
        specs = specs if isinstance(specs, list | tuple) else [specs]
        for path, spec in zip(probe.paths, specs, strict=True):
            shapes[path] = tuple(spec.shape[1:])
    return shapes


def _check_index(index: Any, limit: int, argname: str, where: str) -> int:
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise ValueError(f"Expected `{argname}` to be an int. Received: {argname}={index!r}.")
    if not 0 <= index < limit:
        raise ValueError(
            f"Expected `{argname}` to be in [0, {limit - 1}] for {where}. "
            f"Received: {argname}={index}."
        )
    return int(index)


def resolve(
    model: keras.Model, objectives: Sequence[Objective], input_shape: tuple
) -> ObjectivePlan:
    """Checks every term against ``model`` and builds the per-row weight arrays.

    Args:
        model: the model.
        objectives: one objective per row.
        input_shape: the model input's ``(h, w, c)`` the images will have (sets map sizes).

    Raises:
        ValueError: unknown layer, channel index out of range, neuron position outside the
        map, direction of the wrong length, class index out of range.
    """
    n = len(objectives)
    layer_terms: dict[str, list] = {}
    customs: dict[int, tuple] = {}
    has_logit = False
    for obj in objectives:
        for _, term in obj.terms:
            if term.kind in ("channel", "neuron", "direction", "layer_norm"):
                path, _ = resolve_layer(model, term.layer, "layer")
                layer_terms.setdefault(path, [])
            elif term.kind == "logit":
                has_logit = True
            elif term.kind == "custom":
                paths = tuple(resolve_layer(model, spec, "layers")[0] for spec in term.layers)
                for path in paths:
                    layer_terms.setdefault(path, [])
                customs.setdefault(id(term.fn), (term.fn, paths, term.logits))
                has_logit = has_logit or term.logits
    paths = list(layer_terms)
    shapes = _map_shapes(model, paths, input_shape)
    slots = {p: _LayerSlots(p, shapes[p][-1], shapes[p][:-1]) for p in paths}
    num_classes = None
    if has_logit:
        num_classes = get_probe(model, (), logits=True).num_classes

    # First pass: which arrays each layer needs, and how many neuron slots.
    per_row_points = [dict.fromkeys(paths, 0) for _ in range(n)]
    for row, obj in enumerate(objectives):
        for _, term in obj.terms:
            if term.kind in ("channel", "direction"):
                slots[resolve_layer(model, term.layer)[0]].mean = True
            elif term.kind == "neuron":
                path = resolve_layer(model, term.layer)[0]
                per_row_points[row][path] += 1
            elif term.kind == "layer_norm":
                slots[resolve_layer(model, term.layer)[0]].norm = True
    for path in paths:
        slots[path].points = max(r[path] for r in per_row_points) if n else 0

    means = {p: np.zeros((n, slots[p].channels), np.float32) for p in paths if slots[p].mean}
    point_w = {
        p: np.zeros((n, slots[p].points, slots[p].channels), np.float32)
        for p in paths
        if slots[p].points
    }
    point_pos = {p: np.zeros((n, slots[p].points), np.int32) for p in paths if slots[p].points}
    norms = {p: np.zeros((n,), np.float32) for p in paths if slots[p].norm}
    logit_w = np.zeros((n, num_classes or 1), np.float32)
    custom_ids = list(customs)
    custom_c = np.zeros((n, len(custom_ids)), np.float32)

    for row, obj in enumerate(objectives):
        used = dict.fromkeys(paths, 0)
        for weight, term in obj.terms:
            if term.kind == "logit":
                k = _check_index(term.index, num_classes, "class_index", "the model's logits")
                logit_w[row, k] += weight
                continue
            if term.kind == "custom":
                custom_c[row, custom_ids.index(id(term.fn))] += weight
                continue
            path, _ = resolve_layer(model, term.layer)
            slot = slots[path]
            where = f"layer {path!r} with {slot.channels} channels"
            if term.kind == "channel":
                k = _check_index(term.index, slot.channels, "index", where)
                means[path][row, k] += weight
            elif term.kind == "direction":
                vec = np.asarray(term.vector, np.float32).reshape(-1)
                if vec.shape[0] != slot.channels or not np.all(np.isfinite(vec)):
                    raise ValueError(
                        f"Expected `vector` to hold {slot.channels} finite values, one per "
                        f"channel of layer {path!r}. Received: shape {np.shape(term.vector)}."
                    )
                means[path][row] += weight * vec
            elif term.kind == "layer_norm":
                norms[path][row] += weight
            elif term.kind == "neuron":
                k = _check_index(term.index, slot.channels, "index", where)
                pos = _flat_position(term.position, slot.spatial, path)
                j = used[path]
                used[path] += 1
                point_w[path][row, j, k] = weight
                point_pos[path][row, j] = pos

    arrays: list[np.ndarray] = []
    for p in paths:
        slot = slots[p]
        if slot.mean:
            arrays.append(means[p])
        if slot.points:
            arrays += [point_w[p], point_pos[p]]
        if slot.norm:
            arrays.append(norms[p])
    logit_used = any(t.kind == "logit" for obj in objectives for _, t in obj.terms)
    if logit_used:
        arrays.append(logit_w)
    custom_list = [
        (fn, tuple(paths.index(q) for q in cpaths), wants) for fn, cpaths, wants in customs.values()
    ]
    if custom_list:
        arrays.append(custom_c)
    layer_key = tuple((s.path, s.channels, s.mean, s.points, s.norm) for s in slots.values())
    key = (
        layer_key,
        logit_used,
        tuple((id(fn), idx, wants) for fn, idx, wants in custom_list),
    )
    return ObjectivePlan(
        layers=paths,
        logits=has_logit,
        key=key,
        arrays=arrays,
        slots=list(slots.values()),
        customs=custom_list,
        labels=[repr(o) for o in objectives],
        logit_weights=logit_used,
    )


def _flat_position(position: Any, spatial: tuple, path: str) -> int:
    """Row-major index of ``position`` in a map of size ``spatial`` (centre when None)."""
    if position is None:
        position = tuple(s // 2 for s in spatial)
    position = tuple(position)
    bad = len(position) != len(spatial) or any(
        isinstance(p, bool) or not isinstance(p, int | np.integer) or not 0 <= p < s
        for p, s in zip(position, spatial, strict=False)
    )
    if bad:
        raise ValueError(
            f"Expected `position` to be {len(spatial)} ints inside the {spatial} map of layer "
            f"{path!r}. Received: position={position!r}."
        )
    flat = 0
    for p, s in zip(position, spatial, strict=True):
        flat = flat * s + int(p)
    return flat


# ---------------------------------------------------------------- evaluation


def _score_factory(plan: ObjectivePlan):
    def factory(probe):
        def score(inputs, *arrays):
            note_trace("score_objectives")
            outputs, logits = probe(inputs)
            return plan.score(outputs, logits, arrays)

        return compiled(score)

    return factory


def score_objectives(
    model: keras.Model,
    objectives: Objective | Sequence[Objective],
    images: Any,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """Each image's objective value: row ``i`` scored by objective ``i`` (or one for all).

    Args:
        model: the model.
        objectives: one objective (applied to every image) or one per image.
        images: ``(n, h, w, c)`` model inputs.
        batch_size: rows per forward pass.

    Returns:
        ``(n,)`` float32 scores.

    Example:
        >>> before = kerasviz.score_objectives(model, kerasviz.layer_norm("conv2"), photo)
    """
    from kerasviz._inputs import as_batch, run_chunked

    batch = as_batch(model, images, "images")
    objs = as_objectives(objectives)
    if len(objs) == 1:
        objs = objs * batch.n
    if len(objs) != batch.n:
        raise ValueError(
            f"Expected one objective for all images or one per image ({batch.n}). "
            f"Received: {len(objs)} objectives."
        )
    plan = resolve(model, objs, batch.arrays[0].shape[1:])
    probe = get_probe(model, plan.layers, logits=plan.logits)
    fn = probe.function(("score_objectives", plan.key), _score_factory(plan))
    scores = run_chunked(
        lambda chunk, *extra: fn(chunk, *extra), batch.arrays, batch_size, extra=plan.arrays
    )
    return batch.squeeze(scores)
