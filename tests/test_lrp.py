"""LRP: hand-computed rules, the axioms, an independent reference, canonization, every layer
kind, keras.applications flat and nested, and bad input."""

from __future__ import annotations

import importlib.util
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasviz
from kerasviz._probe import TRACES, get_probe
from kerasviz.attribution import lrp_rules

L = keras.layers
HERE = os.path.dirname(__file__)


def logits_of(model, x, targets):
    _, logits = get_probe(model)([x])
    return logits.numpy()[np.arange(len(x)), targets]


def gradient_x_input(model, x, targets):
    probe = get_probe(model)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        _, logits = probe([xt])
        scores = tf.gather(logits, targets, batch_dims=1)
    return (tape.gradient(scores, xt) * xt).numpy()


# ---------------------------------------------------------------------------------------------
# Hand-computed relevances: x = (2, -1), Dense(2, relu) with W1 = [[1, -1], [1, 2]],
# b1 = (0, 5), so hidden pre-activations (1, 1), contributions (2, -1) and (-2, -2); then
# Dense(1) with W2 = (3, -1), b2 = 0: logit 2, contributions (3, -1). Target class 1 (the
# logit itself, one-unit head): relevance starts at 2.


@pytest.fixture(scope="module")
def two_layer():
    model = keras.Sequential(
        [keras.Input((2,)), L.Dense(2, activation="relu", name="h"), L.Dense(1, name="o")]
    )
    model.get_layer("h").set_weights([np.array([[1, -1], [1, 2]], "f4"), np.array([0, 5], "f4")])
    model.get_layer("o").set_weights([np.array([[3], [-1]], "f4"), np.zeros(1, "f4")])
    return model


X2 = np.array([[2.0, -1.0]], np.float32)

HAND = [
    # LRP-0: hidden (3, -1); from h1 (2, -1)/1*3, from h2 (-2, -2)/1*(-1): (8, -1).
    ({"composite": "epsilon", "epsilon": 0.0}, [8, -1]),
    # epsilon 1: hidden (2*3/3, -2/3); from h1 (2, -1)/2*2, h2 (-2, -2)/2*(-2/3): (8/3, -1/3).
    ({"composite": "epsilon", "epsilon": 1.0}, [8 / 3, -1 / 3]),
    # z+: hidden (3/3*2, 0); from h1 (2, 0)/2*2: (2, 0).
    ({"composite": "zplus"}, [2, 0]),
    # alpha 2 beta 1: hidden (2*2, -(-1/-1)*2) = (4, -2); h1: (2*4, -(-1/-1)*4) = (8, -4);
    # h2 (z^+ = b^+ = 5, no positive contribution; z^- = -4): -(-2/-4)*(-2) = +1 each.
    ({"composite": "alpha_beta", "alpha": 2.0, "beta": 1.0}, [9, -3]),
    # gamma 1/2, all z > 0: hidden ((3+1.5)/3.5*2, -1/3.5*2) = (18/7, -4/7); h1: (3, -1)/2 *
    # 18/7; h2: (-2, -2)/(1 + 0.5*5) * (-4/7) = 16/49 each.
    ({"composite": "gamma", "gamma": 0.5}, [27 / 7 + 16 / 49, -9 / 7 + 16 / 49]),
    # flat first layer, LRP-0 above: hidden (3, -1) shared equally: (1, 1).
    ({"composite": {"first": "flat", "linear": "epsilon"}, "epsilon": 0.0}, [1, 1]),
    # w^2: h1 (1, 1)/2*3, h2 (1, 4)/5*(-1): (1.5 - 0.2, 1.5 - 0.8).
    ({"composite": {"first": "wsquare", "linear": "epsilon"}, "epsilon": 0.0}, [1.3, 0.7]),
    # z^B in [-3, 3]: h1 (2+3, -1+3)/7*3; h2 (-2+3, -2+6)/5*(-1): (15/7 - 1/5, 6/7 - 4/5).
    (
        {
            "composite": {"first": "zbox", "dense": "epsilon"},
            "epsilon": 0.0,
            "value_range": (-3, 3),
        },
        [15 / 7 - 1 / 5, 6 / 7 - 4 / 5],
    ),
]


