"""backproject(..., method="effective"): path counts of the linearized geometry, exactly."""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasviz
from kerasviz.receptive_field import ReceptiveField, backproject, backproject_tf

F64 = "float64"
rf_module = importlib.import_module(
    "kerasviz.receptive_field"
)  # kerasviz.receptive_field: the function


def _conv(k, s=1, padding="valid", dilation=1, name=None):
    """A one-channel all-ones convolution: one layer of the linearized geometry."""
    return keras.layers.Conv2D(
        1,
        k,
        strides=s,
        padding=padding,
        dilation_rate=dilation,
        use_bias=False,
        kernel_initializer="ones",
        dtype=F64,
        name=name,
    )


def _reference(model: keras.Model, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The linearized network's own answer: ``grad sum(v * f) / grad sum(f)`` per pixel (the
    path-weighted mean), and the pixels no path reaches."""
    shape = (len(values), *model.inputs[0].shape[1:])
    x = tf.zeros(shape, tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = model(x)[..., 0]
        weighted = tf.reduce_sum(y * tf.constant(values, tf.float64))
        total = tf.reduce_sum(y)
    num = tape.gradient(weighted, x)[..., 0].numpy()
    den = tape.gradient(total, x)[..., 0].numpy()
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0), den[0] == 0


# ---------------------------------------------------------------- by hand


def test_one_conv_path_counts_equal_the_hand_computed_weights():
    # 3x3, stride 2, same, on 7x6. TF pads rows 1 before (7 is odd: 2 in all, the odd one
    # after) and columns 0 before (6 is even: 1 in all, after).
    model = keras.Sequential([keras.Input((7, 6, 1), dtype=F64), _conv(3, 2, "same", name="c")])
    rf = kerasviz.receptive_field(model, "c")
    rows = np.array(
        [
            [1, 1, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 1, 1],
        ],
        float,
    )
    cols = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1]], float)
    expected = np.einsum("iy,jx->ijyx", rows, cols)
    np.testing.assert_array_equal(rf.paths.counts(), expected)
    # the projection: pixel p gets sum_u P(u, p) v_u / sum_u P(u, p)
    v = np.arange(12.0).reshape(4, 3) ** 2
    num = np.einsum("ijyx,ij->yx", expected, v)
    den = expected.sum(axis=(0, 1))
    np.testing.assert_allclose(backproject(v, rf, method="effective"), num / den, rtol=1e-6)
    # one layer of all-ones windows: every covering unit counts once, as in the mean rule
    np.testing.assert_allclose(
        backproject(v, rf, method="effective"), backproject(v, rf), rtol=1e-6
    )


def test_two_convs_count_paths_as_a_triangle_and_dilation_leaves_holes():
    model = keras.Sequential(
        [
            keras.Input((7, 9, 1), dtype=F64),
            _conv(3, name="a"),
            _conv(3, dilation=(1, 2), name="b"),
        ]
    )
    rf = kerasviz.receptive_field(model, "b")
    assert rf.map_size == (3, 3)
    counts = rf.paths.counts()
    # rows: two 3-windows make the triangle 1 2 3 2 1 over rows i..i+4 of unit i
    triangle = np.array([1, 2, 3, 2, 1, 0, 0], float)
    # columns: a 3-window, then taps 0, 2, 4 of those: 1 1 2 1 2 1 1 over columns j..j+6
    pattern = np.array([1, 1, 2, 1, 2, 1, 1, 0, 0], float)
    for i in range(3):
        for j in range(3):
            expected = np.outer(np.roll(triangle, i), np.roll(pattern, j))
            np.testing.assert_array_equal(counts[i, j], expected)
    # a dilated first layer (taps 0 and 3), then every fourth unit: units read columns 0, 3
    # and 4, 7. The mean rule spreads their values over the boxes [0, 4) and [4, 8), the
    # path counts over the columns read.
    model = keras.Sequential(
        [
            keras.Input((3, 9, 1), dtype=F64),
            _conv((1, 2), dilation=(1, 3)),
            _conv(1, (1, 4), name="d"),
        ]
    )
    rf = kerasviz.receptive_field(model, "d")
    v = np.array([[1.0, 5.0]] * 3)
    effective = backproject(v, rf, method="effective", fill=-1.0)
    mean = backproject(v, rf, fill=-1.0)
    np.testing.assert_array_equal(effective[0], [1, -1, -1, 1, 5, -1, -1, 5, -1])
    np.testing.assert_array_equal(mean[0], [1, 1, 1, 1, 5, 5, 5, 5, -1])


# ---------------------------------------------------------------- the linearized network


def _chain(name: str) -> tuple[keras.Model, keras.Model]:
    """``(geometry model, linearized model)``: the first as a user builds it (pooling, ReLU,
    BatchNorm), the second its all-ones one-channel float64 linearization."""
    specs = {
        "strided": [(3, 2, "same", 1), (3, 1, "valid", 1), (5, 2, "same", 1), (3, 2, "valid", 1)],
        "pool_dilated": [(3, 1, "same", 1), ("pool", 2, "valid", 1), (3, 1, "same", 2)],
        "odd_strides": [(4, 3, "same", 1), (2, 2, "valid", 1), (3, 2, "same", 1)],
    }[name]
    x_geo = inputs_geo = keras.Input((29, 23, 3))
    x_lin = inputs_lin = keras.Input((29, 23, 1), dtype=F64)
    for k, (size, stride, padding, dilation) in enumerate(specs):
        if size == "pool":
            x_geo = keras.layers.MaxPooling2D(stride, padding=padding)(x_geo)
            x_lin = _conv(stride, stride, padding)(x_lin)
            continue
        conv = keras.layers.Conv2D(
            4, size, strides=stride, padding=padding, dilation_rate=dilation, name=f"conv{k}"
        )
        x_geo = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(x_geo)))
        x_lin = _conv(size, stride, padding, dilation)(x_lin)
    return keras.Model(inputs_geo, x_geo), keras.Model(inputs_lin, x_lin)


@pytest.mark.parametrize("name", ["strided", "pool_dilated", "odd_strides"])
def test_chains_of_strided_convs_equal_the_gradient_of_the_linearized_network(name):
    geometry, linear = _chain(name)
    rf = kerasviz.receptive_field(geometry, geometry.layers[-1].name)
    assert rf.paths.counts().shape == (*rf.map_size, 29, 23)
    values = np.random.default_rng(0).normal(size=(3, *rf.map_size))
    expected, unreached = _reference(linear, values)
    got = backproject(values, rf, method="effective", fill=-7.0)
    np.testing.assert_allclose(got[:, ~unreached], expected[:, ~unreached], rtol=0, atol=1e-5)
    assert np.all(got[:, unreached] == -7.0)
    compiled = tf.function(lambda v: backproject_tf(v, rf, method="effective"))
    np.testing.assert_allclose(
        compiled(tf.constant(values, tf.float32)), got * ~unreached, atol=1e-5
    )


def _residual_models(blocks: int, concat: bool = False) -> tuple[keras.Model, keras.Model]:
    x = inputs_lin = keras.Input((24, 20, 1), dtype=F64)
    g = inputs_geo = keras.Input((24, 20, 2))
    x, g = _conv(3, 2, "same")(x), keras.layers.Conv2D(2, 3, strides=2, padding="same")(g)
    for b in range(blocks):
        y = _conv(3, 1, "same")(_conv(3, 1, "same")(x))
        h = keras.layers.Conv2D(2, 3, padding="same", activation="relu")(g)
        h = keras.layers.Conv2D(2, 3, padding="same")(h)
        if concat and b == blocks - 1:
            x = keras.layers.Add(dtype=F64)([x, y])  # one channel: concatenation then sums
            g = keras.layers.Concatenate()([g, h])
        else:
            x = keras.layers.Add(dtype=F64)([x, y])
            g = keras.layers.Add()([g, h])
        if b == 0:
            x, g = _conv(2, 2)(x), keras.layers.MaxPooling2D(2)(g)
    return keras.Model(inputs_geo, g), keras.Model(inputs_lin, x)


@pytest.mark.parametrize("concat", [False, True])
def test_residual_merges_sum_the_paths_of_their_branches(concat):
    geometry, linear = _residual_models(3, concat)
    rf = kerasviz.receptive_field(geometry, geometry.layers[-1].name)
    assert len(rf.paths.terms()) > 1  # a sum of separable terms, not one product
    values = np.random.default_rng(1).random((2, *rf.map_size))
    expected, unreached = _reference(linear, values)
    assert not unreached.any()
    got = backproject(values, rf, method="effective")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_compressed_terms_still_equal_the_gradient(monkeypatch):
    monkeypatch.setattr(rf_module, "_MAX_TERMS", 2)
    geometry, linear = _residual_models(3)
    rf = kerasviz.receptive_field(geometry, geometry.layers[-1].name, input_size=(24, 20))
    fresh = ReceptiveField(
        rf.size,
        rf.stride,
        rf.start,
        rf.input_size,
        rf.map_size,
        bounds=rf.bounds,
        paths=rf_module.PathCounts(rf.paths._geo),
    )
    assert len(fresh.paths.terms()) <= 8 and fresh.paths._compressed
    values = np.random.default_rng(2).random((2, *rf.map_size))
    expected, _ = _reference(linear, values)
    np.testing.assert_allclose(backproject(values, fresh, method="effective"), expected, atol=1e-5)


def test_conv1d_and_conv3d_chains_equal_the_linearized_gradient():
    for dims, layer in ((1, keras.layers.Conv1D), (3, keras.layers.Conv3D)):
        size = (19,) if dims == 1 else (9, 8, 7)
        geo_in = keras.Input((*size, 2))
        lin_in = keras.Input((*size, 1), dtype=F64)
        g, x = geo_in, lin_in
        for k, s, p in ((3, 2, "same"), (2, 1, "valid"), (3, 2, "same")):
            g = layer(2, k, strides=s, padding=p)(g)
            x = layer(
                1, k, strides=s, padding=p, use_bias=False, kernel_initializer="ones", dtype=F64
            )(x)
        geometry, linear = keras.Model(geo_in, g), keras.Model(lin_in, x)
        rf = kerasviz.receptive_field(geometry, geometry.layers[-1].name)
        values = np.random.default_rng(3).random((2, *rf.map_size))
        with tf.GradientTape(persistent=True) as tape:
            z = tf.zeros((2, *size, 1), tf.float64)
            tape.watch(z)
            y = linear(z)[..., 0]
            num, den = tf.reduce_sum(y * values), tf.reduce_sum(y)
        n = tape.gradient(num, z)[..., 0].numpy()
        d = tape.gradient(den, z)[..., 0].numpy()
        expected = np.where(d > 0, n / np.where(d > 0, d, 1), 0)
        got = backproject(values, rf, method="effective")
        np.testing.assert_allclose(got, expected, atol=1e-5)


# ---------------------------------------------------------------- what it is for


def _peak_distances(specs, size, step=1):
    """For one-pixel evidence at every interior pixel ``p`` (a field's size from the
    borders): the layer's map in the linearized network (each unit's path count to ``p``),
    projected by each rule; per rule, the largest distance from ``p`` of the map's maxima."""
    x = inputs = keras.Input((*size, 1), dtype=F64)
    geo = geo_in = keras.Input((*size, 3))
    for k, s, p in specs:
        x = _conv(k, s, p)(x)
        geo = keras.layers.Conv2D(2, k, strides=s, padding=p, activation="relu")(geo)
    linear = keras.Model(inputs, x)
    rf = kerasviz.receptive_field(keras.Model(geo_in, geo), -1)
    r = rf.size[0]
    pixels = np.array([(i, j) for i in range(r, size[0] - r, step) for j in range(r, size[1] - r)])
    images = np.zeros((len(pixels), *size, 1))
    images[np.arange(len(pixels)), pixels[:, 0], pixels[:, 1], 0] = 1.0
    activation = linear(images)[..., 0].numpy()
    out = {}
    for name, maps in (
        ("effective", backproject(activation, rf, method="effective")),
        ("mean", backproject(activation, rf)),
        ("bilinear", kerasviz.resize_bilinear(activation, size)),
    ):
        flat = maps.reshape(len(maps), -1)
        top = flat >= flat.max(axis=1, keepdims=True) * (1 - 1e-9)
        far = []
        for k, p in enumerate(pixels):
            where = np.stack(np.unravel_index(np.flatnonzero(top[k]), size), axis=1)
            far.append(np.sqrt(((where - p) ** 2).sum(axis=1)).max())
        out[name] = np.array(far)
    return out


