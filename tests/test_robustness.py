"""Every model users bring: one-logit heads, subclassed models, 1D/3D convolutions, custom
layers, image + tabular inputs, every ReLU form, shared layers, every input container.

Each case checks numbers against a hand computation, an axiom or an independent reference.
"""

from __future__ import annotations

import ast
import gc
import re
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasviz
from kerasviz._graph import SUPPORTED_MODELS
from kerasviz.attribution.cams import resize_linear

L = keras.layers


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def _interp(values: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Linear interpolation with half-pixel centres along one axis, written with np.interp."""
    n_in = values.shape[axis]
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    return np.apply_along_axis(lambda v: np.interp(centres, np.arange(n_in), v), axis, values)


def _gap_cam(activations: np.ndarray, weights: np.ndarray, relu: bool = True) -> np.ndarray:
    """Grad-CAM of ``logit = mean(A) @ weights`` (a GAP + Dense head) by hand: every position
    has the gradient ``weights / positions``, so the map is ``sum_c weights_c / positions * A_c``.
    """
    positions = np.prod(activations.shape[1:-1])
    maps = activations @ (weights / positions)
    return np.maximum(maps, 0) if relu else maps


# ---------------------------------------------------------------- 1. one-logit heads


@pytest.fixture(scope="module")
def binary():
    """conv / GAP / Dense(1, sigmoid); image 0 predicted negative, image 1 positive."""
    keras.utils.set_random_seed(11)
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(1, activation="sigmoid", name="head")(x))
    x = np.random.default_rng(4).random((2, 6, 6, 2), dtype=np.float32)
    activations = kerasviz.feature_maps(model, x, ["conv"])["conv"]
    head = model.get_layer("head")
    w = np.array([1.0, -2.0, 0.5], np.float32)  # both signs: both classes have evidence
    head.kernel.assign(w[:, None])
    means = activations.mean(axis=(1, 2)) @ w
    assert abs(means[0] - means[1]) > 1e-3
    if means[0] > means[1]:
        x, activations, means = x[::-1].copy(), activations[::-1].copy(), means[::-1]
    head.bias.assign([-(means[0] + means[1]) / 2])
    return model, x, activations, w


def test_one_logit_head_grad_cam_classes_by_hand(binary):
    model, x, activations, w = binary
    logits = model.predict(x, verbose=0)[:, 0]
    assert logits[0] < 0.5 < logits[1]  # image 0 negative, image 1 positive
    positive = _gap_cam(activations, w, relu=False)  # class 1 scores z
    predicted = kerasviz.grad_cam(model, x, None, "conv", upsample=None)
    negative = kerasviz.grad_cam(model, x, 0, "conv", upsample=None)
    one = kerasviz.grad_cam(model, x, 1, "conv", upsample=None, relu=False)
    # Class 0 scores -z: the map of the negated logit is relu(-map of class 1 unrectified).
    np.testing.assert_allclose(negative, np.maximum(-positive, 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(one, positive, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(predicted[0], negative[0], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(predicted[1], np.maximum(positive[1], 0), rtol=1e-5, atol=1e-7)
    assert negative[0].max() > 0 and predicted[1].max() > 0
    with pytest.raises(ValueError, match=r"`targets`.*\[0, 1\].*0 negative, 1 positive"):
        kerasviz.grad_cam(model, x, 2, "conv")


def test_one_logit_head_saliency_classes_are_opposite(binary):
    model, x, _, _ = binary
    zero = kerasviz.saliency(model, x, 0, reduce=None)
    one = kerasviz.saliency(model, x, 1, reduce=None)
    predicted = kerasviz.saliency(model, x, None, reduce=None)
    assert np.abs(one).max() > 0
    np.testing.assert_allclose(zero, -one, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(predicted, np.stack([zero[0], one[1]]), rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def linear_sigmoid():
    """logit = x . [1, 2, -3, 4] - 5 on a 2x2 one-channel image, sigmoid head."""
    model = keras.Sequential(
        [keras.Input((2, 2, 1)), L.Flatten(), L.Dense(1, activation="sigmoid", name="head")]
    )
    model.get_layer("head").set_weights([np.array([[1.0], [2.0], [-3.0], [4.0]]), np.array([-5.0])])
    return model


def test_deletion_and_insertion_use_sigmoid_of_the_class_score(linear_sigmoid):
    x = np.ones((1, 2, 2, 1), np.float32)  # z = 4 - 5 = -1: predicted class 0, score -z
    order = np.array([[[4.0, 3.0], [2.0, 1.0]]])  # remove/insert pixels in raster order
    _, deletion = kerasviz.metrics.deletion_auc(
        linear_sigmoid, x, order, steps=4, baseline=0.0, return_curves=True
    )
    # Deleting w = 1, 2, -3, 4 in turn: z = -1, -2, -4, -1, -5; class 0's probability is
    # sigmoid(-z).
    expected = _sigmoid([1, 2, 4, 1, 5])
    np.testing.assert_allclose(deletion[0], expected, rtol=1e-6)
    auc = kerasviz.metrics.deletion_auc(linear_sigmoid, x, order, steps=4, baseline=0.0)
    np.testing.assert_allclose(auc, np.trapezoid(expected, dx=0.25), rtol=1e-6)
    _, insertion = kerasviz.metrics.insertion_auc(
        linear_sigmoid, x, order, steps=4, baseline=0.0, return_curves=True
    )
    np.testing.assert_allclose(insertion[0], _sigmoid([5, 4, 2, 5, 1]), rtol=1e-6)
    _, positive = kerasviz.metrics.deletion_auc(
        linear_sigmoid, x, order, 1, steps=4, baseline=0.0, return_curves=True
    )
    np.testing.assert_allclose(positive[0], 1 - expected, rtol=1e-6)


def _class_probabilities(logits: np.ndarray, head: str) -> np.ndarray:
    """The one probability rule, written out: ``(m, classes)`` per head kind."""
    if head == "one logit":  # classes 0 and 1 score -z and z
        return _sigmoid(np.concatenate([-logits, logits], axis=1))
    if head == "sigmoid":  # multi-label: each class its own sigmoid
        return _sigmoid(logits)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("head", ["one logit", "sigmoid", "softmax"])
def test_score_cam_weights_follow_the_one_probability_rule(head):
    # A 1x1 conv: its field is one pixel, so each channel's mask is its own min-max map.
    units = 1 if head == "one logit" else 2
    activation = None if head == "one logit" else head
    model = keras.Sequential(
        [
            keras.Input((3, 3, 1)),
            L.Conv2D(2, 1, use_bias=False, name="c"),
            L.Flatten(),
            L.Dense(units, activation=activation, name="head"),
        ]
    )
    k = np.array([1.0, -0.5], np.float32)
    model.get_layer("c").set_weights([k.reshape(1, 1, 1, 2)])
    w = np.random.default_rng(2).normal(size=(18, units)).astype(np.float32)
    bias = np.linspace(0.3, -0.2, units).astype(np.float32)
    model.get_layer("head").set_weights([w, bias])
    x = np.random.default_rng(3).random((2, 3, 3, 1), dtype=np.float32)

    def probabilities(images):  # (m, 3, 3) -> (m, classes)
        conv = images[..., None] * k  # (m, 3, 3, 2)
        return _class_probabilities(conv.reshape(len(images), -1) @ w + bias, head)

    for target in (0, 1):
        expected = []
        for image in x[..., 0]:
            maps = image[..., None] * k  # (3, 3, 2)
            low, high = maps.min(axis=(0, 1)), maps.max(axis=(0, 1))
            masks = (maps - low) / (high - low)
            masked = np.moveaxis(image[..., None] * masks, -1, 0)  # (2, 3, 3)
            weights = probabilities(masked)[:, target]
            expected.append(np.maximum(maps @ weights, 0))
        ours = kerasviz.score_cam(model, x, target, "c", upsample=None)
        assert np.stack(expected).max() > 0
        np.testing.assert_allclose(ours, np.stack(expected), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- 2. subclassed models


SUBCLASSED_METHODS = [
    "saliency",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "metrics.deletion_auc",
    "metrics.insertion_auc",
    "input_x_gradient",
    "gradient_shap",
    "fgsm",
    "pgd",
]


def test_the_supported_list_names_exactly_the_methods_checked_on_subclassed_models():
    listed = SUPPORTED_MODELS.split("`model(x)`: ")[1].replace(" and ", ", ").split(", ")
    assert sorted(listed) == sorted(SUBCLASSED_METHODS)


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3, padding="same", activation="relu")
        self.pool = L.GlobalAveragePooling2D()
        self.dense = L.Dense(3)

    def call(self, x):
        return self.dense(self.pool(self.conv(x)))


@pytest.fixture(scope="module")
def subclassed():
    keras.utils.set_random_seed(5)
    model = SubclassedNet()
    x = np.random.default_rng(5).random((2, 8, 8, 3), dtype=np.float32)
    model(x)
    inputs = keras.Input((8, 8, 3))
    functional = keras.Model(inputs, model.dense(model.pool(model.conv(inputs))))
    return model, functional, x


@pytest.mark.parametrize(
    "method",
    [
        lambda m, x: kerasviz.saliency(m, x, 1, reduce=None),
        lambda m, x: kerasviz.smoothgrad(m, x, None, samples=3, noise=0.2),
        lambda m, x: kerasviz.integrated_gradients(m, x, 2, steps=4, return_delta=True),
        lambda m, x: kerasviz.occlusion(m, x, None, patch=4, stride=2),
        lambda m, x: kerasviz.metrics.deletion_auc(m, x, x[..., 0], steps=4),
        lambda m, x: kerasviz.metrics.insertion_auc(m, x, x[..., 1], steps=4),
        lambda m, x: kerasviz.input_x_gradient(m, x, 0),
        lambda m, x: kerasviz.gradient_shap(m, x, 1, samples=3),
        lambda m, x: kerasviz.fgsm(m, x, epsilon=0.05),
        lambda m, x: kerasviz.pgd(m, x, epsilon=0.05, steps=2),
    ],
    ids=SUBCLASSED_METHODS,
)
def test_subclassed_model_equals_the_same_layers_in_a_functional_model(subclassed, method):
    model, functional, x = subclassed
    ours = keras.tree.flatten(method(model, x))
    reference = keras.tree.flatten(method(functional, x))
    assert np.abs(reference[0]).max() > 0
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "method",
    [
        lambda m, x: kerasviz.grad_cam(m, x),
        lambda m, x: kerasviz.score_cam(m, x),
        lambda m, x: kerasviz.feature_maps(m, x),
        lambda m, x: kerasviz.feature_maps(m, x, ["conv"]),
        lambda m, x: kerasviz.layer_statistics(m, x),
        lambda m, x: kerasviz.guided_backprop(m, x),
        lambda m, x: kerasviz.guided_grad_cam(m, x),
        lambda m, x: kerasviz.attribution.guided_model(m),
    ],
    ids=[
        "grad_cam",
        "score_cam",
        "feature_maps",
        "feature_maps_named",
        "stats",
        "guided",
        "ggc",
        "view",
    ],
)
def test_subclassed_model_layer_methods_name_the_supported_kinds(subclassed, method):
    model, _, x = subclassed
    with pytest.raises(
        ValueError, match=r"Sequential .*SubclassedNet.*" + re.escape(SUPPORTED_MODELS)
    ):
        method(model, x)


def test_cached_views_do_not_keep_models_alive():
    x = np.random.default_rng(0).random((1, 8, 8, 3), dtype=np.float32)
    subclassed = SubclassedNet()
    subclassed(x)
    kerasviz.saliency(subclassed, x)
    inputs = keras.Input((8, 8, 3))
    features = L.Conv2D(2, 3, activation="relu")(inputs)
    functional = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(features)))
    kerasviz.grad_cam(functional, x)
    kerasviz.guided_backprop(functional, x)
    refs = [weakref.ref(subclassed), weakref.ref(functional)]
    del subclassed, functional, inputs, features
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


# ---------------------------------------------------------------- 3. Conv1D and Conv3D


@pytest.fixture(scope="module")
def conv1d():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 2))
    x = L.Conv1D(3, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(4, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, L.Dense(3, name="head")(x))
    return model, np.random.default_rng(6).random((2, 12, 2), dtype=np.float32)


@pytest.fixture(scope="module")
def conv3d():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((4, 6, 6, 1))
    x = L.Conv3D(2, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.MaxPooling3D(2)(x)
    x = L.Conv3D(3, 3, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling3D()(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    return model, np.random.default_rng(7).random((2, 4, 6, 6, 1), dtype=np.float32)


@pytest.mark.parametrize("name", ["conv1d", "conv3d"])
def test_grad_cam_of_1d_and_3d_convolutions(name, request):
    model, x = request.getfixturevalue(name)
    assert kerasviz.default_cam_layer(model)[0] == "c2"
    activations = kerasviz.feature_maps(model, x, ["c2"])["c2"]
    w = model.get_layer("head").kernel.numpy()[:, 1]
    expected = _gap_cam(activations, w)
    assert expected.max() > 0
    low = kerasviz.grad_cam(model, x, 1, upsample=None)
    np.testing.assert_allclose(low, expected, rtol=1e-5, atol=1e-8)
    # Linear (1D) / trilinear (3D) resize with half-pixel centres, axis by axis.
    bilinear = kerasviz.grad_cam(model, x, 1, upsample="bilinear")
    by_hand = expected
    for axis, size in enumerate(x.shape[1:-1], start=1):
        by_hand = _interp(by_hand, axis, size)
    np.testing.assert_allclose(bilinear, by_hand, rtol=1e-5, atol=1e-8)
    exact = kerasviz.grad_cam(model, x, 1, upsample="receptive_field")
    rf = kerasviz.receptive_field(model, "c2")
    assert exact.shape == x.shape[:-1]
    np.testing.assert_allclose(exact, kerasviz.backproject(expected, rf), rtol=1e-5, atol=1e-8)


def test_resize_linear_equals_tf_image_resize_in_2d_and_np_interp_in_1d():
    maps = np.random.default_rng(0).random((2, 3, 5)).astype(np.float32)
    reference = tf.image.resize(maps[..., None], (7, 11), method="bilinear", antialias=False)
    np.testing.assert_allclose(resize_linear(maps, (7, 11)), reference[..., 0], atol=1e-6)
    signal = np.array([[0.0, 1.0, 4.0]])
    # Centres (i + 0.5) * 3/6 - 0.5 = -0.25, 0.25, 0.75, 1.25, 1.75, 2.25, clamped at the ends.
    np.testing.assert_allclose(
        resize_linear(signal, (6,)), [[0.0, 0.25, 0.75, 1.75, 3.25, 4.0]], atol=1e-7
    )


@pytest.mark.parametrize("name", ["conv1d", "conv3d"])
def test_score_cam_bilinear_and_occlusion_of_1d_and_3d_inputs(name, request):
    model, x = request.getfixturevalue(name)
    spatial = x.shape[1:-1]
    # Score-CAM by hand: each channel resized, min-max normalized, multiplied with the input,
    # weighted by the softmax probability of class 1.
    activations = kerasviz.feature_maps(model, x, ["c2"])["c2"]
    expected = []
    for image, maps in zip(x, activations, strict=True):
        up = maps[None]
        for axis, size in enumerate(spatial, start=1):
            up = _interp(up, axis, size)
        up = np.moveaxis(up[0], -1, 0)  # (channels, *spatial)
        flat = up.reshape(len(up), -1)
        low, high = flat.min(axis=1), flat.max(axis=1)
        masks = ((flat - low[:, None]) / (high - low)[:, None]).reshape(up.shape)
        logits = model(image[None] * masks[..., None]).numpy().astype(np.float64)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        expected.append(np.maximum(maps @ probs[:, 1], 0))
    expected = np.stack(expected)
    for axis, size in enumerate(spatial, start=1):
        expected = _interp(expected, axis, size)
    ours = kerasviz.score_cam(model, x, 1, upsample="bilinear")
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-7)
    # Occlusion by hand: every patch position covered in its own copy of the inputs.
    patch, stride = 2, 2
    drops = kerasviz.occlusion(model, x, 1, patch=patch, stride=stride, fill=0.5)
    clean = model(x).numpy()[:, 1]
    windows = [
        tuple(slice(c * stride, c * stride + patch) for c in corner)
        for corner in np.ndindex(*[(s - patch) // stride + 1 for s in spatial])
    ]
    covered = np.repeat(x[None], len(windows), axis=0)  # (positions, n, *spatial, c)
    for k, window in enumerate(windows):
        covered[(k, slice(None), *window)] = 0.5
    scores = model(covered.reshape(-1, *x.shape[1:])).numpy()[:, 1].reshape(len(windows), -1)
    total, count = np.zeros(x.shape[:-1]), np.zeros(spatial)
    for window, score in zip(windows, scores, strict=True):
        total[(slice(None), *window)] += (clean - score).reshape((-1,) + (1,) * len(spatial))
        count[window] += 1
    np.testing.assert_allclose(drops, total / count, rtol=1e-4, atol=1e-6)
    assert np.abs(drops).max() > 0


# ---------------------------------------------------------------- 4. custom conv layers


class _OpsConv(L.Layer):
    """A convolution written with keras.ops.conv: a `kernel` weight and a spatial output."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def build(self, shape):
        self.kernel = self.add_weight(shape=(3, 3, shape[-1], self.filters), name="kernel")

    def call(self, x):
        return keras.ops.relu(keras.ops.conv(x, self.kernel, padding="same"))

    def compute_output_shape(self, shape):
        return (*shape[:-1], self.filters)


class _TFConv(_OpsConv):
    def call(self, x):
        return tf.nn.relu(tf.nn.conv2d(x, self.kernel, 1, "SAME"))


class _Projection(L.Layer):
    """A per-pixel projection with a rank-2 `kernel`: spatial output, but no convolution."""

    def build(self, shape):
        self.kernel = self.add_weight(shape=(shape[-1], 2), name="kernel")

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)


