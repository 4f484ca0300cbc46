"""Layer-wise relevance propagation (LRP) on a relevance view of the model.

The target logit's value is the relevance at the top. It flows back layer by layer, each
linear layer sharing its outputs' relevance among its inputs by a *rule*, until it reaches
the input pixels. The view does this with one compiled forward and backward pass per chunk:

- The model's graph is walked once, when the step is traced (nested models included), with
  the user's own layers and variables (read at run time, so the view follows training).
  Nothing is cloned or changed. A final softmax or sigmoid is bypassed.
- Every linear layer becomes a ``tf.custom_gradient`` op with the same forward value whose
  backward pass applies its rule, so what flows backwards is relevance itself (the
  "gradient trick" of Zennit). Other layers pass relevance by kind
  (:data:`~kerasviz.attribution.lrp_rules.LAYER_KINDS`): activations pass it unchanged, max
  pooling gives it to the winner, sums and average pooling share it by contribution,
  Flatten/padding/Concatenate route it, a gating Multiply gives it to the gated signal.
- Canonization: a BatchNormalization right after a linear layer (and nowhere else fed) is
  folded into that layer's kernel and bias, computed from the live variables on every call.
  A BatchNormalization elsewhere (after a Concatenate in DenseNet, say) is an elementwise
  affine map whose outputs each depend on one input: the input receives their relevance
  unchanged, like Rescaling and Normalization layers.

A *composite* chooses the rule of each linear layer: :data:`COMPOSITES` holds Zennit's
EpsilonPlus, EpsilonGammaBox and EpsilonAlpha2Beta1. A user composite is a small mapping
from selectors to rules (see :func:`lrp`).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._engine import one_or_list, setup
from kerasviz._graph import model_inputs, run_graph
from kerasviz._inputs import Batch, run_chunked
from kerasviz._layers import CONV_TYPES, LayerSpec, resolve_layer
from kerasviz._probe import Probe, _head_layer
from kerasviz._targets import ScoreRule, Targets
from kerasviz.attribution.lrp_rules import (
    GATES,
    KINDS,
    MONOTONE,
    NOT_ELEMENTWISE,
    RULES,
    STABILIZER,
    AlphaBeta,
    Epsilon,
    Gamma,
    Rule,
    ZBox,
    ZPlus,
    activation_name,
    channel_axis,
    divide,
    is_linear_activation,
    layer_kind,
    linear_maps,
    nonnegative_output,
    sign0,
)

_SQUASHING = ("softmax", "sigmoid")

#: The field's standard composites (Zennit's definitions), by name.
COMPOSITES = ("epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1")
#: Rule names that ``composite=`` applies to every linear layer.
SINGLE_RULES = ("epsilon", "gamma", "alpha_beta", "zplus")
#: Selectors of a composite mapping, besides layer types and predicates.
SELECTORS = ("first", "conv", "dense", "linear")
#: Defaults of the rule parameters (Zennit's).
DEFAULTS = {"epsilon": 1e-6, "gamma": 0.25}


# ---------------------------------------------------------------------------------------------
# The plan: one symbolic walk of the graph, before any work


@dataclass
class _Tags:
    near: bool = False  # reaches back to a model input without crossing a linear layer
    nonneg: bool = False  # known to be >= 0
    bounded: bool = False  # value bounds can be carried here from `value_range`
    gate: bool = False  # a sigmoid's output


@dataclass
class Step:
    """One leaf call of the model's graph, as the relevance view treats it.

    Attributes:
        key: ``(path, k)``: the k-th call of the layer at ``path``.
        kind: the layer's kind (see :data:`~kerasviz.attribution.lrp_rules.LAYER_KINDS`), or
            ``"identity"`` for a bypassed softmax/sigmoid head layer.
        head: a Dense/convolution head whose squashing activation is bypassed.
        first: a linear layer fed by a model input through non-linear layers only.
        nonneg: the (first) input is known to be >= 0.
        bounded: the input's value bounds are known (from ``value_range``).
        fold: for a BatchNormalization folded into the linear layer before it, that layer.
        deferred: a linear layer folded into the BatchNormalization after it.
        gates: for a Multiply, the indices of the inputs that gate (None: ambiguous).
    """

    key: tuple[str, int]
    path: str
    layer: Any
    kind: str
    rank: int = 0
    head: bool = False
    first: bool = False
    nonneg: bool = False
    bounded: bool = False
    fold: Any = None
    fold_path: str | None = None
    deferred: bool = False
    gates: tuple[int, ...] | None = ()
    inputs: tuple[int, ...] = ()


@dataclass
class GraphPlan:
    """The steps of a model's graph, BatchNorm folding decided, checked for missing rules."""

    steps: dict[tuple[str, int], Step]
    output_index: int
    visits: collections.Counter = field(default_factory=collections.Counter)
    aliases: dict[str, str] = field(default_factory=dict)


