"""Receptive fields through layers without a rule: measured from the Jacobian's support.

Each measured field is checked against a hand-computed value, the field of the equivalent
rule-based layer, or the float64 input-gradient support of every unit.
"""

from __future__ import annotations

import gc
import importlib
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.applications.convnext import LayerScale, StochasticDepth
from test_receptive_field import F64, ONES, _f64, _field_boxes, _gradient_boxes

import kerasviz

# the module (``kerasviz.receptive_field`` is also the function's name in the package)
rf_module = importlib.import_module("kerasviz.receptive_field")

L = keras.layers


def _geometry(rf):
    return rf.size, rf.stride, rf.start, rf.map_size


def _seq(input_shape, *layers) -> keras.Model:
    return keras.Sequential([keras.Input(input_shape), *layers])


def _assert_exact(model: keras.Model, layers=None) -> None:
    """Every unit's box equals the bounding box of its float64 input-gradient support."""
    layers = list(layers if layers is not None else model.layers)
    for layer, expected in zip(layers, _gradient_boxes(model, layers), strict=True):
        assert _field_boxes(kerasviz.receptive_field(model, layer)) == expected, layer.name


class TfConv(L.Layer):
    """A user layer that convolves with its own kernel through ``tf.nn``."""

    def __init__(self, padding="SAME", strides=2, dilation=1, relu=False, ones=False, **kwargs):
        super().__init__(**kwargs)
        self.padding, self.strides, self.dilation = padding, strides, dilation
        self.relu, self.ones = relu, ones

    def build(self, input_shape):
        init = "ones" if self.ones else "glorot_uniform"
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 1), initializer=init)

    def call(self, x):
        # tf.nn.convolution: tf.nn.conv2d has no dilated gradient on CPU
        y = tf.nn.convolution(
            x, self.kernel, strides=self.strides, padding=self.padding, dilations=self.dilation
        )
        return tf.nn.relu(y) if self.relu else y

    def compute_output_shape(self, input_shape):
        def size(n):
            if self.padding == "SAME":
                return math.ceil(n / self.strides)
            return (n - self.dilation * 2 - 1) // self.strides + 1

        return (input_shape[0], *(size(n) for n in input_shape[1:-1]), 1)


# ---------------------------------------------------------------- keras.applications ConvNeXt

CONVNEXT_STAGES = {  # hand-computed: stem 4 @ stride 4, then 7x7 same depthwise (pad 3)
    "convnext_tiny_stem": ((4, 4), (4, 4), (0, 0), (16, 16)),
    # one block: 4 + 6 * 4 = 28, start -3 * 4
    "convnext_tiny_stage_0_block_0_layer_scale": ((28, 28), (4, 4), (-12, -12), (16, 16)),
    # 3 blocks (+72), a 2x2 stride-2 conv (+4), 3 blocks at stride 8 (+144), a 2x2 conv (+8),
    # 9 blocks at stride 16 (+864), a 2x2 conv (+16), 3 blocks at stride 32 (+576)
    "convnext_tiny_stage_3_block_2_layer_scale": ((1688, 1688), (32, 32), (-828, -828), (2, 2)),
}


@pytest.fixture(scope="module")
def convnext():
    flat = keras.applications.ConvNeXtTiny(weights=None, input_shape=(64, 64, 3), classes=4)
    base = keras.applications.ConvNeXtTiny(weights=None, include_top=False, input_shape=(64, 64, 3))
    sequential = keras.Sequential(
        [keras.Input((64, 64, 3)), base, L.GlobalAveragePooling2D(), L.Dense(4)]
    )
    inputs = keras.Input((64, 64, 3))
    functional = keras.Model(inputs, L.Dense(4)(L.GlobalAveragePooling2D()(base(inputs))))
    return flat, sequential, functional


