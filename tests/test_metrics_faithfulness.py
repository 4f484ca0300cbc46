"""Faithfulness, robustness and complexity metrics: known answers for perfect, random and
constant maps, and for models built so that the right answer is known."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg
import tensorflow as tf

import kerasviz
from kerasviz import metrics

SIZE = 12
OBJECT = (slice(4, 8), slice(5, 9))  # a 4x4 object: 16 of 144 pixels


def _linear_model(weights: np.ndarray, channels: int = 1) -> keras.Model:
    """logit_0 = sum(weights * x) (weights broadcast over channels), logit_1 = 0."""
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, channels)),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="logits"),
        ]
    )
    kernel = np.zeros((SIZE * SIZE * channels, 2), np.float32)
    kernel[:, 0] = np.repeat(weights.reshape(-1), channels)
    model.get_layer("logits").set_weights([kernel, np.zeros(2, np.float32)])
    return model


def _object_weights() -> np.ndarray:
    w = np.zeros((SIZE, SIZE), np.float32)
    w[OBJECT] = 1.0
    return w


def logit0(logits):
    return logits[:, 0]


def _maps(n: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    perfect = _object_weights() + 1e-3 * rng.random((SIZE, SIZE))  # the object, ties broken
    return {
        "perfect": np.repeat(perfect[None], n, axis=0),
        "random": rng.random((n, SIZE, SIZE)),
        "constant": np.full((n, SIZE, SIZE), 0.5),
    }


# ---------------------------------------------------------------- noisy linear imputation


def _reference_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Rong et al.'s sparse system, solved directly (scipy): each removed pixel is the weighted
    mean (1/6 direct, 1/12 diagonal) of its neighbours inside the image."""
    h, w, c = image.shape
    index = -np.ones((h, w), int)
    unknown = np.argwhere(removed)
    index[removed] = np.arange(len(unknown))
    rows, cols, vals = [], [], []
    b = np.zeros((len(unknown), c))
    for k, (i, j) in enumerate(unknown):
        total = 0.0
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                a, e = i + di, j + dj
                if (di, dj) == (0, 0) or not (0 <= a < h and 0 <= e < w):
                    continue
                weight = 1 / 12 if di and dj else 1 / 6
                total += weight
                if removed[a, e]:
                    rows.append(k), cols.append(index[a, e]), vals.append(-weight)
                else:
                    b[k] += weight * image[a, e]
        rows.append(k), cols.append(k), vals.append(total)
    system = sparse.csc_matrix((vals, (rows, cols)), shape=(len(unknown),) * 2)
    out = image.astype(np.float64).copy()
    out[removed] = sparse_linalg.spsolve(system, b).reshape(len(unknown), c)
    return out


def test_imputation_solves_rong_et_al_system():
    rng = np.random.default_rng(0)
    images = rng.random((3, 40, 36, 3)).astype(np.float32)
    removed = np.zeros((3, 40, 36), bool)
    removed[0] = rng.random((40, 36)) < 0.5  # scattered
    removed[1, 5:35, 3:30] = True  # one large hole
    removed[2] = True
    removed[2, 39, 35] = False  # a single kept pixel: everything becomes its value
    got = metrics.noisy_linear_imputation(images, removed, noise=0.0)
    for k in range(2):
        expected = _reference_imputation(images[k], removed[k])
        np.testing.assert_allclose(got[k], expected, atol=1e-3)
        np.testing.assert_array_equal(got[k][~removed[k]], images[k][~removed[k]])
    np.testing.assert_allclose(got[2], np.broadcast_to(images[2, 39, 35], (40, 36, 3)), atol=1e-3)


def test_imputation_reproduces_linear_images_and_adds_the_noise():
    yy, xx = np.mgrid[:32, :30].astype(np.float32)
    ramp = np.stack([0.01 * yy + 0.02 * xx, 0.5 - 0.01 * xx], axis=-1)
    removed = np.zeros((32, 30), bool)
    removed[3:29, 4:27] = True
    filled = metrics.noisy_linear_imputation(ramp, removed, noise=0.0)
    np.testing.assert_allclose(filled, ramp, atol=1e-4)  # a linear image is its own mean
    noisy = metrics.noisy_linear_imputation(ramp, removed, noise=0.05, seed=3)
    diff = noisy - ramp
    assert np.all(diff[~removed] == 0)
    assert diff[removed].std() == pytest.approx(0.05, rel=0.05)
    assert abs(diff[removed].mean()) < 0.005
    again = metrics.noisy_linear_imputation(ramp, removed, noise=0.05, seed=3)
    np.testing.assert_array_equal(again, noisy)