def _out_tags(step: Step, layer: Any, tags: list[_Tags]) -> _Tags:
    near = bool(tags) and all(t.near for t in tags)
    nonneg = bool(tags) and all(t.nonneg for t in tags)
    bounded = bool(tags) and all(t.bounded for t in tags)
    kind = step.kind
    if kind == "linear":
        if step.head:
            return _Tags()
        return _Tags(nonneg=nonnegative_output(layer), gate=activation_name(layer) in GATES)
    if kind in ("batchnorm", "affine"):
        return _Tags(near=near, bounded=bounded and len(tags) == 1)
    if kind == "activation":
        name = activation_name(layer)
        return _Tags(
            near=near,
            nonneg=nonnegative_output(layer),
            bounded=bounded and len(tags) == 1 and name in MONOTONE,
            gate=name in GATES,
        )
    if kind in ("move", "max", "identity"):
        gate = len(tags) == 1 and tags[0].gate
        return _Tags(near=near, nonneg=nonneg, bounded=bounded, gate=gate)
    if kind == "sum":
        return _Tags(near=near, nonneg=nonneg, bounded=bounded and not _is_subtract(layer))
    return _Tags(near=near, nonneg=nonneg)  # multiply


def _gates(tags: list[_Tags], shapes: list[tuple], ancestors: list[bool]):
    """Which inputs of a Multiply gate the others: sigmoid outputs; else all but the one
    the others are computed from (``x * g(x)``, as hard-swish and squeeze-excitation);
    else the broadcast ones. None when the signal cannot be told apart."""
    gated = [k for k, t in enumerate(tags) if not t.gate]
    if len(gated) != 1:
        gated = [k for k, a in enumerate(ancestors) if a]
    if len(gated) != 1:
        sizes = [math.prod(d or 1 for d in s[1:]) for s in shapes]
        gated = [k for k, s in enumerate(sizes) if s == max(sizes)]
    if len(gated) != 1:
        return None
    return tuple(k for k in range(len(tags)) if k != gated[0])


def _is_ancestor(source: int, of: list[int], producer: dict) -> bool:
    """True when the value ``source`` (an id) is an input, direct or not, of all of ``of``."""
    if not of:
        return False
    for start in of:
        seen, stack, found = set(), [start], False
        while stack and not found:
            value = stack.pop()
            step = producer.get(value)
            if step is None or value in seen:
                continue
            seen.add(value)
            found = source in step.inputs
            stack.extend(step.inputs)
        if not found:
            return False
    return True


def _head_kind(layer: Any, kind: str | None) -> tuple[str | None, bool]:
    """``(kind, head)`` for the model's output layer: a squashing head is bypassed."""
    name = activation_name(layer)
    if isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and name in _SQUASHING
    ):
        return "identity", False
    if name in _SQUASHING:
        if kind != "linear":
            raise ValueError(
                "Expected the model's output layer to be a Dense or convolution layer, or a "
                "separate Activation/Softmax layer, to start relevance at the logits. "
                f"Received: layer {layer.name!r} of type {type(layer).__name__} with a {name} "
                "activation. Move the activation into a separate keras.layers.Activation layer."
            )
        return kind, True
    return kind, False


