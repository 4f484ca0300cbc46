"""Receptive fields (hand-computed, and the exact gradient support on six applications) and
back-projection (against the plain stack-of-fields definition)."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_nested_model, make_tiny_cnn
from keras.src.applications.convnext import LayerScale

import kerasviz
from kerasviz._graph import iter_layers, run_graph
from kerasviz.receptive_field import ReceptiveField, backproject, backproject_tf

L = keras.layers


def _geometry(rf: ReceptiveField):
    return rf.size, rf.stride, rf.start, rf.map_size


def _seq(input_shape, *layers) -> keras.Model:
    return keras.Sequential([keras.Input(input_shape), *layers])


# ---------------------------------------------------------------- hand-computed fields

# (input shape, layers, expected (size, stride, start, map_size)). The TensorFlow `same` rule:
# pad_total = max(k_eff - s, 0) if n % s == 0 else max(k_eff - n % s, 0), pad_before = total // 2.
HAND_CASES = {
    "valid_3x3": ((10, 10, 1), [L.Conv2D(1, 3)], ((3, 3), (1, 1), (0, 0), (8, 8))),
    "same_3x3": (
        (10, 10, 1),
        [L.Conv2D(1, 3, padding="same")],
        ((3, 3), (1, 1), (-1, -1), (10, 10)),
    ),
    # n=17 odd: total 2, before 1; n=16 even: total 1, before 0 (the odd pixel goes last).
    "same_3x3_stride2_odd_even": (
        (17, 16, 1),
        [L.Conv2D(1, 3, strides=2, padding="same")],
        ((3, 3), (2, 2), (-1, 0), (9, 8)),
    ),
    # k=4, n=17: total 3, before 1; k=6, n=16: total 4, before 2.
    "same_even_kernels_stride2": (
        (17, 16, 1),
        [L.Conv2D(1, (4, 6), strides=2, padding="same")],
        ((4, 6), (2, 2), (-1, -2), (9, 8)),
    ),
    # y: k=4, s=3, n=16 (16 % 3 = 1): total 3, before 1; x: k=2, s=1: total 1, before 0.
    "same_even_kernels_mixed_strides": (
        (16, 16, 1),
        [L.Conv2D(1, (4, 2), strides=(3, 1), padding="same")],
        ((4, 2), (3, 1), (-1, 0), (6, 16)),
    ),
    "dilation_valid": (
        (12, 12, 1),
        [L.Conv2D(1, 3, dilation_rate=2)],
        ((5, 5), (1, 1), (0, 0), (8, 8)),
    ),
    # k_eff = 5: total 4, before 2.
    "dilation_same": (
        (12, 12, 1),
        [L.Conv2D(1, 3, dilation_rate=(2, 1), padding="same")],
        ((5, 3), (1, 1), (-2, -1), (12, 12)),
    ),
    # after the stride-2 conv (field 3, stride 2), a 3x3 dilation-2 conv adds (5-1)*2 = 8.
    "stride_then_dilation": (
        (20, 20, 1),
        [L.Conv2D(1, 3, strides=2), L.Conv2D(1, 3, dilation_rate=2)],
        ((11, 11), (2, 2), (0, 0), (5, 5)),
    ),
    # 15 odd: total 2, before 1; 16 even: total 1, before 0.
    "maxpool_same": (
        (15, 16, 1),
        [L.MaxPooling2D(3, strides=2, padding="same")],
        ((3, 3), (2, 2), (-1, 0), (8, 8)),
    ),
    "avgpool_valid_leftover": (
        (9, 9, 1),
        [L.AveragePooling2D(2)],
        ((2, 2), (2, 2), (0, 0), (4, 4)),
    ),
    # conv 3 (stride 1) then pool 2: 3 + 1 = 4, stride 2; then conv 3 at stride 2: 4 + 2*2 = 8.
    "conv_pool_conv": (
        (16, 16, 1),
        [L.Conv2D(1, 3), L.MaxPooling2D(2), L.Conv2D(1, 3)],
        ((8, 8), (2, 2), (0, 0), (5, 5)),
    ),
    "zeropadding_then_conv": (
        (10, 10, 1),
        [L.ZeroPadding2D(((1, 2), (3, 0))), L.Conv2D(1, 3, strides=2)],
        ((3, 3), (2, 2), (-1, -3), (6, 6)),
    ),
    # cropping after a stride-2 conv shifts by crop * 2.
    "conv_then_cropping": (
        (12, 12, 1),
        [L.Conv2D(1, 3, strides=2), L.Cropping2D(((1, 0), (2, 1)))],
        ((3, 3), (2, 2), (2, 4), (4, 2)),
    ),
    # k=4, s=2, n=11: total 3, before 1; causal k_eff=5: before 4, at stride 2.
    "conv1d_same_then_causal": (
        (11, 1),
        [
            L.Conv1D(1, 4, strides=2, padding="same"),
            L.Conv1D(1, 3, padding="causal", dilation_rate=2),
        ],
        ((12,), (2,), (-9,), (6,)),
    ),
    "conv1d_pool1d": (
        (20, 2),
        [L.Conv1D(1, 5), L.MaxPooling1D(3)],
        ((7,), (3,), (0,), (5,)),
    ),
    # depthwise valid stride 2: 3, 2, 0 (map 5); separable same on n=5: before 1, at stride 2.
    "depthwise_then_separable": (
        (12, 12, 2),
        [L.DepthwiseConv2D(3, strides=2), L.SeparableConv2D(2, 3, padding="same")],
        ((7, 7), (2, 2), (-2, -2), (5, 5)),
    ),
    "position_wise_layers_keep": (
        (10, 10, 2),
        [
            L.Conv2D(4, 3),
            L.BatchNormalization(),
            L.LayerNormalization(),
            L.ReLU(),
            L.Activation("swish"),
            L.Dropout(0.5),
            L.Rescaling(2.0),
            L.Normalization(mean=0.0, variance=1.0),
            L.Dense(5),
            L.Reshape((8, 8, 5)),
        ],
        ((3, 3), (1, 1), (0, 0), (8, 8)),
    ),
}


@pytest.mark.parametrize("name", sorted(HAND_CASES))
def test_receptive_field_hand_computed(name):
    input_shape, layers, expected = HAND_CASES[name]
    model = _seq(input_shape, *[layer.from_config(layer.get_config()) for layer in layers])
    rf = kerasviz.receptive_field(model, -1)
    assert _geometry(rf) == expected
    assert rf.input_size == input_shape[:-1]
    assert rf.map_size == tuple(model.compute_output_shape((1, *input_shape))[1:-1])


def test_box_and_center_clip_to_the_input():
    model = _seq((10, 10, 1), L.ZeroPadding2D(((1, 2), (3, 0))), L.Conv2D(1, 3, strides=2))
    rf = kerasviz.receptive_field(model, -1)
    # unit (0, 0) starts at (-1, -3): rows -1..1 -> 0..1, columns -3..-1 -> nothing.
    assert rf.box(0, 0) == (0, 0, 2, 0)
    assert rf.box(5, 4) == (9, 5, 10, 8)
    assert rf.center(0, 0) == (0.0, -2.0)
    assert rf.center(2, 3) == (4.0, 4.0)
    with pytest.raises(ValueError, match=r"position=\(6, 0\)"):
        rf.box(6, 0)
    with pytest.raises(ValueError, match="one integer index per spatial axis"):
        rf.box(1)


def test_tiny_cnn_fields_and_global_head():
    model = make_tiny_cnn()
    conv2 = kerasviz.receptive_field(model, "conv2")
    assert _geometry(conv2) == ((5, 5), (1, 1), (0, 0), (12, 12))
    pool = kerasviz.receptive_field(model, model.get_layer("pool"))
    assert _geometry(pool) == ((6, 6), (2, 2), (0, 0), (6, 6))
    assert pool.box(5, 5) == (10, 10, 16, 16)
    for layer in ("flatten", "probs"):
        rf = kerasviz.receptive_field(model, layer)
        assert rf.is_global and not pool.is_global
        assert _geometry(rf) == ((16, 16), (0, 0), (0, 0), (1, 1))
        assert rf.box(0, 0) == (0, 0, 16, 16)


def _functional(build, shape=(12, 12, 3)):
    inputs = keras.Input(shape)
    return keras.Model(inputs, build(inputs))


def test_merges_take_the_union():
    def build(merge):
        def body(x):
            a = L.Conv2D(2, (1, 5), padding="same", name="a")(x)  # y: 1 @ 0, x: 5 @ -2
            b = L.Conv2D(2, (3, 1), padding="same", name="b")(x)  # y: 3 @ -1, x: 1 @ 0
            return merge(name="merge")([a, b])

        return body

    for merge in (L.Add, L.Concatenate, L.Average, L.Maximum, L.Subtract, L.Multiply):
        rf = kerasviz.receptive_field(_functional(build(merge)), "merge")
        assert _geometry(rf) == ((3, 5), (1, 1), (-1, -2), (12, 12)), merge.__name__
    # the same with functional-API operations recorded as graph nodes
    inputs = keras.Input((12, 12, 3))
    a = L.Conv2D(2, (1, 5), padding="same")(inputs)
    b = L.Conv2D(2, (3, 1), padding="same")(inputs)
    out = L.Conv2D(2, 1, name="after")(keras.ops.relu(a + b))
    rf = kerasviz.receptive_field(keras.Model(inputs, out), "after")
    assert _geometry(rf) == ((3, 5), (1, 1), (-1, -2), (12, 12))


def test_merge_of_different_strides_is_an_error():
    def build(x):
        a = L.MaxPooling2D(2)(x)  # 6x6, stride 2
        b = L.Conv2D(3, 7)(x)  # 6x6, stride 1
        return L.Add(name="add")([a, b])

    with pytest.raises(ValueError, match=r"'add'.*different strides \[1, 2\]"):
        kerasviz.receptive_field(_functional(build), "add")


def test_squeeze_and_excitation_gate_keeps_the_field():
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(4, 3, padding="same", name="conv")(inputs)
    g = L.GlobalAveragePooling2D(name="gap")(x)
    g = L.Reshape((1, 1, 4), name="reshape")(g)
    g = L.Conv2D(4, 1, activation="sigmoid", name="gate")(g)
    y = L.Multiply(name="excite")([x, g])
    z = L.Conv2D(4, 3, padding="same", name="after")(y)
    # the same gate as a keepdims pooling and a functional multiply
    h = L.GlobalAveragePooling2D(keepdims=True, name="gap2")(z)
    out = L.Conv2D(4, 1, name="after2")(z * L.Activation("sigmoid")(h))
    model = keras.Model(inputs, out)
    assert _geometry(kerasviz.receptive_field(model, "excite")) == (
        (3, 3),
        (1, 1),
        (-1, -1),
        (12, 12),
    )
    assert _geometry(kerasviz.receptive_field(model, "after")) == (
        (5, 5),
        (1, 1),
        (-2, -2),
        (12, 12),
    )
    assert _geometry(kerasviz.receptive_field(model, "after2")) == (
        (5, 5),
        (1, 1),
        (-2, -2),
        (12, 12),
    )
    for name in ("gap", "reshape", "gate", "gap2"):
        rf = kerasviz.receptive_field(model, name)
        assert rf.is_global and rf.map_size == (1, 1) and rf.box(0, 0) == (0, 0, 12, 12), name


def test_global_pooling_flatten_dense_and_later_layers_are_global():
    inputs = keras.Input((10, 12, 3))
    x = L.Conv2D(4, 3, name="conv")(inputs)
    g = L.GlobalMaxPooling2D(name="gmp")(x)
    f = L.Dense(3, name="dense_after_flatten")(L.Flatten(name="flatten")(x))
    d = L.Dense(12 * 4, name="dense")(g)
    r = L.Reshape((3, 4, 4), name="reshape")(d)
    c = L.Conv2D(2, 3, padding="same", name="conv_on_global")(r)
    model = keras.Model(inputs, [f, c])
    for name in ("gmp", "flatten", "dense_after_flatten", "dense"):
        rf = kerasviz.receptive_field(model, name)
        assert _geometry(rf) == ((10, 12), (0, 0), (0, 0), (1, 1)), name
    rf = kerasviz.receptive_field(model, "conv_on_global")
    assert _geometry(rf) == ((10, 12), (0, 0), (0, 0), (3, 4))
    assert rf.box(2, 3) == (0, 0, 10, 12)
    # every unit sees everything: back-projection is the mean of the whole map
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_allclose(backproject(values, rf), np.full((10, 12), 5.5), atol=1e-6)


def test_nested_model_by_path_and_name():
    model = make_nested_model()
    # b_conv1 same 3: 3 @ -1; b_conv2: 5 @ -2; add: union 5 @ -2; pool 2: 6 @ -2, stride 2;
    # b_conv3 same 3 at stride 2 (n=16, before 1): 6 + 4 = 10 @ -2 - 2 = -4.
    expected = {
        "backbone/b_conv1": ((3, 3), (1, 1), (-1, -1), (32, 32)),
        "b_add": ((5, 5), (1, 1), (-2, -2), (32, 32)),
        "b_pool": ((6, 6), (2, 2), (-2, -2), (16, 16)),
        "backbone/b_conv3": ((10, 10), (2, 2), (-4, -4), (16, 16)),
        "backbone": ((10, 10), (2, 2), (-4, -4), (16, 16)),
        "head_gap": ((32, 32), (0, 0), (0, 0), (1, 1)),
    }
    for name, geometry in expected.items():
        assert _geometry(kerasviz.receptive_field(model, name)) == geometry, name
    # the nested model used directly gives the same fields
    backbone = model.get_layer("backbone")
    assert _geometry(kerasviz.receptive_field(backbone, "b_conv3")) == expected["backbone/b_conv3"]


@pytest.mark.parametrize(
    "layer",
    [L.Conv2DTranspose(1, 3, strides=2), L.UpSampling2D(2), L.Resizing(20, 20)],
    ids=lambda layer: type(layer).__name__,
)
def test_resampling_layers_raise(layer):
    model = _seq((10, 10, 1), L.Conv2D(1, 3, name="before"), layer, L.Conv2D(1, 3, name="after"))
    kind = type(layer).__name__
    with pytest.raises(ValueError, match=rf"{layer.name}'? of type {kind} resamples"):
        kerasviz.receptive_field(model, "after")
    assert kerasviz.receptive_field(model, "before").size == (3, 3)


def test_unknown_layer_raises_naming_it_and_earlier_layers_still_work():
    model = _seq(
        (10, 10, 1),
        L.Conv2D(1, 3, name="before"),
        L.Lambda(lambda t: t[:, ::-1], name="flip"),
        L.Conv2D(1, 3, name="after"),
    )
    for name in ("flip", "after"):
        with pytest.raises(ValueError, match=r"'flip' of type Lambda has no known"):
            kerasviz.receptive_field(model, name)
    assert _geometry(kerasviz.receptive_field(model, "before")) == ((3, 3), (1, 1), (0, 0), (8, 8))


def test_several_inputs():
    a = keras.Input((10, 10, 1), name="a")
    b = keras.Input((10, 10, 1), name="b")
    v = keras.Input((4,), name="v")
    ca = L.Conv2D(2, 3, padding="same", name="ca")(a)
    cb = L.Conv2D(2, 5, padding="same", name="cb")(b)
    gate = L.Reshape((1, 1, 2), name="vgate")(L.Dense(2)(v))
    gated = L.Multiply(name="gated")([cb, gate])
    added = L.Add(name="added")([ca, gated])
    model = keras.Model([a, b, v], added)
    rf = kerasviz.receptive_field(model, "gated")
    assert rf.input_index == 1 and _geometry(rf) == ((5, 5), (1, 1), (-2, -2), (10, 10))
    assert kerasviz.receptive_field(model, "ca").input_index == 0
    with pytest.raises(ValueError, match=r"layer='added'.*several model inputs \['a', 'b'\]"):
        kerasviz.receptive_field(model, "added")
    with pytest.raises(ValueError, match=r"layer='vgate'.*no spatial model input"):
        kerasviz.receptive_field(model, "vgate")


def test_unknown_input_size_needs_input_size():
    model = _seq((None, None, 1), L.Conv2D(1, 3, strides=2, padding="same", name="conv"))
    with pytest.raises(ValueError, match="input_size"):
        kerasviz.receptive_field(model, "conv")
    rf = kerasviz.receptive_field(model, "conv", input_size=(17, 16))
    assert _geometry(rf) == ((3, 3), (2, 2), (-1, 0), (9, 8)) and rf.input_size == (17, 16)
    known = _seq((16, 16, 1), L.Conv2D(1, 3, name="conv"))
    with pytest.raises(ValueError, match=r"input_size=\(12, 16\)"):
        kerasviz.receptive_field(known, "conv", input_size=(12, 16))


def test_layer_not_in_model():
    model = make_tiny_cnn()
    with pytest.raises(ValueError, match="conv9"):
        kerasviz.receptive_field(model, "conv9")
    with pytest.raises(ValueError, match="'stranger'"):
        kerasviz.receptive_field(model, L.Conv2D(1, 3, name="stranger"))


# ---------------------------------------------------------------- exactness: gradient support


class _Interpreter:
    """A test-only run of an architecture whose input gradients cannot vanish.

    Same geometry as the model, but every convolution has a positive normalised kernel, max
    pooling becomes average pooling, and BN/activations/Dropout/Rescaling/Normalization are
    the identity; squeeze-and-excitation gates are held constant (``tf.stop_gradient``), as the
    issue specifies. Each convolution has one output channel: with uniform kernels all output
    channels of a convolution are equal, so one carries the same support; this keeps the
    float64 run cheap enough to test every conv and pool layer.
    """

    IDENTITY = (
        L.BatchNormalization,
        L.LayerNormalization,
        L.Activation,
        L.ReLU,
        L.Dropout,
        L.Rescaling,
        L.Normalization,
        L.Dense,  # channel mixing at each position (ConvNeXt's pointwise convolutions)
        LayerScale,  # measured by kerasviz: per-channel scaling
    )

    def __call__(self, layer, path, args, kwargs):
        xs = [v for v in keras.tree.flatten(args) if tf.is_tensor(v)]
        x = xs[0]
        op = type(layer).__name__ if not isinstance(layer, L.Layer) else None
        if op == "Add" and len(xs) == 2:  # a residual connection written as x + y
            return xs[0] + xs[1]
        if op in ("Add", "Multiply") and len(xs) == 1:  # a constant: MobileNetV3's hard sigmoid
            return x
        if isinstance(layer, L.DepthwiseConv2D | L.SeparableConv2D):
            k = layer.kernel_size
            w = tf.ones((*k, x.shape[-1], 1), tf.float64) / (k[0] * k[1])
            y = tf.nn.depthwise_conv2d(
                x, w, (1, *layer.strides, 1), layer.padding.upper(), dilations=layer.dilation_rate
            )
            return (
                tf.reduce_mean(y, -1, keepdims=True) if isinstance(layer, L.SeparableConv2D) else y
            )
        if isinstance(layer, L.Conv2D):
            k = layer.kernel_size
            w = tf.ones((*k, x.shape[-1], 1), tf.float64) / (k[0] * k[1] * x.shape[-1])
            return tf.nn.convolution(
                x, w, layer.strides, layer.padding.upper(), dilations=layer.dilation_rate
            )
        if isinstance(layer, L.MaxPooling2D | L.AveragePooling2D):
            return tf.nn.avg_pool2d(x, layer.pool_size, layer.strides, layer.padding.upper())
        if isinstance(layer, L.ZeroPadding2D):
            return tf.pad(x, [[0, 0], *layer.padding, [0, 0]])
        if isinstance(layer, L.Cropping2D):
            (t, b), (left, r) = layer.cropping
            return x[:, t : x.shape[1] - b, left : x.shape[2] - r]
        if isinstance(layer, L.GlobalAveragePooling2D):
            return tf.reduce_mean(x, axis=(1, 2), keepdims=layer.keepdims)
        if isinstance(layer, L.Reshape):  # the SE reshape (b, c) -> (b, 1, 1, c)
            return tf.reshape(x, (-1, *layer.target_shape[:-1], x.shape[-1]))
        if isinstance(layer, L.Add):
            return functools.reduce(tf.add, xs)
        if isinstance(layer, L.Concatenate):
            return tf.concat(xs, axis=-1)
        if isinstance(layer, L.Multiply):
            gates = [v for v in xs if v.shape[1] == v.shape[2] == 1]
            (main,) = [v for v in xs if not (v.shape[1] == v.shape[2] == 1)]
            # held at 1: a gate equal to the (growing) activations would square them per block
            return main * functools.reduce(tf.multiply, [tf.stop_gradient(g / g) for g in gates])
        if isinstance(layer, self.IDENTITY):
            return x
        raise AssertionError(f"the test interpreter has no rule for {path} ({type(layer)})")


def _probe_units(h: int, w: int) -> list[tuple[int, int]]:
    """The four corners, the centre and two units next to the border."""
    units = [
        (0, 0),
        (0, w - 1),
        (h - 1, 0),
        (h - 1, w - 1),
        (h // 2, w // 2),
        (min(1, h - 1), w // 2),
        (h // 2, max(w - 2, 0)),
    ]
    return list(dict.fromkeys(units))


def _gradient_supports(model, paths, units):
    """One gradient call: row r holds the support of unit units[path][k] for its (path, k)."""
    rows = [(path, unit) for path in paths for unit in units[path]]
    shape = (len(rows), *model.input.shape[1:])
    x = tf.ones(shape, tf.float64)
    outputs = {}
    wanted = set(paths)

    def visit(layer, path, out):
        if path in wanted:
            outputs[path] = out

    with tf.GradientTape() as tape:
        tape.watch(x)
        run_graph(model, [x], _Interpreter(), visit=visit)
        objective = tf.constant(0.0, tf.float64)
        start = 0
        for path in paths:
            idx = [[start + k, i, j] for k, (i, j) in enumerate(units[path])]
            objective += tf.reduce_sum(tf.gather_nd(outputs[path], idx))
            start += len(units[path])
    grad = tape.gradient(objective, x).numpy().sum(-1)
    return rows, grad


APPLICATIONS = {
    "VGG16": (70, 64),
    "ResNet50": (67, 80),
    "MobileNetV2": (75, 68),
    "InceptionV3": (107, 99),
    "DenseNet121": (70, 71),
    "EfficientNetB0": (69, 72),
    # odd sizes leave rows the strided valid stems never read (ConvNeXt: 66 = 4 * 16 + 2)
    "ConvNeXtTiny": (66, 71),
    "EfficientNetV2B0": (69, 66),
    "MobileNetV3Small": (75, 68),
}


@functools.cache
def _application(name: str) -> keras.Model:
    """Each application built once per module."""
    size = APPLICATIONS[name]
    return getattr(keras.applications, name)(
        weights=None, include_top=False, input_shape=(*size, 3)
    )


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_receptive_field_equals_gradient_support(name):
    size = APPLICATIONS[name]
    model = _application(name)
    # convolutions and pooling follow rules; LayerScale (ConvNeXt) has none and is measured
    kinds = (L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D, L.MaxPooling2D, L.AveragePooling2D)
    kinds += (LayerScale,)
    paths = [path for path, layer in iter_layers(model) if isinstance(layer, kinds)]
    fields = {path: kerasviz.receptive_field(model, path) for path in paths}
    units = {path: _probe_units(*fields[path].map_size) for path in paths}
    checked = 0
    for chunk in np.array_split(np.array(paths, dtype=object), max(1, len(paths) // 40)):
        rows, grad = _gradient_supports(model, list(chunk), units)
        positive = grad[grad > 0]
        assert positive.min() > 1e-250  # far from float64 underflow: no support is lost
        for (path, unit), g in zip(rows, grad, strict=True):
            top, left, bottom, right = fields[path].box(*unit)
            expected = np.zeros(size, bool)
            expected[top:bottom, left:right] = True
            support = g > 0
            assert np.array_equal(support, expected), (
                f"{name} {path} unit {unit}: field box {(top, left, bottom, right)}, gradient "
                f"support rows {np.flatnonzero(support.any(1))[[0, -1]]} "
                f"cols {np.flatnonzero(support.any(0))[[0, -1]]}"
            )
            checked += 1
    assert checked >= 4 * len(paths)


# ---------------------------------------------------------------- boxes: what each unit sees

F64 = {"dtype": "float64"}
ONES = {"kernel_initializer": "ones", "bias_initializer": "zeros", **F64}


def _f64(input_shape, *layers) -> keras.Model:
    """A float64 Sequential: deep fields' tails underflow float32 and shrink the support."""
    return keras.Sequential([keras.Input(input_shape, dtype="float64"), *layers])