def test_imputation_bad_input():
    images = np.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match="`removed`"):
        metrics.noisy_linear_imputation(images, np.zeros((2, 8, 7), bool))
    with pytest.raises(ValueError, match=r"at least one pixel.*\[1\]"):
        metrics.noisy_linear_imputation(images, np.stack([np.eye(8), np.ones((8, 8))]) > 0)
    with pytest.raises(ValueError, match="`images`"):
        metrics.noisy_linear_imputation(np.zeros((0, 8, 8, 1)), np.zeros((0, 8, 8), bool))
    with pytest.raises(ValueError, match="noise"):
        metrics.noisy_linear_imputation(images, np.eye(8)[None].repeat(2, 0) > 0, noise=-1)


# ---------------------------------------------------------------- ROAD


def _reference_road(image, weights, maps, order, fractions):
    """ROAD by hand: the pixels ranked as the map says removed, filled by the direct solve,
    the logit w . x read."""
    h, w = maps.shape
    ranks = np.empty(h * w, int)
    ranks[np.argsort(-maps.ravel(), kind="stable")] = np.arange(h * w)
    ranks = ranks.reshape(h, w)
    curve = []
    for f in fractions:
        k = int(round(f * h * w))
        removed = ranks < k if order == "morf" else ranks >= h * w - k
        filled = _reference_imputation(image, removed) if removed.any() else image
        curve.append(float((filled[..., 0] * weights).sum()))
    return np.array(curve)


@pytest.fixture(scope="module")
def object_model():
    return _linear_model(_object_weights())


def test_road_known_answers(object_model):
    image = _object_weights()[..., None]  # the object on black: logit 16
    fractions = (0.05, 0.1, 0.2, 0.5, 0.8)
    maps = _maps()
    morf, lerf = {}, {}
    for name, m in maps.items():
        for order, store in (("morf", morf), ("lerf", lerf)):
            score, curve = metrics.road(
                object_model,
                image,
                m[0],
                logit0,
                order=order,
                fractions=fractions,
                noise=0.0,
                return_curves=True,
            )
            expected = _reference_road(image, _object_weights(), m[0], order, fractions)
            np.testing.assert_allclose(curve, expected, atol=2e-3)
            assert score == pytest.approx(expected.mean(), abs=2e-3)
            store[name] = score
    # the perfect map removes the whole object from 16 px (11%) on: the hole is filled from
    # the black around it, and the logit is 0
    _, curve = metrics.road(
        object_model,
        image,
        maps["perfect"][0],
        logit0,
        fractions=fractions,
        noise=0.0,
        return_curves=True,
    )
    np.testing.assert_allclose(curve[2:], 0.0, atol=1e-4)
    # least relevant first, it never touches the object: the logit stays 16 up to 1 - 16/144
    _, curve = metrics.road(
        object_model,
        image,
        maps["perfect"][0],
        logit0,
        order="lerf",
        fractions=fractions,
        noise=0.0,
        return_curves=True,
    )
    np.testing.assert_allclose(curve, 16.0, atol=1e-4)
    assert morf["perfect"] < morf["random"] and morf["perfect"] < morf["constant"]
    assert lerf["perfect"] > lerf["random"] and lerf["perfect"] > lerf["constant"]


def test_road_scores_probabilities_in_batches_the_same(object_model):
    rng = np.random.default_rng(1)
    images = rng.random((5, SIZE, SIZE, 1)).astype(np.float32)
    maps = rng.random((5, SIZE, SIZE))
    whole = metrics.road(object_model, images, maps, fractions=(0.3, 0.6), noise=0.02)
    parts = metrics.road(object_model, images, maps, fractions=(0.3, 0.6), noise=0.02, batch_size=3)
    np.testing.assert_allclose(whole, parts, atol=1e-6)
    assert whole.shape == (5,) and np.all((whole > 0) & (whole < 1))  # probabilities
    _, curves = metrics.road(
        object_model, images, maps, 0, fractions=(0.0,), noise=0.0, return_curves=True
    )
    z = (images[..., 0] * _object_weights()).sum(axis=(1, 2))
    np.testing.assert_allclose(curves[:, 0], 1 / (1 + np.exp(-z)), atol=1e-6)  # softmax of [z, 0]


