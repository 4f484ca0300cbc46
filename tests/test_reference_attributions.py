"""Input x gradient, DeepLIFT (rescale) and GradientSHAP: hand-computed values, summation to
delta, linear models, batching, and bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasviz
from kerasviz._probe import get_probe

L = keras.layers


def scores(model, x, targets):
    _, logits = get_probe(model)([np.asarray(x, np.float32)])
    return logits.numpy()[np.arange(len(x)), targets]


@pytest.fixture(scope="module")
def mixed():
    """Every kind DeepLIFT handles: conv+BN, swish, a sigmoid gate (Multiply), ReLU, Add,
    max and average pooling, tanh, a softmax head; random biases and statistics."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    x = L.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization(
        beta_initializer="random_normal", moving_mean_initializer="random_normal"
    )(x)
    x = L.Activation("swish")(x)
    g = L.GlobalAveragePooling2D(keepdims=True)(x)
    g = L.Conv2D(6, 1, activation="sigmoid", bias_initializer="random_normal")(g)
    x = L.Multiply()([x, g])
    y = L.Conv2D(6, 3, padding="same", activation="relu", bias_initializer="random_normal")(x)
    x = L.Add()([x, y])
    x = L.MaxPooling2D(2)(x)
    x = L.AveragePooling2D(1)(x)
    x = L.Flatten()(x)
    x = L.Dense(8, activation="tanh", bias_initializer="random_normal")(x)
    return keras.Model(inputs, L.Dense(3, activation="softmax")(x))


X = np.random.default_rng(0).uniform(0, 1, (3, 10, 10, 3)).astype(np.float32)
T = np.array([0, 1, 2])


# ---------------------------------------------------------------------------------------------
# Input x gradient


def test_input_x_gradient_is_input_times_gradient(mixed):
    probe = get_probe(mixed)
    xt = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = probe([xt])[1]
        s = tf.gather(logits, T, batch_dims=1)
    expected = (X * tape.gradient(s, xt)).numpy()
    atol = 1e-6 * np.abs(expected).max()
    a = kerasviz.input_x_gradient(mixed, X, T)
    np.testing.assert_allclose(a, expected, rtol=1e-4, atol=atol)
    single = kerasviz.input_x_gradient(mixed, X[1], 1)
    np.testing.assert_allclose(single, expected[1], rtol=1e-4, atol=atol)


def test_input_x_gradient_equals_lrp0_on_bias_free_relu_networks():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.Conv2D(4, 3, activation="relu", use_bias=False),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(3, use_bias=False),
        ]
    )
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 2)).astype("f4")
    a = kerasviz.input_x_gradient(model, x, [0, 2])
    r = kerasviz.lrp(model, x, [0, 2], composite="epsilon", epsilon=0.0)
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-6 * np.abs(a).max())


# ---------------------------------------------------------------------------------------------
# DeepLIFT


