"""Optimization package: open objective kinds, one settings value, value ranges, mixed
precision, one-unit heads and multi-output models for the attacks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasviz
from kerasviz._probe import TRACES
from kerasviz.optimize import OptimizationSettings, Term

OFF = {"transforms": (), "regularizers": ()}
RNG = np.random.default_rng(0)


def cosine(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def small_cnn(name: str, seed: int = 0, size: int = 12) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(6, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Conv2D(8, 3, activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, name="dense"),
            keras.layers.Activation("softmax", dtype="float32", name="probs"),
        ],
        name=name,
    )


# ---------------------------------------------------------------- a new objective kind


@dataclass(frozen=True, eq=False, repr=False)
class ChannelMax(Term):
    """A kind defined outside the library: the maximum of one channel over positions."""

    layer: str
    index: int

    @property
    def layers(self):
        return (self.layer,)

    def params(self, where):
        if not 0 <= self.index < where.shapes[0][-1]:
            raise ValueError(
                f"Expected `index` below {where.shapes[0][-1]}. Received: {self.index}."
            )
        return (np.int32(self.index),)

    @staticmethod
    def score(static, outputs, logits, index):
        act = outputs[0]
        peaks = tf.reduce_max(tf.reshape(act, [tf.shape(act)[0], -1, act.shape[-1]]), axis=1)
        return tf.gather(peaks, index, batch_dims=1)


@pytest.fixture(scope="module")
def cnn():
    return small_cnn("robust_cnn")


def test_a_new_objective_kind_is_one_class(cnn):
    x = RNG.uniform(0.2, 0.8, (4, 12, 12, 3)).astype(np.float32)
    maps = kerasviz.feature_maps(cnn, x, ["c1", "c2"])
    objectives = [
        kerasviz.Objective(ChannelMax("c2", 3)),
        kerasviz.channel("c1", 1),
        2.0 * kerasviz.Objective(ChannelMax("c1", 0)) - kerasviz.Objective(ChannelMax("c2", 5)),
        kerasviz.Objective(ChannelMax("c2", 7)) + kerasviz.logit(1),
    ]
    got = kerasviz.score_objectives(cnn, objectives, x)
    logits = kerasviz.score_objectives(cnn, kerasviz.logit(1), x)
    expected = [
        maps["c2"][0, ..., 3].max(),
        maps["c1"][1, ..., 1].mean(),
        2 * maps["c1"][2, ..., 0].max() - maps["c2"][2, ..., 5].max(),
        maps["c2"][3, ..., 7].max() + logits[3],
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert repr(objectives[0]) == "channelmax('c2', 3)"
    # Optimized in one batch with the built-in kinds: every row's own score rises.
    result = kerasviz.maximize(cnn, objectives, steps=15, start=x, **OFF)
    after = kerasviz.score_objectives(cnn, objectives, result.images)
    assert np.all(after > got + 1e-3), (got, after)
    # The same structure with other indices reuses the compiled loop.
    traces = TRACES["maximize"]
    other = [kerasviz.Objective(ChannelMax("c2", 0))] + objectives[1:]
    kerasviz.maximize(cnn, other, steps=2, start=x, **OFF)
    assert TRACES["maximize"] == traces
    with pytest.raises(ValueError, match="`index` below 8"):
        kerasviz.maximize(cnn, kerasviz.Objective(ChannelMax("c2", 8)), steps=1)


def test_settings_are_one_frozen_validated_value(cnn):
    settings = OptimizationSettings(steps=3, learning_rate=0.1, value_range=(0, 255))
    assert settings.value_range == (0.0, 255.0) and settings.transforms != ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.steps = 4
    with pytest.raises(ValueError, match=r"`value_range`.*value_range=\(1, 0\)"):
        OptimizationSettings(value_range=(1, 0))
    with pytest.raises(ValueError, match="`learning_rate` to be None"):
        kerasviz.maximize(
            cnn, kerasviz.channel("c1", 0), optimizer=keras.optimizers.SGD(), learning_rate=0.1
        )
    with pytest.raises(ValueError, match="`batch_size`.*batch_size=0"):
        kerasviz.invert(cnn, np.full((12, 12, 3), 0.5), "c1", batch_size=0)
    with pytest.raises(ValueError, match="`steps_per_octave`"):
        kerasviz.deep_dream(cnn, np.full((12, 12, 3), 0.5), "c1", steps=3)
    with pytest.raises(TypeError, match="stepz"):
        kerasviz.filter_patterns(cnn, "c1", stepz=3)
    with pytest.raises(ValueError, match="`layer` to be a layer of model.*'c9'"):
        kerasviz.invert(cnn, np.full((12, 12, 3), 0.5), "c9", steps=1)


# ---------------------------------------------------------------- value ranges


@pytest.fixture(scope="module")
def rescaled():
    """The same layers seen two ways: on 0..1 images, and behind a Rescaling(1/255)."""
    unit = small_cnn("unit_cnn", seed=2)
    eight_bit = keras.Sequential(
        [keras.Input((12, 12, 3)), keras.layers.Rescaling(1 / 255, name="rescale"), unit],
        name="eight_bit",
    )
    photos = RNG.integers(20, 236, (3, 12, 12, 3)).astype(np.uint8)
    return eight_bit, unit, photos


def test_values_outside_value_range_are_rejected_never_clipped(rescaled):
    model, _, photos = rescaled
    calls = {
        "maximize": lambda **k: kerasviz.maximize(
            model, kerasviz.channel("c1", 0), start=photos, steps=1, **k
        ),
        "filter_patterns": lambda **k: kerasviz.filter_patterns(
            model, "c1", [0], start=photos[0], steps=1, **k
        ),
        "deep_dream": lambda **k: kerasviz.deep_dream(
            model, photos[0], "c1", octaves=1, steps_per_octave=1, **k
        ),
        "invert": lambda **k: kerasviz.invert(model, photos, "c1", steps=1, **k),
        "fgsm": lambda **k: kerasviz.fgsm(model, photos, epsilon=2.0, **k),
        "pgd": lambda **k: kerasviz.pgd(model, photos, epsilon=2.0, steps=1, **k),
    }
    message = (
        r"values inside value_range=\(0.0, 1.0\)\. Received: values in \[2\d, 23\d\].*\(0, 255\)"
    )
    for name, call in calls.items():
        with pytest.raises(ValueError, match=message):
            call()
        result = np.asarray(call(value_range=(0, 255)))
        assert result.dtype == np.float32, name
        assert result.min() >= 0 and result.max() <= 255 and result.max() > 100, name
    with pytest.raises(ValueError, match="`inputs` to be finite"):
        kerasviz.fgsm(model, np.full((1, 12, 12, 3), np.nan), epsilon=1.0)
    with pytest.raises(ValueError, match="`epsilon`"):
        kerasviz.pgd(model, photos, epsilon=np.inf, value_range=(0, 255))


def test_eight_bit_inputs_match_the_unit_model_exactly(rescaled):
    model, unit, photos = rescaled
    x = photos.astype(np.float32) / 255
    adv = kerasviz.fgsm(model, photos, epsilon=2.0, value_range=(0, 255))
    assert np.abs(adv - photos).max() <= 2.0 + 1e-4
    assert len(np.unique(adv)) > 50  # not 0s and 1s
    np.testing.assert_allclose(adv / 255, kerasviz.fgsm(unit, x, epsilon=2 / 255), atol=1e-5)
    pgd = kerasviz.pgd(model, photos, epsilon=4.0, steps=3, value_range=(0, 255))
    assert np.abs(pgd - photos).max() <= 4.0 + 1e-4
    np.testing.assert_allclose(
        pgd / 255, kerasviz.pgd(unit, x, epsilon=4 / 255, steps=3), atol=1e-5
    )
    dream = kerasviz.deep_dream(
        model, photos[0], "c1", octaves=2, steps_per_octave=3, value_range=(0, 255)
    )
    reference = kerasviz.deep_dream(unit, x[0], "c1", octaves=2, steps_per_octave=3)
    np.testing.assert_allclose(dream / 255, reference, atol=1e-4)
    assert np.abs(dream - photos[0]).mean() > 0.5  # it dreamed, in 0..255 units
    rec = kerasviz.invert(model, photos[:2], "c2", steps=4, value_range=(0, 255))
    ref = kerasviz.invert(unit, x[:2], "c2", steps=4)
    np.testing.assert_allclose(rec.images / 255, ref.images, atol=1e-4)
    np.testing.assert_allclose(rec.history, ref.history, rtol=1e-3)


# ---------------------------------------------------------------- one-unit heads, outputs


def test_one_unit_sigmoid_head_is_two_classes():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    w = RNG.normal(0, 0.5, (16, 1)).astype(np.float32)
    model.layers[-1].set_weights([w, np.array([-4.0], np.float32)])
    x = RNG.uniform(0.3, 0.7, (5, 4, 4, 1)).astype(np.float32)

    def z(images):
        return images.reshape(len(images), -1) @ w[:, 0] - 4.0

    assert np.all(z(x) < 0)  # predicts class 0 (negative)
    step = 0.05 * np.abs(w).sum()
    # Untargeted on the predicted class 0 (score -z): its loss rises, so z rises.
    np.testing.assert_allclose(z(kerasviz.fgsm(model, x, epsilon=0.05)) - z(x), step, rtol=1e-4)
    np.testing.assert_allclose(z(kerasviz.fgsm(model, x, 1, epsilon=0.05)) - z(x), -step, rtol=1e-4)
    up = kerasviz.fgsm(model, x, 1, epsilon=0.05, targeted=True)
    np.testing.assert_allclose(z(up) - z(x), step, rtol=1e-4)
    pushed = kerasviz.pgd(model, x, epsilon=0.05, steps=4, random_start=False)
    np.testing.assert_allclose(z(pushed) - z(x), step, rtol=1e-4)
    with pytest.raises(ValueError, match=r"`targets`.*\[0, 1\]"):
        kerasviz.fgsm(model, x, 2, epsilon=0.05)


def test_attacks_take_output_for_multi_output_models():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    a = keras.layers.Dense(3, activation="softmax", name="head_a")(h)
    b = keras.layers.Dense(4, activation="softmax", name="head_b")(h)
    model = keras.Model(inputs, [a, b])
    only_b = keras.Model(inputs, b)
    x = RNG.uniform(0.1, 0.9, (4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(
        kerasviz.fgsm(model, x, epsilon=0.03, output="head_b"),
        kerasviz.fgsm(only_b, x, epsilon=0.03),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        kerasviz.pgd(model, x, 3, epsilon=0.03, steps=3, output=1, targeted=True),
        kerasviz.pgd(only_b, x, 3, epsilon=0.03, steps=3, targeted=True),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="`output`"):
        kerasviz.fgsm(model, x, epsilon=0.03)


def test_attacks_do_not_retrace_for_new_values(cnn):
    x = RNG.uniform(0.2, 0.8, (3, 12, 12, 3)).astype(np.float32)
    kerasviz.fgsm(cnn, x, epsilon=0.01)
    kerasviz.pgd(cnn, x, epsilon=0.01, steps=2)
    kerasviz.score_objectives(cnn, kerasviz.channel("c2", 1), x)
    before = dict(TRACES)
    kerasviz.fgsm(cnn, x, epsilon=0.2, value_range=(-1, 2))
    kerasviz.pgd(cnn, x, epsilon=0.03, steps=5, seed=3)
    kerasviz.score_objectives(cnn, kerasviz.channel("c2", 6), x)
    assert dict(TRACES) == before


# ---------------------------------------------------------------- mixed precision


@pytest.fixture(scope="module", params=["mixed_float16", "mixed_bfloat16"])
def mixed(request):
    """The same small CNN under a mixed policy and in float32, with the same weights."""
    try:
        keras.mixed_precision.set_global_policy(request.param)
        low = small_cnn("mixed_cnn", seed=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    full = small_cnn("full_cnn", seed=5)
    full.set_weights(low.get_weights())
    assert low.get_layer("c1").compute_dtype != "float32"
    # Relative tolerance on values, least cosine of gradient directions (bfloat16 keeps 8 bits).
    return (low, full, *((2e-2, 0.98) if request.param == "mixed_float16" else (6e-2, 0.95)))


def test_mixed_precision_scores_and_first_steps_agree_with_float32(mixed):
    low, full, tol, min_cosine = mixed
    x = RNG.uniform(0.2, 0.8, (4, 12, 12, 3)).astype(np.float32)
    objectives = [
        kerasviz.channel("c2", 1),
        kerasviz.neuron("c1", 2),
        kerasviz.logit(0),
        kerasviz.layer_norm("c2"),
    ]
    got, want = (kerasviz.score_objectives(m, objectives, x) for m in (low, full))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    # One normalized step moves each image along its gradient: compare the directions.
    one_step = {"steps": 1, "optimizer": "normalized", "learning_rate": 0.01, **OFF}
    runs = {
        "maximize": lambda m: kerasviz.maximize(m, objectives, start=x, **one_step),
        "filter_patterns": lambda m: kerasviz.filter_patterns(
            m, "c2", [0, 3], start=x[:2], **one_step
        ),
        "deep_dream": lambda m: kerasviz.deep_dream(
            m, x, "c2", octaves=1, steps_per_octave=1, learning_rate=0.01
        ),
        "invert": lambda m: kerasviz.invert(m, x, "c2", start=x[::-1], **one_step),
    }
    for name, run in runs.items():
        a, b = run(low), run(full)
        images_a, images_b = (np.asarray(r) for r in (a, b))
        assert images_a.dtype == np.float32, name
        start = x[: len(images_a)] if name != "invert" else x[::-1]
        for row in range(len(images_a)):
            assert cosine(images_a[row] - start[row], images_b[row] - start[row]) > min_cosine, name
        if hasattr(a, "history"):
            np.testing.assert_allclose(
                a.history, b.history, rtol=tol, atol=tol * np.abs(b.history).max()
            )


def test_mixed_precision_attacks_agree_with_float32(mixed):
    low, full, *_ = mixed
    x = RNG.uniform(0.2, 0.8, (4, 12, 12, 3)).astype(np.float32)
    fast_low, fast_full = (kerasviz.fgsm(m, x, 1, epsilon=0.01) for m in (low, full))
    assert fast_low.dtype == np.float32 and np.abs(fast_low - x).max() <= 0.01 + 1e-6
    assert np.mean(np.sign(fast_low - x) == np.sign(fast_full - x)) > 0.95
    strong = kerasviz.pgd(low, x, 1, epsilon=0.05, steps=5, random_start=False)
    assert strong.dtype == np.float32 and np.abs(strong - x).max() <= 0.05 + 1e-6
    before, after = (full.predict(v, verbose=0)[:, 1] for v in (x, strong))
    assert np.all(after < before)  # the loss of class 1 went up on the float32 twin too
