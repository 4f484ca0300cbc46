"""The CAM family: agreement with tf-keras-vis, the closed form, layers, signed maps, bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_gap_model
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.layercam import Layercam
from tf_keras_vis.scorecam import Scorecam
from tf_keras_vis.utils import normalize
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
from tf_keras_vis.utils.scores import CategoricalScore

import kerasviz
from kerasviz._probe import TRACES
from kerasviz.receptive_field import backproject, receptive_field, resize_bilinear

TARGETS = [0, 1, 2]


def make_cam_model(size: int = 12, seed: int = 3) -> keras.Model:
    """Same-padded convs, a pool, a Flatten-Dense head: gradients vary over space.

    Functional, because tf-keras-vis' ReplaceToLinear reads `model.output_names`, which Keras 3
    defines for functional models only.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c3")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="cam_model")


@pytest.fixture(scope="module")
def cam_model() -> keras.Model:
    return make_cam_model()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).random((3, 12, 12, 3), dtype=np.float32)


def _assert_informative(maps: np.ndarray) -> None:
    """Guards the agreement tests against trivially equal all-zero maps."""
    spread = maps.reshape(len(maps), -1).max(axis=1) - maps.reshape(len(maps), -1).min(axis=1)
    assert (spread > 1e-6).all(), spread


# ---------------------------------------------------------------- agreement with tf-keras-vis


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (kerasviz.grad_cam, Gradcam),
        (kerasviz.grad_cam_plus_plus, GradcamPlusPlus),
        (kerasviz.layer_cam, Layercam),
    ],
)
@pytest.mark.parametrize("layer", ["c2", "c3"])
def test_gradient_cams_agree_with_tf_keras_vis(cam_model, images, ours, theirs, layer):
    reference = theirs(cam_model, model_modifier=ReplaceToLinear(), clone=True)
    expected = reference(
        CategoricalScore(TARGETS), images, penultimate_layer=layer, expand_cam=False
    )
    maps = ours(cam_model, images, TARGETS, layer, upsample=None)
    _assert_informative(maps)
    np.testing.assert_allclose(normalize(maps), np.asarray(expected), atol=1e-4)


def test_score_cam_agrees_with_tf_keras_vis(cam_model, images):
    # c1 has the input's size: both sides' mask resizing (bilinear at scale 1) is the identity.
    reference = Scorecam(cam_model, model_modifier=ReplaceToLinear(), clone=True)
    expected = reference(CategoricalScore(TARGETS), images, penultimate_layer="c1")
    maps = kerasviz.score_cam(cam_model, images, TARGETS, "c1", upsample="bilinear")
    _assert_informative(maps)
    np.testing.assert_allclose(normalize(maps), np.asarray(expected), atol=1e-4)


def test_faster_score_cam_agrees_with_tf_keras_vis(cam_model, images):
    # tf-keras-vis keeps the union of the batch's top channels; one image makes them equal.
    reference = Scorecam(cam_model, model_modifier=ReplaceToLinear(), clone=True)
    one = images[:1]
    expected = reference(CategoricalScore([2]), one, penultimate_layer="c1", max_N=3)
    maps = kerasviz.score_cam(cam_model, one, 2, "c1", upsample="bilinear", max_channels=3)
    full = kerasviz.score_cam(cam_model, one, 2, "c1", upsample="bilinear")
    _assert_informative(maps)
    np.testing.assert_allclose(normalize(maps), np.asarray(expected), atol=1e-4)
    assert np.abs(normalize(maps) - normalize(full)).max() > 1e-3  # 3 of 6 channels differ


# ---------------------------------------------------------------- closed form


def test_grad_cam_on_gap_dense_equals_closed_form():
    model = make_gap_model(size=10, classes=3, seed=5)
    x = np.random.default_rng(2).random((2, 10, 10, 3), dtype=np.float32)
    acts = kerasviz.feature_maps(model, x, ["conv2"])["conv2"]  # (2, 10, 10, 8)
    kernel = model.get_layer("logits").get_weights()[0]  # (8, 3)
    for c in range(3):
        weights = kernel[:, c] / (10 * 10)  # d logit_c / dA_ijk = W[k, c] / (h * w)
        expected = np.maximum(np.einsum("nijk,k->nij", acts, weights), 0.0)
        maps = kerasviz.grad_cam(model, x, c, "conv2", upsample=None)
        assert expected.max() > 0
        np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


