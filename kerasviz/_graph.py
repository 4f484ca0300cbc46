"""Walking a Keras layer graph, nested models included, with a caller-chosen meaning of "call".

Every piece of kerasviz that needs the structure of a model (the probe view, receptive fields,
guided backprop, test-only interpreters) runs the same walk: the model's own nodes in
topological order, descending into nested Sequential and functional models, and asking a
``call(layer, path, args, kwargs)`` function for each leaf layer's outputs. The values that flow
can be symbolic tensors, real tensors or any other object (a receptive field, say): the walker
only substitutes them for the model's own ``KerasTensor`` placeholders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras

CallFn = Callable[[Any, str, tuple, dict], Any]
VisitFn = Callable[[Any, str, Any], None]


def default_call(layer: Any, path: str, args: tuple, kwargs: dict) -> Any:
    """Calls the layer as the model itself would."""
    return layer(*args, **kwargs)


def is_graph_model(layer: Any) -> bool:
    """True for a Sequential or functional model, whose inner layers form a graph we can walk."""
    if isinstance(layer, keras.Sequential):
        return True
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth")


def model_inputs(model: keras.Model) -> list:
    """The model's symbolic inputs, or a clear error for a model that was never built."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"Expected `model` to be a built Sequential or functional Keras model with known "
            f"inputs. Received: model={model.name!r} of type {type(model).__name__}, which has "
            "no symbolic inputs. Build it with `keras.Input(...)` or call it on data first."
        )
    return list(inputs)


#: Which model kinds each function supports; every "needs a layer graph" error says it.
SUPPORTED_MODELS = (
    "Sequential and functional Keras models (nested ones included) support every kerasviz "
    "function; subclassed models support only those that need just `model(x)`: saliency, "
    "smoothgrad, integrated_gradients, input_x_gradient, gradient_shap, occlusion, fgsm, pgd, "
    "metrics.deletion_auc and metrics.insertion_auc"
)


def check_graph_model(model: Any) -> None:
    """Raises a ValueError for subclassed models, whose layer graph cannot be seen."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected `model` to be a keras.Model. Received: {type(model).__name__}.")
    if not is_graph_model(model):
        raise ValueError(
            "Expected `model` to be a Sequential or functional Keras model (a layer graph). "
            f"Received: a subclassed model of type {type(model).__name__}, whose `call` hides "
            f"its layer graph. {SUPPORTED_MODELS}. Wrap the layers in keras.Sequential or build "
            "the model with keras.Input and the functional API."
        )
    model_inputs(model)


def iter_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yields ``(path, layer)`` for every layer, in graph order, recursing into nested models.

    Nested models are yielded too, before their inner layers. Paths join names with ``/``.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = f"{prefix}{layer.name}"
        yield path, layer
        if is_graph_model(layer):
            yield from iter_layers(layer, prefix=f"{path}/")


def call_counts(model: keras.Model) -> dict[int, int]:
    """How many times the model's graph calls each layer, by ``id``: more than 1 is shared.

    Counts the model's own nodes (a layer used by another model, or by a kerasviz view, is not
    counted for that), descending into nested models; a nested model called twice counts
    each of its layers twice.
    """
    counts: dict[int, int] = {}

    def walk(graph: keras.Model, times: int) -> None:
        if isinstance(graph, keras.Sequential):
            ops = [
                layer for layer in graph.layers if not isinstance(layer, keras.layers.InputLayer)
            ]
        else:
            ops = [
                node.operation
                for depth in graph._nodes_by_depth
                for node in graph._nodes_by_depth[depth]
                if node.operation is not None and not node.is_input
            ]
        for op in ops:
            counts[id(op)] = counts.get(id(op), 0) + times
            if is_graph_model(op):
                walk(op, times)

    walk(model, 1)
    return counts


def run_graph(
    model: keras.Model,
    inputs: list,
    call: CallFn = default_call,
    prefix: str = "",
    visit: VisitFn | None = None,
):
    """Runs ``model``'s graph on ``inputs`` with ``call`` standing in for each leaf layer call.

    Args:
        model: a Sequential or functional model.
        inputs: one value per model input.
        call: ``call(layer, path, args, kwargs) -> outputs`` for every leaf layer. Nested
            graph models are descended into and never passed to ``call``.
        prefix: path prefix for the layers of this model.
        visit: optional ``visit(layer, path, outputs)``, called after every layer, nested
            models included.

    Returns:
        The list of values standing for ``model.outputs``.
    """
    if isinstance(model, keras.Sequential):
        (x,) = inputs
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            x = _call_layer(layer, f"{prefix}{layer.name}", (x,), {}, call, visit)
        return [x]

    values: dict[int, Any] = {}
    for ref, value in zip(model.inputs, inputs, strict=True):
        values[id(ref)] = value
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            if any(id(t) not in values for t in node.input_tensors):
                continue
            args, kwargs = node.arguments.fill_in(values)
            op = node.operation
            outputs = _call_layer(op, f"{prefix}{op.name}", args, kwargs, call, visit)
            for ref, value in zip(node.outputs, keras.tree.flatten(outputs), strict=True):
                values[id(ref)] = value
    return [values[id(ref)] for ref in model.outputs]


def _call_layer(layer, path: str, args: tuple, kwargs: dict, call: CallFn, visit):
    if is_graph_model(layer):
        flat = keras.tree.flatten(args[0]) if len(args) == 1 else list(args)
        outputs = run_graph(layer, flat, call, prefix=f"{path}/", visit=visit)
        outputs = outputs[0] if len(outputs) == 1 else outputs
    else:
        outputs = call(layer, path, args, kwargs)
    if visit is not None:
        visit(layer, path, outputs)
    return outputs
