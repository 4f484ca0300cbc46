"""Mixed precision: every public function on a model built under ``mixed_float16`` or
``mixed_bfloat16`` returns float32 results that agree with the same weights in float32.

Under a mixed policy the layers compute in float16/bfloat16 while their variables stay float32.
Gradients with respect to activations must be taken on the float16 tensors the logits were
computed from (a float32 copy gets zero gradient: Grad-CAM, Grad-CAM++ and Layer-CAM came out
all zero). Tolerances are relative to each result's largest magnitude: float16 keeps about 3
decimal digits, bfloat16 about 2, and a ReLU whose input rounds across zero flips a few
gradient paths, so bfloat16 is also held to a small mean error.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from test_readonly import CALLS as READONLY_CALLS
from test_readonly import GRID, SIZE, X, _callback_epoch, _dashboard_requests, _explain_dataset

import kerasviz

QUICK = {"steps": 2, "transforms": (), "regularizers": ()}
EPSILON = 0.01
GREY_LOGITS = {"baseline": 0.5, "probabilities": False, "seed": 0}


def _score_units(result) -> np.ndarray:
    """LIME's and KernelSHAP's superpixel weights next to the scores they decompose, ``(n, S +
    2)``: the weights are differences of scores, so float16's rounding of the scores bounds
    their error, and the tolerance is relative to the scores (the weights alone can be
    smaller than that rounding on this untrained model)."""
    return np.concatenate([result.weights, result.score[:, None], result.intercept[:, None]], 1)


#: policy -> (largest error, mean error), both relative to the result's largest magnitude.
TOLERANCES = {"mixed_float16": (2e-2, 2e-3), "mixed_bfloat16": (0.3, 1e-2)}


def _build(policy: str) -> keras.Model:
    """The small CNN of the issue, built under ``policy``; the global policy is restored."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((SIZE, SIZE, 3))
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="b_conv1")(inputs)
        x = keras.layers.MaxPooling2D(2, name="pool")(x)
        x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="b_conv2")(x)
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
        x = keras.layers.Dense(3, name="dense")(x)
        outputs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
        return keras.Model(inputs, outputs, name=f"cnn_{policy}")
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.fixture(scope="module", params=list(TOLERANCES))
def pair(request):
    previous = keras.mixed_precision.global_policy()
    request.addfinalizer(lambda: keras.mixed_precision.set_global_policy(previous))
    mixed = _build(request.param)
    plain = _build("float32")
    assert mixed.get_layer("b_conv1").compute_dtype == request.param.split("_")[1]
    plain.set_weights(mixed.get_weights())
    return request.param, mixed, plain