def test_convnext_flat_and_nested(convnext):
    flat, sequential, functional = convnext
    scales = [layer.name for layer in flat.layers if isinstance(layer, LayerScale)]
    assert len(scales) == 18
    for name, geometry in CONVNEXT_STAGES.items():
        assert _geometry(kerasviz.receptive_field(flat, name)) == geometry, name
    for name in scales + list(CONVNEXT_STAGES):
        field = kerasviz.receptive_field(flat, name)
        # the measured LayerScale keeps the field of the pointwise layer before it
        if name in scales:
            before = name.replace("layer_scale", "pointwise_conv_2")
            assert field == kerasviz.receptive_field(flat, before), name
        for nested in (sequential, functional):
            assert kerasviz.receptive_field(nested, f"convnext_tiny/{name}") == field, name
    for model in (flat, sequential, functional):
        head = kerasviz.receptive_field(model, -1)
        assert head.is_global and _geometry(head) == ((64, 64), (0, 0), (0, 0), (1, 1))


def test_stochastic_depth_and_layer_scale_are_measured_position_wise():
    model = _seq(
        (11, 10, 3),
        L.Conv2D(4, 3, padding="same", name="conv"),
        LayerScale(1e-6, 4, name="scale"),
        StochasticDepth(0.5, name="drop"),
        L.Conv2D(2, 3, strides=2, name="after"),
    )
    conv = kerasviz.receptive_field(model, "conv")
    assert kerasviz.receptive_field(model, "scale") == conv
    assert kerasviz.receptive_field(model, "drop") == conv
    # 3 @ -1, then 3x3 stride 2 valid: 3 + 2 = 5 @ -1, stride 2
    assert _geometry(kerasviz.receptive_field(model, "after")) == ((5, 5), (2, 2), (-1, -1), (5, 4))


# ---------------------------------------------------------------- Lambda, user layers, ops


def test_lambda_before_the_first_conv():
    plain = _seq((16, 15, 3), L.Conv2D(2, 3, strides=2, padding="same", name="conv"))
    scaled = _seq(
        (16, 15, 3),
        L.Lambda(lambda t: t * 2.0 - 1.0, name="scale"),
        L.Conv2D(2, 3, strides=2, padding="same", name="conv"),
    )
    assert _geometry(kerasviz.receptive_field(scaled, "scale")) == (
        (1, 1),
        (1, 1),
        (0, 0),
        (16, 15),
    )
    # n=16 even: pad 0 before; n=15 odd: pad 1 before
    field = kerasviz.receptive_field(scaled, "conv")
    assert _geometry(field) == ((3, 3), (2, 2), (0, -1), (8, 8))
    assert field == kerasviz.receptive_field(plain, "conv")


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_user_layer_that_convolves_with_stride_2(padding):
    model = _seq((17, 16, 3), TfConv(padding, name="mine"))
    equivalent = _seq((17, 16, 3), L.Conv2D(1, 3, strides=2, padding=padding.lower()))
    field = kerasviz.receptive_field(model, "mine")
    assert field == kerasviz.receptive_field(equivalent, -1)
    expected = (
        ((3, 3), (2, 2), (-1, 0), (9, 8)) if padding == "SAME" else ((3, 3), (2, 2), (0, 0), (8, 7))
    )
    assert _geometry(field) == expected
    exact = _f64((17, 16, 3), TfConv(padding, ones=True, **F64), L.Conv2D(1, 3, **ONES))
    _assert_exact(exact)


