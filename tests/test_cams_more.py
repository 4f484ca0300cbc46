"""HiResCAM, XGrad-CAM, Eigen-CAM, Ablation-CAM and CAM smoothing, against their definitions.

Each map is recomputed by hand, one pixel or one channel at a time, on tiny models whose
gradients and tails are known in closed form: a Flatten-Dense head is linear in the layer's
activations, so ``d logit_k / dA`` is the head's kernel column, reshaped.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerasviz
from kerasviz.receptive_field import backproject, receptive_field

TARGETS = [0, 2, 1]


def _flatten_model() -> keras.Model:
    keras.utils.set_random_seed(21)
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(5, 3, activation="relu", name="c2"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, activation="softmax", name="probs"),
        ],
        name="flatten_head",
    )


def _residual_model() -> keras.Model:
    """A skip connection around the CAM layer, inside a nested backbone, and a nonlinear tail."""
    keras.utils.set_random_seed(22)
    inputs = keras.Input((12, 12, 3))
    r1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="r1")(inputs)
    r2 = keras.layers.Conv2D(4, 3, padding="same", name="r2")(r1)
    x = keras.layers.ReLU(name="relu")(keras.layers.Add(name="add")([r1, r2]))
    backbone = keras.Model(inputs, x, name="backbone")
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ]
    )


@pytest.fixture(scope="module")
def flat_model() -> keras.Model:
    return _flatten_model()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(4).random((3, 10, 10, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def known(flat_model, images):
    """The c2 activations ``(n, 6, 6, 5)`` and the gradients of each image's target logit."""
    activations = keras.Model(flat_model.inputs[0], flat_model.get_layer("c2").output)(images)
    activations = np.asarray(activations, np.float64)
    kernel, bias = (np.asarray(w, np.float64) for w in flat_model.get_layer("probs").weights)
    gradients = np.stack([kernel[:, t].reshape(6, 6, 5) for t in TARGETS])
    assert activations.std() > 0.01 and (activations > 0).mean() > 0.2
    return activations, gradients, kernel, bias


def _pca_map(values: np.ndarray) -> np.ndarray:
    """numpy's first principal component of ``(h, w, c)`` values, sign agreeing with the sum."""
    h, w, c = values.shape
    flat = values.reshape(-1, c)
    centred = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    first = vt[0] if vt[0].sum() >= 0 else -vt[0]
    return (centred @ first).reshape(h, w)


# ------------------------------------------------------------------- the definitions, by hand


def test_hires_cam_is_gradient_times_activation_pixel_by_pixel(flat_model, images, known):
    activations, gradients, _, _ = known
    expected = np.zeros(activations.shape[:3])
    for i in range(len(images)):
        for y in range(6):
            for x in range(6):
                total = sum(activations[i, y, x, c] * gradients[i, y, x, c] for c in range(5))
                expected[i, y, x] = max(total, 0.0)
    maps = kerasviz.hires_cam(flat_model, images, TARGETS, "c2", upsample=None)
    assert expected.max() > 0.01
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6)


def test_xgrad_cam_weights_are_activation_normalized_gradients(flat_model, images, known):
    activations, gradients, _, _ = known
    expected = np.zeros(activations.shape[:3])
    for i in range(len(images)):
        for c in range(5):
            a, g = activations[i, ..., c], gradients[i, ..., c]
            weight = (a * g).sum() / a.sum() if a.sum() != 0 else 0.0
            expected[i] += weight * a
    expected = np.maximum(expected, 0)
    maps = kerasviz.xgrad_cam(flat_model, images, TARGETS, "c2", upsample=None)
    assert expected.max() > 1e-3
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-8)


def test_ablation_cam_is_the_logit_drop_channel_by_channel(flat_model, images, known):
    activations, _, kernel, bias = known
    expected = np.zeros(activations.shape[:3])
    for i, t in enumerate(TARGETS):
        logit = activations[i].reshape(-1) @ kernel[:, t] + bias[t]
        for c in range(5):
            ablated = activations[i].copy()
            ablated[..., c] = 0
            drop = logit - (ablated.reshape(-1) @ kernel[:, t] + bias[t])
            expected[i] += drop * activations[i, ..., c]
    expected = np.maximum(expected, 0)
    maps = kerasviz.ablation_cam(flat_model, images, TARGETS, "c2", upsample=None, batch_size=7)
    assert expected.max() > 0.01
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-5)


def test_ablation_cam_targets_predicted_and_callable(flat_model, images):
    predicted = flat_model.predict(images, verbose=0).argmax(axis=1)
    explicit = kerasviz.ablation_cam(flat_model, images, predicted, "c2", upsample=None)
    np.testing.assert_allclose(
        kerasviz.ablation_cam(flat_model, images, None, "c2", upsample=None, batch_size=4),
        explicit,
        rtol=1e-5,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        kerasviz.ablation_cam(flat_model, images, lambda z: z[:, 1], "c2", upsample=None),
        kerasviz.ablation_cam(flat_model, images, 1, "c2", upsample=None),
        rtol=1e-5,
        atol=1e-7,
    )


