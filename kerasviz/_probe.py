"""Probe: a cached, read-only, multi-output view of a model, with logits instead of probabilities."""

from __future__ import annotations

import collections
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from kerasviz._graph import (
    SUPPORTED_MODELS,
    check_graph_model,
    is_graph_model,
    model_inputs,
    run_graph,
)
from kerasviz._layers import (
    CONV_TYPES,
    DEPTHWISE_TYPES,
    SEPARABLE_TYPES,
    TRANSPOSE_TYPES,
    LayerSpec,
    resolve_layer,
)

_SQUASHING = {"softmax", "sigmoid"}
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: How many times each compiled function body was traced; tests use it to catch retracing.
TRACES: collections.Counter = collections.Counter()


def note_trace(name: str) -> None:
    """Called from inside a ``tf.function`` body: counts one trace of ``name``."""
    TRACES[name] += 1


def _squashing(activation: Any) -> bool:
    return getattr(activation, "__name__", None) in _SQUASHING


def _is_sigmoid(layer: Any) -> bool:
    """True for an output layer whose activation is a sigmoid (a separate layer or not)."""
    return getattr(getattr(layer, "activation", None), "__name__", None) == "sigmoid"


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
    if isinstance(layer, (keras.layers.Dense, *CONV_TYPES)):
        return linear_part(layer, x)
    raise ValueError(
        f"Expected the model's output layer to be a Dense or Conv layer, or a separate "
        f"Activation/Softmax layer, to take gradients on logits. Received: layer "
        f"{layer.name!r} of type {type(layer).__name__} with a {layer.activation.__name__} "
        "activation. Move the activation into a separate keras.layers.Activation layer."
    )


_PLAIN_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _cast(layer: Any, value: Any):
    """A variable or tensor in the layer's compute dtype (mixed precision computes in float16)."""
    return ops.cast(value, layer.compute_dtype)


class RuntimeLayer(keras.layers.Layer):
    """Runs ``fn`` on the real tensors each time a view is called.

    Views are built from symbolic tensors; an op on a variable written there directly (a
    cast, say) would run once, at build time, and freeze the variable's value into the view.
    Inside this layer it runs at call time, so the view keeps reading the current weights.
    """

    def __init__(self, fn: Callable, **kwargs):
        super().__init__(autocast=False, **kwargs)
        self._fn = fn

    def call(self, x):
        return self._fn(x)