@pytest.mark.parametrize("kwargs, expected", HAND, ids=[json.dumps(h[0]) for h in HAND])
def test_hand_computed_two_layer_network(two_layer, kwargs, expected):
    r = kerasviz.lrp(two_layer, X2, 1, **kwargs)
    np.testing.assert_allclose(r[0], expected, rtol=1e-5, atol=1e-6)


def test_hand_computed_negative_class_and_single_sample(two_layer):
    # Class 0 of a one-unit head scores -z: relevance starts at -2 and every rule is linear in
    # it for LRP-0. A single sample without batch axis comes back without one.
    r = kerasviz.lrp(two_layer, X2[0], 0, composite="epsilon", epsilon=0.0)
    np.testing.assert_allclose(r, [-8, 1], rtol=1e-6)
    hidden = kerasviz.lrp(two_layer, X2, 1, "h", composite="epsilon", epsilon=0.0)
    np.testing.assert_allclose(hidden, [[3, -1]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Axioms on bias-free and biased ReLU networks


def plain_net(bias: bool, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            L.Conv2D(6, 3, padding="same", activation="relu", use_bias=bias, name="c1"),
            L.MaxPooling2D(2, name="pool"),
            L.Conv2D(8, 3, use_bias=bias, name="c2"),
            L.ReLU(name="relu"),
            L.AveragePooling2D(1, name="avg"),
            L.Flatten(name="flat"),
            L.Dense(12, activation="relu", use_bias=bias, name="fc"),
            L.Dense(4, activation="softmax", use_bias=bias, name="out"),
        ],
        name="plain",
    )


def with_biases(model):
    rng = np.random.default_rng(5)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.2, layer.bias.shape).astype("f4"))
    return model


@pytest.fixture(scope="module")
def bias_free():
    return plain_net(bias=False)


@pytest.fixture(scope="module")
def biased():
    return with_biases(plain_net(bias=True, seed=1))


XS = np.random.default_rng(0).normal(size=(3, 10, 10, 3)).astype(np.float32)
TS = np.array([0, 3, 1])
LAYERS = ["c1", "pool", "c2", "relu", "avg", "flat", "fc", "out"]


def test_lrp0_equals_gradient_x_input(bias_free):
    r = kerasviz.lrp(bias_free, XS, TS, composite="epsilon", epsilon=0.0)
    expected = gradient_x_input(bias_free, XS, TS)
    np.testing.assert_allclose(r, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_z_rule_conserves_relevance_at_every_layer(bias_free):
    logits = logits_of(bias_free, XS, TS)
    per_layer = kerasviz.lrp(bias_free, XS, TS, LAYERS, composite="epsilon", epsilon=0.0)
    inputs = kerasviz.lrp(bias_free, XS, TS, composite="epsilon", epsilon=0.0)
    for name, r in [*zip(LAYERS, per_layer, strict=True), ("input", inputs)]:
        np.testing.assert_allclose(r.reshape(3, -1).sum(axis=1), logits, rtol=1e-4, err_msg=name)
    # The explained layer's relevance is the logit itself, in its own unit only.
    out = per_layer[-1]
    np.testing.assert_allclose(out[np.arange(3), TS], logits, rtol=1e-6)
    assert np.count_nonzero(out) == 3


def test_epsilon_absorbs_within_the_derived_bound(bias_free):
    # For a bias-free linear layer, sum_i R_i = sum_j R_j z_j / (z_j + eps sign z_j), so the
    # relevance lost is sum_j R_j eps sign(z_j) / (z_j + eps sign z_j), bounded by
    # sum_j |R_j| eps / (|z_j| + eps).
    eps = 0.05
    chain = [("input", "c1"), ("pool", "c2"), ("flat", "fc"), ("fc", "out")]
    names = ["c1", "pool", "c2", "flat", "fc", "out"]
    per_layer = kerasviz.lrp(bias_free, XS, TS, names, composite="epsilon", epsilon=eps)
    rel = dict(zip(names, per_layer, strict=True))
    rel["input"] = kerasviz.lrp(bias_free, XS, TS, composite="epsilon", epsilon=eps)
    probe = get_probe(bias_free, ["c1", "c2", "fc"], pre_relu=True)
    outputs, logits = probe([XS])
    pre = dict(zip(["c1", "c2", "fc"], [o.numpy() for o in outputs], strict=True))
    pre["out"] = logits.numpy()
    leaks = []
    for below, layer in chain:
        r_out = rel[layer].reshape(3, -1).astype(np.float64)
        z = pre[layer].reshape(3, -1).astype(np.float64)
        s = np.where(z >= 0, 1.0, -1.0)
        sum_in = rel[below].reshape(3, -1).sum(axis=1)
        expected = (r_out * z / (z + eps * s)).sum(axis=1)
        np.testing.assert_allclose(sum_in, expected, rtol=1e-4, err_msg=layer)
        leak = np.abs(sum_in - r_out.sum(axis=1))
        bound = (np.abs(r_out) * eps / (np.abs(z) + eps)).sum(axis=1)
        assert np.all(leak <= bound * (1 + 1e-4) + 1e-7), layer
        leaks.append(leak.max() / np.abs(r_out.sum(axis=1)).max())
    assert max(leaks) > 1e-3  # epsilon does absorb relevance here


def test_alpha1_beta0_equals_zplus_on_relu_networks(biased):
    a = kerasviz.lrp(biased, XS, TS, composite="alpha_beta", alpha=1.0, beta=0.0)
    z = kerasviz.lrp(biased, XS, TS, composite="zplus")
    np.testing.assert_allclose(a, z, rtol=1e-5, atol=1e-7 * np.abs(z).max())
    assert np.all(np.isfinite(z)) and np.abs(z).max() > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"composite": "zplus"},
        {"composite": "gamma", "gamma": 0.3},
        {"composite": "alpha_beta"},
        {"composite": "epsilon_plus"},
    ],
)
def test_nonnegative_inputs_take_the_short_path_with_the_same_result(biased, kwargs):
    # With value_range >= 0 the first layer skips the x^- terms; results must not change.
    x = np.abs(XS) / np.abs(XS).max()
    short = kerasviz.lrp(biased, x, TS, value_range=(0, 1), **kwargs)
    general = kerasviz.lrp(biased, x, TS, **kwargs)
    np.testing.assert_allclose(short, general, rtol=1e-5, atol=1e-7 * np.abs(general).max())