def _missing_error(missing: list[tuple[str, Any]]) -> ValueError:
    names = ", ".join(f"{path!r} of type {type(layer).__name__}" for path, layer in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    example = type(missing[0][1]).__name__
    return ValueError(
        "Expected every layer of `model` to have a propagation rule (LRP, DeepLIFT). "
        "Received: layer "
        f"{names}{more}, which has none. Register the layer type in the rule table "
        "kerasviz.attribution.lrp_rules.LAYER_KINDS, for example "
        f"`LAYER_KINDS[{example}] = 'move'`, with one of the kinds {list(KINDS[1:])} "
        "(see its docstring); a linear layer must be a Dense or convolution layer."
    )


def graph_plan(model: keras.Model, output_index: int, inputs_nonneg: bool) -> GraphPlan:
    """Walks ``model``'s graph once symbolically: kinds, tags and BatchNorm folding.

    Raises:
        ValueError: naming every layer that has no rule, before any computation.
    """
    head = _head_layer(model, output_index)
    steps: dict[tuple[str, int], Step] = {}
    tags: dict[int, _Tags] = {}
    producer: dict[int, Step] = {}
    consumers: collections.Counter = collections.Counter()
    ordinal: collections.Counter = collections.Counter()
    visits: collections.Counter = collections.Counter()
    keep: list = []
    missing: list = []
    inputs = model_inputs(model)
    for t in inputs:
        tags[id(t)] = _Tags(near=True, nonneg=inputs_nonneg, bounded=True)

    def call(layer, path, args, kwargs):
        key = (path, ordinal[path])
        ordinal[path] += 1
        for t in keras.tree.flatten((args, kwargs)):
            if isinstance(t, keras.KerasTensor):
                consumers[id(t)] += 1
        tensors = [t for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor)]
        in_tags = [tags.get(id(t), _Tags()) for t in tensors]
        kind = layer_kind(layer)
        is_head = False
        if layer is head:
            kind, is_head = _head_kind(layer, kind)
        elif kind == "linear" and activation_name(layer) in NOT_ELEMENTWISE:
            kind = None  # a softmax inside the network does not pass relevance elementwise
        if kind is None:
            missing.append((path, layer))
        outputs = layer(*args, **kwargs)
        keep.append(outputs)
        first = in_tags[0] if in_tags else _Tags()
        step = Step(
            key=key,
            path=path,
            layer=layer,
            kind=kind or "missing",
            rank=len(tensors[0].shape) if tensors else 0,
            head=is_head,
            first=kind == "linear" and first.near,
            nonneg=first.nonneg,
            bounded=first.bounded,
            inputs=tuple(id(t) for t in tensors),
        )
        if kind == "multiply":
            ids = [id(t) for t in tensors]
            ancestors = [_is_ancestor(i, [j for j in ids if j != i], producer) for i in ids]
            step.gates = _gates(in_tags, [tuple(t.shape) for t in tensors], ancestors)
        steps[key] = step
        out_tags = _out_tags(step, layer, in_tags) if kind else _Tags()
        for out in keras.tree.flatten(outputs):
            tags[id(out)] = out_tags
            producer[id(out)] = step
        return outputs

    def visit(layer, path, outputs):
        visits[path] += 1

    outputs = run_graph(model, inputs, call, visit=visit)
    if missing:
        raise _missing_error(missing)
    for out in outputs:
        consumers[id(out)] += 1
    plan = GraphPlan(steps, output_index, visits)
    for step in steps.values():
        if step.kind != "batchnorm" or len(step.inputs) != 1:
            continue
        source = producer.get(step.inputs[0])
        if (
            source is None
            or source.kind != "linear"
            or source.head
            or source.deferred
            or not is_linear_activation(source.layer)
            or consumers[step.inputs[0]] != 1
            or step.layer.axis % step.rank != channel_axis(source.layer, step.rank)
        ):
            continue
        source.deferred = True
        step.fold, step.fold_path = source.layer, source.path
        step.first, step.nonneg, step.bounded = source.first, source.nonneg, source.bounded
        step.rank = source.rank
        plan.aliases[source.path] = step.path
    return plan


# ---------------------------------------------------------------------------------------------
# Composites


def _matches(selector: Any, layer: Any, path: str, first: bool) -> bool:
    if selector == "first":
        return first
    if selector == "conv":
        return isinstance(layer, CONV_TYPES)
    if selector == "dense":
        return isinstance(layer, keras.layers.Dense)
    if selector == "linear":
        return True
    if isinstance(selector, type):
        return isinstance(layer, selector)
    return bool(selector(layer, path))


