"""Reference LRP relevances from an independent, explicit numpy implementation.

Writes ``tests/data/lrp_reference.npz``, which ``tests/test_lrp.py`` compares
``kerasviz.lrp`` against. Nothing here is shared with ``kerasviz/attribution/lrp*.py``: every
layer is written out as an explicit float64 matrix (convolutions unrolled into dense matrices
by loops over positions and taps), every rule as explicit per-connection contributions
``z_ij = x_i w_ij``, following the formulas of Montavon et al. (2019) and Zennit's composites:

- epsilon: ``R_i = sum_j z_ij / (z_j + eps sign(z_j)) R_j``, ``z_j`` with bias;
- z+: ``R_i = sum_j z_ij^+ / (sum_i z_ij^+ + b_j^+) R_j``;
- alpha-beta: ``alpha z_ij^+ / (sum z^+ + b^+) - beta z_ij^- / (sum z^- + b^-)``;
- gamma (sign-aware): for ``z_j > 0`` contributions ``z_ij + gamma z_ij^+`` over
  ``z_j + gamma (sum z^+ + b^+)``, for ``z_j < 0`` with negative parts, denominator
  stabilized by 1e-6 with its sign;
- flat: equal shares over the receptive field; w^2: ``w_ij^2 / sum_i w_ij^2``;
- z^B: ``(x_i w_ij - l_i w_ij^+ - h_i w_ij^-)`` normalized per output;
- BatchNormalization after a convolution folded into it; a BatchNormalization after a
  concatenation passes relevance unchanged; ReLU passes; max pooling gives all to the
  winner; Add and average pooling share by ``x_i / (z + 1e-6 sign(z) sum|x|)``;
  concatenation splits; the softmax head is bypassed and relevance starts at the logit.

The model is a small fixed-seed CNN with those layers and random biases and BatchNorm
statistics. Run once (the output is committed):
    .venv/bin/python benchmarks/lrp_reference.py
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "lrp_reference.npz")
SIZE = 8
STAB = 1e-6

#: (kerasviz.lrp keyword arguments) for each stored reference, JSON-able.
CONFIGS = [
    {"composite": "epsilon_plus"},
    {"composite": "epsilon_gamma_box", "value_range": [-1.0, 1.0]},
    {"composite": "epsilon_alpha2_beta1"},
    {"composite": "epsilon", "epsilon": 0.1},
    {"composite": "zplus"},
    {"composite": "alpha_beta", "alpha": 1.0, "beta": 0.0},
    {"composite": "gamma", "gamma": 0.5},
    {"composite": {"first": "flat", "conv": "zplus", "dense": "epsilon"}, "epsilon": 0.01},
    {"composite": {"first": "wsquare", "linear": "gamma"}},
]
TARGETS = np.array([0, 1, 2, 1])


def build_model() -> keras.Model:
    """The reference CNN: conv+BN, residual Add, max pooling, depthwise conv+BN,
    concatenation, a BatchNorm after it, average pooling, dense layers, softmax head."""
    L = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = L.Conv2D(6, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization(name="b1")(x)
    x = L.ReLU(name="r1")(x)
    y = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(x)
    z = L.Conv2D(6, 1, name="c3")(x)
    x = L.Add(name="a1")([y, z])
    x = L.ReLU(name="r2")(x)
    x = L.MaxPooling2D(2, name="p1")(x)
    d = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="d1")(x)
    d = L.BatchNormalization(name="db")(d)
    d = L.ReLU(name="dr")(d)
    e = L.Conv2D(4, 1, activation="relu", name="e1")(x)
    x = L.Concatenate(name="cat")([d, e])
    x = L.BatchNormalization(name="b2")(x)
    x = L.ReLU(name="r3")(x)
    x = L.AveragePooling2D(2, name="ap")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(8, activation="relu", name="fc1")(x)
    outputs = L.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="lrp_reference_cnn")


def random_weights(model: keras.Model, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Random kernels, biases and BatchNorm statistics, by layer name."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in model.layers:
        values = []
        for w in layer.get_weights():
            values.append(rng.normal(0.0, 0.5, w.shape).astype(np.float32))
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = values
            values = [1.0 + 0.3 * gamma, 0.2 * beta, 0.3 * mean, 0.5 + np.abs(var)]
        if values:
            weights[layer.name] = [np.asarray(v, np.float32) for v in values]
    return weights


# ---------------------------------------------------------------------------------------------
# Explicit layers (per image, flat HWC vectors, float64)


def conv_matrix(kernel, h, w, depthwise=False):
    """``(M, A)``: a stride-1 'same' convolution as a dense matrix (inputs x outputs), and its
    connection mask (1 where an input lies in an output's window, padding excluded)."""
    kh, kw, cin, cout = kernel.shape
    outs = cin * cout if depthwise else cout
    m = np.zeros((h * w * cin, h * w * outs))
    a = np.zeros_like(m)
    top, left = (kh - 1) // 2, (kw - 1) // 2
    for oh in range(h):
        for ow in range(w):
            for i in range(kh):
                for j in range(kw):
                    ih, iw = oh + i - top, ow + j - left
                    if not (0 <= ih < h and 0 <= iw < w):
                        continue
                    for ci in range(cin):
                        row = (ih * w + iw) * cin + ci
                        for co in range(cout):
                            channel = ci * cout + co if depthwise else co
                            col = (oh * w + ow) * outs + channel
                            m[row, col] = kernel[i, j, ci, co]
                            a[row, col] = 1.0
    return m, a


def fold_bn(m, b, bn, positions):
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in bn)
    scale = gamma / np.sqrt(var + 1e-3)
    shift = beta - mean * scale
    scale_t, shift_t = np.tile(scale, positions), np.tile(shift, positions)
    return m * scale_t[None, :], b * scale_t + shift_t