@pytest.mark.parametrize("layer_type", [_OpsConv, _TFConv])
def test_default_cam_layer_is_the_last_custom_convolution(layer_type):
    keras.utils.set_random_seed(8)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = layer_type(5, name="custom")(x)
    x = _Projection(name="projection")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3, name="head")(x))
    assert kerasviz.default_cam_layer(model)[0] == "custom"
    x = np.random.default_rng(8).random((2, 8, 8, 3), dtype=np.float32)
    activations = kerasviz.feature_maps(model, x, ["custom"])["custom"]
    # logit = mean(A @ P) @ w = mean(A) @ (P @ w): a GAP head with weights P @ w.
    weights = model.get_layer("projection").kernel.numpy() @ model.get_layer("head").kernel.numpy()
    expected = _gap_cam(activations, weights[:, 2])
    assert expected.max() > 0
    np.testing.assert_allclose(kerasviz.grad_cam(model, x, 2, upsample=None), expected, rtol=1e-5)
    np.testing.assert_allclose(
        kerasviz.grad_cam(model, x, 2, upsample="bilinear"), expected, rtol=1e-5, atol=1e-8
    )
    rf = kerasviz.receptive_field(model, "custom")
    np.testing.assert_allclose(
        kerasviz.grad_cam(model, x, 2, upsample="receptive_field"),
        kerasviz.backproject(expected, rf),
        rtol=1e-5,
        atol=1e-8,
    )