def _gradient_boxes(model: keras.Model, layers: list[L.Layer]) -> list[dict[tuple, tuple | None]]:
    """Per layer, every unit: the bounding box (lows, then highs) of its nonzero float64 input
    gradient, or None for a unit that depends on no pixel. One forward and backward pass:
    each unit of each layer gets its own batch row."""
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    units = [list(np.ndindex(*layer.output.shape[1:-1])) for layer in layers]
    offsets = np.cumsum([0] + [len(u) for u in units])
    x = tf.ones((offsets[-1], *model.inputs[0].shape[1:]), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = keras.tree.flatten(probe(x))
        objective = tf.constant(0.0, tf.float64)
        for y, start, per_layer in zip(outputs, offsets, units, strict=False):
            index = [[start + r, *unit] for r, unit in enumerate(per_layer)]
            objective += tf.reduce_sum(tf.gather_nd(y, index))
    support = (tape.gradient(objective, x).numpy() != 0).any(-1)
    d = support.ndim - 1
    result = []
    for start, per_layer in zip(offsets, units, strict=False):
        boxes = {}
        for unit, seen in zip(per_layer, support[start : start + len(per_layer)], strict=True):
            if not seen.any():
                boxes[unit] = None
                continue
            axes = [tuple(b for b in range(d) if b != a) for a in range(d)]
            hits = [
                np.flatnonzero(seen.any(other)) if other else np.flatnonzero(seen) for other in axes
            ]
            boxes[unit] = (*(int(h[0]) for h in hits), *(int(h[-1]) + 1 for h in hits))
        result.append(boxes)
    return result


def _field_boxes(rf: ReceptiveField) -> dict[tuple, tuple | None]:
    boxes = {}
    for unit in np.ndindex(*rf.map_size):
        box = rf.box(*unit)
        empty = any(lo >= hi for lo, hi in zip(box[: rf.ndim], box[rf.ndim :], strict=True))
        boxes[unit] = None if empty else box
    return boxes


def _nominal(rf: ReceptiveField) -> ReceptiveField:
    """The same nominal field, boxes only clipped to the image (what fields were before)."""
    return ReceptiveField(rf.size, rf.stride, rf.start, rf.input_size, rf.map_size)


def test_padding_is_not_mapped_onto_cropped_pixels():
    model = _f64(
        (21, 21, 1),
        L.Cropping2D(((1, 2), (2, 0)), **F64),
        L.AveragePooling2D(2, **F64),
        L.Conv2D(1, 5, padding="same", **ONES),
    )
    rf = kerasviz.receptive_field(model, -1)
    # the crop keeps rows 1..18 and columns 2..20; the valid pool never reads column 20.
    # unit (0, 0): 5x5 same (pad 2) over pool units -2..2, of which 0..2 exist: rows 1..6
    assert rf.box(0, 0) == (1, 2, 7, 8)
    assert _nominal(rf).box(0, 0) == (0, 0, 7, 8)  # padding mapped onto cropped pixels
    assert rf.extent == ((1, 19), (2, 20))
    assert _field_boxes(rf) == _gradient_boxes(model, [model.layers[-1]])[0]
    nominal = _nominal(rf)
    wrong = [u for u in np.ndindex(*rf.map_size) if nominal.box(*u) != rf.box(*u)]
    assert len(wrong) == 56


def test_rows_no_unit_reads_are_in_no_box():
    # a 3x3 stride-2 valid conv reads rows 0..8 of 10 (units 0..3), columns 0..10 of 11
    model = _f64(
        (10, 11, 1),
        L.Conv2D(1, 3, strides=2, **ONES),
        L.Conv2D(1, 3, padding="same", **ONES),
        L.Conv2D(1, 5, padding="same", **ONES),
    )
    for layer, boxes in zip(model.layers, _gradient_boxes(model, model.layers), strict=True):
        rf = kerasviz.receptive_field(model, layer)
        assert rf.extent == ((0, 9), (0, 11)), layer.name
        assert _field_boxes(rf) == boxes, layer.name
        assert backproject(np.ones(rf.map_size), rf)[9].tolist() == [0.0] * 11
    last = kerasviz.receptive_field(model, -1)
    # nominal: 15 @ -6, stride 2; unit 4's columns start at 2, rows of unit 3 at 0
    assert last.box(3, 4) == (0, 2, 9, 11) and _nominal(last).box(3, 4) == (0, 2, 10, 11)


def test_dilated_kernel_skips_border_pixels():
    model = _f64((12, 9, 1), L.Conv2D(1, 3, dilation_rate=(2, 1), padding="same", **ONES))
    rf = kerasviz.receptive_field(model, -1)
    # unit i reads rows i-2, i, i+2: unit 1 reads rows 1 and 3, not row 0; unit 2 reads row 0
    lows, highs = rf.intervals(0)
    assert lows.tolist() == [0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert highs.tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 11, 12]
    assert (rf.size, rf.start) == ((5, 3), (-2, -1))
    assert _field_boxes(rf) == _gradient_boxes(model, [model.layers[-1]])[0]


def _random_layers(rng: np.random.Generator) -> list[L.Layer]:
    """2 to 4 layers: cropping, zero padding, same/valid, strides, dilation, pooling."""
    layers = []
    for _ in range(int(rng.integers(2, 5))):
        kind = rng.choice(["conv", "conv", "pool", "pad", "crop"])
        amounts = tuple(tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(2))
        padding = str(rng.choice(["same", "valid"]))
        if kind == "conv":
            dilation = int(rng.choice([1, 1, 2, 3]))
            strides = 1 if dilation > 1 else int(rng.choice([1, 2, 3]))
            kernel = tuple(int(v) for v in rng.integers(1, 6, 2))
            layers.append(L.Conv2D(1, kernel, strides, padding, dilation_rate=dilation, **ONES))
        elif kind == "pool":
            pool, strides = (int(v) for v in rng.integers(2, 4, 2))
            layers.append(L.AveragePooling2D(pool, strides, padding, **F64))
        elif kind == "pad":
            layers.append(L.ZeroPadding2D(amounts, **F64))
        else:
            layers.append(L.Cropping2D(amounts, **F64))
    return layers


def test_boxes_equal_gradient_support_sweep():
    rng = np.random.default_rng(2024)
    models = differing = units = 0
    while models < 40:
        size = tuple(int(v) for v in rng.integers(9, 25, 2))  # even and odd
        layers = _random_layers(rng)
        shape = (1, *size, 1)
        try:
            for layer in layers:
                shape = layer.compute_output_shape(shape)
        except ValueError:  # a map shrunk to nothing
            continue
        if min(shape[1:3]) < 1:
            continue
        model = _f64((*size, 1), *layers)
        reference = _gradient_boxes(model, model.layers)
        for layer, expected in zip(model.layers, reference, strict=True):
            rf = kerasviz.receptive_field(model, layer)
            got = _field_boxes(rf)
            assert got == expected, (
                f"{[lay.get_config() for lay in model.layers]} on {size}, {layer.name}: "
                f"{[(u, got[u], expected[u]) for u in got if got[u] != expected[u]][:3]}"
            )
            nominal = _nominal(rf)
            differing += sum(nominal.box(*u) != rf.box(*u) for u in got)
            units += len(got)
        models += 1
    # the sweep exercises the cases where nominal boxes clipped to the image are wrong
    assert units > 3000 and differing > 300


def test_conv1d_and_conv3d_boxes_equal_gradient_support():
    model_1d = _f64(
        (23, 2),
        L.Conv1D(1, 4, strides=2, padding="same", **ONES),
        L.Conv1D(1, 3, padding="causal", dilation_rate=2, **ONES),
        L.Cropping1D((1, 2), **F64),
        L.ZeroPadding1D((2, 0), **F64),
        L.AveragePooling1D(2, padding="same", **F64),
        L.Conv1D(1, 3, dilation_rate=3, padding="same", **ONES),
    )
    model_3d = _f64(
        (9, 10, 11, 1),
        L.Conv3D(1, 3, strides=2, padding="same", **ONES),
        L.Cropping3D(((1, 0), (0, 1), (1, 1)), **F64),
        L.ZeroPadding3D(((0, 1), (1, 0), (2, 0)), **F64),
        L.Conv3D(1, (2, 3, 1), padding="same", **ONES),
        L.Conv3D(1, 2, strides=2, **ONES),  # AvgPool3D has no float64 CPU kernel
    )
    for model in (model_1d, model_3d):
        reference = _gradient_boxes(model, model.layers)
        for layer, expected in zip(model.layers, reference, strict=True):
            rf = kerasviz.receptive_field(model, layer)
            assert _field_boxes(rf) == expected, layer.name
    # hand-computed: same k=4 s=2 on 23 (total 3, before 1), causal k_eff=5 at stride 2
    rf = kerasviz.receptive_field(model_1d, 1)
    assert (rf.size, rf.stride, rf.start, rf.map_size) == ((12,), (2,), (-9,), (12,))
    rf = kerasviz.receptive_field(model_3d, 0)
    assert (rf.size, rf.stride, rf.start, rf.map_size) == (
        (3,) * 3,
        (2,) * 3,
        (-1, 0, -1),
        (5, 5, 6),
    )


def test_receptive_field_extent_and_bounds_arguments():
    rf = ReceptiveField((3, 3), (2, 2), (-1, 0), (8, 9), (4, 4), extent=((1, 20), (0, 5)))
    # nominal rows [-1, 2), [1, 4), ... clipped to [1, 8); columns clipped to [0, 5)
    assert rf.intervals(0)[0].tolist() == [1, 1, 3, 5]
    assert rf.intervals(1)[1].tolist() == [3, 5, 5, 5]
    assert rf.box(3, 3) == (5, 5, 8, 5)  # empty: columns 6..8 are outside the extent
    assert rf.extent == ((1, 8), (0, 5))
    assert rf == ReceptiveField(
        (3, 3), (2, 2), (-1, 0), (8, 9), (4, 4), bounds=(rf.bounds[0], rf.bounds[1])
    )
    with pytest.raises(ValueError, match=r"`bounds` on axis 1 to be 4 \(low, high\)"):
        ReceptiveField((3, 3), (2, 2), (0, 0), (8, 9), (4, 4), bounds=(rf.bounds[0], ((0,), (1,))))
    with pytest.raises(ValueError, match="`extent`"):
        ReceptiveField((3, 3), (2, 2), (0, 0), (8, 9), (4, 4), extent=((0, 8),))


# ---------------------------------------------------------------- back-projection


def _stack_reference(values: np.ndarray, rf: ReceptiveField, fill: float) -> np.ndarray:
    """The definition, written plainly: one image per unit, filled with its value inside its
    clipped field; each pixel is the mean over the units that cover it."""
    n, units = values.shape[0], list(np.ndindex(*rf.map_size))
    d = rf.ndim
    stack = np.zeros((n, len(units), *rf.input_size, *values.shape[1 + d :]))
    cover = np.zeros((len(units), *rf.input_size), bool)
    for u, unit in enumerate(units):
        box = rf.box(*unit)
        region = tuple(slice(lo, hi) for lo, hi in zip(box[:d], box[d:], strict=True))
        stack[(slice(None), u, *region)] = values[(slice(None), *unit)][
            (slice(None), *([None] * d))
        ]
        cover[(u, *region)] = True
    count = cover.sum(0)
    count = count[None, ..., None] if values.ndim == d + 2 else count[None]
    total = stack.sum(1)
    return np.where(count > 0, total / np.maximum(count, 1), fill)


REFERENCE_FIELDS = {
    "valid_stride2": ((20, 18, 1), [L.Conv2D(1, 3), L.Conv2D(1, 3), L.MaxPooling2D(2)]),
    "same_stride2_even_kernel": ((17, 16, 1), [L.Conv2D(1, 4, strides=2, padding="same")]),
    "same_stride1": ((11, 9, 1), [L.Conv2D(1, 3, padding="same"), L.Conv2D(1, 5, padding="same")]),
    "dilation": (
        (19, 20, 1),
        [L.Conv2D(1, 3, dilation_rate=2), L.Conv2D(1, 3, strides=2, padding="same")],
    ),
    "uncovered_pool_leftover": ((9, 9, 1), [L.AveragePooling2D(2)]),
    "uncovered_gaps": ((10, 11, 1), [L.Conv2D(1, 1, strides=3)]),
    "conv1d": ((13, 1), [L.Conv1D(1, 4, strides=2, padding="same")]),
    # exact boxes that nominal ones clipped to the image are not: cropping, unread rows, and
    # a dilated kernel at the border (lower bounds that do not grow with the unit index)
    "cropping_then_same": (
        (21, 21, 1),
        [L.Cropping2D(((1, 2), (2, 0))), L.AveragePooling2D(2), L.Conv2D(1, 5, padding="same")],
    ),
    "unread_rows": ((10, 11, 1), [L.Conv2D(1, 3, strides=2), L.Conv2D(1, 3, padding="same")]),
    "dilation_same_border": ((12, 9, 1), [L.Conv2D(1, 3, dilation_rate=2, padding="same")]),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_FIELDS))