def test_user_layer_with_dilation_and_relu():
    # dilation 2, same: the border units skip pixels (bounds that do not grow with the unit)
    dilated = _seq((12, 9, 2), TfConv("SAME", strides=1, dilation=2, name="mine"))
    equivalent = _seq((12, 9, 2), L.Conv2D(1, 3, dilation_rate=2, padding="same"))
    field = kerasviz.receptive_field(dilated, "mine")
    assert field == kerasviz.receptive_field(equivalent, -1)
    assert field.intervals(0)[0].tolist() == [0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    exact = _f64((12, 9, 2), TfConv("SAME", strides=1, dilation=2, ones=True, **F64))
    _assert_exact(exact)
    # one ReLU'd output channel: each random input zeroes the gradient of about half the
    # units, so supports are united over random inputs until every unit is seen
    relu = _seq((14, 13, 3), TfConv("SAME", relu=True, name="mine"))
    same = _seq((14, 13, 3), L.Conv2D(1, 3, strides=2, padding="same"))
    assert kerasviz.receptive_field(relu, "mine") == kerasviz.receptive_field(same, -1)


def test_time_distributed_takes_the_wrapped_layer_geometry():
    def build(**kwargs):
        return keras.Sequential(
            [
                keras.Input((3, 11, 12, 2), dtype=kwargs.get("dtype", "float32")),
                L.TimeDistributed(L.Conv2D(1, 3, 2, "same", **ONES), name="conv", **kwargs),
                L.TimeDistributed(TfConv("VALID", 1, ones=True, **kwargs), name="mine", **kwargs),
            ]
        )

    model = build()
    # time axis kept; h=11 odd: pad 1 before, w=12 even: pad 0 before
    conv = kerasviz.receptive_field(model, "conv")
    assert _geometry(conv) == ((1, 3, 3), (1, 2, 2), (0, -1, 0), (3, 6, 6))
    assert conv.box(2, 0, 5) == (2, 0, 10, 3, 2, 12)
    # the wrapped user layer is measured on (h, w): 3x3 valid at stride 2 adds 4
    mine = kerasviz.receptive_field(model, "mine")
    assert _geometry(mine) == ((1, 7, 7), (1, 2, 2), (0, -1, 0), (3, 4, 4))
    _assert_exact(build(**F64))
    # (batch, time, features): the time axis alone, through a TimeDistributed Dense
    sequence = _seq((7, 4), L.TimeDistributed(L.Dense(3)), L.Conv1D(2, 3, name="c"))
    assert _geometry(kerasviz.receptive_field(sequence, "c")) == ((3,), (1,), (0,), (5,))


@pytest.mark.parametrize(
    "preprocess",
    [keras.applications.vgg16.preprocess_input, keras.applications.mobilenet.preprocess_input],
    ids=["caffe", "tf"],
)
def test_preprocess_input_inside_the_model(preprocess):
    # caffe mode flips RGB to BGR with GetItem and Stack on the channel axis
    inputs = keras.Input((13, 12, 3))
    x = L.Conv2D(2, 3, padding="same", name="conv")(preprocess(inputs))
    field = kerasviz.receptive_field(keras.Model(inputs, x), "conv")
    assert _geometry(field) == ((3, 3), (1, 1), (-1, -1), (13, 12))


def test_operations_on_the_channel_axis_keep_the_field():
    inputs = keras.Input((9, 10, 4))
    x = L.Conv2D(4, 3, name="conv")(inputs)
    parts = [
        keras.ops.stack([x[..., 0], x[:, :, :, 2]], axis=-1),  # GetItem, Stack
        keras.ops.concatenate([x, x * 2.0], axis=-1),
        keras.ops.take(x, [3, 1], axis=-1),  # measured
        keras.ops.mean(x, axis=-1, keepdims=True),  # measured
        L.Lambda(lambda t: t[..., ::-1])(x),  # measured
    ]
    outs = [L.Conv2D(1, 1, name=f"after_{i}")(p) for i, p in enumerate(parts)]
    model = keras.Model(inputs, outs)
    conv = kerasviz.receptive_field(model, "conv")
    assert _geometry(conv) == ((3, 3), (1, 1), (0, 0), (7, 8))
    for i in range(len(parts)):
        assert kerasviz.receptive_field(model, f"after_{i}") == conv, i


def test_spatial_operations_are_measured():
    inputs = keras.Input((17, 16, 1), dtype="float64")
    padded = keras.ops.pad(inputs, [[0, 0], [2, 1], [0, 3], [0, 0]])
    a = L.Conv2D(1, 3, name="after_pad", **ONES)(padded)
    strided = inputs[:, 1::2, ::3]  # GetItem with strides: a 1x1 conv at stride (2, 3)
    b = L.Conv2D(1, 3, padding="same", name="after_slice", **ONES)(strided)
    model = keras.Model(inputs, [a, b])
    # pad 2 before rows: unit 0's rows -2..0; units 0, 1 see row 0 only partly
    assert _geometry(kerasviz.receptive_field(model, "after_pad")) == (
        (3, 3),
        (1, 1),
        (-2, 0),
        (18, 17),
    )
    # rows 1, 3, 5, ... and columns 0, 3, 6, ...; then 3x3 same (pad 1): 1 + 2 * 2 = 5 @ -1
    assert _geometry(kerasviz.receptive_field(model, "after_slice")) == (
        (5, 7),
        (2, 3),
        (-1, -3),
        (8, 6),
    )
    _assert_exact(model, [model.get_layer("after_pad"), model.get_layer("after_slice")])


def test_measured_layer_with_two_spatial_inputs():
    inputs = keras.Input((12, 12, 1), dtype="float64")
    a = L.Conv2D(1, 3, name="a", **ONES)(inputs)  # 10x10, unit j sees j..j+2
    b = L.Conv2D(1, 5, name="b", **ONES)(inputs)  # 8x8, unit j sees j..j+4
    both = L.Lambda(lambda ts: ts[0][:, 1:-1, 1:-1] + ts[1], name="both", **F64)([a, b])
    model = keras.Model(inputs, both)
    # a's unit j + 1 sees j+1..j+3, inside b's j..j+4: the union is b's field
    assert _geometry(kerasviz.receptive_field(model, "both")) == ((5, 5), (1, 1), (0, 0), (8, 8))
    _assert_exact(model, [model.get_layer("both")])


class FlatDense(L.Layer):
    """A Dense over the flattened map, reshaped back to a map: every unit sees everything."""

    def build(self, input_shape):
        self.dense = L.Dense(int(np.prod(input_shape[1:])), dtype=self.dtype_policy)
        self.dense.build((None, int(np.prod(input_shape[1:]))))

    def call(self, x):
        return keras.ops.reshape(self.dense(keras.ops.reshape(x, (-1, 180))), (-1, 9, 10, 2))


def test_global_dependence_gives_a_global_axis():
    inputs = keras.Input((9, 10, 2), dtype="float64")
    dense = FlatDense(name="dense", **F64)(inputs)
    everywhere = L.Lambda(
        lambda t: t + keras.ops.mean(t, axis=(1, 2), keepdims=True), name="everywhere", **F64
    )(inputs)
    rows = L.Lambda(lambda t: t + keras.ops.mean(t, axis=2, keepdims=True), name="rows", **F64)(
        inputs
    )
    model = keras.Model(inputs, [everywhere, rows, dense])
    for name in ("everywhere", "dense"):
        field = kerasviz.receptive_field(model, name)
        assert field.is_global and _geometry(field) == ((9, 10), (0, 0), (0, 0), (9, 10))
        assert field.box(0, 0) == field.box(8, 9) == (0, 0, 9, 10)
    # each unit sees its own row and every column
    field = kerasviz.receptive_field(model, "rows")
    assert not field.is_global and _geometry(field) == ((1, 10), (1, 0), (0, 0), (9, 10))
    assert field.box(4, 7) == (4, 0, 5, 10)
    _assert_exact(model, [model.get_layer(n) for n in ("everywhere", "rows", "dense")])


def test_conv1d_and_conv3d_with_measured_layers():
    model_1d = _seq((21, 2), L.Lambda(lambda t: t[:, ::2]), L.Conv1D(1, 3, name="c"))
    # every other step, then 3 valid: 1 + 2 * 2 = 5, stride 2
    assert _geometry(kerasviz.receptive_field(model_1d, "c")) == ((5,), (2,), (0,), (9,))
    model_3d = _seq(
        (6, 7, 8, 1),
        L.Lambda(lambda t: t * 3.0),
        L.Conv3D(1, (1, 3, 3), strides=(1, 2, 2), padding="same", name="c"),
    )
    # 7 odd: pad 1 before; 8 even: pad 0 before
    assert _geometry(kerasviz.receptive_field(model_3d, "c")) == (
        (1, 3, 3),
        (1, 2, 2),
        (0, -1, 0),
        (6, 4, 4),
    )


# ---------------------------------------------------------------- layers that have no field


def _ways_out(message: str) -> bool:
    return "upsample='bilinear'" in message and "upsample=None" in message


@pytest.mark.parametrize(
    ("fn", "reason"),
    [
        (lambda t: t[:, ::-1], "no stride and offset explain"),
        (lambda t: tf.transpose(t, [0, 2, 1, 3]), "depend on different input positions"),
        (
            lambda t: (
                t
                * tf.constant(np.pad(np.zeros((4, 4)), 4, constant_values=1.0)[..., None], t.dtype)
            ),
            "depends on no input position",
        ),
    ],
    ids=["flip", "transpose", "mask"],
)
def test_non_equivariant_layer_raises_naming_it_and_the_ways_out(fn, reason):
    inner = keras.Sequential(
        [keras.Input((12, 12, 1)), L.Lambda(fn, name="odd"), L.Conv2D(1, 3, name="c")],
        name="inner",
    )
    model = keras.Sequential(
        [keras.Input((12, 12, 1)), inner, L.GlobalAveragePooling2D(), L.Dense(2)]
    )
    with pytest.raises(ValueError) as info:
        kerasviz.receptive_field(model, "inner/c")
    message = str(info.value)
    assert "layer 'inner/odd' of type Lambda has no known receptive-field rule" in message
    assert "not translation-equivariant" in message and reason in message
    assert _ways_out(message)
    # the nested model asked directly names the layer by its own path
    with pytest.raises(ValueError, match=r"layer 'odd' of type Lambda") as info:
        kerasviz.receptive_field(inner, "c")
    assert _ways_out(str(info.value))


def test_rule_errors_also_name_the_ways_out():
    model = _seq((10, 10, 1), L.UpSampling2D(2, name="up"), L.Conv2D(1, 3, name="c"))
    with pytest.raises(ValueError, match="'up' of type UpSampling2D resamples") as info:
        kerasviz.receptive_field(model, "c")
    assert _ways_out(str(info.value))


# ---------------------------------------------------------------- cache


class Counting(L.Layer):
    """Position-wise; counts its calls."""

    calls = 0

    def call(self, x):
        Counting.calls += tf.executing_eagerly()  # not the symbolic shape inference
        return x * 2.0


def test_measurements_are_cached_per_layer_and_input_shape():
    counting = Counting(name="counting")
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, L.Conv2D(1, 3, name="c")(counting(inputs)))
    Counting.calls = 0
    first = kerasviz.receptive_field(model, "c", input_size=(12, 11))
    calls = Counting.calls
    assert 0 < calls <= 3  # one batched probe (two more only when the fit needs them)
    # another model sharing the layer, at the same input shape: measured once
    other = keras.Model(inputs, L.Conv2D(1, 5, name="c5")(counting(inputs)))
    assert kerasviz.receptive_field(other, "c5", input_size=(12, 11)).size == (5, 5)
    assert kerasviz.receptive_field(model, "counting", input_size=(12, 11)).size == (1, 1)
    assert Counting.calls == calls and first.map_size == (10, 9)
    # a new input shape is measured anew
    assert kerasviz.receptive_field(model, "c", input_size=(9, 14)).map_size == (7, 12)
    assert Counting.calls > calls
    assert set(rf_module._MEASURED[counting]) and len(rf_module._MEASURED[counting]) == 2
    # weak keys: the cache never keeps a layer alive
    before = len(rf_module._MEASURED)
    del model, other, inputs, counting
    gc.collect()
    assert len(rf_module._MEASURED) < before


def test_measured_inside_a_tf_function_trace():
    model = _seq((10, 9, 1), L.Lambda(lambda t: t[:, 1:]), L.Conv2D(1, 3, name="c"))

    @tf.function(autograph=False)  # AutoGraph would convert kerasviz's Python on the way
    def traced(x):
        field = kerasviz.receptive_field(model, "c")
        return x + field.start[0]

    assert float(traced(tf.constant(0.0))) == 1.0
    assert _geometry(kerasviz.receptive_field(model, "c")) == ((3, 3), (1, 1), (1, 0), (7, 7))


def test_measuring_leaves_the_layers_unchanged():
    scale = LayerScale(0.5, 2, name="scale")
    model = _seq((8, 8, 2), L.Conv2D(2, 3, name="conv"), scale, TfConv(name="mine"))
    weights = [w.copy() for w in model.get_weights()]
    nodes = [len(layer._inbound_nodes) for layer in model.layers]
    configs = [layer.get_config() for layer in model.layers]
    kerasviz.receptive_field(model, "mine")
    assert nodes == [len(layer._inbound_nodes) for layer in model.layers]
    assert configs == [layer.get_config() for layer in model.layers]
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
