"""Metrics: SSIM/PSNR, localization scores, deletion/insertion and the randomization check."""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from skimage.metrics import structural_similarity

import kerasviz
from kerasviz import _probe, metrics

# ---------------------------------------------------------------- ssim / psnr


def test_ssim_and_psnr_of_identical_images():
    x = np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(metrics.ssim(x, x), np.ones(3), atol=1e-6)
    assert np.all(np.isinf(metrics.psnr(x, x)))
    assert metrics.ssim(x[0], x[0]) == pytest.approx(1.0, abs=1e-6)
    assert isinstance(metrics.psnr(x[0], x[0]), float)


def test_psnr_of_a_constant_offset():
    x = np.random.default_rng(1).random((2, 8, 8, 3)) * 0.5
    # MSE = 0.1**2 = 0.01, so PSNR = 10 log10(1 / 0.01) = 20 dB.
    np.testing.assert_allclose(metrics.psnr(x + 0.1, x), [20.0, 20.0], atol=1e-9)
    # With max_val=255 and an offset of 5: 10 log10(255**2 / 25) = 20 log10(51).
    got = metrics.psnr(x[0] * 255 + 5, x[0] * 255, max_val=255)
    assert got == pytest.approx(20 * np.log10(51), abs=1e-9)


def test_ssim_agrees_with_scikit_image():
    rng = np.random.default_rng(2)
    x = rng.random((2, 32, 32, 3), dtype=np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    reference = [
        structural_similarity(
            x[i],
            y[i],
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        for i in range(2)
    ]
    got = metrics.ssim(x, y)
    np.testing.assert_allclose(got, reference, atol=1e-5)
    assert got.shape == (2,) and np.all(got < 0.99)


def test_ssim_psnr_bad_input():
    x = np.zeros((2, 8, 8, 3))
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(x, x[:1])
    with pytest.raises(ValueError, match="max_val"):
        metrics.psnr(x, x, max_val=0)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        metrics.psnr(bad, x)


# ---------------------------------------------------------------- localization on masks


def _square_masks() -> np.ndarray:
    masks = np.zeros((3, 10, 12), dtype=bool)
    masks[0, 2:5, 3:7] = True
    masks[1, 6:9, 1:4] = True
    masks[2, 0:10, 0:2] = True
    return masks


def test_map_equal_to_mask_scores_one_and_complement_zero():
    masks = _square_masks()
    maps = masks.astype(np.float32)
    np.testing.assert_array_equal(metrics.pointing_game(maps, masks), [1, 1, 1])
    np.testing.assert_allclose(metrics.energy_pointing_game(maps, masks), [1, 1, 1])
    # The masks hold 12, 9 and 20 of 120 pixels: a 5% top (6 pixels) lies inside each mask, and
    # the pixels tied with the 6th keep the whole mask.
    np.testing.assert_allclose(metrics.iou_at(maps, masks, 0.95), [1, 1, 1])
    # A 10% top (12 pixels) is more than the 9-pixel mask: the tie at 0 takes every pixel.
    np.testing.assert_allclose(metrics.iou_at(maps, masks, 0.9), [1, 9 / 120, 1])
    complement = 1.0 - maps
    np.testing.assert_array_equal(metrics.pointing_game(complement, masks), [0, 0, 0])
    np.testing.assert_allclose(metrics.energy_pointing_game(complement, masks), [0, 0, 0])
    np.testing.assert_allclose(metrics.iou_at(complement, masks, 0.5), [0, 0, 0])
    # A single map gives a float; a trailing channel axis of 1 is accepted.
    assert metrics.energy_pointing_game(maps[0], masks[0]) == 1.0
    np.testing.assert_array_equal(metrics.pointing_game(maps[..., None], masks[..., None]), 1)


def test_pointing_game_tolerance_by_hand():
    mask = np.zeros((9, 9), dtype=bool)
    mask[2, 2] = True
    straight = np.zeros((9, 9))
    straight[2, 5] = 1.0  # 3 px to the right of the mask
    diagonal = np.zeros((9, 9))
    diagonal[4, 4] = 1.0  # sqrt(8) = 2.83 px away: inside a disc of radius 3, not 2
    assert [metrics.pointing_game(straight, mask, tolerance=t) for t in range(5)] == [
        0.0,
        0.0,
        0.0,
        1.0,
        1.0,
    ]
    assert [metrics.pointing_game(diagonal, mask, tolerance=t) for t in range(5)] == [
        0.0,
        0.0,
        0.0,
        1.0,
        1.0,
    ]
    corner = np.zeros((9, 9))
    corner[5, 5] = 1.0  # sqrt(18) = 4.24 px: a square window of radius 3 would wrongly hit
    assert metrics.pointing_game(corner, mask, tolerance=3) == 0.0
    assert metrics.pointing_game(corner, mask, tolerance=5) == 1.0


def test_pointing_game_standard_tolerance():
    assert metrics.standard_tolerance((224, 224)) == 15
    assert metrics.standard_tolerance((128, 128)) == 9  # 15 * 128 / 224 = 8.6
    assert metrics.standard_tolerance((112, 336)) == 15  # the mean side, 224
    mask = np.zeros((2, 128, 128), dtype=bool)
    mask[:, 60:70, 60:70] = True
    maps = np.zeros((2, 128, 128))
    maps[0, 64, 78] = 1.0  # 9 px right of the mask: a standard hit, a strict miss
    maps[1, 64, 79] = 1.0  # 10 px: a miss either way
    np.testing.assert_array_equal(metrics.pointing_game(maps, mask, tolerance="standard"), [1, 0])
    np.testing.assert_array_equal(metrics.pointing_game(maps, mask, tolerance=9), [1, 0])
    np.testing.assert_array_equal(metrics.pointing_game(maps, mask), [0, 0])
    # perfect, constant and random maps
    assert metrics.pointing_game(mask[0] * 1.0, mask[0], tolerance="standard") == 1.0
    grown = metrics._dilate(mask[:1], 9)[0]
    flat = metrics.pointing_game(np.ones((128, 128)), mask[0], tolerance="standard")
    assert flat == pytest.approx(grown.mean())  # chance: the grown mask's share
    noise = np.random.default_rng(0).random((50, 128, 128))
    hits = metrics.pointing_game(noise, np.repeat(mask[:1], 50, 0), tolerance="standard")
    expected = [grown.ravel()[m.argmax()] for m in noise.reshape(50, -1)]
    np.testing.assert_array_equal(hits, expected)
    for bad in (-1, "strict", "Standard", 2.5, None):
        with pytest.raises(ValueError, match="tolerance"):
            metrics.pointing_game(maps, mask, tolerance=bad)


def test_pointing_game_ties_score_the_expected_hit():
    mask = np.zeros((6, 6), dtype=bool)
    mask[1:3, 1:3] = True
    plateau = np.zeros((6, 6))
    plateau[1:3, 1:3] = 2.0
    assert metrics.pointing_game(plateau, mask) == 1.0
    plateau[2, 3] = 2.0  # one of five tied maxima outside the mask
    assert metrics.pointing_game(plateau, mask) == pytest.approx(4 / 5)
    assert metrics.pointing_game(plateau, mask, tolerance=1) == 1.0
    # A blank map scores chance, the mask's share of the image.
    assert metrics.pointing_game(np.zeros((6, 6)), mask) == pytest.approx(4 / 36)


def test_energy_pointing_game_and_iou_by_hand():
    mask = np.zeros((2, 3), dtype=bool)
    mask[0, :2] = True
    m = np.array([[2.0, 1.0, 1.0], [-5.0, 0.0, 0.0]])
    # positive energy 4, of which 3 inside the mask
    assert metrics.energy_pointing_game(m, mask) == pytest.approx(0.75)
    assert metrics.energy_pointing_game(-np.abs(m), mask) == 0.0
    ramp = np.arange(16.0).reshape(4, 4)  # top 4 pixels: the last row
    truth = np.zeros((4, 4), dtype=bool)
    truth[3, :2] = True
    truth[0, :2] = True
    # top 25% = 4 pixels, 2 of them in the mask; union 4 + 2 = 6
    assert metrics.iou_at(ramp, truth, 0.75) == pytest.approx(2 / 6)
    # quantile 0: everything selected, IoU = |mask| / 16
    assert metrics.iou_at(ramp, truth, 0.0) == pytest.approx(4 / 16)


def test_localization_bad_input():
    masks = _square_masks()
    maps = masks.astype(np.float32)
    for fn in (metrics.pointing_game, metrics.energy_pointing_game):
        with pytest.raises(ValueError, match="`masks` to have the shape of `maps`"):
            fn(maps, masks[:, :5])
        empty = masks.copy()
        empty[1] = False
        with pytest.raises(ValueError, match=r"at least one pixel.*indices \[1\]"):
            fn(maps, empty)
        bad = maps.copy()
        bad[2, 0, 0] = np.nan
        with pytest.raises(ValueError, match=r"no NaN.*indices \[2\]"):
            fn(bad, masks)
    with pytest.raises(ValueError, match="`masks` to have the shape"):
        metrics.iou_at(maps, masks[:2], 0.5)
    with pytest.raises(ValueError, match="quantile"):
        metrics.iou_at(maps, masks, 1.0)
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(maps, masks, tolerance=-1)
    with pytest.raises(ValueError, match=r"\(n, h, w\)"):
        metrics.pointing_game(np.zeros((2, 4, 4, 3)), np.ones((2, 4, 4, 3)))


# ---------------------------------------------------------------- deletion / insertion


class CountRows(keras.layers.Layer):
    """Identity that counts its calls and the rows it sees (in variables, so compiled calls count)."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)
        self.rows = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x):
        self.calls.assign_add(1.0)
        self.rows.assign_add(keras.ops.cast(keras.ops.shape(x)[0], "float32"))
        return x


def _linear_model(weights) -> keras.Model:
    """logit_0 = w . x, logit_1 = 0, softmax: p_0 = sigmoid(w . x) on 2x2x1 images."""
    model = keras.Sequential(
        [
            keras.Input((2, 2, 1)),
            CountRows(name="count"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax", name="probs"),
        ]
    )
    kernel = np.zeros((4, 2), np.float32)
    kernel[:, 0] = weights
    model.get_layer("probs").set_weights([kernel, np.zeros(2, np.float32)])
    return model


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def test_deletion_and_insertion_on_a_linear_model_by_hand():
    model = _linear_model([4.0, 3.0, 2.0, 1.0])
    x = np.ones((2, 2, 2, 1), np.float32)
    # Image 0 ranks the pixels 4, 3, 2, 1 (the weights' order); image 1 the reverse.
    maps = np.stack([[[4.0, 3.0], [2.0, 1.0]], [[1.0, 2.0], [3.0, 4.0]]])
    auc, curves = metrics.deletion_auc(model, x, maps, 0, steps=4, return_curves=True)
    expected = np.stack([_sigmoid([10, 6, 3, 1, 0]), _sigmoid([10, 9, 7, 4, 0])])
    np.testing.assert_allclose(curves, expected, atol=1e-6)
    np.testing.assert_allclose(auc, np.trapezoid(expected, dx=0.25, axis=1), atol=1e-6)
    assert auc[0] < auc[1]  # removing the heaviest pixels first drops the score faster
    auc, curves = metrics.insertion_auc(
        model, x, maps, 0, steps=4, baseline=0.0, return_curves=True
    )
    expected = np.stack([_sigmoid([0, 4, 7, 9, 10]), _sigmoid([0, 1, 3, 6, 10])])
    np.testing.assert_allclose(curves, expected, atol=1e-6)
    np.testing.assert_allclose(auc, np.trapezoid(expected, dx=0.25, axis=1), atol=1e-6)
    assert auc[0] > auc[1]
    # Two steps: half of the pixels per step; a baseline of 0.5 per pixel.
    single = metrics.deletion_auc(model, x[0], maps[0], 0, steps=2, baseline=0.5)
    assert isinstance(single, float)
    assert single == pytest.approx(np.trapezoid(_sigmoid([10, 6.5, 5]), dx=0.5), abs=1e-6)
    # Targets: class 1 has probability 1 - p_0; None takes the predicted class (0 here).
    auc1 = metrics.deletion_auc(model, x, maps, [1, 1], steps=4)
    np.testing.assert_allclose(auc1, 1.0 - metrics.deletion_auc(model, x, maps, 0, steps=4))
    np.testing.assert_allclose(
        metrics.deletion_auc(model, x, maps, steps=4),
        metrics.deletion_auc(model, x, maps, 0, steps=4),
    )


def test_perturbed_images_are_scored_in_batches():
    model = _linear_model([4.0, 3.0, 2.0, 1.0])
    counter = model.get_layer("count")
    rng = np.random.default_rng(3)
    x = rng.random((5, 2, 2, 1), dtype=np.float32)
    maps = rng.random((5, 2, 2))
    traces = _probe.TRACES["perturbation_scores"]
    reference = metrics.deletion_auc(model, x, maps, 0, steps=4)  # 5 * 5 = 25 rows
    assert counter.calls.numpy() == 1 and counter.rows.numpy() == 25
    chunked = metrics.deletion_auc(model, x, maps, 0, steps=4, batch_size=10)
    assert counter.calls.numpy() == 1 + 3 and counter.rows.numpy() == 50
    np.testing.assert_allclose(chunked, reference, atol=1e-6)
    # One trace, one more that relaxes the batch axis, and none on repeated calls.
    assert _probe.TRACES["perturbation_scores"] - traces <= 2
    traces = _probe.TRACES["perturbation_scores"]
    metrics.deletion_auc(model, x, maps, 0, steps=4, batch_size=10)
    assert counter.calls.numpy() == 7
    assert _probe.TRACES["perturbation_scores"] == traces


def test_deletion_agrees_with_a_step_by_step_reference(tiny_cnn, images16):
    rng = np.random.default_rng(4)
    maps = rng.random((4, 16, 16))
    steps = 8
    auc, curves = metrics.deletion_auc(
        tiny_cnn, images16, maps, [0, 1, 2, 0], steps=steps, batch_size=7, return_curves=True
    )
    blurred_auc, blurred = metrics.insertion_auc(
        tiny_cnn, images16, maps, [0, 1, 2, 0], steps=steps, return_curves=True
    )
    expected = np.zeros((4, steps + 1))
    for i in range(4):
        order = np.argsort(-maps[i].ravel(), kind="stable")
        for s in range(steps + 1):
            x = images16[i].copy().reshape(-1, 3)
            x[order[: s * 256 // steps]] = 0.0
            probs = tiny_cnn(x.reshape(1, 16, 16, 3)).numpy()[0]
            expected[i, s] = probs[[0, 1, 2, 0][i]]
    np.testing.assert_allclose(curves, expected, atol=1e-5)
    np.testing.assert_allclose(auc, np.trapezoid(expected, dx=1 / steps, axis=1), atol=1e-5)
    # Insertion ends on the full image, whatever the baseline.
    np.testing.assert_allclose(blurred[:, -1], expected[:, 0], atol=1e-5)
    assert blurred_auc.shape == (4,)


def test_blur_baseline_of_a_constant_image_is_the_image():
    model = _linear_model([1.0, -2.0, 0.5, 0.25])
    x = np.full((1, 2, 2, 1), 0.7, np.float32)
    maps = np.random.default_rng(5).random((1, 2, 2))
    _, curves = metrics.deletion_auc(
        model, x, maps, 0, steps=4, baseline="blur", return_curves=True
    )
    np.testing.assert_allclose(curves, _sigmoid(0.7 * -0.25) * np.ones((1, 5)), atol=1e-6)


def test_deletion_bad_input(tiny_cnn, images16):
    maps = np.ones((4, 16, 16))
    with pytest.raises(ValueError, match=r"one value per input pixel.*\(4, 16, 16\)"):
        metrics.deletion_auc(tiny_cnn, images16, maps[:, :8])
    bad = maps.copy()
    bad[3, 1, 1] = np.nan
    with pytest.raises(ValueError, match="no NaN"):
        metrics.insertion_auc(tiny_cnn, images16, bad)
    with pytest.raises(ValueError, match="steps"):
        metrics.deletion_auc(tiny_cnn, images16, maps, steps=0)
    with pytest.raises(ValueError, match="baseline"):
        metrics.deletion_auc(tiny_cnn, images16, maps, baseline="noise")
    with pytest.raises(ValueError, match="baseline"):
        metrics.deletion_auc(tiny_cnn, images16, maps, baseline=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="targets"):
        metrics.deletion_auc(tiny_cnn, images16, maps, targets=7)


# ---------------------------------------------------------------- randomization check


def _weights_digest(model) -> str:
    return hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()


def _gradient_map(model, inputs, targets=None):
    """Plain saliency, |d logit / d x| max over channels, written here as an independent method."""
    x = tf.constant(inputs)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = tf.gather(model(x), np.asarray(targets), batch_dims=1)
    return tf.reduce_max(tf.abs(tape.gradient(scores, x)), axis=-1).numpy()


def _edge_map(model, inputs, targets=None):
    """An edge detector of the input: ignores the model entirely."""
    x = np.asarray(inputs)
    return (np.abs(np.diff(x, axis=1, prepend=0)) + np.abs(np.diff(x, axis=2, prepend=0))).sum(-1)


def test_spearman_by_hand_and_against_scipy():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0]])
    np.testing.assert_allclose(metrics.spearman(a, a), [1, 1])
    np.testing.assert_allclose(metrics.spearman(a, -a), [-1, -1])
    assert metrics.spearman(a[:1], np.ones((1, 4)))[0] == 0.0  # a constant map has no ranking
    rng = np.random.default_rng(6)
    x = rng.integers(0, 5, (3, 40)).astype(float)  # many ties
    y = x + rng.integers(0, 4, (3, 40))
    expected = [stats.spearmanr(x[i], y[i]).statistic for i in range(3)]
    np.testing.assert_allclose(metrics.spearman(x, y), expected, atol=1e-12)


def test_randomization_check_leaves_the_model_alone_and_catches_an_edge_detector(nested_model):
    x = np.random.default_rng(7).random((3, 32, 32, 3), dtype=np.float32)
    x[:, 8:16, 8:16] += 1.0
    before = _weights_digest(nested_model)
    config = nested_model.get_config()
    edges = metrics.randomization_check(_edge_map, nested_model, x)
    assert edges.layers == [
        "head_dense",
        "backbone/b_conv3",
        "backbone/b_conv2",
        "backbone/b_bn1",
        "backbone/b_conv1",
    ]
    np.testing.assert_allclose(edges.correlations, np.ones((5, 3)))
    assert not edges.passed
    result = metrics.randomization_check(_gradient_map, nested_model, x, seed=1)
    assert result.correlations.shape == (5, 3)
    assert result.passed and result.mean_abs[-1] < 0.5
    assert _weights_digest(nested_model) == before and nested_model.get_config() == config
    independent = metrics.randomization_check(
        _gradient_map, nested_model, x, order="independent", seed=1
    )
    # Randomizing the top layer alone is the first cascading step too.
    np.testing.assert_allclose(independent.correlations[0], result.correlations[0])
    # b_bn1 is untrained (gamma 1, beta 0): constant tensors keep their values, so nothing moves.
    np.testing.assert_allclose(independent.correlations[3], 1.0)
    assert _weights_digest(nested_model) == before
    with pytest.raises(ValueError, match="order"):
        metrics.randomization_check(_gradient_map, nested_model, x, order="top")


def test_randomization_check_passes_grad_cam(gap_model, images16):
    before = _weights_digest(gap_model)
    x = images16.copy()
    x[:, 4:8, 4:8] += 1.0
    result = metrics.randomization_check(kerasviz.grad_cam, gap_model, x, layer="conv2")
    assert result.layers == ["logits", "conv2", "conv1"]
    assert result.passed and result.mean_abs[-1] < 0.5
    assert _weights_digest(gap_model) == before
    independent = metrics.randomization_check(
        kerasviz.grad_cam, gap_model, x, order="independent", layer="conv2"
    )
    assert independent.correlations.shape == (3, 4) and independent.passed
    np.testing.assert_allclose(independent.correlations[0], result.correlations[0])
    assert _weights_digest(gap_model) == before