def test_backproject_equals_the_stack_definition(name):
    input_shape, layers = REFERENCE_FIELDS[name]
    rf = kerasviz.receptive_field(_seq(input_shape, *layers), -1)
    rng = np.random.default_rng(len(name))
    fill = -3.0
    maps = rng.normal(size=(3, *rf.map_size, 2))
    expected = _stack_reference(maps, rf, fill)
    # channel form, channel-less form and a single map
    got = backproject(maps, rf, rf.input_size, fill=fill)
    assert got.dtype == np.float32 and got.shape == (3, *rf.input_size, 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        backproject(maps[..., 1], rf, fill=fill), expected[..., 1], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        backproject(maps[2, ..., 0], rf, fill=fill), expected[2, ..., 0], rtol=0, atol=1e-6
    )
    # the tf version, eager and compiled
    compiled = tf.function(lambda v: backproject_tf(v, rf, fill=fill))
    np.testing.assert_allclose(compiled(tf.constant(maps, tf.float32)), expected, atol=1e-5)
    np.testing.assert_allclose(
        backproject_tf(maps[0, ..., 0], rf, fill=fill), expected[0, ..., 0], atol=1e-5
    )


def test_backproject_uncovered_pixels_get_fill():
    rf = kerasviz.receptive_field(_seq((9, 10, 1), L.AveragePooling2D(2)), -1)
    maps = np.ones((1, 4, 5))
    out = backproject(maps, rf, fill=np.nan)
    # row 8 of the 9 rows is seen by no unit of a valid 2x2 pool; every column is seen.
    assert np.isnan(out[0, 8]).all() and not np.isnan(out[0, :8]).any()
    np.testing.assert_array_equal(backproject(maps, rf)[0, 8], 0.0)