CALLS = {
    "Probe": lambda m: kerasviz.Probe(m, ["b_conv2"])([X]),
    "get_probe": lambda m: kerasviz.get_probe(m, ["b_conv1", "b_conv2"])([X]),
    "resolve_layer": lambda m: kerasviz.resolve_layer(m, "b_conv2")[0],
    "default_cam_layer": lambda m: kerasviz.default_cam_layer(m)[0],
    "feature_maps": lambda m: kerasviz.feature_maps(m, X),
    "filter_weights": lambda m: kerasviz.filter_weights(m, "b_conv1"),
    "top_channels": lambda m: kerasviz.top_channels(m, X, "b_conv2", 2),
    "layer_statistics": lambda m: kerasviz.layer_statistics(m, X),
    "receptive_field": lambda m: kerasviz.receptive_field(m, "b_conv2"),
    "cam": lambda m: kerasviz.cam(m, X, 1, ["b_conv1", "b_conv2"]),
    "grad_cam": lambda m: kerasviz.grad_cam(m, X),
    "grad_cam(relu=False)": lambda m: kerasviz.grad_cam(m, X, relu=False, upsample=None),
    "grad_cam_plus_plus": lambda m: kerasviz.grad_cam_plus_plus(m, X, upsample="bilinear"),
    "grad_cam_plus_plus(relu=False)": lambda m: kerasviz.grad_cam_plus_plus(m, X, relu=False),
    "layer_cam": lambda m: kerasviz.layer_cam(m, X),
    "layer_cam(relu=False)": lambda m: kerasviz.layer_cam(m, X, relu=False),
    "score_cam": lambda m: kerasviz.score_cam(m, X, max_channels=3),
    "saliency": lambda m: kerasviz.saliency(m, X),
    "smoothgrad": lambda m: kerasviz.smoothgrad(m, X, samples=3),
    "integrated_gradients": lambda m: kerasviz.integrated_gradients(m, X, steps=4),
    "lrp": lambda m: kerasviz.lrp(m, X, composite="epsilon_gamma_box", value_range=(0, 1)),
    "input_x_gradient": lambda m: kerasviz.input_x_gradient(m, X),
    # A black baseline: with a blurred one, f(x) - f(baseline) is a small difference of
    # float16-rounded activations, and the rescale multipliers inherit that rounding.
    "deeplift": lambda m: kerasviz.deeplift(m, X, baseline="black"),
    "gradient_shap": lambda m: kerasviz.gradient_shap(m, X, samples=3, noise=0.1),
    "guided_backprop": lambda m: kerasviz.guided_backprop(m, X),
    "attribution.guided_model": lambda m: kerasviz.attribution.guided_model(m)(X),
    "guided_grad_cam": lambda m: kerasviz.guided_grad_cam(m, X),
    "occlusion": lambda m: kerasviz.occlusion(m, X, patch=8, stride=4),
    "hires_cam": lambda m: kerasviz.hires_cam(m, X, smooth="augment"),
    "xgrad_cam": lambda m: kerasviz.xgrad_cam(m, X, smooth="eigen"),
    "eigen_cam": lambda m: kerasviz.eigen_cam(m, X, layer=["b_conv1", "b_conv2"]),
    "ablation_cam": lambda m: kerasviz.ablation_cam(m, X, max_channels=4),
    "lime": lambda m: _score_units(kerasviz.lime(m, X, segments=GRID, samples=16, **GREY_LOGITS)),
    "kernel_shap": lambda m: _score_units(
        kerasviz.kernel_shap(m, X, segments=GRID, samples=14, **GREY_LOGITS)
    ),
    "rise": lambda m: kerasviz.rise(m, X, masks=16, seed=0),
    "maximize": lambda m: kerasviz.maximize(
        m, [kerasviz.channel("b_conv2", 0), kerasviz.logit(1)], **QUICK
    ),
    "filter_patterns": lambda m: kerasviz.filter_patterns(m, "b_conv2", [0, 1], **QUICK),
    "deep_dream": lambda m: kerasviz.deep_dream(m, X[0], "b_conv2", octaves=1, steps_per_octave=2),
    "invert": lambda m: kerasviz.invert(m, X[:1], "b_conv2", steps=2),
    "score_objectives": lambda m: kerasviz.score_objectives(m, kerasviz.channel("b_conv2", 1), X),
    "fgsm": lambda m: kerasviz.fgsm(m, X, epsilon=EPSILON),
    "pgd": lambda m: kerasviz.pgd(m, X, epsilon=EPSILON, steps=2),
    "metrics.deletion_auc": lambda m: kerasviz.metrics.deletion_auc(m, X, X[..., 0], steps=3),
    "metrics.insertion_auc": lambda m: kerasviz.metrics.insertion_auc(m, X, X[..., 0], steps=3),
    "metrics.road": lambda m: kerasviz.metrics.road(m, X, X[..., 0]),
    "metrics.average_drop": lambda m: kerasviz.metrics.average_drop(m, X, X[..., 0]),
    "metrics.increase_in_confidence": lambda m: kerasviz.metrics.increase_in_confidence(
        m, X, X[..., 0]
    ),
    "metrics.infidelity": lambda m: kerasviz.metrics.infidelity(m, X, X[..., 0], samples=4),
    "metrics.max_sensitivity": lambda m: kerasviz.metrics.max_sensitivity(
        kerasviz.grad_cam, m, X, samples=2, upsample=None
    ),
    "metrics.randomization_check": lambda m: kerasviz.metrics.randomization_check(
        kerasviz.grad_cam, m, X, upsample=None
    ),
    "callbacks.VisualizationCallback": _callback_epoch,
    "dashboard": _dashboard_requests,
    "explain_dataset": _explain_dataset,
    "dataset_scale.model_fingerprint": lambda m: kerasviz.dataset_scale.model_fingerprint(m),
}

