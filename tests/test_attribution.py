"""Properties every attribution method shares: batch size, nesting, targets, several inputs,
and leaving the model as it was."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import make_nested_model

import kerasviz
from kerasviz._graph import iter_layers

TARGETS = [0, 1, 2, 1]

METHODS = {
    "grad_cam": lambda m, x, t, **kw: kerasviz.grad_cam(m, x, t, **kw),
    "grad_cam_plus_plus": lambda m, x, t, **kw: kerasviz.grad_cam_plus_plus(m, x, t, **kw),
    "layer_cam": lambda m, x, t, **kw: kerasviz.layer_cam(m, x, t, **kw),
    "score_cam": lambda m, x, t, **kw: kerasviz.score_cam(m, x, t, max_channels=6, **kw),
    "saliency": lambda m, x, t, **kw: kerasviz.saliency(m, x, t, **kw),
    "smoothgrad": lambda m, x, t, **kw: kerasviz.smoothgrad(m, x, t, samples=3, **kw),
    "integrated_gradients": lambda m, x, t, **kw: kerasviz.integrated_gradients(
        m, x, t, steps=4, **kw
    ),
    "guided_backprop": lambda m, x, t, **kw: kerasviz.guided_backprop(m, x, t, **kw),
    "guided_grad_cam": lambda m, x, t, **kw: kerasviz.guided_grad_cam(m, x, t, **kw),
    "occlusion": lambda m, x, t, **kw: kerasviz.occlusion(m, x, t, patch=8, stride=8, **kw),
}


def make_flat_model(nested: keras.Model) -> keras.Model:
    """The network of conftest's nested model built as one flat functional model, same weights."""
    size = nested.input_shape[1]
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="b_conv1")(inputs)
    x = keras.layers.BatchNormalization(name="b_bn1")(x)
    x = keras.layers.ReLU(name="b_relu1")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="b_conv2")(x)
    x = keras.layers.Add(name="b_add")([x, y])
    x = keras.layers.MaxPooling2D(2, name="b_pool")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="b_conv3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head_dense")(x)
    flat = keras.Model(inputs, outputs, name="flat")
    source = dict(iter_layers(nested))
    for layer in flat.layers:
        match = source.get(layer.name) or source.get(f"backbone/{layer.name}")
        if match is not None:
            layer.set_weights(match.get_weights())
    return flat


@pytest.fixture(scope="module")
def nested() -> keras.Model:
    model = make_nested_model(size=16)
    bn = model.layers[0].get_layer("b_bn1")  # non-trivial inference statistics
    rng = np.random.default_rng(0)
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma * 1.5, beta + 0.1, rng.normal(size=8) * 0.1, var * 2.0])
    return model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).random((4, 16, 16, 3), dtype=np.float32)


def _fingerprint(model):
    layers = [
        (path, layer.get_config(), getattr(layer, "activation", None), layer.trainable)
        for path, layer in iter_layers(model)
    ]
    return layers, [w.copy() for w in model.get_weights()]


def _close(a, b, rtol=1e-4):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(np.abs(b).max(), 1e-12)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("name", list(METHODS))
def test_batch_size_nesting_and_model_untouched(nested, images, name):
    method = METHODS[name]
    before = _fingerprint(nested)
    reference = method(nested, images, TARGETS)
    assert np.isfinite(reference).all() and np.abs(reference).max() > 0
    for batch_size in (1, 3):
        _close(method(nested, images, TARGETS, batch_size=batch_size), reference)
    flat = make_flat_model(nested)
    np.testing.assert_allclose(flat(images).numpy(), nested(images).numpy(), rtol=1e-5)
    _close(method(flat, images, TARGETS), reference)
    after = _fingerprint(nested)
    assert after[0] == before[0]
    for a, b in zip(after[1], before[1], strict=True):
        np.testing.assert_array_equal(a, b)
    single = method(nested, images[2], TARGETS[2])
    _close(single, reference[2])


@pytest.mark.parametrize("name", ["grad_cam", "score_cam", "integrated_gradients", "occlusion"])
def test_target_forms_agree(nested, images, name):
    method = METHODS[name]
    by_list = method(nested, images, [1, 1, 1, 1])
    _close(method(nested, images, 1), by_list)
    if name != "score_cam":  # Score-CAM scores probabilities for indices, a callable's logits
        _close(method(nested, images, lambda logits: logits[:, 1]), by_list)
    predicted = nested(images).numpy().argmax(axis=1)
    _close(method(nested, images, None), method(nested, images, predicted.tolist()))


def make_two_input_model() -> keras.Model:
    keras.utils.set_random_seed(9)
    a = keras.Input((12, 12, 3), name="a")
    b = keras.Input((8, 8, 1), name="b")
    fa = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a_conv")(a)
    fb = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="b_conv")(b)
    pooled = keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling2D()(fa), keras.layers.GlobalAveragePooling2D()(fb)]
    )
    return keras.Model([a, b], keras.layers.Dense(3, name="logits")(pooled))


def test_several_inputs_give_one_attribution_per_input():
    model = make_two_input_model()
    rng = np.random.default_rng(1)
    xa = rng.random((2, 12, 12, 3), dtype=np.float32)
    xb = rng.random((2, 8, 8, 1), dtype=np.float32)
    for name in ("saliency", "smoothgrad", "guided_backprop", "occlusion"):
        result = METHODS[name](model, [xa, xb], [0, 2])
        assert (
            [r.shape for r in result] == [(2, 12, 12), (2, 8, 8)]
            if name
            in (
                "saliency",
                "smoothgrad",
                "occlusion",
            )
            else [(2, 12, 12, 3), (2, 8, 8, 1)]
        ), name
        assert all(np.abs(r).max() > 0 for r in result), name
    attr, delta = kerasviz.integrated_gradients(
        model, [xa, xb], [0, 2], steps=64, return_delta=True
    )
    assert [a.shape for a in attr] == [xa.shape, xb.shape]
    logits = model.predict([xa, xb], verbose=0)
    zeros = model.predict([np.zeros_like(xa), np.zeros_like(xb)], verbose=0)
    gap = logits[[0, 1], [0, 2]] - zeros[[0, 1], [0, 2]]
    total = attr[0].reshape(2, -1).sum(axis=1) + attr[1].reshape(2, -1).sum(axis=1)
    np.testing.assert_allclose(total - gap, delta, atol=1e-5)
    assert (np.abs(delta) <= 0.01 * np.abs(gap)).all()
    for layer, size in (("a_conv", 12), ("b_conv", 8)):
        maps = kerasviz.grad_cam(model, [xa, xb], [0, 2], layer)
        assert maps.shape == (2, size, size) and maps.max() > 0
    guided = kerasviz.guided_grad_cam(model, [xa, xb], [0, 2], "b_conv")
    assert guided.shape == xb.shape