def test_grad_cam_plus_plus_does_not_overflow_on_huge_logits():
    # A logit of ~1e4 would make exp(score) inf; the closed form never computes it.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(50.0)),
        ]
    )
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    _, logits = kerasviz.get_probe(model)([tf.constant(x)])
    assert logits.numpy().max() > 1000
    maps = kerasviz.grad_cam_plus_plus(model, x, 0, "conv", upsample=None)
    assert np.isfinite(maps).all() and maps.max() > 0


# ---------------------------------------------------------------- layers, projection, traces


def test_several_layers_in_one_pass_equal_separate_calls(cam_model, images):
    layers = ["c1", "c2", "c3"]
    before = TRACES["cam"]
    together = kerasviz.layer_cam(cam_model, images, TARGETS, layers, upsample="receptive_field")
    assert TRACES["cam"] - before == 1
    assert list(together) == layers
    for layer in layers:
        alone = kerasviz.layer_cam(cam_model, images, TARGETS, layer, upsample="receptive_field")
        assert together[layer].shape == (3, 12, 12)
        np.testing.assert_allclose(together[layer], alone, rtol=1e-5, atol=1e-8)
    again = kerasviz.layer_cam(cam_model, images, [1, 2, 3], layers, upsample="receptive_field")
    assert TRACES["cam"] - before == 1 + len(layers)  # 1 list + 3 singles; no retrace
    assert not np.allclose(again["c3"], together["c3"])


def test_upsampling_modes(cam_model, images):
    low = kerasviz.grad_cam(cam_model, images, TARGETS, "c3", upsample=None)
    assert low.shape == (3, 6, 6)
    rf = receptive_field(cam_model, "c3")
    exact = kerasviz.grad_cam(cam_model, images, TARGETS, "c3", upsample="receptive_field")
    np.testing.assert_allclose(exact, backproject(low, rf), rtol=1e-5, atol=1e-8)
    bilinear = kerasviz.grad_cam(cam_model, images, TARGETS, "c3", upsample="bilinear")
    np.testing.assert_allclose(bilinear, resize_bilinear(low, (12, 12)), rtol=1e-5, atol=1e-8)
    assert not np.allclose(exact, bilinear)
    with pytest.raises(ValueError, match=r"`upsample`.*'receptive_field', 'bilinear', None.*"):
        kerasviz.grad_cam(cam_model, images, upsample="nearest")
    with pytest.raises(ValueError, match="`upsample`"):
        kerasviz.score_cam(cam_model, images, upsample=True)


def test_default_layer_and_single_image(cam_model, images):
    default = kerasviz.grad_cam(cam_model, images, TARGETS)
    np.testing.assert_allclose(default, kerasviz.grad_cam(cam_model, images, TARGETS, "c3"))
    one = kerasviz.grad_cam(cam_model, images[1], 1)
    assert one.shape == (12, 12)
    np.testing.assert_allclose(one, default[1], rtol=1e-5, atol=1e-8)
    score_one = kerasviz.score_cam(cam_model, images[1], 1)
    assert score_one.shape == (12, 12)


def test_callable_and_predicted_targets(cam_model, images):
    by_index = kerasviz.grad_cam(cam_model, images, 2, "c3")
    by_callable = kerasviz.grad_cam(cam_model, images, lambda logits: logits[:, 2], "c3")
    np.testing.assert_allclose(by_callable, by_index, rtol=1e-5, atol=1e-8)
    predicted = kerasviz.get_probe(cam_model)([tf.constant(images)])[1].numpy().argmax(axis=1)
    np.testing.assert_allclose(
        kerasviz.grad_cam_plus_plus(cam_model, images, None, "c3"),
        kerasviz.grad_cam_plus_plus(cam_model, images, predicted.tolist(), "c3"),
        rtol=1e-5,
        atol=1e-8,
    )
    np.testing.assert_allclose(
        kerasviz.score_cam(cam_model, images, None, "c3"),
        kerasviz.score_cam(cam_model, images, predicted.tolist(), "c3"),
        rtol=1e-5,
        atol=1e-8,
    )


# ---------------------------------------------------------------- signed maps