def test_evidence_from_one_pixel_peaks_at_that_pixel():
    # stride 2: the effective projection's only maximum is the pixel itself, everywhere
    stride2 = _peak_distances([(3, 1, "same"), (3, 2, "same"), (3, 1, "same")], (31, 29))
    assert len(stride2["effective"]) > 100
    np.testing.assert_array_equal(stride2["effective"], 0.0)
    assert (stride2["mean"] > 0).any() and (stride2["bilinear"] > 0).any()
    # stride 4: a map with a quarter of the resolution still points within one pixel along
    # each axis, closer than the mean rule's plateaus and the bilinear resize
    stride4 = _peak_distances(
        [(3, 2, "same"), (3, 1, "same"), (3, 2, "same"), (3, 1, "same")], (64, 60), step=3
    )
    assert stride4["effective"].max() <= np.sqrt(2) + 1e-9
    assert stride4["effective"].mean() < stride4["mean"].mean() - 0.5
    assert stride4["effective"].mean() < stride4["bilinear"].mean() - 0.5


def test_constant_maps_stay_constant_up_to_the_borders():
    geometry, _ = _residual_models(2)
    rf = kerasviz.receptive_field(geometry, geometry.layers[-1].name)
    got = backproject(np.full((2, *rf.map_size, 3), 4.5), rf, method="effective")
    np.testing.assert_allclose(got, 4.5, rtol=1e-6)