def test_road_bad_input(object_model):
    images = np.zeros((2, SIZE, SIZE, 1), np.float32)
    maps = np.zeros((2, SIZE, SIZE))
    with pytest.raises(ValueError, match="`maps`"):
        metrics.road(object_model, images, maps[:, :5])
    with pytest.raises(ValueError, match="`order`"):
        metrics.road(object_model, images, maps, order="both")
    with pytest.raises(ValueError, match="`fractions`"):
        metrics.road(object_model, images, maps, fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match="`fractions`"):
        metrics.road(object_model, images, maps, fractions=())
    with pytest.raises(ValueError, match="`maps`"):
        metrics.road(object_model, images, np.zeros((0, SIZE, SIZE)))


# ---------------------------------------------------------------- average drop / increase


def _sigmoid(z):
    return 1 / (1 + np.exp(-np.asarray(z, np.float64)))


def test_average_drop_and_increase_known_answers():
    w = np.full((SIZE, SIZE), -0.05, np.float32)
    w[OBJECT] = 1.0  # the object counts for the class, the background against it
    model = _linear_model(w)
    image = np.ones((1, SIZE, SIZE, 1), np.float32)
    maps = _maps()
    for name, m in maps.items():
        normalized = (m[0] - m[0].min()) / (m[0].max() - m[0].min()) if name != "constant" else 0
        y = _sigmoid((w * image[0, ..., 0]).sum())
        o = _sigmoid((w * image[0, ..., 0] * normalized).sum())
        drop = metrics.average_drop(model, image, m, [0])
        increase = metrics.increase_in_confidence(model, image, m, [0])
        np.testing.assert_allclose(drop, [max(0.0, y - o) / y], rtol=1e-5)
        np.testing.assert_array_equal(increase, [float(o > y)])
    # the perfect map keeps the object and drops the background: confidence rises
    assert metrics.increase_in_confidence(model, image[0], maps["perfect"][0], 0) == 1.0
    assert metrics.average_drop(model, image[0], maps["perfect"][0], 0) == 0.0
    # a constant map shows nothing: the image goes black and the logit to 0
    drop = metrics.average_drop(model, image, maps["constant"], [0])
    y = _sigmoid((w * image[0, ..., 0]).sum())
    np.testing.assert_allclose(drop, [max(0.0, y - 0.5) / y], rtol=1e-6)


def test_average_drop_on_positive_evidence_is_the_lost_share():
    model = _linear_model(_object_weights())
    rng = np.random.default_rng(2)
    images = rng.random((4, SIZE, SIZE, 1)).astype(np.float32)
    maps = rng.random((4, SIZE, SIZE))
    drop = metrics.average_drop(model, images, maps, logit0, batch_size=3)
    lo = maps.reshape(4, -1).min(1)[:, None, None]
    hi = maps.reshape(4, -1).max(1)[:, None, None]
    kept = ((images[..., 0] * (maps - lo) / (hi - lo)) * _object_weights()).sum(axis=(1, 2))
    y = (images[..., 0] * _object_weights()).sum(axis=(1, 2))
    np.testing.assert_allclose(drop, (y - kept) / y, rtol=1e-5)


# ---------------------------------------------------------------- infidelity