def sign0(v):
    return np.where(v >= 0, 1.0, -1.0)


def ratio(num, den):
    """num / den per column; columns with den == 0 pass nothing."""
    safe = np.where(den == 0, 1.0, den)
    return np.where(den == 0, 0.0, num / safe)


def linear_rule(rule, x, m, a, b, r, low=None, high=None):
    """Relevance of the inputs of ``z = x @ m + b`` under ``rule`` (a (name, params) pair)."""
    name, p = rule
    z_ij = x[:, None] * m
    z = z_ij.sum(axis=0) + b
    pos, neg = np.maximum(z_ij, 0), np.minimum(z_ij, 0)
    if name == "epsilon":
        return ratio(z_ij, z + p["epsilon"] * sign0(z)) @ r
    if name == "zplus":
        return ratio(pos, pos.sum(0) + np.maximum(b, 0)) @ r
    if name == "alpha_beta":
        up = ratio(pos, pos.sum(0) + np.maximum(b, 0))
        down = ratio(neg, neg.sum(0) + np.minimum(b, 0))
        return (p["alpha"] * up - p["beta"] * down) @ r
    if name == "gamma":
        g = p["gamma"]
        result = np.zeros_like(x)
        for j in range(len(z)):
            if z[j] > 0:
                c = z_ij[:, j] + g * pos[:, j]
                den = c.sum() + b[j] + g * max(b[j], 0)
            elif z[j] < 0:
                c = z_ij[:, j] + g * neg[:, j]
                den = c.sum() + b[j] + g * min(b[j], 0)
            else:
                continue
            den = den + STAB * (1.0 if den >= 0 else -1.0)
            result += c / den * r[j]
        return result
    if name == "flat":
        return ratio(a, a.sum(0)) @ r
    if name == "wsquare":
        return ratio(m * m, (m * m).sum(0)) @ r
    if name == "zbox":
        c = x[:, None] * m - low[:, None] * np.maximum(m, 0) - high[:, None] * np.minimum(m, 0)
        return ratio(c, c.sum(0)) @ r
    raise ValueError(name)


def proportional(parts, r):
    """Relevance of the terms of ``z = sum_k parts[k]`` (elementwise), by contribution."""
    z = sum(parts)
    size = sum(np.abs(p) for p in parts)
    den = z + STAB * sign0(z) * size
    return [ratio(p, den) * r for p in parts]