def _rule_maker(params: dict[str, float | None]):
    """``make(name) -> Rule`` from the keyword parameters; records which ones were used."""
    used: set[str] = set()

    def make(name: str) -> Rule:
        if name not in RULES:
            raise ValueError(
                f"Expected a rule name in `composite` to be one of {list(RULES)}. "
                f"Received: {name!r}."
            )
        cls = RULES[name]
        used.update(cls.params)
        if cls is Epsilon:
            return Epsilon(_param(params, "epsilon"))
        if cls is Gamma:
            return Gamma(_param(params, "gamma"))
        if cls is AlphaBeta:
            alpha, beta = params["alpha"], params["beta"]
            if alpha is None and beta is None:
                alpha, beta = 2.0, 1.0
            elif alpha is None:
                alpha = beta + 1.0
            elif beta is None:
                beta = alpha - 1.0
            return AlphaBeta(alpha, beta)
        return cls()

    return make, used


def _param(params: dict, name: str) -> float:
    value = params[name]
    return DEFAULTS[name] if value is None else value


def resolve_composite(composite: Any, **params: float | None) -> tuple[tuple[Any, Rule], ...]:
    """The ``(selector, rule)`` entries of ``composite``; the first matching entry applies.

    Raises:
        ValueError: for an unknown composite, rule or selector, an invalid rule parameter,
            or a parameter that no rule of the composite uses.
    """
    make, used = _rule_maker(params)
    if isinstance(composite, Rule):
        entries = (("linear", composite),)
    elif isinstance(composite, str):
        if composite == "epsilon_plus":
            entries = (("dense", make("epsilon")), ("conv", ZPlus()))
        elif composite == "epsilon_gamma_box":
            entries = (("first", ZBox()), ("conv", make("gamma")), ("dense", make("epsilon")))
        elif composite == "epsilon_alpha2_beta1":
            entries = (("dense", make("epsilon")), ("conv", AlphaBeta(2.0, 1.0)))
        elif composite in SINGLE_RULES:
            entries = (("linear", make(composite)),)
        else:
            raise ValueError(
                f"Expected `composite` to be one of the composites {list(COMPOSITES)}, one of "
                f"the rules {list(SINGLE_RULES)} (applied to every layer) or a mapping from "
                f"selectors to rules. Received: composite={composite!r}."
            )
    elif isinstance(composite, Mapping):
        if not composite:
            raise ValueError("Expected `composite` to hold at least one entry. Received: {}.")
        entries = []
        for selector, rule in composite.items():
            if not (
                selector in SELECTORS
                if isinstance(selector, str)
                else (isinstance(selector, type) or callable(selector))
            ):
                raise ValueError(
                    f"Expected the keys of `composite` to be one of {list(SELECTORS)}, a layer "
                    "type or a predicate `(layer, path) -> bool`. Received: "
                    f"{selector!r}."
                )
            if isinstance(rule, str):
                rule = make(rule)
            elif not isinstance(rule, Rule):
                raise ValueError(
                    f"Expected the values of `composite` to be rule names {list(RULES)} or "
                    f"Rule values. Received: {rule!r} for {selector!r}."
                )
            entries.append((selector, rule))
        entries = tuple(entries)
    else:
        raise ValueError(
            f"Expected `composite` to be a name ({list(COMPOSITES) + list(SINGLE_RULES)}), a "
            f"Rule or a mapping. Received: {type(composite).__name__}."
        )
    unused = [f"{k}={v!r}" for k, v in params.items() if v is not None and k not in used]
    if unused:
        raise ValueError(
            "Expected only parameters of the rules that `composite` uses. Received: "
            f"{', '.join(unused)}, which composite={_describe(composite)} does not use"
            + (
                " (it fixes alpha=2, beta=1; pass composite={'conv': 'alpha_beta', 'dense': "
                "'epsilon'} to choose them)."
                if composite == "epsilon_alpha2_beta1"
                else "."
            )
        )
    return entries


def _describe(composite: Any) -> str:
    return repr(composite) if isinstance(composite, str) else type(composite).__name__