def test_results_do_not_depend_on_the_batch_and_one_trace_serves_all(biased):
    before = TRACES["lrp_step"]
    whole = kerasviz.lrp(biased, XS, TS, composite="epsilon_gamma_box", value_range=(-6, 6))
    chunked = kerasviz.lrp(
        biased, XS, TS, composite="epsilon_gamma_box", value_range=(-6, 6), batch_size=1
    )
    np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-8)
    single = kerasviz.lrp(biased, XS[1], TS[1], composite="epsilon_gamma_box", value_range=(-6, 6))
    np.testing.assert_allclose(single, whole[1], rtol=1e-5, atol=1e-8)
    assert TRACES["lrp_step"] - before <= 2  # batch of 3, then batch of 1 (relaxed shapes)


def test_predicted_class_and_callable_targets(biased):
    logits = get_probe(biased)([XS])[1].numpy()
    predicted = kerasviz.lrp(biased, XS, None, composite="epsilon", epsilon=0.0)
    explicit = kerasviz.lrp(biased, XS, logits.argmax(axis=1), composite="epsilon", epsilon=0.0)
    np.testing.assert_allclose(predicted, explicit, rtol=1e-6)
    # A callable's relevance starts at (d score / d logits) * logits: here 2 * logit 1.
    doubled = kerasviz.lrp(biased, XS, lambda z: 2 * z[:, 1], composite="epsilon", epsilon=0.0)
    once = kerasviz.lrp(biased, XS, 1, composite="epsilon", epsilon=0.0)
    np.testing.assert_allclose(doubled, 2 * once, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Agreement with the independent numpy reference (benchmarks/lrp_reference.py)


def _reference_module():
    path = os.path.join(HERE, "..", "benchmarks", "lrp_reference.py")
    spec = importlib.util.spec_from_file_location("lrp_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference():
    data = np.load(os.path.join(HERE, "data", "lrp_reference.npz"))
    model = _reference_module().build_model()
    names = sorted({k.split("/")[1] for k in data.files if k.startswith("weights/")})
    for name in names:
        layer = model.get_layer(name)
        layer.set_weights([data[f"weights/{name}/{k}"] for k in range(len(layer.get_weights()))])
    return model, data, json.loads(str(data["configs"]))


@pytest.mark.parametrize("index", range(9))
def test_agrees_with_independent_reference(reference, index):
    model, data, configs = reference
    config = configs[index]
    r = kerasviz.lrp(model, data["x"], data["targets"], **config)
    expected = data[f"relevance/{index}"]
    np.testing.assert_allclose(r, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


# ---------------------------------------------------------------------------------------------
# Canonization, pass-through, gating, nesting


def _bn_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(5, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="bn_dw")(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(3, name="head")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(4)
    for name in ("bn", "bn_dw"):
        bn = model.get_layer(name)
        gamma, beta, mean, var = (w.shape for w in bn.get_weights())
        bn.set_weights(
            [
                rng.uniform(0.5, 1.5, gamma).astype("f4"),
                rng.normal(0, 0.3, beta).astype("f4"),
                rng.normal(0, 0.3, mean).astype("f4"),
                rng.uniform(0.5, 2, var).astype("f4"),
            ]
        )
    return model


def _folded_twin(model):
    """The same function with each BatchNorm folded into its convolution by hand."""
    inputs = keras.Input((8, 8, 3))
    conv, bn = model.get_layer("conv"), model.get_layer("bn")
    dw, bn_dw = model.get_layer("dw"), model.get_layer("bn_dw")

    def fold(bn):
        gamma, beta, mean, var = bn.get_weights()
        scale = gamma / np.sqrt(var + bn.epsilon)
        return scale, beta - mean * scale

    s, t = fold(bn)
    c = L.Conv2D(5, 3, padding="same")
    x = L.ReLU()(c(inputs))
    d = L.DepthwiseConv2D(3, padding="same")
    x = L.ReLU()(d(x))
    x = L.GlobalAveragePooling2D()(x)
    head = L.Dense(3)
    twin = keras.Model(inputs, head(x))
    k, b = conv.get_weights()
    c.set_weights([k * s, b * s + t])
    s2, t2 = fold(bn_dw)
    (kd,) = dw.get_weights()
    d.set_weights([kd * s2.reshape(5, 1), t2])
    head.set_weights(model.get_layer("head").get_weights())
    return twin


@pytest.mark.parametrize(
    "kwargs",
    [{"composite": "epsilon_plus"}, {"composite": "gamma"}, {"composite": "epsilon_alpha2_beta1"}],
)
def test_batchnorm_is_folded_into_the_layer_before_it(kwargs):
    model = _bn_model()
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("f4")
    r = kerasviz.lrp(model, x, [0, 2], **kwargs)
    np.testing.assert_allclose(
        r, kerasviz.lrp(_folded_twin(model), x, [0, 2], **kwargs), rtol=1e-4, atol=1e-6
    )
    # The fold is a view of the live variables: change the statistics, the result follows.
    model.get_layer("bn").moving_variance.assign(np.full(5, 4.0, "f4"))
    changed = kerasviz.lrp(model, x, [0, 2], **kwargs)
    assert not np.allclose(changed, r)
    np.testing.assert_allclose(
        changed, kerasviz.lrp(_folded_twin(model), x, [0, 2], **kwargs), rtol=1e-4, atol=1e-6
    )


def test_a_folded_layer_reports_the_fused_output():
    model = _bn_model()
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("f4")
    conv, bn = kerasviz.lrp(model, x, 0, ["conv", "bn"])
    np.testing.assert_array_equal(conv, bn)


def test_standalone_batchnorm_and_affine_layers_pass_relevance_unchanged():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6, 6, 3))
    x = L.Rescaling(0.5, offset=0.1, name="rescale")(inputs)
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(x)
    b = L.Conv2D(4, 1, activation="relu", name="b")(x)
    x = L.Concatenate(name="cat")([a, b])
    x = L.BatchNormalization(name="bn", beta_initializer="ones")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Flatten()(x)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 3)).astype("f4")
    kw = {"composite": "epsilon", "epsilon": 0.0}
    cat, bn, relu, rescale = kerasviz.lrp(model, x, 1, ["cat", "bn", "relu", "rescale"], **kw)
    np.testing.assert_array_equal(cat, bn)
    np.testing.assert_array_equal(bn, relu)
    np.testing.assert_allclose(rescale.sum(), cat.sum(), rtol=1e-5)  # z-rule, zero biases
    np.testing.assert_array_equal(kerasviz.lrp(model, x, 1, **kw), rescale)