def test_backproject_places_a_unit_on_its_field_where_resizing_shifts_it():
    # valid-padded CNN: unit (0, 0) of the pooled map sees input pixels 0..5, not pixel 0
    rf = kerasviz.receptive_field(make_tiny_cnn(), "pool")
    hot = np.zeros((6, 6))
    hot[0, 0] = 1.0
    out = backproject(hot, rf)
    # rows/cols 0-1, 2-3, 4-5 are seen by 1, 2, 3 units of the 6-wide, stride-2 fields
    covering = np.array([1, 1, 2, 2, 3, 3])
    expected = np.zeros((16, 16))
    expected[:6, :6] = 1.0 / np.outer(covering, covering)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-7)
    resized = kerasviz.resize_bilinear(hot, (16, 16))
    assert np.unravel_index(resized.argmax(), resized.shape) == (0, 0)
    assert resized[4, 4] == 0.0  # the bilinear peak never reaches most of the unit's field


def test_resize_bilinear_half_pixel_centres():
    out = kerasviz.resize_bilinear(np.array([[0.0, 1.0]]), (1, 4))
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]], atol=1e-7)
    rf = kerasviz.receptive_field(make_tiny_cnn(), "pool")
    batch = kerasviz.resize_bilinear(np.ones((2, 6, 6, 3)), rf)
    assert batch.shape == (2, 16, 16, 3) and np.allclose(batch, 1.0)