# ---------------------------------------------------------------- 5. image + tabular inputs


@pytest.fixture(scope="module")
def image_and_table():
    image = keras.Input((4, 4, 1), name="image")
    table = keras.Input((2,), name="table")
    x = L.Concatenate()([L.Flatten()(image), table])
    model = keras.Model([image, table], L.Dense(2, name="head")(x))
    kernel = np.zeros((18, 2), np.float32)
    kernel[:16, 0] = np.arange(1, 17)
    kernel[16:, 0] = [10.0, 20.0]  # covering the table would change the drops
    kernel[:, 1] = 1.0
    model.get_layer("head").set_weights([kernel, np.zeros(2, np.float32)])
    rng = np.random.default_rng(9)
    images = rng.random((2, 4, 4, 1), dtype=np.float32)
    tables = rng.random((2, 2), dtype=np.float32)
    return model, images, tables, kernel[:16, 0].reshape(4, 4)


def test_occlusion_covers_the_image_and_keeps_the_table(image_and_table):
    model, images, tables, w = image_and_table
    drops = kerasviz.occlusion(model, [images, tables], 0, patch=2, stride=2, fill=0.25)
    # Linear in the pixels: a patch's drop is sum over it of (x - fill) * w; patches tile the
    # image, so every pixel gets its own patch's drop.
    expected = np.zeros((2, 4, 4))
    for y0 in (0, 2):
        for x0 in (0, 2):
            window = (slice(None), slice(y0, y0 + 2), slice(x0, x0 + 2))
            drop = ((images[..., 0][window] - 0.25) * w[window[1:]]).sum(axis=(1, 2))
            expected[window] = drop[:, None, None]
    np.testing.assert_allclose(drops, expected, rtol=1e-5, atol=1e-5)
    other = kerasviz.occlusion(model, [images, tables + 3], 0, patch=2, stride=2, fill=0.25)
    np.testing.assert_allclose(other, drops, rtol=1e-5, atol=1e-5)