def test_gate_gives_all_relevance_to_the_gated_signal():
    keras.utils.set_random_seed(6)
    inputs = keras.Input((6, 6, 3))
    signal = L.Conv2D(4, 3, padding="same", activation="swish", name="signal")(inputs)
    g = L.GlobalAveragePooling2D(keepdims=True, name="squeeze")(signal)
    g = L.Conv2D(4, 1, activation="sigmoid", name="excite")(g)
    x = L.Multiply(name="gated")([signal, g])
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, use_bias=False, name="head")(x))
    x = np.random.default_rng(3).normal(size=(2, 6, 6, 3)).astype("f4")
    gated, sig, squeeze, excite = kerasviz.lrp(
        model, x, 0, ["gated", "signal", "squeeze", "excite"], composite="epsilon", epsilon=0.0
    )
    np.testing.assert_array_equal(squeeze, 0)
    np.testing.assert_array_equal(excite, 0)
    np.testing.assert_allclose(sig, gated, rtol=1e-6)
    np.testing.assert_allclose(gated.reshape(2, -1).sum(1), logits_of(model, x, [0, 0]), rtol=1e-4)


def test_nested_model_gives_the_same_relevance_as_flat():
    keras.utils.set_random_seed(8)
    inner_in = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, activation="relu", name="i_conv")(inner_in)
    x = L.BatchNormalization(name="i_bn")(L.Conv2D(4, 3, name="i_conv2")(x))
    backbone = keras.Model(inner_in, L.ReLU()(x), name="backbone")
    gap, head = L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax")
    nested = keras.Sequential([keras.Input((8, 8, 3)), backbone, gap, head])
    flat = keras.Model(backbone.input, head(gap(backbone.output)))
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("f4")
    for composite in ("epsilon_plus", "epsilon_gamma_box"):
        kw = {"composite": composite, "value_range": (-5, 5)}
        np.testing.assert_allclose(
            kerasviz.lrp(nested, x, [0, 1], **kw), kerasviz.lrp(flat, x, [0, 1], **kw), rtol=1e-5
        )
    inner = kerasviz.lrp(nested, x, [0, 1], "backbone/i_conv2")
    assert inner.shape == (2, 4, 4, 4)


