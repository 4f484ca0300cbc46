"""Channel objectives on a plain Conv2D compute only the selected filters, from the layer's input.

Every check compares the fast path (``kerasviz.channel``) with the generic one: a
``kerasviz.direction`` with a one-hot vector scores the same channel mean from the layer's full
output (it declares no ``channel_param``), so both must agree to float round-off, in
``score_objectives``, ``maximize`` (history and images) and ``filter_patterns``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerasviz
from kerasviz.optimize.objectives import plan, selected_filters_layer

SIZE = 20
QUICK = {"steps": 4, "progress": False}
OFF = {"steps": 3, "progress": False, "transforms": (), "regularizers": ()}


class MyConv(keras.layers.Conv2D):
    """A Conv2D subclass: its ``call`` could differ, so it keeps the generic path."""


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(6, 3, activation="relu", name="relu_valid")(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="tanh", name="tanh_s2")(x)
    x = layers.Conv2D(8, 3, dilation_rate=2, padding="same", activation="elu", name="elu_d2")(x)
    x = layers.Conv2D(7, (3, 2), strides=(1, 2), use_bias=False, name="linear_nobias")(x)
    x = layers.Conv2D(6, 1, activation="gelu", name="gelu_1x1")(x)
    x = MyConv(5, 3, padding="same", activation="relu", name="subclass")(x)
    x = layers.Conv2D(4, 3, padding="same", activation="softmax", name="softmax")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(3, activation="softmax", name="head")(x)
    m = keras.Model(inputs, outputs)
    for layer in m.layers:  # nonzero biases, so that the gathered bias is checked too
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.random.default_rng(1).normal(0, 0.1, layer.bias.shape))
    return m


FAST = ["relu_valid", "tanh_s2", "elu_d2", "linear_nobias", "gelu_1x1"]
IMAGES = np.random.default_rng(0).uniform(size=(3, SIZE, SIZE, 3)).astype(np.float32)


def _filters(m, name):
    return m.get_layer(name).filters


def _generic(m, name, channels):
    eye = np.eye(_filters(m, name), dtype=np.float32)
    return [kerasviz.direction(name, eye[c]) for c in channels]


def test_which_layers_take_the_fast_path(model):
    for name in FAST:
        assert selected_filters_layer(model.get_layer(name)), name
        p = plan(model, [kerasviz.channel(name, 1)], (SIZE, SIZE, 3))
        assert p.scorer.inputs == (name,) and p.scorer.layers == ()
    for name in ("subclass", "softmax"):
        assert not selected_filters_layer(model.get_layer(name)), name
        p = plan(model, [kerasviz.channel(name, 1)], (SIZE, SIZE, 3))
        assert p.scorer.inputs == () and p.scorer.layers == (name,)
    assert not selected_filters_layer(keras.layers.Conv2D(4, 3, groups=2))
    assert not selected_filters_layer(keras.layers.Conv2D(4, 3, data_format="channels_first"))
    assert not selected_filters_layer(keras.layers.Conv2D(4, 3, activation=lambda t: t * 2))
    assert not selected_filters_layer(keras.layers.Conv1D(4, 3))
    # The generic kinds read the output; a channel and a neuron of one layer read both.
    p = plan(
        model,
        [kerasviz.channel("tanh_s2", 0) + kerasviz.neuron("tanh_s2", 1)],
        (SIZE, SIZE, 3),
    )
    assert p.scorer.inputs == ("tanh_s2",) and p.scorer.layers == ("tanh_s2",)


@pytest.mark.parametrize("name", FAST)
def test_scores_equal_the_full_layer(model, name):
    channels = [0, _filters(model, name) - 1, 2]
    fast = kerasviz.score_objectives(model, [kerasviz.channel(name, c) for c in channels], IMAGES)
    full = kerasviz.score_objectives(model, _generic(model, name, channels), IMAGES)
    maps = kerasviz.feature_maps(model, IMAGES, [name])[name]
    by_hand = maps.mean(axis=(1, 2))[np.arange(3), channels]
    np.testing.assert_allclose(fast, full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast, by_hand, rtol=1e-5, atol=1e-6)
    one = kerasviz.score_objectives(model, kerasviz.channel(name, channels[1]), IMAGES[1])
    np.testing.assert_allclose(one, by_hand[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", FAST)
def test_maximize_equals_the_full_layer(model, name):
    """Batched (3 rows) and one row; ``relu_valid`` is ascended before its ReLU both ways."""
    channels = [1, 0, _filters(model, name) - 1]
    fast = kerasviz.maximize(model, [kerasviz.channel(name, c) for c in channels], **QUICK)
    full = kerasviz.maximize(model, _generic(model, name, channels), **QUICK)
    np.testing.assert_allclose(fast.history, full.history, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast.images, full.images, atol=1e-5)
    assert np.ptp(fast.images) > 1e-3  # the images moved: the gradients are not zero
    one = kerasviz.maximize(model, kerasviz.channel(name, channels[2]), **QUICK)
    np.testing.assert_allclose(one.history[0], full.history[2], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(one.images[0], full.images[2], atol=1e-5)


def test_relu_layer_is_ascended_before_the_relu(model):
    """Under ``maximize`` the fast path skips the final ReLU, as the probe's ``pre_relu`` does:
    the history holds negative values a ReLU could not give."""
    hist = kerasviz.maximize(model, [kerasviz.channel("relu_valid", c) for c in range(6)], **OFF)
    assert hist.history.min() < 0
    scores = kerasviz.score_objectives(model, kerasviz.channel("relu_valid", 0), IMAGES)
    assert scores.min() >= 0  # score_objectives scores after the activation


def test_filter_patterns_equal_the_full_layer(model):
    """Default transforms and regularizers on; more rows than filters (full conv from the
    input) and fewer (gathered filters)."""
    for channels in ([3, 0, 5], [0, 1, 2, 3, 4, 5, 0, 1]):
        fast = kerasviz.filter_patterns(model, "tanh_s2", channels, **QUICK)
        full = kerasviz.maximize(model, _generic(model, "tanh_s2", channels), **QUICK).images
        np.testing.assert_allclose(fast, full, atol=1e-5)


def test_several_channel_terms_per_row(model):
    objs = [
        0.5 * kerasviz.channel("elu_d2", 1) - kerasviz.channel("elu_d2", 6),
        kerasviz.channel("elu_d2", 2) + kerasviz.channel("tanh_s2", 3),
    ]
    eye = np.eye(8, dtype=np.float32)
    generic = [
        0.5 * kerasviz.direction("elu_d2", eye[1]) - kerasviz.direction("elu_d2", eye[6]),
        kerasviz.direction("elu_d2", eye[2]) + kerasviz.direction("tanh_s2", eye[3]),
    ]
    fast = kerasviz.score_objectives(model, objs, IMAGES[:2])
    full = kerasviz.score_objectives(model, generic, IMAGES[:2])
    np.testing.assert_allclose(fast, full, rtol=1e-5, atol=1e-6)
    a = kerasviz.maximize(model, objs, **OFF)
    b = kerasviz.maximize(model, generic, **OFF)
    np.testing.assert_allclose(a.history, b.history, rtol=1e-4, atol=1e-6)


def test_weights_are_read_live(model):
    """A compiled fast step sees new weights: the kernel and bias are read at call time."""
    layer = model.get_layer("gelu_1x1")
    objs = [kerasviz.channel("gelu_1x1", c) for c in (0, 4)]
    before = kerasviz.score_objectives(model, objs, IMAGES[:2])
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    try:
        layer.kernel.assign(kernel * 2.0)
        layer.bias.assign(bias + 0.3)
        after = kerasviz.score_objectives(model, objs, IMAGES[:2])
        full = kerasviz.score_objectives(model, _generic(model, "gelu_1x1", (0, 4)), IMAGES[:2])
    finally:
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    np.testing.assert_allclose(after, full, rtol=1e-5, atol=1e-6)
    assert np.abs(after - before).min() > 1e-3


def test_bypassed_sigmoid_head_scores_its_logits():
    """A fully convolutional model ending in a sigmoid Conv2D: with a logit term the probe
    bypasses the sigmoid, and the fast path scores that layer's logits as the probe does."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c")(inputs)
    outputs = keras.layers.Conv2D(5, 6, activation="sigmoid", name="out")(x)
    m = keras.Model(inputs, outputs)
    eye = np.eye(5, dtype=np.float32)
    x0 = IMAGES[:2, :8, :8]
    fast = [kerasviz.channel("out", 4) + kerasviz.logit(0), kerasviz.channel("out", 1)]
    full = [
        kerasviz.direction("out", eye[4]) + kerasviz.logit(0),
        kerasviz.direction("out", eye[1]),
    ]
    a = kerasviz.score_objectives(m, fast, x0)
    b = kerasviz.score_objectives(m, full, x0)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert plan(m, fast, (8, 8, 3)).scorer.inputs == ("out",)