def test_tabular_gradients_are_not_reduced_and_datasets_of_two_inputs(image_and_table):
    model, images, tables, w = image_and_table
    grads = kerasviz.saliency(model, [images, tables], 0)
    np.testing.assert_allclose(grads[0], np.broadcast_to(w, (2, 4, 4)), rtol=1e-6)
    np.testing.assert_allclose(grads[1], [[10.0, 20.0]] * 2, rtol=1e-6)  # raw, one per feature
    labels = np.array([0, 1])
    for dataset in (
        tf.data.Dataset.from_tensor_slices(((images, tables), labels)),
        tf.data.Dataset.from_tensor_slices(((images, tables), labels)).batch(1),
        tf.data.Dataset.from_tensor_slices((images, tables)),
        tf.data.Dataset.from_tensor_slices({"image": images, "table": tables}).batch(2),
    ):
        result = kerasviz.saliency(model, dataset, 0)
        for a, b in zip(result, grads, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)


# ---------------------------------------------------------------- 6. guided backprop


def _relu_forms():
    def wrap(fn):
        return lambda conv, t: fn(conv(t))

    return {
        "ops.relu": (wrap(keras.ops.relu), None, False),
        "activations.relu": (wrap(keras.activations.relu), None, False),
        "ops.relu6": (wrap(keras.ops.relu6), None, True),
        "ReLU": (wrap(lambda t: L.ReLU()(t)), None, False),
        "ReLU(max_value=6)": (wrap(lambda t: L.ReLU(max_value=6.0)(t)), None, True),
        "Activation('relu')": (wrap(lambda t: L.Activation("relu")(t)), None, False),
        "Activation('relu6')": (wrap(lambda t: L.Activation("relu6")(t)), None, True),
        "conv activation='relu'": (lambda conv, t: conv(t), "relu", False),
        "conv activation=relu6": (lambda conv, t: conv(t), keras.activations.relu6, True),
    }