def test_ablation_cam_through_a_skip_connection_in_a_nested_model():
    model = _residual_model()
    images = np.random.default_rng(8).random((2, 12, 12, 3), dtype=np.float32)
    backbone = model.get_layer("backbone")
    r1 = np.asarray(keras.Model(backbone.inputs[0], backbone.get_layer("r1").output)(images))
    r2 = np.asarray(keras.Model(backbone.inputs[0], backbone.get_layer("r2").output)(images))
    kernel, bias = (np.asarray(w) for w in model.get_layer("head").weights)
    targets = [1, 2]

    def logit(i, a):  # the tail by hand: add the skip, ReLU, average, Dense
        return np.maximum(r1[i] + a, 0).mean(axis=(0, 1)) @ kernel[:, targets[i]] + bias[targets[i]]

    expected = np.zeros(r2.shape[:3])
    weights = np.zeros((2, 4))
    for i in range(2):
        for c in range(4):
            ablated = r2[i].copy()
            ablated[..., c] = 0
            weights[i, c] = logit(i, r2[i]) - logit(i, ablated)
            expected[i] += weights[i, c] * r2[i, ..., c]
    expected = np.maximum(expected, 0)
    maps = kerasviz.ablation_cam(model, images, targets, "backbone/r2", upsample=None)
    assert np.abs(weights).max() > 1e-3
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    # max_channels keeps the channels with the largest mean |activation|; the rest weigh 0.
    top = np.argsort(-np.abs(r2).mean(axis=(1, 2)), axis=1, kind="stable")[:, :2]
    kept = np.zeros(r2.shape[:3])
    for i in range(2):
        for c in top[i]:
            kept[i] += weights[i, c] * r2[i, ..., c]
    kept = np.maximum(kept, 0)
    maps = kerasviz.ablation_cam(
        model, images, targets, "backbone/r2", upsample=None, max_channels=2, batch_size=3
    )
    np.testing.assert_allclose(maps, kept, rtol=1e-4, atol=1e-6)


def test_eigen_cam_is_numpys_first_singular_vector(flat_model, images, known):
    activations = known[0]
    expected = np.stack([np.maximum(_pca_map(a), 0) for a in activations])
    maps = kerasviz.eigen_cam(flat_model, images, layer="c2", upsample=None)
    assert expected.max() > 0.01
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-5)
    signed = kerasviz.eigen_cam(flat_model, images, layer="c2", upsample=None, relu=False)
    for m, a in zip(signed, activations, strict=True):  # the sign agrees with the activations
        assert np.corrcoef(m.reshape(-1), a.sum(-1).reshape(-1))[0, 1] > 0
    both = kerasviz.eigen_cam(flat_model, images, layer=["c1", "c2"], upsample=None)
    np.testing.assert_allclose(both["c2"], maps, rtol=1e-5, atol=1e-6)


def test_every_new_cam_projects_through_the_receptive_field(flat_model, images):
    rf = receptive_field(flat_model, "c2")
    for method in (
        kerasviz.hires_cam,
        kerasviz.xgrad_cam,
        kerasviz.eigen_cam,
        kerasviz.ablation_cam,
    ):
        low = method(flat_model, images, TARGETS, "c2", upsample=None)
        high = method(flat_model, images, TARGETS, "c2", upsample="receptive_field")
        assert high.shape == (3, 10, 10)
        np.testing.assert_allclose(high, backproject(low, rf), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ smoothing


def test_eigen_smoothing_is_the_principal_component_of_weighted_activations(
    flat_model, images, known
):
    activations, gradients, _, _ = known
    weights = gradients.mean(axis=(1, 2))  # Grad-CAM's weights
    expected = np.stack(
        [np.maximum(_pca_map(a * w), 0) for a, w in zip(activations, weights, strict=True)]
    )
    maps = kerasviz.grad_cam(flat_model, images, TARGETS, "c2", upsample=None, smooth="eigen")
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-5)
    plain = kerasviz.grad_cam(flat_model, images, TARGETS, "c2", upsample=None)
    assert not np.allclose(maps, plain)


def test_augment_smoothing_averages_flipped_and_scaled_copies_mapped_back(flat_model, images):
    predicted = flat_model.predict(images, verbose=0).argmax(axis=1)
    expected = []
    for flip in (False, True):
        for factor in kerasviz.attribution.cams.AUGMENT_FACTORS:
            copy = (images[:, :, ::-1] if flip else images) * factor
            m = kerasviz.grad_cam(flat_model, copy, predicted, "c2")
            expected.append(m[..., ::-1] if flip else m)
    expected = np.mean(expected, axis=0)
    maps = kerasviz.grad_cam(flat_model, images, layer="c2", smooth="augment")
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(maps, kerasviz.grad_cam(flat_model, images, layer="c2"))
    one = kerasviz.ablation_cam(flat_model, images[0], 1, "c2", smooth="augment")
    assert one.shape == (10, 10)


def test_bad_smooth_and_max_channels(flat_model, images):
    for method in (
        kerasviz.cam,
        kerasviz.grad_cam,
        kerasviz.grad_cam_plus_plus,
        kerasviz.layer_cam,
        kerasviz.score_cam,
        kerasviz.hires_cam,
        kerasviz.xgrad_cam,
        kerasviz.eigen_cam,
        kerasviz.ablation_cam,
    ):
        with pytest.raises(ValueError, match="`smooth`"):
            method(flat_model, images, layer="c2", smooth="gaussian")
        with pytest.raises(ValueError, match="`upsample`"):
            method(flat_model, images, layer="c2", smooth="augment", upsample=None)
    for bad in (0, 6):
        with pytest.raises(ValueError, match="`max_channels`"):
            kerasviz.ablation_cam(flat_model, images, layer="c2", max_channels=bad)
    with pytest.raises(ValueError, match="one layer"):
        kerasviz.ablation_cam(flat_model, images, layer=["c1", "c2"])