def test_mixed_float16_equals_the_full_layer():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((12, 12, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
        x = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="b")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(3, activation="softmax", dtype="float32")(x)
        m = keras.Model(inputs, outputs)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert m.get_layer("b").compute_dtype == "float16"
    assert plan(m, [kerasviz.channel("b", 0)], (12, 12, 3)).scorer.inputs == ("b",)
    eye = np.eye(6, dtype=np.float32)
    x0 = IMAGES[:3, :12, :12]
    fast = kerasviz.score_objectives(m, [kerasviz.channel("b", c) for c in (5, 0, 2)], x0)
    full = kerasviz.score_objectives(m, [kerasviz.direction("b", eye[c]) for c in (5, 0, 2)], x0)
    np.testing.assert_allclose(fast, full, rtol=2e-2, atol=2e-3)
    a = kerasviz.maximize(m, [kerasviz.channel("b", c) for c in (5, 0)], **QUICK)
    b = kerasviz.maximize(m, [kerasviz.direction("b", eye[c]) for c in (5, 0)], **QUICK)
    assert np.all(np.isfinite(a.images)) and np.ptp(a.images) > 1e-3
    np.testing.assert_allclose(a.history, b.history, rtol=2e-2, atol=2e-3)
    np.testing.assert_allclose(a.images, b.images, atol=2e-2)


def test_nested_model_equals_the_full_layer():
    """The conv sits inside a base model nested in a head; its input is captured there."""
    keras.utils.set_random_seed(2)
    base_in = keras.Input((10, 10, 3))
    y = keras.layers.Conv2D(4, 3, activation="relu", name="first")(base_in)
    y = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="second")(y)
    base = keras.Model(base_in, y, name="base")
    m = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    assert plan(m, [kerasviz.channel("base/second", 0)], (10, 10, 3)).scorer.inputs == (
        "base/second",
    )
    eye = np.eye(6, dtype=np.float32)
    fast = [kerasviz.channel("base/second", c) for c in (4, 1)]
    full = [kerasviz.direction("base/second", eye[c]) for c in (4, 1)]
    x0 = IMAGES[:2, :10, :10]
    np.testing.assert_allclose(
        kerasviz.score_objectives(m, fast, x0),
        kerasviz.score_objectives(m, full, x0),
        rtol=1e-5,
        atol=1e-6,
    )
    a, b = kerasviz.maximize(m, fast, **QUICK), kerasviz.maximize(m, full, **QUICK)
    np.testing.assert_allclose(a.history, b.history, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.images, b.images, atol=1e-5)