class LayerScale(keras.layers.Layer):
    """Stands for ConvNeXt's unexported layer of that name (x * gamma per channel)."""

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gamma


def test_hard_swish_ops_layer_norm_and_layer_scale():
    # x * relu6(x + 3) / 6 (MobileNetV3's hard-swish, as keras.ops nodes): x is the signal,
    # since the gate is computed from it. LayerNormalization holds its statistics constant
    # and passes relevance; LayerScale (by name) is affine. With LRP-0 and no biases the
    # input's relevance is then the logit.
    keras.utils.set_random_seed(13)
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, use_bias=False)(inputs)
    x = L.Multiply(name="hswish")([x, keras.ops.relu6(x + 3.0) * (1.0 / 6.0)])
    x = L.LayerNormalization(name="ln")(x)
    x = L.Dense(4, use_bias=False, activation="gelu")(x)
    x = L.Add()([x, LayerScale(name="scale")(x)])
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, use_bias=False)(x))
    model.get_layer("scale").gamma.assign(np.linspace(-0.5, 1.5, 4).astype("f4"))
    x = np.random.default_rng(8).normal(size=(2, 6, 6, 2)).astype("f4")
    r = kerasviz.lrp(model, x, [0, 1], composite="epsilon", epsilon=0.0)
    np.testing.assert_allclose(r.reshape(2, -1).sum(1), logits_of(model, x, [0, 1]), rtol=1e-4)
    ln, before = kerasviz.lrp(model, x, [0, 1], ["ln", "hswish"], composite="zplus")
    np.testing.assert_array_equal(ln, before)
    a, delta = kerasviz.deeplift(model, x, [0, 1], baseline="blur", return_delta=True)
    np.testing.assert_allclose(delta, 0, atol=1e-5 * np.abs(a).sum())


# ---------------------------------------------------------------------------------------------
# Every layer kind: LRP-0 equals gradient x input on bias-free ReLU networks