FORMS = _relu_forms()


@pytest.fixture(scope="module")
def guided_models():
    models = {}
    for name, (apply, activation, _) in FORMS.items():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((6, 6, 3))
        c1 = L.Conv2D(4, 3, padding="same", activation=activation, name="c1")
        c2 = L.Conv2D(5, 3, padding="same", activation=activation, name="c2")
        x = apply(c2, apply(c1, inputs))
        x = L.GlobalAveragePooling2D()(x)
        models[name] = keras.Model(inputs, L.Dense(3, activation="softmax", name="d")(x))
    # Large inputs, so that some units pass 6 and the relu6 cap matters.
    x = 8 * np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
    return models, x


def _guided_reference(model, x, target, cap):
    """Guided backprop written out: the same network with a tf.custom_gradient ReLU whose
    gradient is relu(dy) where the unit is active (0 < input, and input < 6 for relu6)."""

    @tf.custom_gradient
    def guided_relu(t):
        active = t > 0
        if cap:
            active &= t < 6
        y = tf.minimum(tf.nn.relu(t), 6.0) if cap else tf.nn.relu(t)
        return y, lambda dy: tf.nn.relu(dy) * tf.cast(active, dy.dtype)

    k1, b1 = model.get_layer("c1").get_weights()
    k2, b2 = model.get_layer("c2").get_weights()
    w, b = model.get_layer("d").get_weights()
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        h = guided_relu(tf.nn.conv2d(x, k1, 1, "SAME") + b1)
        h = guided_relu(tf.nn.conv2d(h, k2, 1, "SAME") + b2)
        score = (tf.reduce_mean(h, axis=[1, 2]) @ w + b)[:, target]
    return tape.gradient(score, x).numpy()


