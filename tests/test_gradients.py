"""Saliency, SmoothGrad, integrated gradients, guided backprop and occlusion: numbers."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tf_keras_vis.saliency import Saliency
from tf_keras_vis.utils import normalize
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
from tf_keras_vis.utils.scores import CategoricalScore

import kerasviz
from kerasviz._graph import iter_layers
from kerasviz._probe import TRACES
from kerasviz.attribution.guided import guided_model


def make_small_cnn(size: int = 12, seed: int = 4) -> keras.Model:
    """Functional (tf-keras-vis' ReplaceToLinear needs `output_names`), softmax head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    return make_small_cnn()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(11).random((3, 12, 12, 3), dtype=np.float32)


def _logits(model, x) -> np.ndarray:
    return kerasviz.get_probe(model)([tf.constant(x)])[1].numpy()


# ---------------------------------------------------------------- agreement with tf-keras-vis


def test_saliency_and_smoothgrad_agree_with_tf_keras_vis(cnn, images):
    reference = Saliency(cnn, model_modifier=ReplaceToLinear(), clone=True)
    targets = [0, 1, 2]
    vanilla = np.asarray(reference(CategoricalScore(targets), images))
    ours = kerasviz.saliency(cnn, images, targets)
    assert ours.shape == (3, 12, 12) and ours.max() > 0
    np.testing.assert_allclose(normalize(ours), vanilla, atol=1e-4)
    smooth = np.asarray(
        reference(CategoricalScore(targets), images, smooth_samples=4, smooth_noise=0.0)
    )
    ours_smooth = kerasviz.smoothgrad(cnn, images, targets, samples=4, noise=0.0, batch_size=5)
    np.testing.assert_allclose(normalize(ours_smooth), smooth, atol=1e-4)


def test_saliency_raw_gradients_and_reduce(cnn, images):
    raw = kerasviz.saliency(cnn, images, 1, reduce=None)
    assert raw.shape == images.shape
    np.testing.assert_allclose(kerasviz.saliency(cnn, images, 1), np.abs(raw).max(axis=-1))
    with pytest.raises(ValueError, match=r"`reduce`.*'abs_max', None.*'mean'"):
        kerasviz.saliency(cnn, images, reduce="mean")


# ---------------------------------------------------------------- saliency = finite differences


def test_saliency_equals_central_finite_differences():
    # float64 layers: the differences are exact to ~1e-10, the gradient to float32 rounding.
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 2), dtype="float64"),
            keras.layers.Conv2D(3, 3, activation="tanh", dtype="float64"),
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(2, activation="softmax", dtype="float64", name="out"),
        ]
    )
    x = np.random.default_rng(0).random((2, 5, 5, 2)).astype(np.float32)
    gradient = kerasviz.saliency(model, x, 1, reduce=None)
    features = keras.Model(model.inputs, model.get_layer("out").input)
    kernel, bias = model.get_layer("out").get_weights()

    def logit(z):
        return features(z).numpy() @ kernel[:, 1] + bias[1]

    x64, eps = x.astype(np.float64), 1e-5
    expected = np.zeros_like(x64)
    for index in np.ndindex(x.shape[1:]):
        step = np.zeros_like(x64)
        step[(slice(None), *index)] = eps
        expected[(slice(None), *index)] = (logit(x64 + step) - logit(x64 - step)) / (2 * eps)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(gradient, expected, atol=1e-6)


# ---------------------------------------------------------------- SmoothGrad


def test_smoothgrad_is_seeded_noisy_mean(cnn, images):
    a = kerasviz.smoothgrad(cnn, images, 1, samples=6, noise=0.2, seed=3, reduce=None)
    b = kerasviz.smoothgrad(cnn, images, 1, samples=6, noise=0.2, seed=3, reduce=None)
    c = kerasviz.smoothgrad(cnn, images, 1, samples=6, noise=0.2, seed=4, reduce=None)
    plain = kerasviz.saliency(cnn, images, 1, reduce=None)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c, atol=1e-6) and not np.allclose(a, plain, atol=1e-6)
    # The mean of 6 noisy gradients is closer to the clean gradient than one noisy gradient.
    one = kerasviz.smoothgrad(cnn, images, 1, samples=1, noise=0.2, seed=3, reduce=None)
    assert np.abs(a - plain).mean() < np.abs(one - plain).mean()
    with pytest.raises(ValueError, match="`samples`"):
        kerasviz.smoothgrad(cnn, images, samples=0)
    with pytest.raises(ValueError, match="`noise`"):
        kerasviz.smoothgrad(cnn, images, noise=-0.1)