def test_channels_single_maps_and_tensorflow_agree():
    geometry, _ = _residual_models(2)
    rf = kerasviz.receptive_field(geometry, geometry.layers[-1].name)
    maps = np.random.default_rng(4).random((3, *rf.map_size, 2)).astype(np.float32)
    both = backproject(maps, rf, method="effective")
    np.testing.assert_allclose(both[..., 1], backproject(maps[..., 1], rf, method="effective"))
    np.testing.assert_allclose(
        backproject(maps[0, ..., 0], rf, method="effective"), both[0, ..., 0]
    )
    np.testing.assert_allclose(backproject_tf(maps, rf, method="effective"), both, atol=1e-6)


def test_global_fields_and_bad_input():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(name="g"),
        ]
    )
    rf = kerasviz.receptive_field(model, "g")
    assert rf.is_global and rf.paths is None  # one unit, seeing everything: the mean rule
    np.testing.assert_allclose(backproject(np.array([[[2.0]]]), rf, method="effective"), 2.0)
    hand = ReceptiveField((3, 3), (1, 1), (0, 0), (8, 8), (6, 6))
    with pytest.raises(ValueError, match="method='effective'"):
        backproject(np.zeros((6, 6)), hand, method="effective")
    with pytest.raises(ValueError, match="`method`"):
        backproject(np.zeros((6, 6)), hand, method="gaussian")
    with pytest.raises(ValueError, match="`method`"):
        backproject_tf(tf.zeros((6, 6)), hand, method=None)
    assert hand == ReceptiveField((3, 3), (1, 1), (0, 0), (8, 8), (6, 6))