def test_crop_to_receptive_field():
    rf = kerasviz.receptive_field(make_nested_model(), "b_conv3")  # 10 @ -4, stride 2
    images = np.arange(2 * 32 * 32 * 3, dtype=np.float32).reshape(2, 32, 32, 3)
    # default: centre unit (8, 8) -> rows/cols 12..21
    np.testing.assert_array_equal(
        kerasviz.crop_to_receptive_field(images[1], rf), images[1, 12:22, 12:22]
    )
    # corner unit clipped: rows -4..5 -> 0..5
    crop = kerasviz.crop_to_receptive_field(images, rf, (0, 15))
    np.testing.assert_array_equal(crop, images[:, 0:6, 26:32])
    with pytest.raises(ValueError, match=r"position=\(16, 0\)"):
        kerasviz.crop_to_receptive_field(images, rf, (16, 0))
    with pytest.raises(ValueError, match=r"shape \(2, 30, 30, 3\)"):
        kerasviz.crop_to_receptive_field(images[:, :30, :30], rf)


def test_backproject_bad_input():
    rf = kerasviz.receptive_field(make_tiny_cnn(), "pool")  # map 6x6, input 16x16
    with pytest.raises(ValueError, match=r"map size \(6, 6\).*shape \(2, 7, 7\)"):
        backproject(np.zeros((2, 7, 7)), rf)
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        backproject(np.zeros(6), rf)
    with pytest.raises(ValueError, match=r"input size \(16, 16\).*input_size=\(32, 32\)"):
        backproject(np.zeros((2, 6, 6)), rf, (32, 32))
    with pytest.raises(ValueError, match=r"shape \(7, 7\)"):
        backproject_tf(tf.zeros((7, 7)), rf)
    with pytest.raises(ValueError, match="ReceptiveField"):
        backproject(np.zeros((6, 6)), (6, 6))