def test_expansions_trace_once_over_uneven_chunks(cnn, images):
    for name, call in (
        ("smoothgrad", lambda: kerasviz.smoothgrad(cnn, images, 2, samples=7, batch_size=4)),
        (
            "integrated_gradients",
            lambda: kerasviz.integrated_gradients(cnn, images, 2, steps=7, batch_size=4),
        ),
        ("occlusion", lambda: kerasviz.occlusion(cnn, images, 2, patch=5, stride=3, batch_size=4)),
    ):
        before = TRACES[name]
        call()
        call()
        assert TRACES[name] - before == 1, name  # 6 chunks, the last one short: one trace


# ---------------------------------------------------------------- integrated gradients


@pytest.mark.parametrize("baseline", ["black", "blur", "noise"])
def test_integrated_gradients_completeness(cnn, images, baseline):
    attr, delta = kerasviz.integrated_gradients(
        cnn, images, [0, 1, 2], baseline=baseline, steps=256, blur_sigma=2.0, return_delta=True
    )
    assert attr.shape == images.shape
    base = {
        "black": np.zeros_like(images),
        "blur": None,
        "noise": None,
    }[baseline]
    if base is not None:
        gap = (
            _logits(cnn, images)[np.arange(3), [0, 1, 2]]
            - _logits(cnn, base)[np.arange(3), [0, 1, 2]]
        )
        np.testing.assert_allclose(attr.reshape(3, -1).sum(axis=1) - gap, delta, atol=1e-5)
        assert (np.abs(gap) > 0.05).all()
    total = attr.reshape(3, -1).sum(axis=1)
    gap = total - delta
    assert (np.abs(gap) > 1e-3).all()
    assert (np.abs(delta) <= 0.01 * np.abs(gap)).all(), (delta, gap)


