"""Activation maximization speed: kerasviz.maximize against the compute limit and two peers.

Setup (issue 5): 16 channels x 30 steps on VGG16(weights=None, include_top=False)
``block3_conv1`` at 128x128, Adam, no transforms and no regularizers (comparable settings).

- compute limit: one compiled ``tf.while_loop`` of 30 forward+backward passes of the truncated
  model (input -> block3_conv1) on the 16 rows, with a trivial update (bound: <= 1.2x);
- tf-keras-vis ``ActivationMaximization`` on the same 16 objectives as one batch, Adam, no
  input modifiers, no regularizers (bound: kerasviz >= 2x faster);
- the seeds' style: one filter at a time, an eager GradientTape loop with Adam (bound: kerasviz
  >= 2.5x faster).

Every method runs once untimed first (one step: tracing, warm caches), then ``--repeats`` times
(default 2) timed, round robin, and the fastest run of each counts.

Usage: ``python benchmarks/bench_optimize.py [--quick]`` (``--quick``: 64x64, 4 channels,
4 steps; a smoke run whose ratios mean little).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import channel_limit  # noqa: E402

import kerasviz  # noqa: E402

LAYER = "block3_conv1"
LR = 0.05


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method")
    args = parser.parse_args()
    size, channels, steps = (64, 4, 4) if args.quick else (128, 16, 30)

    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    truncated = keras.Model(model.inputs, model.get_layer(LAYER).output)
    rows = np.arange(channels, dtype=np.int32)
    rng = np.random.default_rng(0)
    start = (0.5 + rng.uniform(-0.1, 0.1, (channels, size, size, 3))).astype(np.float32)
    print(
        f"VGG16(weights=None) {LAYER} at {size}x{size}: {channels} channels x {steps} steps, "
        f"tf {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPU(s)"
    )

    # -------------------------------------------------------- kerasviz
    objectives = [kerasviz.channel(LAYER, int(c)) for c in rows]

    def run_kerasviz(n_steps=steps):
        return kerasviz.maximize(
            model,
            objectives,
            steps=n_steps,
            start=start,
            transforms=(),
            regularizers=(),
            learning_rate=LR,
            progress=False,
        )

    # -------------------------------------------------------- compute limit
    run_limit = channel_limit(truncated, start, rows, steps)

    # -------------------------------------------------------- tf-keras-vis
    from tf_keras_vis.activation_maximization import ActivationMaximization
    from tf_keras_vis.utils.scores import CategoricalScore

    visualizer = ActivationMaximization(truncated, clone=False)

    def run_tfkv(n_steps=steps):
        return visualizer(
            CategoricalScore([int(c) for c in rows]),
            seed_input=start.copy(),
            input_range=(0.0, 1.0),
            input_modifiers=[],
            regularizers=[],
            steps=n_steps,
            optimizer=keras.optimizers.Adam(LR),
        )

    # -------------------------------------------------------- seed style
    def run_seed_style(n_steps=steps):
        patterns = []
        for c in rows:
            image = tf.Variable(start[c : c + 1])
            optimizer = keras.optimizers.Adam(LR)
            for _ in range(n_steps):
                with tf.GradientTape() as tape:
                    loss = -tf.reduce_mean(truncated(image, training=False)[..., int(c)])
                grads = tape.gradient(loss, image)
                optimizer.apply_gradients([(grads, image)])
                image.assign(tf.clip_by_value(image, 0.0, 1.0))
            patterns.append(image.numpy())
        return np.concatenate(patterns)

    # Warm-up: one step each (the compiled loops take the step count as a tensor: no retrace).
    for fn in (run_kerasviz, run_limit, run_tfkv, run_seed_style):
        fn(1)
    traces = dict(kerasviz._probe.TRACES)

    methods = {
        "kerasviz.maximize": run_kerasviz,
        "compute limit": run_limit,
        "tf-keras-vis AM": run_tfkv,
        "seed style (eager, 1 by 1)": run_seed_style,
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):  # round robin: machine load hits every method alike
        for name, fn in methods.items():
            times[name].append(timed(fn))
    assert dict(kerasviz._probe.TRACES) == traces, "kerasviz retraced while timed"
    best = {name: min(runs) for name, runs in times.items()}
    for name, runs in times.items():
        listed = ", ".join(f"{t:.2f}" for t in runs)
        print(f"{name:27s} {best[name]:8.2f} s  (best of: {listed})")
    kv, lim = best["kerasviz.maximize"], best["compute limit"]
    t_tfkv, t_seed = best["tf-keras-vis AM"], best["seed style (eager, 1 by 1)"]
    checks = [
        ("kerasviz / compute limit", kv / lim, "<=", 1.2),
        ("tf-keras-vis / kerasviz", t_tfkv / kv, ">=", 2.0),
        ("seed style / kerasviz", t_seed / kv, ">=", 2.5),
    ]
    for name, ratio, op, bound in checks:
        ok = ratio <= bound if op == "<=" else ratio >= bound
        print(f"{name:26s} {ratio:6.2f}x  (required {op} {bound}x)  {'met' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
