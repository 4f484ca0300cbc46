"""Probe: a cached, read-only, multi-output view of a model, with logits instead of probabilities."""

from __future__ import annotations

import collections
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from kerasviz._graph import check_graph_model, is_graph_model, model_inputs, run_graph
from kerasviz._layers import LayerSpec, resolve_layer

_SQUASHING = {"softmax", "sigmoid"}
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: How many times each compiled function body was traced; tests use it to catch retracing.
TRACES: collections.Counter = collections.Counter()


def note_trace(name: str) -> None:
    """Called from inside a ``tf.function`` body: counts one trace of ``name``."""
    TRACES[name] += 1


def _squashing(activation: Any) -> bool:
    return getattr(activation, "__name__", None) in _SQUASHING


def _head_layer(model: keras.Model, output_index: int):
    """The leaf layer that produces ``model.outputs[output_index]``, through nested models."""
    tensor = model.outputs[output_index]
    while True:
        op, _, tensor_index = tensor._keras_history
        if is_graph_model(op):
            tensor = op.outputs[tensor_index]
            continue
        return op


def pre_activation(layer: Any, x: Any):
    """The layer's output before a final softmax or sigmoid, from the layer's own variables.

    Returns None when the layer has no squashing activation to bypass.
    """
    if isinstance(layer, keras.layers.Softmax):
        return x
    if isinstance(layer, keras.layers.Activation) and _squashing(layer.activation):
        return x
    if not _squashing(getattr(layer, "activation", None)):
        return None
    if isinstance(layer, (keras.layers.Dense, *_CONV)):
        return linear_part(layer, x)
    raise ValueError(
        f"Expected the model's output layer to be a Dense or Conv layer, or a separate "
        f"Activation/Softmax layer, to take gradients on logits. Received: layer "
        f"{layer.name!r} of type {type(layer).__name__} with a {layer.activation.__name__} "
        "activation. Move the activation into a separate keras.layers.Activation layer."
    )


