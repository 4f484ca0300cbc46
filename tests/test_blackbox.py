"""LIME, KernelSHAP and RISE: known linear models, exact Shapley values, one region, seeds.

The models are tiny: a linear read-out of known superpixel means (a Dense on the flattened
image whose kernel averages each superpixel), a small CNN, and a model that reads one region.
"""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_tiny_cnn

import kerasviz
from kerasviz._probe import TRACES
from kerasviz.attribution.blackbox import shapley_coalitions, superpixels

SIZE = 16
BLOCK = 4
# A 4 x 4 grid of 4 x 4 blocks: superpixel s covers block (s // 4, s % 4).
GRID = (np.arange(SIZE)[:, None] // BLOCK) * (SIZE // BLOCK) + np.arange(SIZE)[None] // BLOCK
SEGMENTS = GRID.max() + 1
# logit_c = sum_s A[c, s] * (mean of superpixel s over its pixels and channels) + BIAS[c]
A = np.random.default_rng(11).normal(size=(3, SEGMENTS)).astype(np.float32)
BIAS = np.array([0.5, -0.25, 0.0], np.float32)


def _linear_kernel(segment_weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A Dense kernel ``(H * W * C, classes)`` giving ``sum_s a_s * mean_s(x)`` per class."""
    sizes = np.bincount(labels.reshape(-1))
    per_pixel = segment_weights[:, labels] / sizes[labels]  # (classes, H, W)
    per_value = np.repeat(per_pixel[..., None], 3, axis=-1) / 3.0  # mean over channels
    return per_value.reshape(len(segment_weights), -1).T.astype(np.float32)


def _linear_model() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(3, name="logits")
    outputs = dense(x)
    dense.set_weights([_linear_kernel(A, GRID), BIAS])
    return keras.Model(inputs, outputs, name="linear_in_superpixel_means")


class Subclassed(keras.Model):
    """The same linear model, its graph hidden in `call`."""

    def __init__(self):
        super().__init__()
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(self.flatten(x))


@pytest.fixture(scope="module")
def linear_model() -> keras.Model:
    return _linear_model()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(5).random((2, SIZE, SIZE, 3), dtype=np.float32)


def _segment_means(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(n, S)``: the mean over pixels and channels of each superpixel."""
    values = images.mean(axis=-1).reshape(len(images), -1)
    sizes = np.bincount(labels.reshape(-1))
    return np.stack([np.bincount(labels.reshape(-1), v) / sizes for v in values])


# ------------------------------------------------------------------ recovering known weights


def test_lime_recovers_the_weights_of_a_linear_model(linear_model, images):
    # Removing superpixel s (baseline 0) removes A[c, s] * mean_s(x) from logit c exactly.
    expected = A[[0, 2]] * _segment_means(images, GRID)
    exact = kerasviz.lime(
        linear_model,
        images,
        [0, 2],
        segments=GRID,
        samples=600,
        ridge=0.0,
        baseline=0.0,
        probabilities=False,
        seed=0,
    )
    np.testing.assert_allclose(exact.weights, expected, atol=1e-4)
    np.testing.assert_allclose(exact.intercept, BIAS[[0, 2]], atol=1e-4)
    # lime's default ridge (alpha = 1) shrinks a little: within 3% of the largest weight.
    shrunk = kerasviz.lime(
        linear_model,
        images,
        [0, 2],
        segments=GRID,
        baseline=0.0,
        probabilities=False,
        seed=0,
    )
    scale = np.abs(expected).max(axis=1, keepdims=True)
    assert np.abs(shrunk.weights - expected).max() / scale.min() < 0.03
    assert np.abs(shrunk.weights).sum() < np.abs(expected).sum()  # ridge shrinks
    np.testing.assert_array_equal(shrunk.segments, np.broadcast_to(GRID, (2, SIZE, SIZE)))
    np.testing.assert_array_equal(shrunk.num_segments, [SEGMENTS, SEGMENTS])
    np.testing.assert_array_equal(shrunk.maps, np.stack([w[GRID] for w in shrunk.weights]))
    full = linear_model.predict(images, verbose=0)[[0, 1], [0, 2]]
    np.testing.assert_allclose(shrunk.score, full, rtol=1e-5)


def test_kernel_shap_recovers_the_weights_and_is_efficient(linear_model, images):
    expected = A[1] * _segment_means(images, GRID)
    result = kerasviz.kernel_shap(
        linear_model,
        images,
        1,
        segments=GRID,
        samples=500,  # far fewer than the 2^16 - 2 coalitions: the sampled branch
        baseline=0.0,
        probabilities=False,
        seed=0,
    )
    np.testing.assert_allclose(result.weights, expected, atol=1e-4)
    np.testing.assert_allclose(result.intercept, [BIAS[1]] * 2, atol=1e-5)
    np.testing.assert_allclose(
        result.weights.sum(-1), result.score - result.intercept, rtol=1e-5, atol=1e-5
    )


def test_default_baseline_is_each_superpixels_mean_colour(linear_model, images):
    # The model reads only superpixel means; filling a superpixel with its mean changes
    # nothing, so every weight is 0. With a black baseline they are not.
    for method in (kerasviz.lime, kerasviz.kernel_shap):
        result = method(
            linear_model, images, 0, segments=GRID, samples=64, probabilities=False, seed=1
        )
        np.testing.assert_allclose(result.weights, 0.0, atol=1e-5)
        black = method(
            linear_model,
            images,
            0,
            segments=GRID,
            samples=64,
            probabilities=False,
            baseline=0.0,
            seed=1,
        )
        assert np.abs(black.weights).max() > 0.05


def _masked(images: np.ndarray, labels: np.ndarray, keep: np.ndarray, baseline: np.ndarray):
    mask = keep[labels][..., None]
    return images * mask + baseline * (1 - mask)


def test_kernel_shap_equals_exact_shapley_values_when_every_coalition_fits():
    """A nonlinear CNN, 4 superpixels: 14 coalitions fit in the budget, so the result is exact."""
    model = make_tiny_cnn(size=SIZE, seed=2)
    image = np.random.default_rng(9).random((SIZE, SIZE, 3), dtype=np.float32)
    labels = (np.arange(SIZE)[:, None] // 8) * 2 + np.arange(SIZE)[None] // 8
    baseline = np.full_like(image, 0.3)
    target = 2
    m = 4
    value = {}
    coalitions = list(itertools.product([0, 1], repeat=m))
    batch = np.stack(
        [_masked(image, labels, np.array(c, np.float32), baseline) for c in coalitions]
    )
    probs = model.predict(batch, verbose=0)[:, target]
    for c, p in zip(coalitions, probs, strict=True):
        value[c] = float(p)
    exact = np.zeros(m)
    for i in range(m):
        for c in coalitions:
            if c[i]:
                continue
            size = sum(c)
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            with_i = tuple(1 if k == i else v for k, v in enumerate(c))
            exact[i] += weight * (value[with_i] - value[c])
    result = kerasviz.kernel_shap(
        model, image, target, segments=labels, samples=14, baseline=baseline, seed=0
    )
    assert result.weights.shape == (m,) and result.maps.shape == (SIZE, SIZE)
    np.testing.assert_allclose(result.weights, exact, atol=2e-6)
    assert np.abs(exact).max() > 1e-3  # the check is not trivially 0 == 0


def test_shapley_coalitions_enumerate_small_sizes_and_weigh_by_the_kernel():
    rng = np.random.default_rng(0)
    z, w = shapley_coalitions(3, 100, rng)  # 2^3 - 2 = 6 coalitions: all of them
    assert len(z) == 6 and len({tuple(r) for r in z}) == 6
    sizes = z.sum(axis=1)
    np.testing.assert_allclose(
        w, 2 / (np.array([math.comb(3, s) for s in sizes]) * sizes * (3 - sizes))
    )
    # m = 10 with 100 rows: sizes 1 and 9 (20 coalitions) are enumerated, then 80 sampled.
    z, w = shapley_coalitions(10, 100, rng)
    assert z.shape == (100, 10)
    first = z[:20].sum(axis=1)
    np.testing.assert_array_equal(np.sort(first), [1] * 10 + [9] * 10)
    assert set(z[20:].sum(axis=1)) <= set(range(2, 9))
    # The two parts carry their sizes' share of the kernel's mass.
    mass = {s: 9 / (s * (10 - s)) for s in range(1, 10)}
    total = sum(mass.values())
    np.testing.assert_allclose(w[:20].sum(), (mass[1] + mass[9]) / total)
    np.testing.assert_allclose(w.sum(), 1.0)


# ------------------------------------------------------------------------------- RISE


def test_rise_peaks_inside_the_region_the_model_reads():
    size = 24
    region = np.zeros((size, size), bool)
    region[4:10, 13:19] = True
    kernel = np.repeat((region / region.sum())[..., None], 3, axis=-1).reshape(-1, 1) / 3
    inputs = keras.Input((size, size, 3))
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([kernel.astype(np.float32), np.zeros(1, np.float32)])
    image = np.ones((size, size, 3), np.float32)
    heat = kerasviz.rise(model, image, 1, masks=1000, cell=4, probabilities=False, seed=0)
    assert heat.shape == (size, size)
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert region[peak]
    assert heat[region].mean() > heat[~region].mean() + 0.05
    # Far from the region the mask is independent of the score: E[f M] / p = E[f] = p.
    far = np.zeros_like(region)
    far[18:, :6] = True
    np.testing.assert_allclose(heat[far].mean(), 0.5, atol=0.05)


def test_rise_matches_its_definition_on_a_linear_model(linear_model, images):
    """With a logit linear in the pixels, the saliency is E[f(x M) M] / p, computed by hand
    from the same masks (rebuilt here with the documented recipe)."""
    masks, cell, p, seed = 40, 4, 0.5, 7
    heat = kerasviz.rise(
        linear_model, images, 0, masks=masks, cell=cell, p=p, probabilities=False, seed=seed
    )
    rng = np.random.default_rng(seed)
    grid = SIZE // cell + 1
    grids = rng.random((masks, grid, grid)) < p
    shifts = np.stack([rng.integers(0, cell, masks), rng.integers(0, cell, masks)], axis=1)
    up = tf.image.resize(grids[..., None].astype(np.float32), (grid * cell, grid * cell)).numpy()
    crops = np.stack(
        [up[k, dy : dy + SIZE, dx : dx + SIZE, 0] for k, (dy, dx) in enumerate(shifts)]
    )
    expected = []
    for x in images:
        masked = x[None] * crops[..., None]
        logits = linear_model.predict(masked, verbose=0)[:, 0]
        expected.append((logits[:, None, None] * crops).sum(axis=0) / (masks * p))
    np.testing.assert_allclose(heat, np.stack(expected), rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------- any model, seeds, batching


def test_subclassed_model_gives_the_functional_result(linear_model, images):
    sub = Subclassed()
    sub(images)
    sub.dense.set_weights(linear_model.get_layer("logits").get_weights())
    kwargs = {"segments": GRID, "samples": 50, "probabilities": False, "seed": 3}
    for method in (kerasviz.lime, kerasviz.kernel_shap):
        ours, theirs = method(sub, images, 1, **kwargs), method(linear_model, images, 1, **kwargs)
        np.testing.assert_allclose(ours.weights, theirs.weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        kerasviz.rise(sub, images, 1, masks=30, seed=3),
        kerasviz.rise(linear_model, images, 1, masks=30, seed=3),
        rtol=1e-5,
    )


def test_seeds_reproduce_and_batching_does_not_change_results(images):
    model = make_tiny_cnn(size=SIZE, seed=4)
    for method, kwargs in (
        (kerasviz.lime, {"segments": GRID, "samples": 40}),
        (kerasviz.kernel_shap, {"segments": GRID, "samples": 40}),
        (kerasviz.rise, {"masks": 40, "cell": 4}),
    ):
        first = method(model, images, seed=5, batch_size=16, **kwargs)
        again = method(model, images, seed=5, batch_size=16, **kwargs)
        other_chunks = method(model, images, seed=5, batch_size=7, **kwargs)
        other_seed = method(model, images, seed=6, batch_size=16, **kwargs)
        get = (lambda r: r) if method is kerasviz.rise else (lambda r: r.weights)
        np.testing.assert_array_equal(get(first), get(again))
        np.testing.assert_allclose(get(first), get(other_chunks), rtol=1e-4, atol=1e-6)
        assert not np.allclose(get(first), get(other_seed))
        alone = method(model, images[1:], seed=5, batch_size=16, **kwargs)
        np.testing.assert_allclose(get(alone), get(first)[1:], rtol=1e-4, atol=1e-6)


def test_predicted_class_is_held_and_chunks_share_one_compiled_step(images):
    model = make_tiny_cnn(size=SIZE, seed=4)
    predicted = model.predict(images, verbose=0).argmax(axis=1)
    TRACES.clear()
    auto = kerasviz.lime(model, images, segments=GRID, samples=50, seed=2, batch_size=8)
    # 100 rows in 13 chunks: at most a trace for the full chunks and one for the last.
    assert TRACES["coalitions"] <= 2
    explicit = kerasviz.lime(model, images, predicted, segments=GRID, samples=50, seed=2)
    np.testing.assert_allclose(auto.weights, explicit.weights, rtol=1e-5, atol=1e-7)
    TRACES.clear()
    kerasviz.rise(model, images, masks=50, seed=2, batch_size=8)
    assert TRACES["rise"] <= 2


def test_slic_superpixels_on_a_dataset_image():
    images, _, _ = kerasviz.datasets.shapes(2, size=64, seed=0)
    labels, counts = superpixels(images, 20)
    assert labels.shape == (2, 64, 64) and labels.dtype == np.int32
    for label, count in zip(labels, counts, strict=True):
        np.testing.assert_array_equal(np.unique(label), np.arange(count))
        assert 5 <= count <= 40
    result = kerasviz.lime(make_tiny_cnn(size=64, seed=1), images, segments=20, samples=30, seed=0)
    np.testing.assert_array_equal(result.segments, labels)
    # A segmenter function works the same way.
    same, _ = superpixels(images, lambda image: np.asarray(labels[0]))
    np.testing.assert_array_equal(same[1], labels[0])


# ------------------------------------------------------------------------------- bad input


def test_bad_input_errors(linear_model, images):
    with pytest.raises(ValueError, match="`samples`"):
        kerasviz.lime(linear_model, images, segments=GRID, samples=0)
    with pytest.raises(ValueError, match="`samples`"):
        kerasviz.kernel_shap(linear_model, images, segments=GRID, samples=-3)
    with pytest.raises(ValueError, match="`masks`"):
        kerasviz.rise(linear_model, images, masks=0)
    for p in (0, 1, 1.5, -0.2):
        with pytest.raises(ValueError, match="`p`"):
            kerasviz.rise(linear_model, images, masks=4, p=p)
    one = np.zeros((SIZE, SIZE), int)
    for method in (kerasviz.lime, kerasviz.kernel_shap):
        with pytest.raises(ValueError, match="one segment"):
            method(linear_model, images, segments=one, samples=4)
    with pytest.raises(ValueError, match="`segments`"):
        kerasviz.lime(linear_model, images, segments=1)
    with pytest.raises(ValueError, match="`segments`"):
        kerasviz.lime(linear_model, images, segments=np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="`kernel_width`"):
        kerasviz.lime(linear_model, images, segments=GRID, kernel_width=0)
    with pytest.raises(ValueError, match="`baseline`"):
        kerasviz.kernel_shap(linear_model, images, segments=GRID, baseline=np.zeros((5, 5)))
    with pytest.raises(ValueError, match="`cell`"):
        kerasviz.rise(linear_model, images, cell=SIZE + 1)
    a, b = keras.Input((SIZE, SIZE, 3)), keras.Input((4,))
    two = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Flatten()(a)))
    with pytest.raises(ValueError, match="one image input"):
        kerasviz.rise(two, [images, np.zeros((2, 4))], masks=4)