def test_receptive_field_validation():
    with pytest.raises(ValueError, match="one entry per spatial axis"):
        ReceptiveField((3, 3), (1,), (0, 0), (8, 8), (6, 6))
    with pytest.raises(ValueError, match=r"stride=\(-1, 1\)"):
        ReceptiveField((3, 3), (-1, 1), (0, 0), (8, 8), (6, 6))


def test_backproject_random_fields_against_the_stack_definition():
    rng = np.random.default_rng(7)
    for _ in range(12):
        size = tuple(int(s) for s in rng.integers(1, 8, 2))
        stride = tuple(int(s) for s in rng.integers(1, 5, 2))  # also wider than the field
        start = tuple(int(s) for s in rng.integers(-6, 3, 2))
        map_size = tuple(int(s) for s in rng.integers(1, 9, 2))
        input_size = tuple(int(s) for s in rng.integers(4, 25, 2))
        rf = ReceptiveField(size, stride, start, input_size, map_size)
        maps = rng.normal(size=(2, *map_size, 3)) * 10
        np.testing.assert_allclose(
            backproject(maps, rf, fill=5.0),
            _stack_reference(maps, rf, 5.0),
            rtol=0,
            atol=1e-5,  # values up to ~40: float32 output rounding
            err_msg=str(rf),
        )


