"""Every metric of kerasviz.metrics against a known answer (issue 14).

Each metric is scored on a perfect map, a random map and a constant map, and on a tiny model
built so that the right answer is known by hand: linear models ``f(x) = w . x`` (the exact local
explanation is ``w``, the exact attribution ``w * x``), a model that reads only the pixels of a
known object, and a conv net whose map depends on one layer's weights only. Batches are scored
in one call and compared per image; bad input raises ValueErrors that name the argument.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasviz
from kerasviz import metrics

SIZE = 10
D = SIZE * SIZE
OBJECT = (slice(3, 7), slice(4, 8))  # a 4x4 object: 16 of 100 pixels


def _mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[OBJECT] = True
    return mask


def _dense_logits(weights: np.ndarray, name: str) -> keras.Model:
    """``logit_0 = sum(weights * x)``, ``logit_1 = 0``, for inputs shaped like ``weights``."""
    model = keras.Sequential(
        [keras.Input(weights.shape), keras.layers.Flatten(), keras.layers.Dense(2, name="logits")],
        name=name,
    )
    kernel = np.zeros((weights.size, 2), np.float32)
    kernel[:, 0] = weights.reshape(-1)
    model.get_layer("logits").set_weights([kernel, np.zeros(2, np.float32)])
    return model


def logit0(logits):
    return logits[:, 0]


def _maps(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Perfect (the object, its ties broken by a tiny ramp), random and constant maps."""
    rng = np.random.default_rng(seed)
    perfect = _mask() + 1e-3 * rng.random((SIZE, SIZE))
    return {
        "perfect": np.repeat(perfect[None], n, axis=0),
        "random": rng.random((n, SIZE, SIZE)),
        "constant": np.full((n, SIZE, SIZE), 0.25),
    }


@pytest.fixture(scope="module")
def object_model() -> keras.Model:
    """Reads only the object's pixels: ``logit_0`` is their sum."""
    return _dense_logits(_mask()[..., None].astype(np.float32), "reads_object")


@pytest.fixture(scope="module")
def linear() -> tuple[keras.Model, np.ndarray]:
    """``f(x) = w . x`` on two channels, with random ``w``."""
    w = np.random.default_rng(1).normal(size=(SIZE, SIZE, 2)).astype(np.float32)
    return _dense_logits(w, "linear"), w


def _conv_net(frozen: bool = False) -> keras.Model:
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(3, 3, padding="same", name="conv1"),
            keras.layers.Conv2D(3, 3, padding="same", name="conv2"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="logits"),
        ],
        name="conv_net",
    )
    model.get_layer("conv1").trainable = not frozen
    return model


@pytest.fixture(scope="module")
def conv_net() -> keras.Model:
    return _conv_net()


# ---------------------------------------------------------------- localization on masks


def test_pointing_energy_and_iou_known_answers():
    mask = _mask()
    masks = np.repeat(mask[None], 3, axis=0)
    maps = _maps(3)
    share = mask.mean()  # 0.16
    # perfect: every score is 1
    np.testing.assert_array_equal(metrics.pointing_game(maps["perfect"], masks), 1.0)
    np.testing.assert_allclose(metrics.energy_pointing_game(mask * 1.0, mask), 1.0)
    assert metrics.iou_at(mask * 1.0, mask, 1 - share) == 1.0
    # constant: the tie over every pixel scores chance, the mask's share, for both games
    np.testing.assert_allclose(metrics.pointing_game(maps["constant"], masks), share)
    np.testing.assert_allclose(metrics.energy_pointing_game(maps["constant"], masks), share)
    # a constant map keeps every pixel at any quantile: IoU = |mask| / |image|
    np.testing.assert_allclose(metrics.iou_at(maps["constant"], masks, 0.84), share)
    # random: by hand, map by map
    random = maps["random"]
    flat = random.reshape(3, -1)
    hits = mask.ravel()[flat.argmax(axis=1)].astype(float)
    np.testing.assert_array_equal(metrics.pointing_game(random, masks), hits)
    energy = (flat * mask.ravel()).sum(1) / flat.sum(1)
    np.testing.assert_allclose(metrics.energy_pointing_game(random, masks), energy, rtol=1e-12)
    top = flat >= np.sort(flat, axis=1)[:, -16:-15]  # the top 16 pixels (no ties in noise)
    iou = (top & mask.ravel()).sum(1) / (top | mask.ravel()).sum(1)
    np.testing.assert_allclose(metrics.iou_at(random, masks, 0.84), iou)
    # one map gives a float equal to its row in the batch
    assert metrics.pointing_game(random[1], mask) == hits[1]
    assert metrics.energy_pointing_game(random[2], mask) == pytest.approx(energy[2])