@pytest.mark.parametrize("form", list(FORMS))
def test_guided_backprop_guides_every_relu_form(guided_models, form):
    models, x = guided_models
    model, cap = models[form], FORMS[form][2]
    expected = _guided_reference(model, x, 1, cap)
    ours = kerasviz.guided_backprop(model, x, 1)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
    # The reference is sharp: unguided gradients, or the wrong cap, differ from it.
    assert not np.allclose(kerasviz.saliency(model, x, 1, reduce=None), expected, atol=1e-7)
    assert not np.allclose(_guided_reference(model, x, 1, not cap), expected, atol=1e-7)


def test_guided_backprop_refuses_a_relu_it_cannot_guide():
    class Projection(L.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.activation = keras.activations.relu

        def build(self, shape):
            self.kernel = self.add_weight(shape=(shape[-1], 4), name="kernel")

        def call(self, x):
            return self.activation(keras.ops.matmul(x, self.kernel))

    inputs = keras.Input((6, 6, 3))
    x = L.GlobalAveragePooling2D()(Projection(name="projection")(inputs))
    model = keras.Model(inputs, L.Dense(3)(x))
    x = np.ones((1, 6, 6, 3), np.float32)
    match = r"guided backpropagation can guide.*'projection'.*relu activation.*keras.layers.ReLU"
    with pytest.raises(ValueError, match=match):
        kerasviz.guided_backprop(model, x)
    with pytest.raises(ValueError, match=match):
        kerasviz.attribution.guided_model(model)


# ---------------------------------------------------------------- 7. shared layers


@pytest.fixture(scope="module")
def shared():
    keras.utils.set_random_seed(2)
    a, b = keras.Input((6, 6, 3)), keras.Input((6, 6, 3))
    conv = L.Conv2D(4, 3, padding="same", activation="relu", name="shared")
    fa = conv(L.Conv2D(3, 3, padding="same", name="a_conv")(a))
    fb = conv(b)
    x = L.Concatenate()([L.GlobalAveragePooling2D()(fa), L.GlobalAveragePooling2D()(fb)])
    model = keras.Model([a, b], L.Dense(2)(x))
    rng = np.random.default_rng(1)
    return model, [rng.random((2, 6, 6, 3), dtype=np.float32) for _ in range(2)]


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: kerasviz.grad_cam(m, x, 0, "shared", upsample=None),
        lambda m, x: kerasviz.grad_cam(m, x, 0, "shared", upsample="bilinear"),
        lambda m, x: kerasviz.grad_cam(m, x, 0, "shared", upsample="receptive_field"),
        lambda m, x: kerasviz.layer_cam(m, x, 0, ["a_conv", "shared"]),
        lambda m, x: kerasviz.score_cam(m, x, 0, "shared", upsample=None),
        lambda m, x: kerasviz.feature_maps(m, x, ["shared"]),
        lambda m, x: kerasviz.top_channels(m, x, "shared", 2),
    ],
    ids=["none", "bilinear", "receptive_field", "list", "score_cam", "feature_maps", "top"],
)
def test_shared_layer_is_refused_clearly(shared, call):
    model, x = shared
    with pytest.raises(ValueError, match=r"`layer` to be called once.*'shared'.*shared layer"):
        call(model, x)