_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def linear_part(layer: Any, x: Any):
    """A Dense or convolution layer's output before its activation, from its own variables."""
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"Expected layers whose activation kerasviz bypasses to be float layers. "
            f"Received: layer {layer.name!r} quantized as {layer.quantization_mode!r}."
        )
    if isinstance(layer, keras.layers.Dense):
        y = ops.matmul(x, layer.kernel)
    elif isinstance(layer, _SEPARABLE):
        y = ops.separable_conv(
            x,
            layer.depthwise_kernel,
            layer.pointwise_kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    elif isinstance(layer, _DEPTHWISE):
        y = ops.depthwise_conv(
            x,
            layer.kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    elif isinstance(layer, _TRANSPOSE):
        y = ops.conv_transpose(
            x,
            layer.kernel,
            strides=list(layer.strides),
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    elif isinstance(layer, _CONV) and layer.padding != "causal":
        y = layer.convolution_op(x, layer.kernel)
    else:
        raise ValueError(
            "Expected a layer whose activation kerasviz bypasses to be a Dense or convolution "
            f"layer. Received: layer {layer.name!r} of type "
            f"{type(layer).__name__}. Move its activation into a keras.layers.ReLU layer."
        )
    if getattr(layer, "bias", None) is None:
        return y
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        shape = (1, -1) + (1,) * (len(y.shape) - 2)
        return y + ops.reshape(layer.bias, shape)
    return y + layer.bias


def _before_relu(layer: Any, x: Any):
    """The input of a layer's final plain ReLU, or None when it does not end in one."""
    if isinstance(layer, keras.layers.ReLU):
        plain = not layer.max_value and not layer.negative_slope and not layer.threshold
        return x if plain else None
    if getattr(getattr(layer, "activation", None), "__name__", None) != "relu":
        return None
    if isinstance(layer, keras.layers.Activation):
        return x
    if isinstance(layer, (keras.layers.Dense, *_CONV, *_SEPARABLE, *_DEPTHWISE)):
        return linear_part(layer, x)
    return None


def _output_index(model: keras.Model, output: int | str | None) -> int:
    names = [t._keras_history[0].name for t in model.outputs]
    if output is None:
        if len(names) > 1:
            raise ValueError(
                f"Expected `output` to select one of the model's {len(names)} outputs "
                f"(an index or one of {names}). Received: output=None."
            )
        return 0
    if isinstance(output, str):
        if output not in names:
            raise ValueError(f"Expected `output` to be one of {names}. Received: {output!r}.")
        return names.index(output)
    if not -len(names) <= output < len(names):
        raise ValueError(
            f"Expected `output` to be an index below {len(names)}. Received: output={output}."
        )
    return output % len(names)


class Probe:
    """A read-only view of ``model``: the chosen layers' outputs plus the logits, in one pass.

    The view is a ``keras.Model`` with the model's own inputs. It calls the user's layers, so it
    shares their variables and always sees the current weights; nothing is cloned or changed.
    A final softmax or sigmoid is bypassed, so ``logits`` are pre-activation scores.

    With ``pre_relu=True``, a requested layer that ends in a plain ReLU (a ``ReLU`` layer,
    ``Activation("relu")`` or ``activation="relu"``) gives its value before the ReLU, as input
    optimization wants: a unit that is off still has a gradient there.

    Attributes:
        view: the ``keras.Model`` returning ``[*layer_outputs, logits]`` (logits last, when
            requested).
        paths: the resolved layer paths, in the order of ``layers``.
        num_classes: the size of the logits' last axis.
    """

    def __init__(
        self,
        model: keras.Model,
        layers: Sequence[LayerSpec] = (),
        output: int | str | None = None,
        logits: bool = True,
        pre_relu: bool = False,
    ):
        check_graph_model(model)
        # A weak reference: the cache holds probes, and must not keep the user's model alive.
        self._model = weakref.ref(model)
        resolved = [resolve_layer(model, layer) for layer in layers]
        self.paths = [path for path, _ in resolved]
        self.layers = [layer for _, layer in resolved]
        self.output_index = _output_index(model, output) if logits else None
        self.with_logits = logits
        self.bypassed: str | None = None
        head = _head_layer(model, self.output_index) if logits else None
        captured: dict[int, Any] = {}
        wanted = {id(layer) for layer in self.layers}

        def call(layer, path, args, kwargs):
            if layer is head:
                pre = pre_activation(layer, args[0]) if len(args) == 1 else None
                if pre is not None:
                    self.bypassed = path
                    return pre
            if pre_relu and id(layer) in wanted and len(args) == 1 and not kwargs:
                pre = _before_relu(layer, args[0])
                if pre is not None:
                    captured[id(layer)] = pre
                    return layer(*args)
            return layer(*args, **kwargs)

        def visit(layer, path, outputs):
            if id(layer) in wanted and id(layer) not in captured:
                captured[id(layer)] = outputs

        outputs = run_graph(model, model_inputs(model), call, visit=visit)
        view_outputs = [captured[id(layer)] for layer in self.layers]
        if logits:
            view_outputs.append(outputs[self.output_index])
        inputs = model_inputs(model)
        self.view = keras.Model(
            inputs if len(inputs) > 1 else inputs[0],
            view_outputs,
            name=f"kerasviz_probe_{model.name}",
        )
        self.num_classes = outputs[self.output_index].shape[-1] if logits else None
        self._functions: dict[Any, Callable] = {}

    @property
    def model(self) -> keras.Model:
        return self._model()

    def __call__(self, inputs: Sequence[Any]) -> tuple[list, Any]:
        """Runs the view; returns ``(layer_outputs, logits)`` (logits None when not requested)."""
        inputs = list(inputs)
        out = self.view(inputs if len(inputs) > 1 else inputs[0], training=False)
        if not isinstance(out, list | tuple):
            out = [out]
        out = [tf.cast(o, tf.float32) for o in out]
        if self.with_logits:
            return out[:-1], out[-1]
        return out, None

    def function(self, key: Any, factory: Callable[[Probe], Callable]) -> Callable:
        """A compiled function built once per key by ``factory(probe)`` and kept with the view."""
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = factory(self)
        return fn


def get_probe(
    model: keras.Model,
    layers: Sequence[LayerSpec] = (),
    output: int | str | None = None,
    logits: bool = True,
    pre_relu: bool = False,
) -> Probe:
    """The cached :class:`Probe` for ``model`` and this layer set (built on first use)."""
    check_graph_model(model)
    key = (tuple(resolve_layer(model, layer)[0] for layer in layers), output, logits, pre_relu)
    per_model = _CACHE.setdefault(model, {})
    probe = per_model.get(key)
    if probe is None:
        probe = per_model[key] = Probe(
            model, layers, output=output, logits=logits, pre_relu=pre_relu
        )
    return probe


def compiled(fn: Callable) -> Callable:
    """``tf.function`` as kerasviz uses it: traced once per input signature, batch axis relaxed."""
    return tf.function(fn, reduce_retracing=True)