def assign_rules(plan: GraphPlan, entries: tuple) -> dict[tuple[str, int], Rule]:
    """The rule of every linear step (a folded BatchNorm takes its linear layer's rule).

    Raises:
        ValueError: for a linear layer that no entry matches, a z^B rule on a layer whose
            input bounds are unknown, or an ambiguous gating Multiply.
    """
    rules = {}
    for key, step in plan.steps.items():
        if step.kind == "multiply" and step.gates is None:
            raise ValueError(
                "Expected one input of each Multiply to be the gated signal and the others "
                "gates (sigmoid outputs or broadcast scales), which receive no relevance. "
                f"Received: layer {step.path!r}, whose inputs cannot be told apart."
            )
        linear = step.kind == "linear" and not step.deferred
        folded = step.kind == "batchnorm" and step.fold is not None
        if not (linear or folded):
            continue
        layer, path = (step.fold, step.fold_path) if folded else (step.layer, step.path)
        rule = next(
            (r for sel, r in entries if _matches(sel, layer, path, step.first)),
            None,
        )
        if rule is None:
            raise ValueError(
                "Expected `composite` to give a rule for every Dense and convolution layer. "
                f"Received: no entry matches layer {path!r} of type {type(layer).__name__}. "
                "Add an entry such as 'linear', 'conv' or 'dense'."
            )
        if rule.needs_bounds and not step.bounded:
            raise ValueError(
                f"Expected the z^B rule only on layers whose input bounds follow from "
                f"`value_range` (the model input, through elementwise, padding or pooling "
                f"layers). Received: it for layer {path!r}."
            )
        rules[key] = rule
    return rules


# ---------------------------------------------------------------------------------------------
# The relevance view, built while the compiled step is traced


class _Deferred:
    """Stands for a linear layer's output that the BatchNormalization after it folds."""

    def __init__(self, x):
        self.x = x


def with_variables(grads, variables):
    return (grads, [None] * len(variables)) if variables else grads


def _pass(fn: Callable, x):
    """``fn(x)`` forward; relevance passes back unchanged (elementwise maps)."""

    @tf.custom_gradient
    def op(t):
        y = fn(t)

        def grad(r, variables=None):
            return with_variables(tf.cast(r, t.dtype), variables)

        return y, grad

    return op(x)


def _linear_op(lin, rule: Rule, x, bounds, nonneg: bool):
    @tf.custom_gradient
    def op(t):
        xf = tf.cast(t, tf.float32)
        z = lin.forward(xf)

        def grad(r, variables=None):
            rel = rule.relevance(lin, xf, z, tf.cast(r, tf.float32), bounds, nonneg)
            return with_variables(tf.cast(rel, t.dtype), variables)

        return z, grad

    return op(x)


def _linear(layer, bn, rule: Rule, x, bounds, nonneg: bool):
    maps = linear_maps(layer, len(x.shape), bn)
    for k, lin in enumerate(maps):
        x = _linear_op(lin, rule, x, bounds, nonneg)
        if k + 1 < len(maps):  # a separable conv's depthwise part: interval arithmetic
            if bounds is not None:
                low, high = bounds
                wp, wn = tf.nn.relu(lin.kernel), tf.minimum(lin.kernel, 0.0)
                bounds = (lin(low, wp) + lin(high, wn), lin(high, wp) + lin(low, wn))
            nonneg = False
    return x


def split_tensors(args):
    flat = keras.tree.flatten(args)
    where = [k for k, a in enumerate(flat) if tf.is_tensor(a)]

    def rebuild(tensors):
        filled = list(flat)
        for k, t in zip(where, tensors, strict=True):
            filled[k] = t
        return keras.tree.pack_sequence_as(args, filled)

    return [flat[k] for k in where], rebuild


def _proportional(layer, args, kwargs):
    """A sum or mean: each input gets relevance in proportion to its contribution."""
    tensors, rebuild = split_tensors(args)

    @tf.custom_gradient
    def op(*ts):
        y = layer(*rebuild(ts), **kwargs)

        def grad(r, variables=None):
            xs = [tf.cast(t, tf.float32) for t in ts]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(xs)
                yy = tf.cast(layer(*rebuild(xs), **kwargs), tf.float32)
            # Stabilized relative to the inputs' magnitudes, so that the rule does not depend
            # on the activations' scale: z + STABILIZER * sign(z) * layer(|x|).
            magnitudes = [
                -tf.abs(x) if k and _is_subtract(layer) else tf.abs(x) for k, x in enumerate(xs)
            ]
            size = tf.abs(tf.cast(layer(*rebuild(magnitudes), **kwargs), tf.float32))
            z = tf.cast(y, tf.float32)
            s = divide(tf.cast(r, tf.float32), z + STABILIZER * sign0(z) * size)
            pulled = tape.gradient(yy, xs, output_gradients=s, unconnected_gradients="zero")
            rel = [tf.cast(x * p, t.dtype) for x, p, t in zip(xs, pulled, ts, strict=True)]
            return with_variables(rel, variables)

        return y, grad

    return op(*tensors)