def test_default_lists_leave_shared_layers_out(shared):
    model, x = shared
    # The shared conv is the last convolution; the default CAM layer skips it.
    assert kerasviz.default_cam_layer(model)[0] == "a_conv"
    maps = kerasviz.feature_maps(model, x)
    assert list(maps) == ["a_conv"]
    reference = keras.Model(model.inputs[0], model.get_layer("a_conv").output)(x[0]).numpy()
    np.testing.assert_allclose(maps["a_conv"], reference, rtol=1e-6)


# ---------------------------------------------------------------- 8. input containers


@pytest.fixture(scope="module")
def any_size():
    keras.utils.set_random_seed(6)
    inputs = keras.Input((None, None, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3)(x))
    images = np.random.default_rng(2).random((4, 32, 32, 3), dtype=np.float32)
    return model, images, kerasviz.grad_cam(model, images)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)),
        lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(3),
        lambda x, y: tf.data.Dataset.from_tensor_slices(x),
        lambda x, y: tf.data.Dataset.from_tensor_slices(x).batch(3),
        lambda x, y: list(x),
        lambda x, y: tuple(tf.constant(image) for image in x),
    ],
    ids=["unbatched", "batched", "unbatched_no_labels", "batched_no_labels", "list", "tensors"],
)
def test_inputs_in_any_container_give_one_map_per_image(any_size, wrap):
    model, images, reference = any_size
    assert reference.shape == (4, 32, 32) and reference.max() > 0
    maps = kerasviz.grad_cam(model, wrap(images, np.arange(4)))
    np.testing.assert_allclose(maps, reference, rtol=1e-6, atol=1e-9)