def rule_for(config, layer_name, first):
    """(rule name, params) for a linear layer under a configuration (Zennit's composites)."""
    comp = config["composite"]
    kind = "dense" if layer_name in ("fc1", "out") else "conv"
    eps = {"epsilon": config.get("epsilon", 1e-6)}
    gam = {"gamma": config.get("gamma", 0.25)}
    if comp == "epsilon_plus":
        return ("epsilon", eps) if kind == "dense" else ("zplus", {})
    if comp == "epsilon_gamma_box":
        if first:
            return ("zbox", {})
        return ("epsilon", eps) if kind == "dense" else ("gamma", gam)
    if comp == "epsilon_alpha2_beta1":
        return ("epsilon", eps) if kind == "dense" else ("alpha_beta", {"alpha": 2, "beta": 1})
    if comp == "epsilon":
        return "epsilon", eps
    if comp == "zplus":
        return "zplus", {}
    if comp == "alpha_beta":
        return "alpha_beta", {"alpha": config["alpha"], "beta": config["beta"]}
    if comp == "gamma":
        return "gamma", gam
    for selector, name in comp.items():
        if selector == "first" and first or selector in (kind, "linear"):
            params = {"epsilon": eps, "gamma": gam}.get(name, {})
            return name, (params if isinstance(params, dict) else {})
    raise ValueError(comp)


class Reference:
    """The reference CNN as explicit float64 layers, for one set of weights."""

    def __init__(self, weights: dict[str, list[np.ndarray]]):
        w = {k: [np.asarray(v, np.float64) for v in vs] for k, vs in weights.items()}
        s, h = SIZE, SIZE // 2
        m, self.a_c1 = conv_matrix(w["c1"][0], s, s)
        self.c1 = fold_bn(m, np.tile(w["c1"][1], s * s), w["b1"], s * s)
        m, self.a_c2 = conv_matrix(w["c2"][0], s, s)
        self.c2 = (m, np.tile(w["c2"][1], s * s))
        m, self.a_c3 = conv_matrix(w["c3"][0], s, s)
        self.c3 = (m, np.tile(w["c3"][1], s * s))
        m, self.a_d1 = conv_matrix(w["d1"][0], h, h, depthwise=True)
        self.d1 = fold_bn(m, np.zeros(h * h * 6), w["db"], h * h)
        m, self.a_e1 = conv_matrix(w["e1"][0], h, h)
        self.e1 = (m, np.tile(w["e1"][1], h * h))
        gamma, beta, mean, var = w["b2"]
        scale = gamma / np.sqrt(var + 1e-3)
        self.b2 = (np.tile(scale, h * h), np.tile(beta - mean * scale, h * h))
        self.ap = np.zeros((h * h * 10, 4 * 10))
        for oh in range(2):
            for ow in range(2):
                for i in range(2):
                    for j in range(2):
                        for c in range(10):
                            row = ((2 * oh + i) * h + 2 * ow + j) * 10 + c
                            self.ap[row, (oh * 2 + ow) * 10 + c] = 0.25
        self.fc1 = (w["fc1"][0], w["fc1"][1])
        self.out = (w["out"][0], w["out"][1])

    def relevance(self, x: np.ndarray, target: int, config: dict) -> tuple:
        """``(relevance of the input (H, W, C), target logit, logits)`` for one image."""
        s, h = SIZE, SIZE // 2
        relu = lambda v: np.maximum(v, 0)  # noqa: E731
        x0 = x.reshape(-1).astype(np.float64)
        # Forward.
        x1 = relu(x0 @ self.c1[0] + self.c1[1])
        y = relu(x1 @ self.c2[0] + self.c2[1])
        z = x1 @ self.c3[0] + self.c3[1]
        x2 = relu(y + z).reshape(s, s, 6)
        windows = x2.reshape(h, 2, h, 2, 6).transpose(0, 2, 4, 1, 3).reshape(h, h, 6, 4)
        winner = windows.argmax(axis=-1)
        x3 = windows.max(axis=-1).reshape(-1)
        d = relu(x3 @ self.d1[0] + self.d1[1]).reshape(h, h, 6)
        e = relu(x3 @ self.e1[0] + self.e1[1]).reshape(h, h, 4)
        cat = np.concatenate([d, e], axis=-1).reshape(-1)
        x4 = relu(cat * self.b2[0] + self.b2[1])
        x5 = x4 @ self.ap
        x6 = relu(x5 @ self.fc1[0] + self.fc1[1])
        logits = x6 @ self.out[0] + self.out[1]
        # Backward.
        first = {"c1": True}
        rule = {
            n: rule_for(config, n, first.get(n, False))
            for n in ("c1", "c2", "c3", "d1", "e1", "fc1", "out")
        }
        r = np.zeros(3)
        r[target] = logits[target]
        r = linear_rule(rule["out"], x6, *self._dense(self.out), r)
        r = linear_rule(rule["fc1"], x5, *self._dense(self.fc1), r)
        r5 = proportional_pool(x4, self.ap, r)
        r_cat = r5  # the standalone BatchNorm and the ReLUs pass relevance unchanged
        r_cat = r_cat.reshape(h, h, 10)
        r_d, r_e = r_cat[..., :6].reshape(-1), r_cat[..., 6:].reshape(-1)
        r3 = linear_rule(rule["d1"], x3, self.d1[0], self.a_d1, self.d1[1], r_d)
        r3 = r3 + linear_rule(rule["e1"], x3, self.e1[0], self.a_e1, self.e1[1], r_e)
        r3 = r3.reshape(h, h, 6)
        r2 = np.zeros((h, h, 6, 4))
        for i in range(h):
            for j in range(h):
                for c in range(6):
                    r2[i, j, c, winner[i, j, c]] = r3[i, j, c]
        r2 = r2.reshape(h, h, 6, 2, 2).transpose(0, 3, 1, 4, 2).reshape(-1)
        ry, rz = proportional([y, z], r2)
        r1 = linear_rule(rule["c2"], x1, self.c2[0], self.a_c2, self.c2[1], ry)
        r1 = r1 + linear_rule(rule["c3"], x1, self.c3[0], self.a_c3, self.c3[1], rz)
        low = high = None
        if "value_range" in config:
            low = np.full_like(x0, config["value_range"][0])
            high = np.full_like(x0, config["value_range"][1])
        r0 = linear_rule(rule["c1"], x0, self.c1[0], self.a_c1, self.c1[1], r1, low, high)
        return r0.reshape(x.shape), float(logits[target]), logits

    @staticmethod
    def _dense(layer):
        m, b = layer
        return m, np.ones_like(m), b