def _kinds_2d():
    keras.utils.set_random_seed(9)
    inputs = keras.Input((12, 12, 2))
    x = L.Conv2D(4, 3, padding="same", activation="relu", use_bias=False)(inputs)
    x = L.MaxPooling2D(2)(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, depth_multiplier=2)(x)
    x = L.ReLU()(x)
    a = L.SeparableConv2D(5, 3, padding="same", activation="relu", use_bias=False)(x)
    b = L.Conv2D(5, 1, use_bias=False)(x)
    x = L.Add()([a, b])
    x = L.ZeroPadding2D(1)(x)
    x = L.Cropping2D(((0, 2), (1, 1)))(x)
    x = L.UpSampling2D(2)(x)
    x = L.Conv2DTranspose(3, 3, strides=2, padding="same", use_bias=False, activation="relu")(x)
    c = L.AveragePooling2D(2)(x)
    d = L.MaxPooling2D(2)(x)
    x = L.Concatenate()([c, d])
    x = L.Dropout(0.5)(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3, use_bias=False, activation="softmax")(x))


def _kinds_1d():
    keras.utils.set_random_seed(10)
    inputs = keras.Input((20, 3))
    x = L.Conv1D(4, 3, padding="causal", activation="relu", use_bias=False)(inputs)
    x = L.Conv1D(4, 3, use_bias=False, activation="relu")(x)
    x = L.MaxPooling1D(2)(x)
    x = L.GlobalMaxPooling1D()(x)
    return keras.Model(inputs, L.Dense(2, use_bias=False)(x))


def _kinds_3d():
    keras.utils.set_random_seed(11)
    return keras.Sequential(
        [
            keras.Input((6, 6, 6, 2)),
            L.Conv3D(3, 3, activation="relu", use_bias=False),
            L.GlobalAveragePooling3D(),
            L.Dense(2, use_bias=False),
        ]
    )