def _is_subtract(layer) -> bool:
    return isinstance(layer, keras.layers.Subtract) or type(layer).__name__ == "Subtract"


def unbroadcast(r, t):
    """``r`` summed down to ``t``'s shape (the transpose of broadcasting ``t`` to ``r``)."""
    if r.shape.is_fully_defined() and t.shape.is_fully_defined() and r.shape == t.shape:
        return r
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(t)
        b = tf.broadcast_to(t, tf.shape(r))
    return tape.gradient(b, t, output_gradients=tf.cast(r, t.dtype))


def _gate(layer, args, kwargs, gates: tuple[int, ...]):
    """``x * g``: all relevance to the gated signal, none to the gates."""
    tensors, rebuild = split_tensors(args)

    @tf.custom_gradient
    def op(*ts):
        y = layer(*rebuild(ts), **kwargs)

        def grad(r, variables=None):
            rel = [
                tf.zeros_like(t) if k in gates else unbroadcast(tf.cast(r, t.dtype), t)
                for k, t in enumerate(ts)
            ]
            return with_variables(rel, variables)

        return y, grad

    return op(*tensors)


def _carry_bounds(layer, args, kwargs, bounds: dict):
    """The output bounds of a layer that moves or maps values monotonically."""
    tensors, rebuild = split_tensors(args)
    if not tensors or any(id(t) not in bounds for t in tensors):
        return None
    low = layer(*rebuild([bounds[id(t)][0] for t in tensors]), **kwargs)
    high = layer(*rebuild([bounds[id(t)][1] for t in tensors]), **kwargs)
    low, high = tf.cast(low, tf.float32), tf.cast(high, tf.float32)
    return tf.minimum(low, high), tf.maximum(low, high)


def relevance_graph(model, plan: GraphPlan, rules: dict, inputs, lows, highs, capture=()):
    """Runs the relevance view on real tensors (inside a compiled step).

    Returns:
        ``(output, captured)``: the explained output (pre-activation) and the tensors at the
        output of the layers in ``capture`` (paths), by path.
    """
    ordinal: collections.Counter = collections.Counter()
    bounds: dict[int, tuple] = {}
    keep: list = []
    needs_bounds = any(r.needs_bounds for r in rules.values())
    for x, low, high in zip(inputs, lows, highs, strict=False):
        bounds[id(x)] = (low, high)
    captured: dict[str, Any] = {}

    def call(layer, path, args, kwargs):
        key = (path, ordinal[path])
        ordinal[path] += 1
        step = plan.steps[key]
        kind = step.kind
        x = args[0] if args else None
        if kind == "identity":
            out = x
        elif kind == "linear":
            if step.deferred:
                return _Deferred(x)
            out = _linear(layer, None, rules[key], x, bounds.get(id(x)), step.nonneg)
            if not step.head and not is_linear_activation(layer):
                out = _pass(layer.activation, out)
        elif kind == "batchnorm" and step.fold is not None:
            source = x.x
            out = _linear(step.fold, layer, rules[key], source, bounds.get(id(source)), step.nonneg)
        elif kind in ("batchnorm", "affine", "activation"):
            out = _pass(lambda t: layer(t, *args[1:], **kwargs), x)
        elif kind in ("move", "max"):
            out = layer(*args, **kwargs)
        elif kind == "sum":
            out = _proportional(layer, args, kwargs)
        else:
            out = _gate(layer, args, kwargs, step.gates)
        keep.append(out)
        if needs_bounds and kind not in ("linear", "multiply") and step.fold is None:
            carried = _carry_bounds(layer, args, kwargs, bounds)
            if carried is not None:
                bounds[id(out)] = carried
                keep.append(carried)
        return out

    def visit(layer, path, outputs):
        if path in capture and not isinstance(outputs, _Deferred):
            captured[path] = outputs

    outputs = run_graph(model, list(inputs), call, visit=visit)
    return outputs[plan.output_index], captured


# ---------------------------------------------------------------------------------------------
# The public function


def probe_graph_plan(probe: Probe, nonneg: bool) -> GraphPlan:
    return graph_plan(probe.model, probe.output_index, nonneg)


def _lrp_plan(probe: Probe, entries: tuple, nonneg: bool):
    plan = probe.cached(probe_graph_plan, nonneg)
    return plan, assign_rules(plan, entries)