def test_signed_maps_keep_negative_evidence_for_two_classes(cam_model, images):
    positive = []
    for target in (0, 3):
        signed = kerasviz.grad_cam(cam_model, images, target, "c3", relu=False, upsample=None)
        rectified = kerasviz.grad_cam(cam_model, images, target, "c3", upsample=None)
        assert (signed < 0).any()
        np.testing.assert_allclose(rectified, np.maximum(signed, 0), rtol=1e-5, atol=1e-8)
        assert (rectified[signed < 0] == 0).all()
        positive.append((signed > 0).any())
    assert any(positive)
    # On one scale: class 0's evidence is the negation of 0-vs-3's.
    zero = kerasviz.grad_cam(cam_model, images, 0, "c3", relu=False, upsample=None)
    three = kerasviz.grad_cam(cam_model, images, 3, "c3", relu=False, upsample=None)
    diff = kerasviz.grad_cam(
        cam_model, images, lambda z: z[:, 0] - z[:, 3], "c3", relu=False, upsample=None
    )
    np.testing.assert_allclose(diff, zero - three, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- bad input, zero maps


def test_bad_input_errors(cam_model, images):
    with pytest.raises(ValueError, match=r"`targets`.*\[0, 3\].*Received: \[4, 4, 4\]"):
        kerasviz.grad_cam(cam_model, images, 4)
    with pytest.raises(ValueError, match=r"`targets`.*Received: \[-2\]"):
        kerasviz.score_cam(cam_model, images, [0, -2, 1])
    with pytest.raises(ValueError, match=r"`layer`.*spatial output.*'fc'.*\(None, 16\)"):
        kerasviz.grad_cam(cam_model, images, 0, "fc")
    with pytest.raises(ValueError, match=r"`layer`.*'flatten'"):
        kerasviz.layer_cam(cam_model, images, 0, ["c1", "flatten"])
    with pytest.raises(ValueError, match=r"`layer`.*'fc'"):
        kerasviz.score_cam(cam_model, images, 0, "fc")
    with pytest.raises(ValueError, match=r"`max_channels` in \[1, 8\]"):
        kerasviz.score_cam(cam_model, images, 0, "c3", max_channels=9)
    with pytest.raises(ValueError, match=r"`relu`"):
        kerasviz.grad_cam(cam_model, images, relu="yes")


def test_constant_and_zero_maps_are_zeros_not_nan(images):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="dead"),
            keras.layers.Conv2D(
                4,
                3,
                padding="same",
                name="flat",
                kernel_initializer="zeros",
                bias_initializer=keras.initializers.Constant(0.5),
            ),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    layer = model.get_layer("dead")
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])  # all-zero activations
    for method in (
        kerasviz.grad_cam,
        kerasviz.grad_cam_plus_plus,
        kerasviz.layer_cam,
        kerasviz.score_cam,
    ):
        for name in ("dead", "flat"):  # zero, then constant (0.5 everywhere) activations
            maps = method(model, images, 1, name)
            assert np.isfinite(maps).all(), (method.__name__, name)
            if name == "dead":
                assert (maps == 0).all(), method.__name__


def test_model_with_unknown_input_size():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    for size in (10, 14, 10):
        x = np.random.default_rng(size).random((2, size, size, 3), dtype=np.float32)
        low = kerasviz.grad_cam(model, x, 1, upsample=None)
        heat = kerasviz.grad_cam(model, x, 1, upsample="receptive_field")
        rf = receptive_field(model, "conv", input_size=(size, size))
        assert heat.shape == (2, size, size)
        np.testing.assert_allclose(heat, backproject(low, rf), rtol=1e-5, atol=1e-8)
        assert kerasviz.score_cam(model, x, 1).shape == (2, size, size)


def test_default_layer_skips_a_1x1_logits_conv():
    # MobileNetV3-style head: the last convolution produces logits on a 1x1 map.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = keras.layers.Conv2D(3, 1, name="logits_conv")(x)
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    x = np.random.default_rng(0).random((2, 10, 10, 3), dtype=np.float32)
    default = kerasviz.grad_cam(model, x, 1, upsample=None)
    np.testing.assert_array_equal(
        default, kerasviz.grad_cam(model, x, 1, "features", upsample=None)
    )
    assert default.shape == (2, 10, 10) and default.max() > 0