def test_backproject_memory_is_linear_in_the_output():
    import tracemalloc

    rf = ReceptiveField((9, 9), (2, 2), (-4, -4), (400, 400), (200, 200))  # H*W*h*w = 6.4e9
    maps = np.random.default_rng(0).random((2, 200, 200), dtype=np.float32)
    tracemalloc.start()
    out = backproject(maps, rf)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (2, 400, 400)
    assert peak < 10 * out.size * 8  # a few float64 copies of the output, nothing h*w times
    np.testing.assert_allclose(out.mean(), maps.mean(), atol=0.01)


def test_backproject_rejects_non_finite_values():
    rf = kerasviz.receptive_field(make_tiny_cnn(), "pool")
    maps = np.zeros((2, 6, 6))
    maps[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        backproject(maps, rf)


def test_shared_layer_called_twice():
    conv = L.Conv2D(2, 3, padding="same", name="shared")
    inputs = keras.Input((10, 10, 2))
    chained = keras.Model(inputs, conv(conv(inputs)))
    with pytest.raises(ValueError, match=r"layer='shared', called 2 times with different"):
        kerasviz.receptive_field(chained, "shared")
    conv2 = L.Conv2D(2, 3, padding="same", name="shared2")
    twice = keras.Model(inputs, L.Add()([conv2(inputs), conv2(inputs)]))
    assert _geometry(kerasviz.receptive_field(twice, "shared2")) == (
        (3, 3),
        (1, 1),
        (-1, -1),
        (10, 10),
    )


def test_receptive_field_leaves_the_model_unchanged():
    model = make_nested_model()
    nodes = {path: len(layer._inbound_nodes) for path, layer in iter_layers(model)}
    configs = {path: layer.get_config() for path, layer in iter_layers(model)}
    weights = [w.copy() for w in model.get_weights()]
    for path in nodes:
        kerasviz.receptive_field(model, path)
    assert nodes == {path: len(layer._inbound_nodes) for path, layer in iter_layers(model)}
    assert configs == {path: layer.get_config() for path, layer in iter_layers(model)}
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
