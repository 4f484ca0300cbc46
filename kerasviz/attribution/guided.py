"""Guided backpropagation and Guided Grad-CAM, on a guided view of the model.

The guided view runs the model's own layers and variables (nested models included) with
every ReLU replaced by a *guided* ReLU: the same forward value, but on the way back a gradient
passes only where the ReLU's input is positive *and* the incoming gradient is positive. Every
ReLU form is found: ``keras.layers.ReLU`` layers (leaky, capped and thresholded ones too),
``Activation("relu")``/``"relu6"``/``"leaky_relu"`` layers, ``keras.ops.relu``/``relu6`` and
``keras.activations.relu`` nodes of a functional graph, and the ``activation="relu"`` of Dense
and convolution layers, whose pre-activation is recomputed from the layer's own variables
(another layer with a ReLU activation gets an error). A ReLU applied inside a custom layer's
``call`` cannot be seen and stays unguided. Nothing in the user's model is changed; a final softmax or sigmoid
is bypassed, as in :class:`kerasviz.Probe`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import choice
from kerasviz._engine import one_or_list, setup
from kerasviz._graph import check_graph_model, model_inputs, run_graph
from kerasviz._inputs import as_batch, run_chunked
from kerasviz._layers import CONV_TYPES, LayerSpec
from kerasviz._probe import (
    Probe,
    RuntimeLayer,
    _head_layer,
    get_probe,
    linear_part,
    pre_activation,
)
from kerasviz._targets import ScoreRule, Targets
from kerasviz.attribution.cams import (
    DEFAULT_UPSAMPLE,
    PROJECTIONS,
    _linear_target,
    cam,
    cam_layers,
    grad_cam_weights,
)
from kerasviz.receptive_field import receptive_field

#: Activation names guided as ReLUs (Activation layers and ``activation=`` arguments).
_RELU_NAMES = {"relu", "relu6", "leaky_relu"}
#: Operation classes of ``keras.ops.relu``/``relu6`` and ``keras.activations.relu`` nodes.
_RELU_OPS = {"Relu", "Relu6", "ReLU", "LeakyRelu"}


def _guided(fn: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[tf.Tensor], tf.Tensor]:
    """``fn`` forward; backward, ``fn``'s own vector-Jacobian product of ``relu(dy)``.

    For a ReLU that is ``relu(dy) * (x > 0)``: only positive gradients through active units.
    """

    @tf.custom_gradient
    def guided(x):
        y = fn(x)

        def grad(dy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                z = fn(x)
            return tape.gradient(z, x, output_gradients=tf.nn.relu(dy))

        return y, grad

    return guided


def _is_relu(activation: Any) -> bool:
    return getattr(activation, "__name__", None) in _RELU_NAMES


def _relu_op(op: Any) -> bool:
    """A ReLU operation node of a functional graph (not a layer)."""
    return not isinstance(op, keras.layers.Layer) and type(op).__name__ in _RELU_OPS


def _build_guided_view(model: keras.Model, output_index: int) -> keras.Model:
    head = _head_layer(model, output_index)
    names: set[str] = set()

    def guided(fn, layer, x):
        # Unique names: a shared ReLU layer called twice gives two guided layers.
        name, k = f"guided_{layer.name}", 1
        while name in names:
            name, k = f"guided_{layer.name}_{k}", k + 1
        names.add(name)
        return RuntimeLayer(_guided(fn), name=name)(x)

    def call(layer, path, args, kwargs):
        x = args[0] if len(args) == 1 and not kwargs else None
        if layer is head and x is not None:
            pre = pre_activation(layer, x)
            if pre is not None:
                return pre
        if x is not None and isinstance(layer, keras.layers.ReLU | keras.layers.LeakyReLU):
            return guided(layer.call, layer, x)
        if isinstance(layer, keras.layers.Activation) and _is_relu(layer.activation):
            return guided(layer.activation, layer, x)
        if _relu_op(layer):
            return guided(lambda t: layer(t, *args[1:], **kwargs), layer, args[0])
        if _is_relu(getattr(layer, "activation", None)):
            if x is None or not isinstance(layer, (keras.layers.Dense, *CONV_TYPES)):
                raise ValueError(
                    "Expected every ReLU of the model to be one guided backpropagation can "
                    f"guide. Received: layer {path!r} of type {type(layer).__name__} with a "
                    f"{layer.activation.__name__} activation inside its call. Move the "
                    "activation into a separate keras.layers.ReLU layer."
                )
            return guided(layer.activation, layer, linear_part(layer, x))
        return layer(*args, **kwargs)

    inputs = model_inputs(model)
    outputs = run_graph(model, inputs, call)
    # Logits in float32 whatever the policy, as the probe gives them.
    logits = RuntimeLayer(lambda t: keras.ops.cast(t, "float32"), name="kerasviz_float32_logits")(
        outputs[output_index]
    )
    return keras.Model(
        inputs if len(inputs) > 1 else inputs[0], logits, name=f"kerasviz_guided_{model.name}"
    )


def guided_model(model: keras.Model, output: int | str | None = None) -> keras.Model:
    """The guided view: the model's logits, with guided ReLUs on the way back (cached).

    Example:
        >>> view = guided_model(model)
        >>> np.allclose(view(x), kerasviz.get_probe(model)([x])[1])
        True
    """
    check_graph_model(model)
    return get_probe(model, (), output=output).cached(_guided_view)


def _guided_view(probe: Probe) -> keras.Model:
    return _build_guided_view(probe.model, probe.output_index)


def _guided_backprop(probe: Probe, rule: ScoreRule, inputs, indices):
    view = probe.cached(_guided_view)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(inputs)
        logits = view(inputs if len(inputs) > 1 else inputs[0], training=False)
        scores = rule.scores(logits, indices)
    grads = tape.gradient(scores, inputs, unconnected_gradients="zero")
    return [tf.cast(g, tf.float32) for g in grads]


def guided_backprop(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    *,
    batch_size: int | None = None,
    output: int | str | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Guided backpropagation: input gradients with only positive signals through every ReLU.

    Args:
        model: a Sequential or functional Keras model (nested models included).
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)``; a list for several inputs.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (predicted).
        batch_size: rows per forward pass; None for all images at once.
        output: which model output to explain, for models with several.

    Returns:
        float32 gradients shaped like the inputs (a list for several inputs).

    Reference: Springenberg et al., "Striving for Simplicity: The All Convolutional Net"
    (2015). Adebayo et al. (2018) show that it barely depends on the upper layers' weights.

    Example:
        >>> g = kerasviz.guided_backprop(model, images, targets=3)  # (n, H, W, C)
    """
    check_graph_model(model)
    batch, probe, target = setup(model, inputs, targets, output=output)
    probe.cached(_guided_view)  # built here, eagerly: the step only looks it up
    fn = probe.step(_guided_backprop, target.rule)
    grads = run_chunked(fn, batch.arrays, batch_size, extra=[target.indices])
    return one_or_list(batch, list(grads))