def test_integrated_gradients_by_hand_on_a_quadratic_model():
    # f(x) = sum(x^2) * w has gradient 2 x w; along the path from 0 the mean gradient is x w,
    # so IG = (x - 0) * x * w = x^2 w exactly with the midpoint rule (the integrand is linear);
    # from a baseline b it is (x - b) * (x + b) = x^2 - b^2.
    inputs = keras.Input((2, 2, 1))
    squares = keras.layers.Lambda(lambda t: t * t)(inputs)
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")(
        keras.layers.Flatten()(squares)
    )
    model = keras.Model(inputs, outputs)
    x = np.arange(1, 9, dtype=np.float32).reshape(2, 2, 2, 1) / 4
    attr = kerasviz.integrated_gradients(model, x, 1, steps=3)  # 1: the unit (positive class)
    np.testing.assert_allclose(attr, x**2, rtol=1e-6)
    white = kerasviz.integrated_gradients(model, x, 1, baseline="white", steps=3)
    top = x.reshape(2, -1).max(axis=1).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(white, x**2 - top**2, rtol=1e-5, atol=1e-6)
    array = kerasviz.integrated_gradients(model, x, 1, baseline=np.float32(0.25), steps=3)
    np.testing.assert_allclose(array, x**2 - 0.0625, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_bad_input(cnn, images):
    with pytest.raises(ValueError, match=r"`steps` to be an int >= 1.*steps=0"):
        kerasviz.integrated_gradients(cnn, images, steps=0)
    with pytest.raises(
        ValueError, match=r"`baseline` to be broadcastable.*\(3, 12, 12, 3\).*\(5, 5\)"
    ):
        kerasviz.integrated_gradients(cnn, images, baseline=np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"`baseline` to be one of.*'grey'"):
        kerasviz.integrated_gradients(cnn, images, baseline="grey")
    with pytest.raises(ValueError, match=r"`targets`.*\[0, 2\]"):
        kerasviz.integrated_gradients(cnn, images, targets=3)


# ---------------------------------------------------------------- guided backprop


def _two_layer(nested: bool, relu_layer: bool) -> keras.Model:
    keras.utils.set_random_seed(2)
    dense = keras.layers.Dense(6, activation=None if relu_layer else "relu", name="hidden")
    inner = [dense, keras.layers.ReLU(name="relu")] if relu_layer else [dense]
    head = keras.layers.Dense(3, activation="softmax", name="out")
    if nested:
        block = keras.Sequential([keras.Input((4,)), *inner], name="block")
        return keras.Sequential([keras.Input((4,)), block, head])
    return keras.Sequential([keras.Input((4,)), *inner, head])


@pytest.mark.parametrize("nested, relu_layer", [(False, False), (True, True), (True, False)])
def test_guided_backprop_by_hand(nested, relu_layer):
    model = _two_layer(nested, relu_layer)
    hidden = model.get_layer("block").get_layer("hidden") if nested else model.get_layer("hidden")
    w1, b1 = hidden.get_weights()
    w2, _ = model.get_layer("out").get_weights()
    x = np.random.default_rng(5).normal(size=(8, 4)).astype(np.float32)
    target = 1
    pre = x @ w1 + b1
    # Guided: the gradient passes a ReLU only where its input > 0 and the gradient > 0.
    upstream = np.broadcast_to(w2[:, target], pre.shape)
    expected = (np.maximum(upstream, 0) * (pre > 0)) @ w1.T
    vanilla = (upstream * (pre > 0)) @ w1.T
    guided = kerasviz.guided_backprop(model, x, target)
    np.testing.assert_allclose(guided, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        kerasviz.saliency(model, x, target, reduce=None), vanilla, rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(expected, vanilla)  # negative gradients were really blocked


def _fingerprint(model):
    return [
        (path, layer.get_config(), getattr(layer, "activation", None))
        for path, layer in iter_layers(model)
    ], [w.copy() for w in model.get_weights()]


def test_guided_view_forward_is_unchanged_and_model_untouched():
    from conftest import make_nested_model

    model = make_nested_model(size=16)
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    configs, weights = _fingerprint(model)
    probs = model(x).numpy()
    grads = kerasviz.guided_backprop(model, x, 1)
    view_logits = guided_model(model)(x).numpy()
    np.testing.assert_allclose(view_logits, _logits(model, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tf.nn.softmax(view_logits).numpy(), probs, rtol=1e-5, atol=1e-6)
    names = [layer.name for layer in guided_model(model).layers]
    guided_ops = [name for name in names if name.startswith("guided_")]
    # ReLU layer b_relu1 inside the nested backbone, and the convs' activation="relu".
    assert sorted(guided_ops) == ["guided_b_conv2", "guided_b_conv3", "guided_b_relu1"]
    new_configs, new_weights = _fingerprint(model)
    assert new_configs == configs
    for a, b in zip(weights, new_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model(x).numpy(), probs)
    assert grads.shape == x.shape and np.abs(grads).max() > 0
    assert not np.allclose(grads, kerasviz.saliency(model, x, 1, reduce=None))


def test_guided_grad_cam_is_the_product(cnn, images):
    product = kerasviz.guided_grad_cam(cnn, images, [0, 1, 2], "c2")
    gb = kerasviz.guided_backprop(cnn, images, [0, 1, 2])
    heat = kerasviz.grad_cam(cnn, images, [0, 1, 2], "c2")
    np.testing.assert_allclose(product, gb * heat[..., None], rtol=1e-5, atol=1e-10)
    with pytest.raises(ValueError, match="`upsample`"):
        kerasviz.guided_grad_cam(cnn, images, upsample=None)


# ---------------------------------------------------------------- occlusion


def test_occlusion_by_hand_on_a_linear_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6, 6, 2)), keras.layers.Flatten(), keras.layers.Dense(2, name="lin")]
    )
    kernel, _ = model.get_layer("lin").get_weights()
    w = kernel[:, 1].reshape(6, 6, 2)
    x = np.random.default_rng(3).random((2, 6, 6, 2), dtype=np.float32)
    fill, patch, stride = 0.5, 3, 2
    drops = kerasviz.occlusion(model, x, 1, patch=patch, stride=stride, fill=fill)
    # Positions 0, 2 and the edge-flush 3, per axis.
    total, count = np.zeros((2, 6, 6)), np.zeros((6, 6))
    for y in (0, 2, 3):
        for x0 in (0, 2, 3):
            window = (slice(None), slice(y, y + patch), slice(x0, x0 + patch))
            drop = ((x[window] - fill) * w[window[1:]]).reshape(2, -1).sum(axis=1)
            total[window] += drop[:, None, None]
            count[window[1:]] += 1
    np.testing.assert_allclose(drops, total / count, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"`patch` to fit"):
        kerasviz.occlusion(model, x, 1, patch=7)
    with pytest.raises(ValueError, match=r"`stride`"):
        kerasviz.occlusion(model, x, 1, stride=0)


def test_guided_view_with_a_shared_relu_layer():
    keras.utils.set_random_seed(6)
    relu = keras.layers.ReLU(name="shared_relu")
    inputs = keras.Input((4,))
    h = relu(keras.layers.Dense(5, name="d1")(inputs))
    h = relu(keras.layers.Dense(5, name="d2")(h))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    np.testing.assert_allclose(guided_model(model)(x).numpy(), model(x).numpy(), rtol=1e-6)
    w1, b1 = model.get_layer("d1").get_weights()
    w2, b2 = model.get_layer("d2").get_weights()
    w3, _ = model.get_layer("out").get_weights()
    p1 = x @ w1 + b1
    p2 = np.maximum(p1, 0) @ w2 + b2
    g2 = np.maximum(np.broadcast_to(w3[:, 0], p2.shape), 0) * (p2 > 0)
    g1 = np.maximum(g2 @ w2.T, 0) * (p1 > 0)
    np.testing.assert_allclose(kerasviz.guided_backprop(model, x, 0), g1 @ w1.T, atol=1e-6)