def test_bilinear_cam_is_tf_image_resize_of_the_layer_map(any_size):
    model, images, _ = any_size
    low = kerasviz.grad_cam(model, images, 1, "pool", upsample=None)
    assert low.shape == (4, 16, 16) and low.max() > 0
    reference = tf.image.resize(low[..., None], (32, 32), method="bilinear", antialias=False)
    np.testing.assert_allclose(
        kerasviz.grad_cam(model, images, 1, "pool", upsample="bilinear"),
        reference.numpy()[..., 0],
        rtol=1e-5,
        atol=1e-7,
    )


def test_uint8_images_are_their_0_to_255_values(any_size):
    model, images, _ = any_size
    pixels = (images * 255).astype(np.uint8)
    as_float = pixels.astype(np.float32)
    np.testing.assert_array_equal(
        kerasviz.grad_cam(model, pixels), kerasviz.grad_cam(model, as_float)
    )
    np.testing.assert_array_equal(
        kerasviz.saliency(model, pixels, 0), kerasviz.saliency(model, as_float, 0)
    )


def test_wrong_input_containers_say_what_to_pass(any_size):
    model, images, _ = any_size
    with pytest.raises(ValueError, match=r"images of one shape.*\(16, 32, 3\).*Resize them"):
        kerasviz.grad_cam(model, [images[0], images[1, :16]])
    what = r"a numpy array or tf.Tensor of images.*tf.data.Dataset"
    with pytest.raises(ValueError, match=what + r".*Received: str"):
        kerasviz.grad_cam(model, "cat.png")
    with pytest.raises(
        ValueError, match=what + r".*input names.*Received: a dict with keys \['a'\]"
    ):
        kerasviz.grad_cam(model, {"a": images})
    with pytest.raises(ValueError, match=r"`inputs` to be numeric"):
        kerasviz.saliency(model, images.astype(np.complex64))


# ---------------------------------------------------------------- 9. messages


def test_unknown_layer_lists_each_suggestion_once():
    inner = keras.Sequential(
        [keras.Input((8, 8, 3)), L.Conv2D(2, 3, name="conv1"), L.Conv2D(2, 3, name="conv2")],
        name="backbone",
    )
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), inner, L.Conv2D(2, 1, name="conv2"), L.Flatten(), L.Dense(2)]
    )
    with pytest.raises(ValueError) as info:
        kerasviz.grad_cam(model, np.zeros((1, 8, 8, 3), np.float32), layer="conv3")
    names = ast.literal_eval(re.search(r"Closest valid names: (\[.*?\])", str(info.value))[1])
    # conv1 is unique: its own name; conv2 is in both models: each by its path, once.
    assert len(names) == len(set(names))
    assert {"backbone/conv2", "conv1", "conv2"} <= set(names)
    assert "backbone/conv1" not in names
    layers = [kerasviz.resolve_layer(model, name)[1] for name in names]
    assert len({id(layer) for layer in layers}) == len(names)  # each names another layer


def test_a_callable_target_must_score_each_image(any_size):
    model, images, _ = any_size
    with pytest.raises(ValueError, match=r"one score per image.*Received: 1 scores for 4 images"):
        kerasviz.saliency(model, images, lambda logits: keras.ops.sum(logits[:, 0]))
    np.testing.assert_array_equal(
        kerasviz.saliency(model, images, lambda logits: logits[:, 2]),
        kerasviz.saliency(model, images, 2),
    )