def guided_grad_cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | None = None,
    *,
    batch_size: int | None = None,
    upsample: str = DEFAULT_UPSAMPLE,
    output: int | str | None = None,
) -> np.ndarray:
    """Guided Grad-CAM: guided backprop times the Grad-CAM map, pixel by pixel.

    Args:
        layer: the CAM layer; None for the default CAM layer.
        upsample: how the Grad-CAM map reaches the input: ``"centered"`` (the default),
            ``"receptive_field"``, ``"effective"`` or ``"bilinear"`` (see
            :func:`~kerasviz.attribution.cams.cam`).
        Others: as in :func:`guided_backprop`.

    Returns:
        float32 ``(n, H, W, C)`` for the model input the layer sees.

    Reference: Selvaraju et al., "Grad-CAM" (2017), section 3.

    Example:
        >>> g = kerasviz.guided_grad_cam(model, images, targets=3)
    """
    choice(upsample, PROJECTIONS, "upsample")
    if isinstance(layer, list | tuple):
        raise ValueError(f"Expected `layer` to name one layer. Received: {layer!r}.")
    maps = cam(
        model,
        inputs,
        targets,
        layer,
        weighting=grad_cam_weights,
        batch_size=batch_size,
        upsample=upsample,
        output=output,
    )
    grads = guided_backprop(model, inputs, targets, batch_size=batch_size, output=output)
    if isinstance(grads, list):
        (path,), _ = cam_layers(model, layer)
        if upsample == "bilinear":  # the input the map was resized onto
            grads = grads[_linear_target(as_batch(model, inputs), maps.ndim - 1, model, path)[0]]
        else:
            grads = grads[receptive_field(model, path).input_index]
    return grads * maps[..., None]