def test_infidelity_known_answers():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(SIZE, SIZE)).astype(np.float32)
    model = _linear_model(w, channels=2)
    images = rng.random((3, SIZE, SIZE, 2)).astype(np.float32)
    samples, noise, seed = 16, 0.2, 5
    # f = w . x summed over channels; the perturbation is one value per pixel on both
    # channels, so the exact linear explanation is 2 w
    perfect = np.repeat(2 * w[None], 3, axis=0)
    for normalize in (True, False):
        got = metrics.infidelity(
            model,
            images,
            perfect,
            logit0,
            samples=samples,
            noise=noise,
            seed=seed,
            normalize=normalize,
        )
        np.testing.assert_allclose(got, 0.0, atol=1e-6)
    draws = tf.random.stateless_normal((samples, SIZE, SIZE), seed=[seed, 0]).numpy()
    spreads = noise * (images.reshape(3, -1).max(1) - images.reshape(3, -1).min(1))
    for m in (rng.random((3, SIZE, SIZE)), np.full((3, SIZE, SIZE), 0.3)):  # random, constant
        perturbation = draws[None] * spreads[:, None, None, None]  # (n, samples, h, w)
        dot = (perturbation * m[:, None]).sum(axis=(2, 3))
        delta = (perturbation * 2 * w).sum(axis=(2, 3))
        beta = (dot * delta).mean(1) / (dot**2).mean(1)
        expected = ((beta[:, None] * dot - delta) ** 2).mean(1)
        got = metrics.infidelity(
            model, images, m, logit0, samples=samples, noise=noise, seed=seed, batch_size=7
        )
        np.testing.assert_allclose(got, expected, rtol=1e-3)
        assert np.all(got > 1e-3)
        raw = metrics.infidelity(
            model, images, m, logit0, samples=samples, noise=noise, seed=seed, normalize=False
        )
        np.testing.assert_allclose(raw, ((dot - delta) ** 2).mean(1), rtol=1e-3)


def test_infidelity_bad_input(object_model):
    images = np.zeros((2, SIZE, SIZE, 1), np.float32)
    with pytest.raises(ValueError, match="`maps`"):
        metrics.infidelity(object_model, images, np.zeros((3, SIZE, SIZE)))
    with pytest.raises(ValueError, match="samples"):
        metrics.infidelity(object_model, images, np.zeros((2, SIZE, SIZE)), samples=0)


# ---------------------------------------------------------------- max-sensitivity