@pytest.mark.parametrize(
    "baseline", ["black", "white", "noise", "blur", "array"], ids=lambda b: str(b)
)
def test_deeplift_sums_to_the_difference_of_the_outputs(mixed, baseline):
    spec = np.full((10, 10, 3), 0.3, np.float32) if baseline == "array" else baseline
    a, delta = kerasviz.deeplift(mixed, X, T, baseline=spec, return_delta=True)
    assert a.shape == X.shape and np.abs(a).max() > 0
    if baseline == "black":
        base = np.zeros_like(X)
    elif baseline == "array":
        base = np.broadcast_to(spec, X.shape)
    else:  # the baseline the method used, rebuilt as integrated gradients builds it
        from kerasviz.attribution.gradients import _baseline

        base = _baseline(baseline, X, "baseline", 0, 5.0, 0)
    expected = scores(mixed, X, T) - scores(mixed, base, T)
    total = a.reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(total, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(delta, total - expected, atol=1e-5)
    # It is not input x gradient: the multipliers are finite differences.
    assert not np.allclose(a, kerasviz.input_x_gradient(mixed, X, T), atol=1e-3)


def test_deeplift_by_hand_on_a_relu_unit():
    # f(x) = relu(x1 - x2 + 0.5). At x = (1, 2): z = -0.5, f = 0; baseline 0: z0 = 0.5, f0 = 0.5.
    # Multiplier dy/dz = (0 - 0.5) / (-0.5 - 0.5) = 0.5: contributions (1*1*0.5, 2*(-1)*0.5).
    # (Gradient x input is 0: the unit is off at x.)
    model = keras.Sequential([keras.Input((2,)), L.Dense(1, activation="relu")])
    model.layers[0].set_weights([np.array([[1.0], [-1.0]], "f4"), np.array([0.5], "f4")])
    a = kerasviz.deeplift(model, np.array([[1.0, 2.0]], "f4"), 1)
    np.testing.assert_allclose(a, [[0.5, -1.0]], rtol=1e-6)


def test_deeplift_by_hand_on_max_pooling():
    # y = max(x): the part of y - y0 above the reference's max goes to the input's winner,
    # the rest (negative) to the reference's winner.
    model = keras.Sequential([keras.Input((2, 1)), L.MaxPooling1D(2), L.Flatten()])
    x = np.array([[[3.0], [1.0]], [[1.0], [3.0]]], "f4")
    base = np.array([[[0.0], [2.0]], [[4.0], [0.0]]], "f4")
    a = kerasviz.deeplift(model, x, [1, 1], baseline=base)
    # Image 1: y=3, y0=2: 1 to x's winner (0). Image 2: y=3, y0=4: -1 to the reference's (0).
    np.testing.assert_allclose(a[..., 0], [[1.0, 0.0], [-1.0, 0.0]], atol=1e-6)


def test_deeplift_on_a_linear_model_is_difference_times_weight():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4, 4, 2)), L.Flatten(), L.Dense(3)])
    w = model.layers[-1].kernel.numpy()
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 2)).astype("f4")
    a = kerasviz.deeplift(model, x, [2, 0], baseline="white")
    white = x.reshape(2, -1).max(axis=1)[:, None]
    expected = (x.reshape(2, -1) - white) * w[:, [2, 0]].T
    np.testing.assert_allclose(a.reshape(2, -1), expected, rtol=1e-5, atol=1e-6)


def test_deeplift_two_inputs_and_predicted_class():
    keras.utils.set_random_seed(3)
    image, extra = keras.Input((6, 6, 1)), keras.Input((3,))
    x = L.Flatten()(L.Conv2D(2, 3, activation="relu")(image))
    x = L.Concatenate()([x, L.Dense(4, activation="elu")(extra)])
    model = keras.Model([image, extra], L.Dense(2, activation="softmax")(x))
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(2, 6, 6, 1)).astype("f4"), rng.normal(size=(2, 3)).astype("f4")]
    (a_img, a_extra), delta = kerasviz.deeplift(model, xs, None, return_delta=True)
    assert a_img.shape == xs[0].shape and a_extra.shape == xs[1].shape
    np.testing.assert_allclose(delta, 0, atol=1e-5)
    predicted = get_probe(model)(xs)[1].numpy().argmax(axis=1)
    _, logits0 = get_probe(model)([np.zeros_like(v) for v in xs])
    _, logits = get_probe(model)(xs)
    expected = logits.numpy()[[0, 1], predicted] - logits0.numpy()[[0, 1], predicted]
    total = a_img.reshape(2, -1).sum(1) + a_extra.sum(1)
    np.testing.assert_allclose(total, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# GradientSHAP


@pytest.fixture(scope="module")
def linear():
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((5, 5, 2)), L.Flatten(), L.Dense(3)])
    model.layers[-1].bias.assign(np.array([0.5, -1.0, 2.0], "f4"))
    return model


XL = np.random.default_rng(4).uniform(0, 1, (3, 5, 5, 2)).astype(np.float32)
BACKGROUND = np.random.default_rng(5).uniform(0, 1, (4, 5, 5, 2)).astype(np.float32)


def test_gradient_shap_on_a_linear_model_is_difference_from_the_mean_baseline(linear):
    w = linear.layers[-1].kernel.numpy()
    a = kerasviz.gradient_shap(linear, XL, [0, 1, 2], baselines=BACKGROUND, samples=8)
    mean = BACKGROUND.mean(axis=0).reshape(-1)
    expected = (XL.reshape(3, -1) - mean) * w[:, [0, 1, 2]].T
    np.testing.assert_allclose(a.reshape(3, -1), expected, rtol=1e-5, atol=1e-6)
    black = kerasviz.gradient_shap(linear, XL, 1, samples=3)
    np.testing.assert_allclose(black.reshape(3, -1), XL.reshape(3, -1) * w[:, 1], rtol=1e-5)


