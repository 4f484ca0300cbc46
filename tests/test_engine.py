"""The shared engine: compiled-step cache, the one target value and its probability rule."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_gap_model

import kerasviz
from kerasviz import _probe
from kerasviz._engine import rows_per_pass
from kerasviz._targets import ARGMAX, ScoreRule, resolve_targets


@pytest.fixture(scope="module")
def model():
    return make_gap_model(size=8, classes=3, seed=4)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)


def test_fresh_lambda_targets_do_not_pile_up_compiled_steps(model, images):
    probe = kerasviz.get_probe(model)
    for k in range(100):
        maps = kerasviz.saliency(model, images, lambda logits, k=k: logits[:, k % 3])
    assert len(probe._steps) <= _probe.MAX_STEPS
    # The last lambda is still right: the cache never serves a stale function.
    expected = kerasviz.saliency(model, images, 99 % 3)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


def test_steps_are_keyed_by_body_and_static_arguments(model, images):
    probe = kerasviz.get_probe(model)
    first = probe.step(_double, 2.0)
    assert probe.step(_double, 2.0) is first
    assert probe.step(_double, 3.0) is not first
    assert float(probe.step(_double, 3.0)(tf.constant(1.0))) == 3.0
    before = _probe.TRACES["double"]
    first(tf.constant([1.0, 2.0]))
    first(tf.constant([5.0, 6.0]))  # same signature: no new trace
    assert _probe.TRACES["double"] - before == 1


def _double(probe, factor, x):
    return factor * x


def test_one_logit_head_is_two_classes_with_negated_negative_score():
    logits = tf.constant([[2.0], [-3.0]])
    rule = resolve_targets(None, 2, 1).rule
    assert rule.binary
    np.testing.assert_array_equal(rule.predicted(logits).numpy(), [1, 0])
    none = tf.constant([ARGMAX, ARGMAX])
    np.testing.assert_allclose(rule.scores(logits, none).numpy(), [2.0, 3.0])
    np.testing.assert_allclose(rule.scores(logits, tf.constant([0, 1])).numpy(), [-2.0, -3.0])
    sig = 1 / (1 + np.exp(-np.array([2.0, 3.0])))
    np.testing.assert_allclose(rule.probabilities(logits, none).numpy(), sig, rtol=1e-6)
    np.testing.assert_allclose(rule.nll(logits, none).numpy(), -np.log(sig), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\].*one-unit head.*Received: \[2, 2\]"):
        resolve_targets(2, 2, 1)


def test_probability_rule_softmax_and_sigmoid_heads():
    logits = tf.constant([[1.0, 2.0, 0.5]])
    soft = np.exp([1.0, 2.0, 0.5]) / np.exp([1.0, 2.0, 0.5]).sum()
    rule = ScoreRule()
    np.testing.assert_allclose(rule.probabilities(logits, tf.constant([0])), soft[:1], rtol=1e-6)
    np.testing.assert_allclose(rule.probabilities(logits, tf.constant([ARGMAX])), soft[1:2])
    multi_label = ScoreRule(sigmoid=True)
    np.testing.assert_allclose(
        multi_label.probabilities(logits, tf.constant([2])), [1 / (1 + np.exp(-0.5))], rtol=1e-6
    )
    np.testing.assert_allclose(
        rule.nll(logits, tf.constant([1])).numpy(), [-np.log(soft[1])], rtol=1e-6
    )


def test_bad_targets_and_rows():
    with pytest.raises(ValueError, match=r"`targets`.*Received: 1.5"):
        resolve_targets(1.5, 2, 3)
    with pytest.raises(ValueError, match=r"one class index per sample \(2\)"):
        resolve_targets([0, 1, 2], 2, 3)
    with pytest.raises(ValueError, match=r"`batch_size` to be an int >= 1.*batch_size=0"):
        rows_per_pass(0, 2, 10)
    assert rows_per_pass(None, 2, 10) == 10 and rows_per_pass(None, 2, 100) == 32