def test_max_sensitivity_known_answers():
    w = np.random.default_rng(4).normal(size=(SIZE, SIZE)).astype(np.float32)
    model = _linear_model(w)
    images = np.random.default_rng(5).random((3, SIZE, SIZE, 1)).astype(np.float32)
    # saliency of a linear model is its weights wherever the input is: 0
    got = metrics.max_sensitivity(kerasviz.saliency, model, images, [0, 0, 0], samples=4)
    np.testing.assert_allclose(got, 0.0, atol=1e-6)
    calls = []

    def scaled_input(model, x, targets):  # the map is 3x the image: it moves with the noise
        calls.append(len(x))
        return 3.0 * np.asarray(x)[..., 0]

    radius, samples, seed = 0.05, 6, 2
    got = metrics.max_sensitivity(
        scaled_input,
        model,
        images,
        [0, 0, 0],
        radius=radius,
        samples=samples,
        seed=seed,
        batch_size=2,
    )
    assert calls == [2, 12, 1, 6]  # one call per chunk of images, all copies at once
    unit = tf.random.stateless_uniform(
        (samples, SIZE, SIZE, 1), seed=[seed, 0], minval=-1.0, maxval=1.0
    ).numpy()[..., 0]
    spread = radius * (images.reshape(3, -1).max(1) - images.reshape(3, -1).min(1))
    norms = np.sqrt((unit**2).sum(axis=(1, 2))).max()
    expected = 3 * spread * norms / np.sqrt(((3 * images[..., 0]) ** 2).sum(axis=(1, 2)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    raw = metrics.max_sensitivity(
        scaled_input,
        model,
        images,
        [0, 0, 0],
        radius=radius,
        samples=samples,
        seed=seed,
        normalize=False,
    )
    np.testing.assert_allclose(raw, 3 * spread * norms, rtol=1e-5)

    def constant(model, x, targets):
        return np.full((len(x), SIZE, SIZE), 0.5)

    assert np.all(metrics.max_sensitivity(constant, model, images, [0, 0, 0]) == 0.0)

    def random(model, x, targets):  # a map unrelated to the input: new values every call
        return np.random.default_rng(len(x)).random((len(x), SIZE, SIZE))

    assert np.all(metrics.max_sensitivity(random, model, images, [0, 0, 0]) > 0.3)


def test_max_sensitivity_holds_the_predicted_class(gap_model):
    images = np.random.default_rng(6).random((2, 16, 16, 3)).astype(np.float32)
    seen = []

    def method(model, x, targets):
        seen.append(np.asarray(targets))
        return kerasviz.grad_cam(model, x, targets)

    metrics.max_sensitivity(method, gap_model, images, samples=3)
    predicted = gap_model.predict(images, verbose=0).argmax(-1)
    np.testing.assert_array_equal(seen[0], predicted)
    np.testing.assert_array_equal(seen[1], np.repeat(predicted, 3))
    with pytest.raises(ValueError, match="`method`"):
        metrics.max_sensitivity("grad_cam", gap_model, images)
    with pytest.raises(ValueError, match="radius"):
        metrics.max_sensitivity(method, gap_model, images, radius=0)


# ---------------------------------------------------------------- complexity


def test_sparseness_and_entropy_known_answers():
    d = SIZE * SIZE
    one_hot = np.zeros((SIZE, SIZE))
    one_hot[3, 4] = -2.0  # absolute values count
    assert metrics.sparseness(one_hot) == pytest.approx((d - 1) / d)
    assert metrics.entropy(one_hot) == pytest.approx(0.0)
    constant = np.full((2, SIZE, SIZE), 0.7)
    np.testing.assert_allclose(metrics.sparseness(constant), 0.0, atol=1e-12)
    np.testing.assert_allclose(metrics.entropy(constant), np.log(d))
    zero = np.zeros((SIZE, SIZE))
    assert metrics.sparseness(zero) == 0.0 and metrics.entropy(zero) == pytest.approx(np.log(d))
    # by hand: |a| = 0 1 2 3 -> Gini (-1 + 2 + 9) / (4 * 6); p = 0 1/6 2/6 3/6
    a = np.array([[3.0, 0.0], [-1.0, 2.0]])
    assert metrics.sparseness(a) == pytest.approx(10 / 24)
    p = np.array([1, 2, 3]) / 6
    assert metrics.entropy(a) == pytest.approx(-(p * np.log(p)).sum())
    # uniform noise: Gini 1/3 in expectation
    noise = np.random.default_rng(8).random((4, 128, 128))
    assert metrics.sparseness(noise).mean() == pytest.approx(1 / 3, abs=0.005)
    perfect = _maps()["perfect"]
    assert metrics.sparseness(perfect)[0] > metrics.sparseness(noise).max()
    assert metrics.entropy(perfect)[0] < np.log(d) - 1
    with pytest.raises(ValueError, match="`maps`"):
        metrics.sparseness(np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="`maps`"):
        metrics.entropy(np.zeros(5))


# ---------------------------------------------------------------- cascading randomization


def test_cascading_randomization_curve_known_answers():
    rng = np.random.default_rng(9)
    w = rng.normal(size=(SIZE, SIZE)).astype(np.float32)
    model = _linear_model(w)
    images = rng.random((2, SIZE, SIZE, 1)).astype(np.float32)

    def saliency_map(model, x, targets):
        return kerasviz.saliency(model, x, targets, reduce=None)[..., 0]

    result = metrics.randomization_check(saliency_map, model, images, [0, 0], seed=11)
    # the only layer's kernel is redrawn with its own mean and std, the zero bias kept
    kernel = model.get_layer("logits").get_weights()[0]
    fresh = np.random.default_rng(11).normal(kernel.mean(), kernel.std(), kernel.shape)
    expected = metrics.spearman(kernel[None, :, 0], fresh[None, :, 0])[0]
    assert result.layers == ["logits"]
    np.testing.assert_allclose(result.correlations, [[expected, expected]], atol=1e-6)
    np.testing.assert_allclose(result.curve, [1.0, abs(expected)], atol=1e-6)
    np.testing.assert_allclose(result.scores, [abs(expected)] * 2, atol=1e-6)
    assert result.similarities.shape == (1, 2) and np.all(result.similarities < 0.5)

    def edges(model, x, targets):  # ignores the model: the curve never falls
        x = np.asarray(x)[..., 0]
        return np.abs(np.diff(x, axis=1, prepend=0.0)) + np.abs(np.diff(x, axis=2, prepend=0.0))

    flat = metrics.randomization_check(edges, model, images, [0, 0])
    np.testing.assert_allclose(flat.curve, [1.0, 1.0])
    np.testing.assert_allclose(flat.scores, 1.0)
    np.testing.assert_allclose(flat.similarities, 1.0, atol=1e-6)
    assert not flat.passed