def linear_part(layer: Any, x: Any):
    """A Dense or convolution layer's output before its activation, from its own variables."""
    if isinstance(x, keras.KerasTensor):
        return RuntimeLayer(lambda t: linear_part(layer, t))(x)
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"Expected layers whose activation kerasviz bypasses to be float layers. "
            f"Received: layer {layer.name!r} quantized as {layer.quantization_mode!r}."
        )
    # Keras casts inputs and variables to the compute dtype inside `layer.call`; so do we.
    x = _cast(layer, x)
    if isinstance(layer, keras.layers.Dense):
        y = ops.matmul(x, _cast(layer, layer.kernel))
    elif isinstance(layer, SEPARABLE_TYPES):
        y = ops.separable_conv(
            x,
            _cast(layer, layer.depthwise_kernel),
            _cast(layer, layer.pointwise_kernel),
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    elif isinstance(layer, DEPTHWISE_TYPES):
        y = ops.depthwise_conv(
            x,
            _cast(layer, layer.kernel),
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    elif isinstance(layer, TRANSPOSE_TYPES):
        y = ops.conv_transpose(
            x,
            _cast(layer, layer.kernel),
            strides=list(layer.strides),
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    elif isinstance(layer, _PLAIN_CONV) and layer.padding != "causal":
        y = layer.convolution_op(x, _cast(layer, layer.kernel))
    else:
        raise ValueError(
            "Expected a layer whose activation kerasviz bypasses to be a Dense or convolution "
            f"layer. Received: layer {layer.name!r} of type "
            f"{type(layer).__name__}. Move its activation into a keras.layers.ReLU layer."
        )
    if getattr(layer, "bias", None) is None:
        return y
    bias = _cast(layer, layer.bias)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        shape = (1, -1) + (1,) * (len(y.shape) - 2)
        return y + ops.reshape(bias, shape)
    return y + bias


def _before_relu(layer: Any, x: Any):
    """The input of a layer's final plain ReLU, or None when it does not end in one."""
    if isinstance(layer, keras.layers.ReLU):
        plain = not layer.max_value and not layer.negative_slope and not layer.threshold
        return x if plain else None
    if getattr(getattr(layer, "activation", None), "__name__", None) != "relu":
        return None
    if isinstance(layer, keras.layers.Activation):
        return x
    if isinstance(layer, (keras.layers.Dense, *CONV_TYPES)) and not isinstance(
        layer, TRANSPOSE_TYPES
    ):
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


#: Compiled steps kept per probe; the least recently used one is dropped beyond this.
MAX_STEPS = 32


def _flat_size(shape: Sequence[int | None]) -> int | None:
    """Units per example of an output shaped ``(batch, *shape)``: scores index the flattened
    output (a ``(batch, 1, 1, k)`` conv head has ``k`` classes); None when unknown."""
    size = 1
    for dim in shape:
        if dim is None:
            return None
        size *= int(dim)
    return size


class Probe:
    """A read-only view of ``model``: the chosen layers' outputs plus the logits, in one pass.

    The view is a ``keras.Model`` with the model's own inputs. It calls the user's layers, so it
    shares their variables and always sees the current weights; nothing is cloned or changed.
    A final softmax or sigmoid is bypassed, so ``logits`` are pre-activation scores.

    With ``pre_relu=True``, a requested layer that ends in a plain ReLU (a ``ReLU`` layer,
    ``Activation("relu")`` or ``activation="relu"``) gives its value before the ReLU, as input
    optimization wants: a unit that is off still has a gradient there.

    ``inputs_of`` names layers whose *input* the view returns too (after the layer outputs),
    for a caller that recomputes part of such a layer itself, e.g. only a few filters of a
    convolution (:mod:`kerasviz.optimize.objectives`).

    A subclassed model (its layer graph hidden in ``call``) gets a probe without layers: the
    view is the model itself and ``logits`` are its output as is.

    Attributes:
        view: the ``keras.Model`` returning ``[*layer_outputs, *inputs_of_inputs, logits]``
            (logits last, when requested).
        paths: the resolved layer paths, in the order of ``layers``.
        input_paths, input_layers: the resolved ``inputs_of`` layers.
        pre_relu: the ``pre_relu`` setting.
        num_classes: the units per example of the logits, flattened (None until known for a
            subclassed model; see :meth:`logits_size`).
        sigmoid: the bypassed head was a sigmoid (probabilities are per-class sigmoids).
        graph: False for a subclassed model.
    """

    def __init__(
        self,
        model: keras.Model,
        layers: Sequence[LayerSpec] = (),
        output: int | str | None = None,
        logits: bool = True,
        pre_relu: bool = False,
        inputs_of: Sequence[LayerSpec] = (),
    ):
        # A weak reference: the cache holds probes, and must not keep the user's model alive.
        self._model = weakref.ref(model)
        self._steps: OrderedDict[Any, Any] = OrderedDict()
        self.graph = is_graph_model(model)
        self.pre_relu = pre_relu
        if not self.graph:
            self._init_opaque(model, [*layers, *inputs_of], output, logits)
            return
        check_graph_model(model)
        resolved = [resolve_layer(model, layer) for layer in layers]
        self.paths = [path for path, _ in resolved]
        self.layers = [layer for _, layer in resolved]
        resolved = [resolve_layer(model, layer) for layer in inputs_of]
        self.input_paths = [path for path, _ in resolved]
        self.input_layers = [layer for _, layer in resolved]
        wanted_inputs = {id(layer) for layer in self.input_layers}
        self.output_index = _output_index(model, output) if logits else None
        self.with_logits = logits
        self.bypassed: str | None = None
        head = _head_layer(model, self.output_index) if logits else None
        captured: dict[int, Any] = {}
        captured_inputs: dict[int, Any] = {}
        wanted = {id(layer) for layer in self.layers}

        def call(layer, path, args, kwargs):
            if id(layer) in wanted_inputs:
                captured_inputs[id(layer)] = args[0] if args else kwargs["inputs"]
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

        calls: collections.Counter = collections.Counter()

        def visit(layer, path, outputs):
            if id(layer) not in wanted | wanted_inputs:
                return
            calls[id(layer)] += 1
            if calls[id(layer)] > 1:
                raise ValueError(
                    f"Expected `layer` to be called once in the model, so that its output is "
                    f"one tensor. Received: layer {path!r}, which the model calls on several "
                    "inputs (a shared layer). Pick a layer that is not shared, for example one "
                    "just before or after it on the branch you want to see."
                )
            if id(layer) in wanted and id(layer) not in captured:
                captured[id(layer)] = outputs

        outputs = run_graph(model, model_inputs(model), call, visit=visit)
        view_outputs = [captured[id(layer)] for layer in self.layers]
        view_outputs += [captured_inputs[id(layer)] for layer in self.input_layers]
        if logits:
            view_outputs.append(outputs[self.output_index])
        inputs = model_inputs(model)
        self.view = keras.Model(
            inputs if len(inputs) > 1 else inputs[0],
            view_outputs,
            name=f"kerasviz_probe_{model.name}",
        )
        self.num_classes = _flat_size(outputs[self.output_index].shape[1:]) if logits else None
        self.sigmoid = logits and _is_sigmoid(head)

    def _init_opaque(self, model, layers, output, logits) -> None:
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"Expected `model` to be a keras.Model. Received: {type(model).__name__}."
            )
        if layers or not logits:
            raise ValueError(
                f"Expected `model` to be a Sequential or functional model for a method that "
                f"reads inner layers. Received: a subclassed model of type "
                f"{type(model).__name__}, whose `call` hides its layer graph. {SUPPORTED_MODELS}."
            )
        if output is not None and (isinstance(output, bool) or not isinstance(output, int)):
            raise ValueError(
                "Expected `output` to be None or an index into the outputs of a subclassed "
                f"model. Received: output={output!r}."
            )
        self.paths, self.layers, self.with_logits = [], [], True
        self.input_paths, self.input_layers = [], []
        self.output_index, self.bypassed, self.num_classes = output, None, None
        self.sigmoid = False

        def view(inputs, training=False):
            # Through the weak reference: the cache must not keep the user's model alive.
            out = keras.tree.flatten(self.model(inputs, training=training))
            if self.output_index is None and len(out) > 1:
                raise ValueError(
                    f"Expected `output` to select one of the model's {len(out)} outputs. "
                    "Received: output=None."
                )
            return [out[self.output_index or 0]]

        self.view = view

    @property
    def model(self) -> keras.Model:
        return self._model()

    def logits_size(self, inputs: Sequence[Any]) -> int | None:
        """The logits' last-axis size; a subclassed model is run once on one image to learn it."""
        if self.num_classes is None and not self.graph:
            _, logits = self([x[:1] for x in inputs])
            self.num_classes = _flat_size(logits.shape[1:])
        return self.num_classes

    def raw(self, inputs: Sequence[Any]) -> tuple[list, Any]:
        """Runs the view; ``(layer_outputs, logits)`` in the layers' own dtypes (the inputs of
        ``inputs_of`` follow the layer outputs).

        Differentiate with respect to these tensors, never a cast copy: under mixed precision
        the float32 copy of a float16 activation is not on the path to the logits, and its
        gradient is zero.
        """
        inputs = list(inputs)
        out = self.view(inputs if len(inputs) > 1 else inputs[0], training=False)
        if not isinstance(out, list | tuple):
            out = [out]
        out = list(out)
        if self.with_logits:
            return out[:-1], tf.cast(out[-1], tf.float32)
        return out, None

    def __call__(self, inputs: Sequence[Any]) -> tuple[list, Any]:
        """Runs the view; ``(layer_outputs, logits)`` as float32 (logits None when not requested).

        Gradients with respect to the input pass through the casts; for gradients with
        respect to the layer outputs use :meth:`raw`.
        """
        outputs, logits = self.raw(inputs)
        return [tf.cast(o, tf.float32) for o in outputs], logits

    def cached(self, factory: Callable, *static: Any) -> Any:
        """``factory(self, *static)``, built once per ``(factory, *static)`` and kept in a bounded
        least-recently-used cache (:data:`MAX_STEPS` entries). ``static`` must be hashable."""
        key = (factory, *static)
        value = self._steps.get(key)
        if value is None:
            value = self._steps[key] = factory(self, *static)
            while len(self._steps) > MAX_STEPS:
                self._steps.popitem(last=False)
        else:
            self._steps.move_to_end(key)
        return value

    def step(self, body: Callable, *static: Any) -> Callable:
        """The compiled ``body(probe, *static, *tensors)``, cached by ``(body, *static)``.

        ``body`` is a module-level function; ``static`` holds its Python-level settings (a
        :class:`~kerasviz._targets.ScoreRule`, a weighting function, sizes). Tensors passed to
        the returned function may change freely without retracing.
        """
        return self.cached(_compile_step, body, *static)


def _compile_step(probe: Probe, body: Callable, *static: Any) -> Callable:
    def step(*tensors):
        note_trace(body.__name__.lstrip("_"))
        return body(probe, *static, *tensors)

    return compiled(step)


def get_probe(
    model: keras.Model,
    layers: Sequence[LayerSpec] = (),
    output: int | str | None = None,
    logits: bool = True,
    pre_relu: bool = False,
    inputs_of: Sequence[LayerSpec] = (),
) -> Probe:
    """The cached :class:`Probe` for ``model`` and this layer set (built on first use)."""
    if is_graph_model(model):
        check_graph_model(model)
        paths = tuple(resolve_layer(model, layer)[0] for layer in layers)
        input_paths = tuple(resolve_layer(model, layer)[0] for layer in inputs_of)
    else:
        paths, input_paths = tuple(layers), tuple(inputs_of)
        if paths or input_paths or not logits:
            return Probe(model, [*layers, *inputs_of], output=output, logits=logits)  # raises
    key = (paths, output, logits, pre_relu) + ((input_paths,) if input_paths else ())
    per_model = _CACHE.setdefault(model, {})
    probe = per_model.get(key)
    if probe is None:
        probe = per_model[key] = Probe(
            model, layers, output=output, logits=logits, pre_relu=pre_relu, inputs_of=inputs_of
        )
    return probe


def compiled(fn: Callable) -> Callable:
    """``tf.function`` as kerasviz uses it: traced once per input signature, batch axis relaxed."""
    return tf.function(fn, reduce_retracing=True)