def test_gradient_shap_noise_is_one_draw_per_sample_scaled_per_image(linear):
    w = linear.layers[-1].kernel.numpy()[:, 1].reshape(5, 5, 2)
    a = kerasviz.gradient_shap(linear, XL, 1, baselines=BACKGROUND, samples=8, noise=0.2, seed=3)
    again = kerasviz.gradient_shap(
        linear, XL, 1, baselines=BACKGROUND, samples=8, noise=0.2, seed=3
    )
    np.testing.assert_array_equal(a, again)
    # a / w = x + sigma_i * mean_k(noise_k) - mean baseline, with sigma_i = 0.2 * range_i.
    sigma = 0.2 * (XL.reshape(3, -1).max(1) - XL.reshape(3, -1).min(1))
    noise = (a / w - XL + BACKGROUND.mean(axis=0)) / sigma[:, None, None, None]
    np.testing.assert_allclose(noise[1], noise[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(noise[2], noise[0], rtol=1e-3, atol=1e-4)
    assert np.abs(noise[0]).max() > 0.05
    other = kerasviz.gradient_shap(
        linear, XL, 1, baselines=BACKGROUND, samples=8, noise=0.2, seed=4
    )
    assert not np.allclose(other, a)


def test_gradient_shap_approaches_completeness_and_ignores_batching(mixed):
    a = kerasviz.gradient_shap(mixed, X, T, samples=256, seed=1)
    expected = scores(mixed, X, T) - scores(mixed, np.zeros_like(X), T)
    total = a.reshape(3, -1).sum(axis=1)
    # Expected gradients with one (black) baseline is integrated gradients with random
    # points on the path: complete in expectation, here within a few percent.
    np.testing.assert_allclose(total, expected, rtol=0.05, atol=0.05 * np.abs(expected).max())
    chunked = kerasviz.gradient_shap(mixed, X, T, samples=256, seed=1, batch_size=50)
    np.testing.assert_allclose(chunked, a, rtol=1e-4, atol=1e-7)
    alone = kerasviz.gradient_shap(mixed, X[2], 2, samples=256, seed=1)
    np.testing.assert_allclose(alone, a[2], rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_input(linear, mixed):
    with pytest.raises(ValueError, match="`samples` to be an int >= 1"):
        kerasviz.gradient_shap(linear, XL, 0, samples=0)
    with pytest.raises(ValueError, match="`noise` to be a number >= 0"):
        kerasviz.gradient_shap(linear, XL, 0, noise=-0.1)
    with pytest.raises(ValueError, match="`baselines` as a distribution to have shape"):
        kerasviz.gradient_shap(linear, XL, 0, baselines=np.zeros((4, 5, 5, 3), "f4"))
    with pytest.raises(ValueError, match="`baselines` to be a name, one baseline"):
        kerasviz.gradient_shap(linear, XL, 0, baselines=np.zeros((5, 3), "f4"))
    with pytest.raises(ValueError, match="`baselines` to be finite"):
        kerasviz.gradient_shap(linear, XL, 0, baselines=np.full((5, 5, 2), np.nan, "f4"))
    with pytest.raises(ValueError, match="`baseline` to be one of"):
        kerasviz.deeplift(linear, XL, 0, baseline="gray")
    with pytest.raises(ValueError, match="`baselines` to be one of"):
        kerasviz.gradient_shap(linear, XL, 0, baselines="gray")

    a, b, c = keras.Input((3,)), keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b, c], L.Dense(1)(L.Multiply()([a, b, c])))
    with pytest.raises(ValueError, match="two inputs for DeepLIFT.*with 3"):
        kerasviz.deeplift(model, [np.ones((1, 3), "f4")] * 3, 1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(L.Softmax(name="sm")(inputs)))
    with pytest.raises(ValueError, match="'sm' of type Softmax"):
        kerasviz.deeplift(model, np.ones((1, 4), "f4"), 0)