def test_pointing_game_standard_tolerance_scales_with_the_image():
    # 15 px at 224 px: 9 px at 128, 15 at 224, 4 px at 64 (15 * 64 / 224 = 4.3)
    for size, px in ((224, 15), (128, 9), (64, 4)):
        assert metrics.standard_tolerance((size, size)) == px
        mask = np.zeros((size, size), bool)
        mask[: size // 4, : size // 4] = True
        edge = size // 4 - 1
        for offset, hit in ((px, 1.0), (px + 1, 0.0)):
            m = np.zeros((size, size))
            m[edge, edge + offset] = 1.0  # `offset` px right of the mask
            assert metrics.pointing_game(m, mask, tolerance="standard") == hit
            assert metrics.pointing_game(m, mask, tolerance=px) == hit
            assert metrics.pointing_game(m, mask) == 0.0  # strict


@pytest.mark.parametrize("bad", [-1, -15, "strict", "Standard", "", 1.5, True, None])
def test_pointing_game_bad_tolerance(bad):
    mask = _mask()
    with pytest.raises(ValueError, match="`tolerance`"):
        metrics.pointing_game(mask * 1.0, mask, tolerance=bad)


def test_localization_bad_input():
    mask = _mask()
    maps = np.repeat(mask[None] * 1.0, 2, axis=0)
    masks = np.repeat(mask[None], 2, axis=0)
    for fn in (metrics.pointing_game, metrics.energy_pointing_game):
        with pytest.raises(ValueError, match="`masks` to have the shape of `maps`"):
            fn(maps, masks[:, :, :5])
        with pytest.raises(ValueError, match="`masks` to have the shape of `maps`"):
            fn(maps, masks[:1])  # one mask for two maps
        with pytest.raises(ValueError, match="`maps` to be non-empty"):
            fn(np.zeros((0, SIZE, SIZE)), np.zeros((0, SIZE, SIZE)))
        with pytest.raises(ValueError, match=r"`masks` to contain at least one pixel.*\[1\]"):
            fn(maps, np.stack([mask, ~np.ones_like(mask)]))
        with pytest.raises(ValueError, match=r"`maps` to contain no NaN or Inf.*indices \[0, 1\]"):
            fn(np.where(masks, np.inf, 0.0), masks)
        with pytest.raises(ValueError, match="`masks` to be boolean or numeric"):
            fn(maps[0], np.full((SIZE, SIZE), "x"))
    with pytest.raises(ValueError, match="`masks` to have the shape"):
        metrics.iou_at(maps, masks[:, 1:], 0.5)


# ---------------------------------------------------------------- deletion / insertion


def test_deletion_and_insertion_known_answers(object_model):
    # the object on black, the score the object's sum: 16; steps of 25 pixels
    image = (_mask() * 1.0)[None, ..., None].astype(np.float32)
    images = np.repeat(image, 3, axis=0)
    maps = _maps(1, seed=2)
    stacked = np.concatenate([maps["perfect"], maps["constant"], maps["random"]])
    aucs, curves = metrics.deletion_auc(
        object_model, images, stacked, logit0, steps=4, baseline=0.0, return_curves=True
    )
    # perfect: all 16 object pixels go in the first 25
    np.testing.assert_allclose(curves[0], [16, 0, 0, 0, 0], atol=1e-5)
    # constant: ties go in raster order: rows 0-2 (no object), then rows 2-4 take 8 of its
    # pixels, rows 5-7 the rest
    np.testing.assert_allclose(curves[1], [16, 16, 8, 0, 0], atol=1e-5)
    order = np.argsort(-maps["random"][0].ravel(), kind="stable")
    left = [16 - _mask().ravel()[order[: 25 * k]].sum() for k in range(5)]
    np.testing.assert_allclose(curves[2], left, atol=1e-5)
    np.testing.assert_allclose(aucs, np.trapezoid(curves, dx=0.25, axis=1), rtol=1e-6)
    assert aucs[0] == pytest.approx(2.0)  # 16 * 0.25 / 2: lower is better
    assert aucs[0] < aucs[2] and aucs[0] < aucs[1]
    aucs, curves = metrics.insertion_auc(
        object_model, images, stacked, logit0, steps=4, baseline=0.0, return_curves=True
    )
    np.testing.assert_allclose(curves[0], [0, 16, 16, 16, 16], atol=1e-5)
    np.testing.assert_allclose(curves[1], [0, 0, 8, 16, 16], atol=1e-5)
    assert aucs[0] == pytest.approx(14.0) and aucs[0] > aucs[1] and aucs[0] > aucs[2]


# ---------------------------------------------------------------- every model-scored metric

MODEL_METRICS = {
    "deletion_auc": lambda m, x, maps, **kw: metrics.deletion_auc(
        m, x, maps, logit0, steps=4, **kw
    ),
    "insertion_auc": lambda m, x, maps, **kw: metrics.insertion_auc(
        m, x, maps, logit0, steps=4, baseline=0.0, **kw
    ),
    "average_drop": lambda m, x, maps, **kw: metrics.average_drop(m, x, maps, logit0, **kw),
    "increase_in_confidence": lambda m, x, maps, **kw: metrics.increase_in_confidence(
        m, x, maps, logit0, **kw
    ),
    "infidelity": lambda m, x, maps, **kw: metrics.infidelity(m, x, maps, logit0, samples=4, **kw),
}


@pytest.mark.parametrize("name", sorted(MODEL_METRICS))
def test_model_metrics_batched_and_bad_input(object_model, name):
    fn = MODEL_METRICS[name]
    rng = np.random.default_rng(11)
    images = rng.random((3, SIZE, SIZE, 1)).astype(np.float32)
    maps = rng.random((3, SIZE, SIZE))
    # one call on the batch (in passes of 2 images) equals one call per image
    batched = fn(object_model, images, maps, batch_size=2)
    assert batched.shape == (3,)
    single = [fn(object_model, images[i], maps[i]) for i in range(3)]
    assert all(isinstance(v, float) for v in single)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`maps` to have one value per input pixel"):
        fn(object_model, images, maps[:, :, :-1])
    with pytest.raises(ValueError, match="`maps` to have one value per input pixel"):
        fn(object_model, images, maps[:2])
    with pytest.raises(ValueError, match="`maps` to be non-empty"):
        fn(object_model, images, maps[:0])
    with pytest.raises(ValueError, match="`inputs` to hold at least one image"):
        fn(object_model, images[:0], maps[:0])
    with pytest.raises(ValueError, match="`maps` to contain no NaN or Inf"):
        fn(object_model, images, np.where(maps > 0.5, np.inf, maps))


# ---------------------------------------------------------------- ROAD

FRACTIONS = (0.1, 0.16, 0.3, 0.8)  # one tuple everywhere: one compiled step per order


def test_road_known_answers(object_model):
    mask = _mask()
    black = (mask * 1.0)[None, ..., None].astype(np.float32)  # the object on black
    white = np.ones_like(black)  # a constant image: every imputation gives it back
    images = np.concatenate([black, black, black, white, white])
    maps = _maps(1, seed=4)
    stacked = np.concatenate(
        [maps["perfect"], maps["constant"], maps["random"], maps["perfect"], maps["random"]]
    )
    expected = {
        # MoRF: the perfect map takes the whole object from 16 px on; it is filled from the
        # black around it. Ties (constant map) go in raster order: rows 0-2 spare the object
        # (rows 3-6), rows 0-7 take it all and leave black rows 8-9.
        "morf": [[None, 0, 0, 0], [16, 16, 16, 0], None, [16] * 4, [16] * 4],
        # LeRF: the perfect map removes background only (84 px): the object stays. Ties go
        # from the last pixel back: rows 7-9 spare the object, rows 2-9 take it.
        "lerf": [[16] * 4, [16, 16, 16, 0], None, [16] * 4, [16] * 4],
    }
    scores = {}
    for order, rows in expected.items():
        score, curves = metrics.road(
            object_model,
            images,
            stacked,
            logit0,
            order=order,
            fractions=FRACTIONS,
            noise=0.0,
            return_curves=True,
        )
        for curve, known in zip(curves, rows, strict=True):
            if known is not None:
                known = np.array([np.nan if v is None else v for v in known], float)
                ok = ~np.isnan(known)
                np.testing.assert_allclose(curve[ok], known[ok], atol=1e-3)
        np.testing.assert_allclose(score, curves.mean(axis=1), rtol=1e-12)
        assert np.all((curves >= -1e-3) & (curves <= 16 + 1e-3))
        scores[order] = score
        if order == "morf":
            # at 10% the top 10 of the 16 object pixels go: the 6 left are read, plus what
            # they and the black fill into the hole
            assert 6 < curves[0, 0] < 16
    # MoRF: lower is better; LeRF: higher is better
    assert scores["morf"][0] < scores["morf"][2] and scores["morf"][0] < scores["morf"][1]
    assert scores["lerf"][0] > scores["lerf"][2] and scores["lerf"][0] >= scores["lerf"][1]


def test_road_noise_lands_on_removed_pixels_only(object_model):
    # A constant image is filled back exactly; what changes the read pixels is the noise on
    # the removed ones: at 16% the perfect map removes exactly the object.
    white = np.ones((2, SIZE, SIZE, 1), np.float32)
    maps = _maps(2)["perfect"]
    noise, seed = 0.1, 7
    _, curves = metrics.road(
        object_model,
        white,
        maps,
        logit0,
        fractions=FRACTIONS,
        noise=noise,
        seed=seed,
        return_curves=True,
    )
    draws = noise * tf.random.stateless_normal((len(FRACTIONS), SIZE, SIZE, 1), seed=[seed, 0])
    on_object = draws.numpy()[1, ..., 0][_mask()].sum()
    np.testing.assert_allclose(curves[:, 1], 16 + on_object, atol=1e-3)
    assert abs(on_object) > 1e-2  # the noise is there
    # LeRF at 16% removes background only: the object pixels are read untouched
    _, curves = metrics.road(
        object_model,
        white,
        maps,
        logit0,
        order="lerf",
        fractions=FRACTIONS,
        noise=noise,
        seed=seed,
        return_curves=True,
    )
    np.testing.assert_allclose(curves[:, :2], 16.0, atol=1e-4)


def test_road_bad_input(object_model):
    images = np.zeros((2, SIZE, SIZE, 1), np.float32)
    maps = np.zeros((2, SIZE, SIZE))
    with pytest.raises(ValueError, match="`fractions` to keep at least one"):
        metrics.road(object_model, images, maps, fractions=(0.5, 0.996))
    with pytest.raises(ValueError, match="`fractions`"):
        metrics.road(object_model, images, maps, fractions=(-0.1,))
    with pytest.raises(ValueError, match="`maps`"):
        metrics.road(object_model, images, maps[:1])
    with pytest.raises(ValueError, match="`maps` to contain no NaN or Inf"):
        metrics.road(object_model, images, np.full_like(maps, -np.inf))


# ---------------------------------------------------------------- average drop / increase


def test_average_drop_and_increase_known_answers(object_model):
    mask = _mask()
    black = (mask * 1.0)[None, ..., None].astype(np.float32)
    maps = _maps(1, seed=5)
    images = np.repeat(black, 3, axis=0)
    stacked = np.concatenate([maps["perfect"], maps["random"], maps["constant"]])
    drop = metrics.average_drop(object_model, images, stacked, logit0)
    increase = metrics.increase_in_confidence(object_model, images, stacked, logit0)
    # perfect: the normalized map is 1 on the object (up to 1e-3) and the image is black
    # elsewhere, so the seen image keeps the score: drop 0 (to 1e-3)
    assert drop[0] == pytest.approx(0.0, abs=1e-3)
    # random: O = sum over the object of the normalized map
    r = maps["random"][0]
    kept = ((r - r.min()) / (r.max() - r.min()))[mask].sum()
    assert drop[1] == pytest.approx((16 - kept) / 16, rel=1e-5)
    # constant: nothing is seen, O = 0, the whole score is lost
    assert drop[2] == 1.0
    np.testing.assert_array_equal(increase, [0, 0, 0])
    # an exact perfect map (the mask itself) keeps the score exactly
    assert metrics.average_drop(object_model, black[0], mask * 1.0, logit0) == 0.0
    # with the probability rule: Y = sigmoid(16), O = sigmoid(0) = 1/2 for the constant map
    y = 1 / (1 + np.exp(-16.0))
    got = metrics.average_drop(object_model, black, maps["constant"], [0])
    np.testing.assert_allclose(got, [(y - 0.5) / y], rtol=1e-6)


def test_increase_in_confidence_when_the_map_hides_counter_evidence():
    w = np.full((SIZE, SIZE, 1), -0.1, np.float32)
    w[OBJECT] = 1.0  # the background counts against the class
    model = _dense_logits(w, "counter_evidence")
    image = np.ones((1, SIZE, SIZE, 1), np.float32)  # Y = 16 - 8.4 = 7.6
    perfect = _mask()[None] * 1.0  # hides the background: O = 16
    flipped = 1.0 - perfect  # keeps the background only: O = -8.4
    both = np.concatenate([perfect, flipped])
    images = np.repeat(image, 2, axis=0)
    np.testing.assert_array_equal(
        metrics.increase_in_confidence(model, images, both, logit0), [1, 0]
    )
    drop = metrics.average_drop(model, images, both, logit0)
    np.testing.assert_allclose(drop, [0.0, (7.6 + 8.4) / 7.6], rtol=1e-5)


# ---------------------------------------------------------------- infidelity


def test_infidelity_known_answers(linear):
    model, w = linear
    rng = np.random.default_rng(6)
    images = (0.2 + rng.random((3, SIZE, SIZE, 2))).astype(np.float32)  # no zero pixel
    gradient = np.repeat(w.sum(-1)[None], 3, axis=0)  # the exact local map (channels summed)
    attribution = (w * images).sum(-1)  # the exact attribution w * x
    kw = dict(samples=16, noise=0.1, seed=2)
    # local maps: the gradient scores 0, also unnormalized; its multiple only when normalized
    np.testing.assert_allclose(
        metrics.infidelity(model, images, gradient, logit0, **kw), 0, atol=1e-8
    )
    raw = metrics.infidelity(model, images, gradient, logit0, normalize=False, **kw)
    np.testing.assert_allclose(raw, 0.0, atol=1e-8)
    np.testing.assert_allclose(
        metrics.infidelity(model, images, 5 * gradient, logit0, **kw), 0.0, atol=1e-8
    )
    assert np.all(
        metrics.infidelity(model, images, 5 * gradient, logit0, normalize=False, **kw) > 1
    )
    # attributions multiplied by the inputs: w * x scores 0, from kerasviz's methods too
    both = dict(multiply_by_inputs=True, **kw)
    np.testing.assert_allclose(
        metrics.infidelity(model, images, attribution, logit0, **both), 0.0, atol=1e-8
    )
    ixg = kerasviz.input_x_gradient(model, images, logit0).sum(-1)
    ig = kerasviz.integrated_gradients(model, images, logit0, steps=4).sum(-1)
    np.testing.assert_allclose(ixg, attribution, rtol=1e-5, atol=1e-5)
    for exact in (ixg, ig):
        got = metrics.infidelity(model, images, exact, logit0, normalize=False, **both)
        np.testing.assert_allclose(got, 0.0, atol=1e-7)
    # wrong maps score > 0: each kind in the other's reading, random and constant maps
    assert np.all(metrics.infidelity(model, images, attribution, logit0, **kw) > 1e-3)
    assert np.all(metrics.infidelity(model, images, gradient, logit0, **both) > 1e-3)
    random, constant = rng.random((3, SIZE, SIZE)), np.full((3, SIZE, SIZE), 0.3)
    for m in (random, constant):
        assert np.all(metrics.infidelity(model, images, m, logit0, **kw) > 1e-3)
    # by hand for the constant map, read multiplied by the inputs: z ~ 0.1 N(0, 1) per pixel,
    # dot = 0.3 sum(z), change = sum(z * attribution), beta fitted
    z = 0.1 * tf.random.stateless_normal((16, SIZE, SIZE), seed=[2, 0]).numpy()
    dot = 0.3 * z.sum(axis=(1, 2))[None]
    change = (z[None] * attribution[:, None]).sum(axis=(2, 3))
    beta = (dot * change).mean(1) / (dot**2).mean(1)
    expected = ((beta[:, None] * dot - change) ** 2).mean(1)
    got = metrics.infidelity(model, images, constant, logit0, batch_size=5, **both)
    np.testing.assert_allclose(got, expected, rtol=1e-3)


def test_infidelity_bad_input(linear):
    model, _ = linear
    images = np.ones((2, SIZE, SIZE, 2), np.float32)
    maps = np.ones((2, SIZE, SIZE))
    with pytest.raises(ValueError, match="`multiply_by_inputs`"):
        metrics.infidelity(model, images, maps, multiply_by_inputs="yes")
    with pytest.raises(ValueError, match="`maps`"):
        metrics.infidelity(model, images, maps[:, :-1])
    with pytest.raises(ValueError, match="`maps` to be non-empty"):
        metrics.infidelity(model, images, maps[:0])
    with pytest.raises(ValueError, match="`inputs`"):
        metrics.infidelity(model, images[:0], maps[:0])
    with pytest.raises(ValueError, match="`noise`"):
        metrics.infidelity(model, images, maps, noise=0)


# ---------------------------------------------------------------- max-sensitivity


def test_max_sensitivity_known_answers(linear):
    model, w = linear
    images = np.random.default_rng(7).random((3, SIZE, SIZE, 2)).astype(np.float32)
    targets = [0, 0, 0]
    # the gradient of a linear model is w wherever the input is
    got = metrics.max_sensitivity(kerasviz.saliency, model, images, targets, samples=5)
    np.testing.assert_allclose(got, 0.0, atol=1e-7)

    def constant(model, x, targets):
        return np.full((len(x), SIZE, SIZE), 0.25)

    np.testing.assert_array_equal(metrics.max_sensitivity(constant, model, images, targets), 0)

    # w * x moves with the noise d: the change is w * d, by hand
    def times_input(model, x, targets):
        return kerasviz.input_x_gradient(model, x, targets).sum(-1)

    radius, samples, seed = 0.05, 6, 4
    got = metrics.max_sensitivity(
        times_input, model, images, targets, radius=radius, samples=samples, seed=seed
    )
    unit = tf.random.stateless_uniform(
        (samples, SIZE, SIZE, 2), seed=[seed, 0], minval=-1.0, maxval=1.0
    ).numpy()
    spread = radius * (images.reshape(3, -1).max(1) - images.reshape(3, -1).min(1))
    change = np.sqrt(((w * unit).sum(-1) ** 2).sum(axis=(1, 2))).max()
    norms = np.sqrt(((w * images).sum(-1) ** 2).sum(axis=(1, 2)))
    np.testing.assert_allclose(got, spread * change / norms, rtol=1e-4)

    def random(model, x, targets):  # unrelated to the input: fresh values every call
        return np.random.default_rng(len(x)).random((len(x), SIZE, SIZE))

    assert np.all(metrics.max_sensitivity(random, model, images, targets) > 0.3)
    with pytest.raises(ValueError, match="`inputs`"):
        metrics.max_sensitivity(constant, model, images[:0])
    with pytest.raises(ValueError, match="`samples`"):
        metrics.max_sensitivity(constant, model, images, samples=0)
    with pytest.raises(ValueError, match="`method` to return one map per image"):
        metrics.max_sensitivity(lambda m, x, t: np.zeros((SIZE, SIZE)), model, images)
    with pytest.raises(ValueError, match="`method` to return finite maps"):
        metrics.max_sensitivity(lambda m, x, t: np.full((len(x), 2, 2), np.nan), model, images)


# ---------------------------------------------------------------- sparseness and entropy


def test_sparseness_and_entropy_known_answers():
    # a map with k equal nonzero pixels of n: Gini 1 - k/n, entropy log k; one-hot (k = 1)
    # gives 1 - 1/n and 0, a constant map (k = n) 0 and log n
    rng = np.random.default_rng(8)
    ks = [1, 2, 16, 50, D]
    maps = np.zeros((len(ks), D))
    for row, k in enumerate(ks):
        maps[row, rng.choice(D, k, replace=False)] = -3.0 if row % 2 else 0.7  # |a| counts
    maps = maps.reshape(-1, SIZE, SIZE)
    np.testing.assert_allclose(metrics.sparseness(maps), [1 - k / D for k in ks], atol=1e-12)
    np.testing.assert_allclose(metrics.entropy(maps), np.log(ks), atol=1e-12)
    assert metrics.sparseness(maps[0]) == pytest.approx(1 - 1 / D)  # one map: a float
    assert metrics.entropy(maps[-1]) == pytest.approx(np.log(D))
    # by hand: |a| sorted 1 2 3 4 -> (-3 - 2 + 3 + 12) / (4 * 10); p = a / 10
    a = np.array([[4.0, -1.0], [2.0, 3.0]])
    assert metrics.sparseness(a) == pytest.approx(10 / 40)
    p = np.array([1, 2, 3, 4]) / 10
    assert metrics.entropy(a) == pytest.approx(-(p * np.log(p)).sum())
    # scale does not matter; a perfect map is sparser and simpler than random ones
    assert metrics.sparseness(7 * a) == pytest.approx(metrics.sparseness(a))
    m = _maps(1)
    random = rng.random((64, SIZE, SIZE))
    assert metrics.sparseness(random).mean() == pytest.approx(1 / 3, abs=0.02)  # uniform noise
    assert metrics.sparseness(m["perfect"])[0] > 0.8 > metrics.sparseness(random).max()
    assert metrics.entropy(m["perfect"])[0] < np.log(16) + 0.1 < metrics.entropy(random).min()
    # bad input names the argument
    for fn in (metrics.sparseness, metrics.entropy):
        with pytest.raises(ValueError, match="`maps` to be non-empty"):
            fn(np.zeros((0, SIZE, SIZE)))
        with pytest.raises(ValueError, match="`maps` to contain no NaN or Inf"):
            fn(np.full((SIZE, SIZE), np.inf))


# ---------------------------------------------------------------- cascading randomization


def _conv1_energy(model, x, targets):
    """A map that reads the first conv's features only: no other layer's weights matter."""
    return np.abs(kerasviz.feature_maps(model, x, ["conv1"])["conv1"]).sum(-1)


def _gradient(model, x, targets):
    return kerasviz.saliency(model, x, targets, reduce=None)[..., 0]


def test_cascading_randomization_curve_known_answers(conv_net):
    images = np.random.default_rng(9).random((3, SIZE, SIZE, 1)).astype(np.float32)
    before = [v.copy() for v in conv_net.get_weights()]
    result = metrics.randomization_check(_conv1_energy, conv_net, images, [0, 0, 0], seed=1)
    assert result.layers == ["logits", "conv2", "conv1"]  # cascading from the top
    # the map does not depend on logits' or conv2's weights: similarity exactly 1 there
    np.testing.assert_allclose(result.correlations[:2], 1.0, atol=1e-12)
    np.testing.assert_allclose(result.similarities[:2], 1.0, atol=1e-6)
    assert np.all(result.correlations[2] < 0.9) and np.all(result.similarities[2] < 0.9)
    assert result.curve.shape == (4,)
    np.testing.assert_allclose(result.curve[:3], 1.0)
    assert result.curve[3] == pytest.approx(np.abs(result.correlations[2]).mean())
    # one layer at a time: only the conv1 step moves the map
    independent = metrics.randomization_check(
        _conv1_energy, conv_net, images, [0, 0, 0], order="independent", seed=1
    )
    np.testing.assert_allclose(independent.correlations[:2], 1.0, atol=1e-12)
    np.testing.assert_allclose(independent.correlations[2], result.correlations[2], atol=1e-12)
    # the gradient of this linear network is one random field once every layer is redrawn
    grads = metrics.randomization_check(_gradient, conv_net, images, [0, 0, 0], seed=1)
    assert grads.curve[0] == 1.0 and grads.curve[-1] < 0.3 and grads.passed
    # a map that ignores the model (constant, or the input itself) never moves
    for ignores in (
        lambda model, x, t: np.full((len(x), SIZE, SIZE), 0.5),
        lambda model, x, t: np.asarray(x)[..., 0],
    ):
        flat = metrics.randomization_check(ignores, conv_net, images, [0, 0, 0])
        np.testing.assert_allclose(flat.curve, 1.0)
        assert not flat.passed
    for got, expected in zip(conv_net.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_randomization_reaches_frozen_layers():
    model = _conv_net(frozen=True)
    images = np.random.default_rng(10).random((2, SIZE, SIZE, 1)).astype(np.float32)
    before = [v.copy() for v in model.get_weights()]
    result = metrics.randomization_check(_conv1_energy, model, images, [0, 0], seed=1)
    assert result.layers == ["logits", "conv2", "conv1"]
    np.testing.assert_allclose(result.correlations[:2], 1.0, atol=1e-12)
    assert np.all(result.correlations[2] < 0.9)
    assert not model.get_layer("conv1").trainable  # the user's model keeps its flags
    for got, expected in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_spearman_known_answers_and_bad_input():
    a = np.arange(12.0).reshape(2, 6)
    np.testing.assert_allclose(metrics.spearman(a, a**3), [1, 1])  # any monotone map
    np.testing.assert_allclose(metrics.spearman(a, -a), [-1, -1])
    flat = np.ones((1, 6))
    assert metrics.spearman(flat, 2 * flat)[0] == 1.0  # two blank maps rank alike
    assert metrics.spearman(a[:1], flat)[0] == 0.0  # one ranking against none
    with pytest.raises(ValueError, match="`a` and `b` to have the same shape"):
        metrics.spearman(a[:1], a)
    with pytest.raises(ValueError, match="`a` to be a non-empty batch"):
        metrics.spearman(a[0], a[0])
    with pytest.raises(ValueError, match="`b` to be a non-empty batch"):
        metrics.spearman(a, np.zeros((0, 6)))
    with pytest.raises(ValueError, match="`b` to be finite"):
        metrics.spearman(a, np.full_like(a, np.nan))


def test_randomization_bad_input(conv_net):
    images = np.zeros((2, SIZE, SIZE, 1), np.float32)
    with pytest.raises(ValueError, match="`method` to return one map per image"):
        metrics.randomization_check(lambda m, x, t: np.zeros(len(x)), conv_net, images, [0, 0])
    with pytest.raises(ValueError, match="`method` to return finite maps"):
        metrics.randomization_check(
            lambda m, x, t: np.full((len(x), 2, 2), np.inf), conv_net, images, [0, 0]
        )
    with pytest.raises(ValueError, match="`inputs`"):
        metrics.randomization_check(_gradient, conv_net, images[:0])
    with pytest.raises(ValueError, match="`order`"):
        metrics.randomization_check(_gradient, conv_net, images, order="bottom")