@pytest.mark.parametrize("build", [_kinds_2d, _kinds_1d, _kinds_3d], ids=["2d", "1d", "3d"])
def test_every_layer_kind_lrp0_equals_gradient_x_input(build):
    model = build()
    shape = (2, *model.inputs[0].shape[1:])
    x = np.random.default_rng(5).normal(size=shape).astype("f4")
    r = kerasviz.lrp(model, x, [0, 1], composite="epsilon", epsilon=0.0)
    expected = gradient_x_input(model, x, [0, 1])
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(r, expected, rtol=1e-3, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(r.reshape(2, -1).sum(1), logits_of(model, x, [0, 1]), rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# keras.applications, flat and nested (weights=None: biases and BatchNorm shifts are zero, so
# the networks are bias-free and relevance is conserved where the rules conserve it)

APPS = ["VGG16", "ResNet50", "DenseNet121", "MobileNetV2", "EfficientNetB0"]
#: Networks whose hidden units all pass through a ReLU: z+ keeps every relevant output.
RELU_NETS = {"VGG16", "ResNet50", "DenseNet121"}
XA = np.random.default_rng(6).uniform(-1, 1, (2, 32, 32, 3)).astype("f4")


@pytest.fixture(scope="module", params=APPS)
def application(request):
    keras.utils.set_random_seed(0)
    base = getattr(keras.applications, request.param)(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    gap, head = L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax")
    flat = keras.Model(base.input, head(gap(base.output)))
    nested = keras.Sequential([keras.Input((32, 32, 3)), base, gap, head])
    return request.param, flat, nested


def test_applications_flat_and_nested(application):
    name, flat, nested = application
    r_flat = kerasviz.lrp(flat, XA, [0, 2], epsilon=0.0)
    r_nested = kerasviz.lrp(nested, XA, [0, 2], epsilon=0.0)
    scale = np.abs(r_flat).max()
    assert r_flat.shape == r_nested.shape == XA.shape
    assert np.all(np.isfinite(r_flat)) and scale > 0
    np.testing.assert_allclose(r_nested, r_flat, rtol=1e-4, atol=1e-5 * scale)
    if name in RELU_NETS:
        logits = logits_of(flat, XA, [0, 2])
        np.testing.assert_allclose(r_flat.reshape(2, -1).sum(axis=1), logits, rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_unknown_composite_and_rule_list_the_valid_ones(two_layer):
    with pytest.raises(ValueError, match="epsilon_plus.*epsilon_gamma_box.*zplus"):
        kerasviz.lrp(two_layer, X2, 1, composite="epsilon_plsu")
    with pytest.raises(ValueError, match="'flat', 'wsquare', 'zbox'.*'zbox2'"):
        kerasviz.lrp(two_layer, X2, 1, composite={"first": "zbox2"})
    with pytest.raises(ValueError, match="keys of `composite`.*'first', 'conv', 'dense'"):
        kerasviz.lrp(two_layer, X2, 1, composite={"convs": "zplus"})
    with pytest.raises(ValueError, match="give a rule for every Dense.*'o'"):
        kerasviz.lrp(two_layer, X2, 1, composite={"first": "zplus"})


def test_bad_rule_parameters_are_named(two_layer):
    with pytest.raises(ValueError, match="`gamma` to be a number >= 0.*gamma=-0.1"):
        kerasviz.lrp(two_layer, X2, 1, composite="gamma", gamma=-0.1)
    with pytest.raises(ValueError, match="`alpha` - `beta` = 1.*alpha=2.0, beta=0.5"):
        kerasviz.lrp(two_layer, X2, 1, composite="alpha_beta", alpha=2.0, beta=0.5)
    with pytest.raises(ValueError, match="`epsilon` to be a number >= 0"):
        kerasviz.lrp(two_layer, X2, 1, composite="epsilon", epsilon=-1.0)
    with pytest.raises(ValueError, match="gamma=0.5, which composite='epsilon_plus' does not"):
        kerasviz.lrp(two_layer, X2, 1, gamma=0.5)
    with pytest.raises(ValueError, match="fixes alpha=2, beta=1"):
        kerasviz.lrp(two_layer, X2, 1, composite="epsilon_alpha2_beta1", alpha=3.0)


def test_value_range_is_required_and_checked(two_layer):
    with pytest.raises(ValueError, match="`value_range`.*z\\^B.*value_range=None"):
        kerasviz.lrp(two_layer, X2, 1, composite="epsilon_gamma_box")
    with pytest.raises(ValueError, match="within `value_range`.*\\[-1, 2\\]"):
        kerasviz.lrp(two_layer, X2, 1, composite="epsilon_gamma_box", value_range=(0, 1))
    with pytest.raises(ValueError, match="low < high"):
        kerasviz.lrp(two_layer, X2, 1, composite="epsilon_gamma_box", value_range=(3, -3))


class Doubler(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x


def test_layer_without_rule_fails_before_any_work_and_the_table_extends():
    keras.utils.set_random_seed(12)
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    x = Doubler(name="twice")(x)
    x = L.Softmax(name="norm")(x)  # a softmax inside the network has no rule
    x = L.Flatten()(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    x = np.random.default_rng(7).normal(size=(1, 6, 6, 2)).astype("f4")
    before = TRACES["lrp_step"]
    with pytest.raises(ValueError, match="'twice' of type Doubler.*'norm' of type Softmax") as e:
        kerasviz.lrp(model, x, 0)
    assert "kerasviz.attribution.lrp_rules.LAYER_KINDS" in str(e.value)
    assert TRACES["lrp_step"] == before
    lrp_rules.LAYER_KINDS[Doubler] = "affine"
    lrp_rules.LAYER_KINDS[L.Softmax] = "activation"
    try:
        r = kerasviz.lrp(model, x, 0, ["twice", "conv"])
    finally:
        del lrp_rules.LAYER_KINDS[Doubler], lrp_rules.LAYER_KINDS[L.Softmax]
    np.testing.assert_array_equal(r[0], r[1])  # an affine layer passes relevance unchanged


def test_other_unsupported_models():
    inputs = keras.Input((4,))
    x = L.Dense(3, activation="softmax", name="inner_softmax")(inputs)
    model = keras.Model(inputs, L.Dense(2)(x))
    with pytest.raises(ValueError, match="'inner_softmax' of type Dense"):
        kerasviz.lrp(model, np.ones((1, 4), "f4"), 0)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ValueError, match="subclassed model of type Sub"):
        kerasviz.lrp(Sub(), np.ones((1, 4), "f4"), 0)
    shared = L.Dense(4, name="shared")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(shared(shared(inputs))))
    with pytest.raises(ValueError, match="'shared', which the model calls 2 times"):
        kerasviz.lrp(model, np.ones((1, 4), "f4"), 0, "shared")
