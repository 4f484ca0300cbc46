"""Input-space optimization: objectives, the compiled loop, patterns, dreams, inversion, attacks."""

from __future__ import annotations

import hashlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasviz
from kerasviz import optimize as opt
from kerasviz._probe import TRACES
from kerasviz.optimize.params import FOURIER, PIXEL
from kerasviz.optimize.transforms import apply_transforms

# ---------------------------------------------------------------- a small trained model

SIZE = 16
OFF = {"transforms": (), "regularizers": ()}


def stripes(n: int, seed: int = 0, amp: float = 0.25):
    """Horizontal stripes (0), vertical stripes (1) or a soft blob (2), random colour and phase."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    phase = rng.integers(0, 4, n)[:, None, None]
    horizontal = ((yy[None] + phase) // 2) % 2
    vertical = ((xx[None] + phase) // 2) % 2
    cy, cx = rng.uniform(4, SIZE - 4, (2, n))[:, :, None, None]
    blob = np.exp(-((yy[None] - cy) ** 2 + (xx[None] - cx) ** 2) / 8.0)
    label = y[:, None, None]
    pattern = np.where(label == 0, horizontal, np.where(label == 1, vertical, blob))
    colour = rng.uniform(0.5, 1.0, (n, 1, 1, 3))
    x = 0.35 + amp * pattern[..., None] * colour + rng.normal(0, 0.05, (n, SIZE, SIZE, 3))
    return np.clip(x, 0, 1).astype(np.float32), y


@pytest.fixture(scope="module")
def trained():
    """A 3-conv classifier that reaches ~100% on the stripes in a few seconds.

    ``c1`` and ``c2`` are linear convolutions followed by separate ReLU layers, so their
    channels (pre-activations) are never dead.
    """
    x, y = stripes(600)
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            layers.Conv2D(8, 3, padding="same", name="c1"),
            layers.ReLU(name="r1"),
            layers.MaxPooling2D(2, name="p1"),
            layers.Conv2D(16, 3, padding="same", name="c2"),
            layers.ReLU(name="r2"),
            layers.MaxPooling2D(2, name="p2"),
            layers.Conv2D(16, 3, padding="same", activation="relu", name="c3"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(3, activation="softmax", name="probs"),
        ],
        name="stripes_cnn",
    )
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    x_test, y_test = stripes(60, seed=1)
    accuracy = np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test)
    assert accuracy >= 0.95
    return model, x_test, y_test


def predict(model, images):
    return model.predict(images, verbose=0).argmax(axis=1)


def weights_hash(model) -> str:
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- objectives


def test_objective_values_match_hand_computation(trained):
    model, x, _ = trained
    images = x[:4]
    maps = kerasviz.feature_maps(model, images, ["c1", "c2", "c3"])
    c2 = maps["c2"]
    dense = model.get_layer("probs")
    logits = maps["c3"].mean(axis=(1, 2)) @ dense.kernel.numpy() + dense.bias.numpy()
    vector = np.linspace(-1, 1, 16).astype(np.float32)
    objectives = [
        kerasviz.channel("c2", 5),
        kerasviz.neuron("c2", 3),  # centre of the 8x8 map: (4, 4)
        kerasviz.neuron("c1", 2, position=(1, 14)),
        kerasviz.logit(2),
    ]
    got = kerasviz.score_objectives(model, objectives, images)
    expected = [
        c2[0, :, :, 5].mean(),
        c2[1, 4, 4, 3],
        maps["c1"][2, 1, 14, 2],
        logits[3, 2],
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    combos = [
        0.5 * kerasviz.layer_norm("c1") + kerasviz.direction("c2", vector),
        kerasviz.channel("c2", 1) - kerasviz.neuron("c2", 1, (0, 7)) / 4,
        -kerasviz.logit(0),
        sum([kerasviz.channel("c3", k) for k in range(3)]),
    ]
    got = kerasviz.score_objectives(model, combos, images)
    expected = [
        0.5 * np.mean(maps["c1"][0] ** 2) + (c2[0] @ vector).mean(),
        c2[1, :, :, 1].mean() - c2[1, 0, 7, 1] / 4,
        -logits[2, 0],
        maps["c3"][3, :, :, :3].mean(axis=(0, 1)).sum(),
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert "0.5 * layer_norm('c1')" in repr(combos[0])


def test_every_objective_rises(trained):
    model, x, _ = trained
    vector = np.random.default_rng(0).normal(size=16).astype(np.float32)
    objectives = [
        kerasviz.channel("c2", 4),
        kerasviz.neuron("c2", 7),
        kerasviz.logit(1),
        kerasviz.layer_norm("c1"),
        kerasviz.direction("c2", vector),
        0.5 * kerasviz.channel("c1", 0) + kerasviz.neuron("c3", 2, (1, 1)),
    ]
    start = np.broadcast_to(x[2], (6, SIZE, SIZE, 3))
    for kwargs in (
        {"parametrization": "pixel", **OFF},
        {"parametrization": "fourier"},  # default transforms and regularizers
        {"optimizer": "normalized", **OFF},
    ):
        result = kerasviz.maximize(model, objectives, steps=20, start=start, **kwargs)
        before = kerasviz.score_objectives(model, objectives, start)
        after = kerasviz.score_objectives(model, objectives, result.images)
        assert result.images.shape == (6, SIZE, SIZE, 3) and result.history.shape == (6, 20)
        assert np.all(after > before + 1e-3), (kwargs, before, after)
        assert np.all(result.history[:, -1] > result.history[:, 0]), kwargs
        assert result.images.min() >= 0.0 and result.images.max() <= 1.0


def test_batched_rows_equal_rows_one_at_a_time(trained):
    model, _, _ = trained
    objectives = [kerasviz.channel("c2", k) for k in (0, 3, 9, 12)]
    kwargs = {"steps": 12, "start": "noise", "seed": 7}  # default transforms + regularizers
    batched = kerasviz.maximize(model, objectives, **kwargs)
    chunked = kerasviz.maximize(model, objectives, batch_size=3, **kwargs)
    np.testing.assert_allclose(chunked.images, batched.images, atol=2e-4)
    for i, objective in enumerate(objectives):
        alone = kerasviz.maximize(model, [objective], **kwargs)
        np.testing.assert_allclose(alone.images[0], batched.images[i], atol=2e-4)
        np.testing.assert_allclose(alone.history[0], batched.history[i], rtol=1e-4, atol=1e-5)


def test_seeded_reproducible_traced_once_and_model_unchanged(trained):
    model, x, _ = trained
    before = weights_hash(model)
    objectives = [kerasviz.channel("c1", k) for k in range(5)]
    kwargs = {"steps": 8, "start": "noise", "parametrization": "fourier"}
    first = kerasviz.maximize(model, objectives, seed=1, **kwargs)
    traces = TRACES["maximize"]
    again = kerasviz.maximize(model, objectives, seed=1, **kwargs)
    other = kerasviz.maximize(model, objectives[::-1], seed=2, **kwargs)
    assert TRACES["maximize"] == traces  # same structure: no new trace
    np.testing.assert_array_equal(first.images, again.images)
    assert np.abs(first.images[0] - other.images[4]).max() > 1e-3  # the seed matters
    kerasviz.invert(model, x[0], "c2", steps=3)
    kerasviz.fgsm(model, x[:2], epsilon=0.05)
    kerasviz.pgd(model, x[:2], epsilon=0.05, steps=2)
    kerasviz.deep_dream(model, x[0], "c2", octaves=2, steps_per_octave=2)
    assert weights_hash(model) == before
    assert model.get_layer("probs").activation.__name__ == "softmax"


# ---------------------------------------------------------------- receptive field


def test_neuron_changes_only_pixels_inside_its_receptive_field(trained):
    model, _, _ = trained
    rf = kerasviz.receptive_field(model, "c2")
    for position in ((4, 4), (0, 6)):
        result = kerasviz.maximize(
            model,
            kerasviz.neuron("c2", 5, position=position),
            steps=10,
            start="gray",
            parametrization="pixel",
            **OFF,
        )
        image = result.images[0]
        top, left, bottom, right = rf.box(*position)
        inside = np.zeros(image.shape[:2], bool)
        inside[top:bottom, left:right] = True
        changed = np.any(image != 0.5, axis=-1)
        assert not np.any(changed & ~inside)  # exactly gray outside the box
        assert changed[inside].sum() >= 4
        crop = kerasviz.crop_to_receptive_field(image, rf, position)
        assert crop.shape == (bottom - top, right - left, 3)
        assert np.any(crop != 0.5)
    centre = kerasviz.crop_to_receptive_field(np.zeros((SIZE, SIZE, 3)), rf)
    assert centre.shape[:2] == (
        rf.box(4, 4)[2] - rf.box(4, 4)[0],
        rf.box(4, 4)[3] - rf.box(4, 4)[1],
    )


# ---------------------------------------------------------------- what the patterns show


def test_channel_patterns_are_selective(trained):
    model, _, _ = trained
    patterns = kerasviz.filter_patterns(model, "c2", steps=48, start="noise")
    assert patterns.shape == (16, SIZE, SIZE, 3)
    means = kerasviz.feature_maps(model, patterns, ["c2"])["c2"].mean(axis=(1, 2))  # (16, 16)
    own = np.diag(means)
    others = (means.sum(axis=0) - own) / 15
    assert np.mean(own > others) >= 0.9, (own, others)


def test_class_dreaming_flips_the_prediction(trained):
    model, x, y = trained
    photos = x[:3]
    assert np.array_equal(predict(model, photos), y[:3])
    targets = (y[:3] + 1) % 3
    dreams = kerasviz.maximize(
        model, [kerasviz.logit(int(t)) for t in targets], start=photos, steps=30
    ).images
    np.testing.assert_array_equal(predict(model, dreams), targets)


def test_deep_dream_with_octaves_raises_the_layer_norm(trained):
    model, x, _ = trained
    objective = kerasviz.layer_norm("c2")
    before = kerasviz.score_objectives(model, objective, x[:2])
    dream = kerasviz.deep_dream(model, x[:2], "c2", octaves=3, steps_per_octave=8)
    assert dream.shape == x[:2].shape
    assert np.all(kerasviz.score_objectives(model, objective, dream) > 1.5 * before)
    # A model that accepts any size runs each octave at its own size.
    keras.utils.set_random_seed(3)
    inputs = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="a")(inputs)
    h = keras.layers.Conv2D(6, 3, activation="relu", name="b")(h)
    free = keras.Model(inputs, h)
    photo = np.random.default_rng(0).uniform(0.2, 0.8, (21, 27, 3)).astype(np.float32)
    single = kerasviz.deep_dream(free, photo, {"a": 1.0, "b": 0.5}, octaves=3, steps_per_octave=6)
    assert single.shape == photo.shape
    both = 1.0 * kerasviz.layer_norm("a") + 0.5 * kerasviz.layer_norm("b")
    assert kerasviz.score_objectives(free, both, single) > kerasviz.score_objectives(
        free, both, photo
    )


def test_filter_patterns_make_the_8x8_grid(tmp_path):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(80, 3, name="wide")])
    patterns = kerasviz.filter_patterns(model, "wide", steps=4)
    assert patterns.shape == (64, 12, 12, 3)
    after = kerasviz.score_objectives(
        model, [kerasviz.channel("wide", k) for k in range(64)], patterns
    )
    gray = kerasviz.score_objectives(model, kerasviz.channel("wide", 0), np.full((12, 12, 3), 0.5))
    assert after[0] > gray
    grid = kerasviz.plot.image_grid(patterns, cols=8, margin=5)
    assert grid.shape == (8 * 12 + 7 * 5, 8 * 12 + 7 * 5, 3)
    path = kerasviz.plot.save(grid, tmp_path / "filters.png")
    assert path.stat().st_size > 0


# ---------------------------------------------------------------- inversion


def test_inversion_is_less_similar_from_deeper_layers(trained):
    model, x, _ = trained
    images = x[:4]
    scores = {}
    for layer in ("c1", "c2", "c3"):
        result = kerasviz.invert(model, images, layer, steps=120)
        assert result.history[:, -1].max() < 0.5 * result.history[:, 0].min()
        scores[layer] = kerasviz.metrics.ssim(result.images, images)
    assert scores["c1"].mean() > 0.85
    assert scores["c1"].mean() > scores["c2"].mean() + 0.1
    assert scores["c2"].mean() > scores["c3"].mean() + 0.1
    assert np.all(scores["c1"] > scores["c3"])


def test_inversion_of_one_image_with_snapshots(trained):
    model, x, _ = trained
    seen = []
    result = kerasviz.invert(
        model, x[5], "c1", steps=20, snapshot_every=10, callback=lambda s, im, r: seen.append(s)
    )
    assert result.images.shape == (SIZE, SIZE, 3)
    assert result.snapshots.shape == (2, SIZE, SIZE, 3) and result.snapshot_steps == (10, 20)
    np.testing.assert_array_equal(result.snapshots[-1], result.images)
    assert seen == [10, 20]
    psnr = kerasviz.metrics.psnr(result.snapshots, np.stack([x[5]] * 2))
    assert psnr[1] > psnr[0]


# ---------------------------------------------------------------- adversarial


def test_fgsm_and_pgd_change_predictions_within_epsilon(trained):
    model, x, y = trained
    eps = 0.05
    clean = predict(model, x)
    assert np.mean(clean == y) >= 0.95
    fast = kerasviz.fgsm(model, x, epsilon=eps, batch_size=25)
    strong = kerasviz.pgd(model, x, epsilon=eps, steps=10, batch_size=25)
    for adv in (fast, strong):
        assert np.abs(adv - x).max() <= eps + 1e-6
        assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert np.mean(predict(model, fast) != clean) >= 0.3
    assert np.mean(predict(model, strong) != clean) >= 0.6
    assert np.mean(predict(model, strong) != clean) >= np.mean(predict(model, fast) != clean)
    # Chunking does not change PGD (its random start is drawn per image).
    np.testing.assert_allclose(kerasviz.pgd(model, x, epsilon=eps, steps=10), strong, atol=1e-6)
    # Targeted: every image steered towards class (label + 1) % 3.
    targets = (y + 1) % 3
    steered = kerasviz.pgd(model, x, targets, epsilon=0.1, steps=20, targeted=True)
    assert np.mean(predict(model, steered) == targets) >= 0.8
    assert np.abs(steered - x).max() <= 0.1 + 1e-6
    one = kerasviz.fgsm(model, x[0], epsilon=eps)
    np.testing.assert_allclose(one, fast[0], atol=1e-6)


# ---------------------------------------------------------------- building blocks


def test_transforms_are_exact_and_seeded():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((2, 9, 9, 3)), tf.float32)
    seed = tf.constant(5, tf.int64)
    step = tf.constant(0)
    same = apply_transforms(
        (opt.scale([1.0]), opt.rotate([0.0]), opt.jitter(0)), images, seed, step
    )
    np.testing.assert_allclose(same, images, atol=1e-6)
    turned = apply_transforms((opt.rotate([90.0]),), images, seed, step).numpy()
    np.testing.assert_allclose(turned, np.rot90(images.numpy(), k=1, axes=(1, 2)), atol=1e-5)
    shifted = apply_transforms((opt.jitter(2),), images, seed, step).numpy()
    matches = [
        (dy, dx)
        for dy in range(-2, 3)
        for dx in range(-2, 3)
        if np.allclose(shifted[:, 2:-2, 2:-2], images.numpy()[:, 2 - dy : 7 - dy, 2 - dx : 7 - dx])
    ]
    assert len(matches) == 1
    again = apply_transforms((opt.jitter(2),), images, seed, step).numpy()
    np.testing.assert_array_equal(again, shifted)
    padded = apply_transforms((opt.pad(3, value=0.25),), images, seed, step)
    np.testing.assert_array_equal(padded, images)  # cropped back: pad alone changes nothing
    zoom = apply_transforms((opt.pad(2, value=0.25), opt.scale([0.5])), images, seed, step)
    assert zoom.shape == images.shape and np.isclose(zoom.numpy()[0, 0, 0, 0], 0.25)
    assert np.isclose(zoom.numpy()[0, 4, 4, 0], images.numpy()[0, 4, 4, 0])


def test_regularizers_by_hand():
    image = np.zeros((1, 4, 4, 1), np.float32)
    image[0, :, 2:] = 1.0  # one vertical edge
    x = tf.constant(image)
    # mean over the (3, 3) grid of forward differences: one column of dx = 1.
    assert np.isclose(opt.total_variation(2.0)(x).numpy()[0], 2.0 * 3 / 9)
    assert np.isclose(opt.total_variation(1.0, beta=1.0)(x).numpy()[0], 3 / 9, atol=1e-4)
    assert np.isclose(opt.l2(0.5)(x).numpy()[0], 0.5)  # |2x - 1| = 1 everywhere
    gray = tf.fill([1, 4, 4, 1], 0.5)
    assert opt.alpha_norm(6, 1.0)(gray).numpy()[0] < 1e-12
    assert opt.blur(1.0, sigma=1.0)(gray).numpy()[0] < 1e-12
    assert opt.blur(1.0, sigma=1.0)(x).numpy()[0] > 0.01


def test_parametrizations_round_trip_and_gray():
    rng = np.random.default_rng(0)
    unit = rng.uniform(0.05, 0.95, (2, 9, 7, 3)).astype(np.float32)
    for param in (PIXEL, FOURIER):
        back = param.to_unit(tf.constant(param.from_unit(unit)), 9, 7, 3).numpy()
        np.testing.assert_allclose(back, unit, atol=1e-5)
        gray = param.to_unit(tf.constant(param.from_unit(np.full((1, 9, 7, 3), 0.5))), 9, 7, 3)
        np.testing.assert_allclose(gray, 0.5, atol=1e-6)
    # The Fourier scale gives low frequencies most of the energy.
    noise = FOURIER.to_unit(tf.constant(rng.normal(0, 1, (1, 3, 32, 17, 2)), tf.float32), 32, 32, 3)
    spectrum = np.abs(np.fft.rfft2(noise.numpy()[0, :, :, 0]))
    assert spectrum[1:4, 1:4].mean() > 5 * spectrum[12:16, 12:16].mean()


def test_options_value_range_size_optimizers_and_progress(trained, capsys):
    model, x, _ = trained
    objective = [kerasviz.channel("c2", 2), kerasviz.channel("c2", 6)]
    sgd = keras.optimizers.SGD(learning_rate=0.5)
    result = kerasviz.maximize(model, objective, steps=6, optimizer=sgd, **OFF)
    assert not sgd.built and int(sgd.iterations.numpy()) == 0
    assert np.all(result.history[:, -1] > result.history[:, 0])
    # A 0..255 model sees gray as 127.5 and gets images in its range.
    scaled = kerasviz.maximize(
        model, objective, steps=3, value_range=(0, 255), size=(8, 8), snapshot_every=1, **OFF
    )
    assert scaled.images.shape == (2, 8, 8, 3) and scaled.snapshots.shape == (2, 3, 8, 8, 3)
    assert scaled.images.max() <= 255 and scaled.images.min() >= 0
    assert scaled.history.shape == (2, 3)
    kerasviz.maximize(model, objective, steps=4, progress=True, **OFF)
    assert "4/4" in capsys.readouterr().out
    assert np.asarray(result).shape == (2, SIZE, SIZE, 3)


def test_nested_model_layers_and_logits(nested_model):
    objectives = [
        kerasviz.channel("backbone/b_conv3", 1),
        kerasviz.neuron("b_bn1", 2, (3, 30)),
        kerasviz.logit(0),
    ]
    start = np.random.default_rng(0).uniform(0.2, 0.8, (3, 32, 32, 3)).astype(np.float32)
    before = kerasviz.score_objectives(nested_model, objectives, start)
    result = kerasviz.maximize(nested_model, objectives, steps=5, start=start, **OFF)
    after = kerasviz.score_objectives(nested_model, objectives, result.images)
    assert np.all(after > before)


# ---------------------------------------------------------------- bad input


def test_bad_inputs_are_rejected_with_clear_errors(trained):
    model, x, _ = trained
    with pytest.raises(ValueError, match="'c2x'.*Closest valid names"):
        kerasviz.maximize(model, kerasviz.channel("c2x", 0), steps=1)
    with pytest.raises(ValueError, match=r"`index` to be in \[0, 15\].*index=16"):
        kerasviz.maximize(model, kerasviz.channel("c2", 16), steps=1)
    with pytest.raises(ValueError, match=r"`position`.*\(8, 8\) map.*position=\(8, 0\)"):
        kerasviz.maximize(model, kerasviz.neuron("c2", 0, position=(8, 0)), steps=1)
    with pytest.raises(ValueError, match=r"`class_index`.*\[0, 2\].*class_index=3"):
        kerasviz.maximize(model, kerasviz.logit(3), steps=1)
    with pytest.raises(ValueError, match="`vector` to hold 16"):
        kerasviz.maximize(model, kerasviz.direction("c2", np.ones(3)), steps=1)
    with pytest.raises(ValueError, match=r"`start`.*\(16, 16, 3\).*shape \(12, 12, 3\)"):
        kerasviz.maximize(model, kerasviz.channel("c2", 0), start=np.zeros((12, 12, 3)), steps=1)
    with pytest.raises(ValueError, match="`start` values inside value_range"):
        kerasviz.maximize(model, kerasviz.channel("c2", 0), start=x[0] * 255, steps=1)
    with pytest.raises(ValueError, match="`steps`.*steps=0"):
        kerasviz.maximize(model, kerasviz.channel("c2", 0), steps=0)
    with pytest.raises(ValueError, match="`steps`"):
        kerasviz.invert(model, x[0], "c1", steps=-1)
    with pytest.raises(ValueError, match="`parametrization`"):
        kerasviz.maximize(model, kerasviz.channel("c2", 0), parametrization="wavelet")
    with pytest.raises(ValueError, match="`objectives`"):
        kerasviz.maximize(model, ["c2"])
    with pytest.raises(ValueError, match="`optimizer`"):
        kerasviz.maximize(model, kerasviz.channel("c2", 0), optimizer="sgd")
    with pytest.raises(ValueError, match="`targets`"):
        kerasviz.fgsm(model, x[:2], epsilon=0.1, targeted=True)
    with pytest.raises(ValueError, match="`epsilon`"):
        kerasviz.pgd(model, x[:2], epsilon=-1.0)
    free = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3, name="k")])
    with pytest.raises(ValueError, match="`size`"):
        kerasviz.maximize(free, kerasviz.channel("k", 0), steps=1)


def test_nan_in_the_loss_names_the_step(trained):
    model, _, _ = trained
    base = kerasviz.maximize(model, kerasviz.channel("c2", 4), steps=10, **OFF).history[0]
    assert np.all(np.diff(base) > 0)
    limit = float((base[5] + base[6]) / 2)  # the mean of channel 4 crosses it at step 6

    def capped(outputs, logits):
        value = tf.reduce_mean(outputs[0][..., 4], axis=[1, 2])
        return value + 0.0 * tf.sqrt(limit - value)  # NaN once the value passes the limit

    with pytest.raises(ValueError, match=r"NaN or Inf at step 6 .*row 1"):
        kerasviz.maximize(
            model,
            [kerasviz.channel("c2", 4), kerasviz.custom(capped, ["c2"])],
            steps=10,
            **OFF,
        )