#: Results that are not floating-point maps: compared exactly.
EXACT = {"resolve_layer", "default_cam_layer", "receptive_field", "filter_weights"}
#: Adversarial images: each pixel moves by the sign of a gradient, compared as such.
SIGNED = {"fgsm", "pgd"}
#: Served, not returned: the dashboard's requests and jobs must complete on the mixed model.
SERVED = {"dashboard"}
#: Discrete scores (the pointing game in the callback's logs): the same keys, valid values.
LOGGED = {"callbacks.VisualizationCallback"}
#: A hash of the model: the policy is part of the model, so only its stability is checked.
HASHES = {"dataset_scale.model_fingerprint"}
#: Tables of per-image values of any dtype; columns may be all zero (a missed pointing game).
TABLES = {"explain_dataset", "metrics.increase_in_confidence"}
#: Scores that are float64 by design (metrics, statistics, logs).
FLOAT64 = {
    "layer_statistics",
    "metrics.deletion_auc",
    "metrics.insertion_auc",
    "metrics.randomization_check",
    "metrics.road",
    "metrics.average_drop",
    "metrics.increase_in_confidence",
    "metrics.infidelity",
    "metrics.max_sensitivity",
    "callbacks.VisualizationCallback",
}


def test_every_read_only_checked_function_is_checked_here():
    assert set(READONLY_CALLS) <= set(CALLS)


def _leaves(value) -> list:
    """The arrays of a result: dicts, lists and dataclasses opened, tensors to numpy."""
    if isinstance(value, dict):
        return [leaf for key in sorted(value) for leaf in _leaves(value[key])]
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    if dataclasses.is_dataclass(value):
        fields = [f.name for f in dataclasses.fields(value)]
        return [leaf for name in fields for leaf in _leaves(getattr(value, name))]
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    if isinstance(value, float | np.floating):
        return [np.asarray(value)]
    return [value] if isinstance(value, np.ndarray) else []


@pytest.mark.parametrize("name", list(CALLS))
def test_mixed_precision_agrees_with_float32(pair, name):
    policy, mixed, plain = pair
    if name in SERVED:
        CALLS[name](mixed)  # raises, or fails its own asserts, when a request breaks
        return
    ours, reference = CALLS[name](mixed), CALLS[name](plain)
    if name in LOGGED:
        assert ours and list(ours) == list(reference)
        assert all(0 <= value <= 1 for value in ours.values())
        return
    if name in HASHES:
        assert isinstance(ours, str) and ours and ours == CALLS[name](mixed)
        return
    if name in EXACT:
        if isinstance(ours, dict):
            assert list(ours) == list(reference)
            for a, b in zip(_leaves(ours), _leaves(reference), strict=True):
                assert a.dtype == np.float32
                np.testing.assert_array_equal(a, b)
        else:
            assert ours == reference
        return
    leaves, expected = _leaves(ours), _leaves(reference)
    assert leaves and len(leaves) == len(expected)
    largest, mean = TOLERANCES[policy]
    for a, b in zip(leaves, expected, strict=True):
        if np.issubdtype(b.dtype, np.integer) or b.dtype == bool:  # indices, flags
            np.testing.assert_array_equal(a, b)
            continue
        if name not in TABLES:
            assert a.dtype == (np.float64 if name in FLOAT64 else np.float32), (name, a.dtype)
        assert np.isfinite(a).all()
        if name in SIGNED:
            step, step32 = a - X, b - X
            assert np.abs(step).max() <= EPSILON * (1 + 1e-3) and np.abs(step).max() > 0
            assert np.mean(np.isclose(step, step32, atol=1e-3 * EPSILON)) > 0.9
            continue
        scale = np.abs(b).max()
        if name in TABLES and scale == 0:
            np.testing.assert_array_equal(a, b)
            continue
        assert scale > 0 and np.abs(a).max() > 0, f"{name}: an all-zero result"
        error = np.abs(a.astype(np.float64) - b)
        assert error.max() <= largest * scale, (name, error.max() / scale)
        if error.size >= 16:  # isolated flips in a map, not a few scores
            assert error.mean() <= mean * scale, (name, error.mean() / scale)


def test_results_under_a_global_mixed_policy_equal_float32_ones(pair):
    """Users set the policy once for the program: kerasviz's views then see it too, and must
    still compute a float32 model in float32 (and a mixed one as it was built)."""
    _, mixed, plain = pair
    methods = ("grad_cam", "saliency", "guided_backprop", "score_cam", "occlusion")
    before = {name: CALLS[name](plain) for name in methods}
    mixed_before = CALLS["layer_cam(relu=False)"](mixed)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        plain_again = keras.models.clone_model(plain)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    plain_again.set_weights(plain.get_weights())
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        assert plain_again.get_layer("b_conv1").compute_dtype == "float32"
        for name in methods:
            np.testing.assert_allclose(CALLS[name](plain_again), before[name], rtol=1e-5, atol=1e-8)
        np.testing.assert_array_equal(CALLS["layer_cam(relu=False)"](mixed), mixed_before)
    finally:
        keras.mixed_precision.set_global_policy("float32")