# The walk is plain Python that runs once, at trace time: autograph must not convert it.
@tf.autograph.experimental.do_not_convert
def _lrp_step(probe: Probe, rule: ScoreRule, entries, nonneg, sources, inputs, indices, *bounds):
    plan, rules = probe.cached(_lrp_plan, entries, nonneg)
    k = len(inputs)
    lows, highs = bounds[:k], bounds[k:]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(inputs)
        logits, captured = relevance_graph(
            probe.model, plan, rules, inputs, lows, highs, capture=sources
        )
        logits = tf.cast(logits, tf.float32)
    with tf.GradientTape(watch_accessed_variables=False) as inner:
        inner.watch(logits)
        scores = rule.scores(logits, indices)
    # Relevance starts at the explained logit: (d score / d logits) * logits.
    seed = inner.gradient(scores, logits) * logits
    wanted = [captured[s] for s in sources] if sources else list(inputs)
    grads = tape.gradient(logits, wanted, output_gradients=seed, unconnected_gradients="zero")
    return [tf.cast(g, tf.float32) for g in grads]


def _bounds(value_range: Any, batch: Batch) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Low and high arrays (one image's shape) for every model input, checked against the
    inputs."""
    arrays = batch.arrays
    per_input = (
        len(arrays) > 1
        and isinstance(value_range, list | tuple)
        and len(value_range) == len(arrays)
        and all(isinstance(v, list | tuple) for v in value_range)
    )
    ranges = list(value_range) if per_input else [value_range] * len(arrays)
    lows, highs = [], []
    for k, (spec, x) in enumerate(zip(ranges, arrays, strict=True)):
        name = "value_range" if len(arrays) == 1 else f"value_range[{k}]"
        try:
            low, high = spec
            low = np.broadcast_to(np.asarray(low, np.float32), x.shape[1:])
            high = np.broadcast_to(np.asarray(high, np.float32), x.shape[1:])
        except (TypeError, ValueError):
            raise ValueError(
                f"Expected `{name}` to be (low, high), each a number or an array broadcastable "
                f"to one input of shape {x.shape[1:]}. Received: {spec!r}."
            ) from None
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
            raise ValueError(
                f"Expected `{name}` to be (low, high) with finite low < high. Received: {spec!r}."
            )
        slack = 1e-6 * max(1.0, float(np.abs(low).max()), float(np.abs(high).max()))
        if np.any(x < low - slack) or np.any(x > high + slack):
            raise ValueError(
                f"Expected the inputs to lie within `{name}`. Received: values in "
                f"[{float(x.min()):g}, {float(x.max()):g}]. Pass the range the inputs are "
                "drawn from (for example (0, 255) for 8-bit images)."
            )
        lows.append(low)
        highs.append(high)
    return lows, highs


def _sources(plan: GraphPlan, model: keras.Model, layer: Any) -> tuple[tuple[str, ...], bool]:
    """The capture paths for ``layer`` (folded layers report the fused output), and whether
    one layer (not a list) was asked for."""
    if layer is None:
        return (), False
    single = not isinstance(layer, list | tuple)
    paths = []
    for spec in [layer] if single else list(layer):
        path, _ = resolve_layer(model, spec)
        if plan.visits[path] != 1:
            raise ValueError(
                f"Expected `layer` to be called once in the model, so that its relevance is "
                f"one tensor. Received: layer {path!r}, which the model calls "
                f"{plan.visits[path]} times (a shared layer)."
            )
        paths.append(plan.aliases.get(path, path))
    return tuple(paths), single


def lrp(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | list[LayerSpec] | None = None,
    *,
    composite: str | Mapping | Rule = "epsilon_plus",
    epsilon: float | None = None,
    gamma: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    value_range: Any = None,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Layer-wise relevance propagation: the target logit shared out among the input pixels.

    Relevance starts at the target's logit (pre-softmax; ``(d score / d logits) * logits``
    for a callable target) and flows back by the composite's rules. With a conserving rule
    on a bias-free network, every layer's relevance sums to the logit; biases, epsilon and
    the stabilizers absorb a share. Sum over channels for a map: ``r.sum(axis=-1)``.

    Args:
        model: a Sequential or functional Keras model (nested models included).
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)``; a list for several inputs.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (predicted).
        layer: None for the input's relevance; a layer (name, index, object or
            ``"outer/inner"`` path) or a list of them for the relevance of their outputs. A
            layer folded with the BatchNormalization after it reports the fused output.
        composite: which rule each Dense/convolution layer gets:

            - ``"epsilon_plus"`` (default): epsilon on Dense, z+ on convolutions;
            - ``"epsilon_gamma_box"``: z^B on the first layer (needs ``value_range``), gamma
              on convolutions, epsilon on Dense;
            - ``"epsilon_alpha2_beta1"``: epsilon on Dense, alpha=2 beta=1 on convolutions;
            - ``"epsilon"``, ``"gamma"``, ``"alpha_beta"`` or ``"zplus"``: that rule everywhere;
            - a mapping ``{selector: rule}``, the first matching entry applying. Selectors:
              ``"first"`` (layers fed by the input through no other linear layer),
              ``"conv"``, ``"dense"``, ``"linear"`` (any), a layer type, or a predicate
              ``(layer, path) -> bool``. Rules: names of
              :data:`~kerasviz.attribution.lrp_rules.RULES` (``"flat"``, ``"wsquare"`` and
              ``"zbox"`` included) or values such as ``lrp_rules.Gamma(0.5)``.
        epsilon: the epsilon rule's stabilizer (default 1e-6, Zennit's); 0 gives LRP-0.
        gamma: the gamma rule's weight on positive contributions (default 0.25), >= 0.
        alpha, beta: the alpha-beta rule's weights, ``alpha - beta = 1`` (default 2 and 1).
        value_range: ``(low, high)`` the inputs are drawn from (numbers or arrays
            broadcastable to one image), for the z^B rule; a list of pairs for several inputs.
            Inputs outside it raise.
        batch_size: rows per compiled pass; None for all images at once.
        output: which model output to explain, for models with several.

    Returns:
        float32 relevance shaped like the inputs (a list for several inputs), in units of the
        logit; with ``layer``, shaped like the layer's output (a list for a list of layers).

    Raises:
        ValueError: before any computation, for a layer without a rule (naming it, its type
            and the rule table :data:`~kerasviz.attribution.lrp_rules.LAYER_KINDS`), an
            unknown composite or rule (listing the valid ones), ``gamma < 0``,
            ``alpha - beta != 1``, a parameter the composite does not use, or z^B without a
            ``value_range`` the inputs lie in.

    References: Bach et al., "On pixel-wise explanations for non-linear classifier decisions
    by layer-wise relevance propagation" (2015); Montavon et al., "Layer-wise relevance
    propagation: an overview" (2019); composites as in Zennit (Anders et al., 2021).

    Example:
        >>> r = kerasviz.lrp(model, images, 3, composite="epsilon_gamma_box",
        ...                  value_range=(0, 1))           # (n, H, W, C)
        >>> heatmap = r.sum(axis=-1)                       # (n, H, W)
    """
    entries = resolve_composite(composite, epsilon=epsilon, gamma=gamma, alpha=alpha, beta=beta)
    needs_bounds = any(rule.needs_bounds for _, rule in entries)
    if needs_bounds and value_range is None:
        raise ValueError(
            "Expected `value_range` (low, high) of the inputs for the z^B rule of composite="
            f"{_describe(composite)}. Received: value_range=None."
        )
    batch, probe, target = setup(model, inputs, targets, output=output)
    if not probe.graph:
        raise ValueError(
            "Expected `model` to be a Sequential or functional Keras model for LRP. Received: "
            f"a subclassed model of type {type(model).__name__}, whose layer graph is hidden."
        )
    lows, highs = _bounds(value_range, batch) if value_range is not None else ([], [])
    nonneg = bool(lows) and all(bool(np.all(low >= 0)) for low in lows)
    plan, _ = probe.cached(_lrp_plan, entries, nonneg)
    sources, single = _sources(plan, probe.model, layer)
    fn = probe.step(_lrp_step, target.rule, entries, nonneg, sources)
    extra = [target.indices]
    if needs_bounds:  # per row, so that they are chunked with the inputs
        rows = zip(lows + highs, batch.arrays * 2, strict=True)
        extra += [np.broadcast_to(b, x.shape) for b, x in rows]
    relevance = list(run_chunked(fn, batch.arrays, batch_size, extra=extra))
    if layer is None:
        return one_or_list(batch, relevance)
    return batch.squeeze(relevance[0] if single else relevance)