def proportional_pool(x, pool, r):
    """Average pooling as ``z_j = sum_i x_i p_ij``; relevance by contribution."""
    c = x[:, None] * pool
    z = c.sum(0)
    size = (np.abs(x)[:, None] * pool).sum(0)
    return ratio(c, z + STAB * sign0(z) * size) @ r


def main() -> None:
    keras.utils.set_random_seed(0)
    model = build_model()
    weights = random_weights(model)
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
    x = np.random.default_rng(1).uniform(-1, 1, (len(TARGETS), SIZE, SIZE, 3)).astype(np.float32)
    ref = Reference(weights)
    pre = keras.Model(model.inputs, model.get_layer("out").input)
    w_out = model.get_layer("out").get_weights()
    keras_logits = pre.predict(x, verbose=0) @ w_out[0] + w_out[1]
    arrays = {"x": x, "targets": TARGETS, "configs": np.array(json.dumps(CONFIGS))}
    for name, values in weights.items():
        for k, v in enumerate(values):
            arrays[f"weights/{name}/{k}"] = v
    for c, config in enumerate(CONFIGS):
        rel = []
        for i in range(len(x)):
            r, logit, logits = ref.relevance(x[i], int(TARGETS[i]), config)
            np.testing.assert_allclose(logits, keras_logits[i], rtol=1e-4, atol=1e-5)
            rel.append(r)
        rel = np.stack(rel)
        arrays[f"relevance/{c}"] = rel
        sums = rel.reshape(len(x), -1).sum(axis=1)
        print(f"{json.dumps(config)}: relevance sums {np.round(sums, 4)}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"logits {np.round(keras_logits[np.arange(len(x)), TARGETS], 4)}; wrote {OUT}")


if __name__ == "__main__":
    main()