# ---------------------------------------------------------------- CAMs


def test_cams_project_with_the_effective_fields(nested_model):
    images = np.random.default_rng(5).random((2, 32, 32, 3)).astype(np.float32)
    layer = "backbone/b_conv3"
    rf = kerasviz.receptive_field(nested_model, layer)
    for fn in (
        kerasviz.grad_cam,
        kerasviz.grad_cam_plus_plus,
        kerasviz.layer_cam,
        kerasviz.hires_cam,
        kerasviz.xgrad_cam,
        kerasviz.eigen_cam,
        kerasviz.ablation_cam,
    ):
        low = fn(nested_model, images, [0, 2], layer, upsample=None)
        got = fn(nested_model, images, [0, 2], layer, upsample="effective")
        expected = backproject(low, rf, method="effective")
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, atol=1e-5 * scale, err_msg=fn.__name__)
        mean = fn(nested_model, images, [0, 2], layer, upsample="receptive_field")
        assert np.abs(got - mean).max() > 0.01 * scale, fn.__name__  # another rule, another map
    guided = kerasviz.guided_grad_cam(nested_model, images, [0, 2], layer, upsample="effective")
    backprop = kerasviz.guided_backprop(nested_model, images, [0, 2])
    cam = kerasviz.grad_cam(nested_model, images, [0, 2], layer, upsample="effective")
    np.testing.assert_allclose(guided, backprop * cam[..., None], rtol=1e-5, atol=1e-12)
    score = kerasviz.score_cam(nested_model, images, [0, 2], layer, upsample="effective")
    assert score.shape == (2, 32, 32) and np.isfinite(score).all()
    with pytest.raises(ValueError, match="upsample"):
        kerasviz.grad_cam(nested_model, images, [0, 2], layer, upsample="gaussian")
