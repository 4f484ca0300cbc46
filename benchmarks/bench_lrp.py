"""LRP and GradientSHAP speed against the compute limit, side by side in one run.

- lrp with EpsilonPlus (epsilon on Dense, z+ on convolutions) on VGG16 (weights=None), batch
  8 at 224x224, against one compiled pass computing the logits and the gradient of the class
  logit with respect to the input (the limit: LRP is one modified forward and backward pass).
  z+ needs one more convolution per layer than a gradient (z+ = f(x; W+)), so 1.5x is the
  floor where convolutions dominate.
- gradient_shap, 20 samples, small CNN, batch 8 at 64x64, against 20 compiled forward and
  backward passes of the batch, with as many rows per pass (``batch_size=8``); the default
  rows per pass (``max(n, 32)``) is printed too: on a CPU, 32-row passes of 64x64 maps run
  slower per row than 8-row ones (cache), for integrated gradients and SmoothGrad alike.

All timings are warm medians of interleaved repeats. Run:
    .venv/bin/python benchmarks/bench_lrp.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import interleaved, report  # noqa: E402

import kerasviz  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)
keras.config.disable_interactive_logging()


def _limit_pass(model: keras.Model, targets: list[int]):
    """One compiled forward+backward pass: logits and d(class logit)/d(input)."""
    probe = kerasviz.get_probe(model)
    idx = tf.constant(targets)

    @tf.function
    def one_pass(images):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(images)
            _, logits = probe([images])
            scores = tf.gather(logits, idx, batch_dims=1)
        return logits, tape.gradient(scores, images)

    return one_pass


def bench_lrp(size: int, batch: int, repeats: int) -> None:
    model = keras.applications.VGG16(weights=None, input_shape=(size, size, 3))
    x = np.random.default_rng(0).uniform(-120, 150, (batch, size, size, 3)).astype(np.float32)
    targets = list(range(batch))
    xt = tf.constant(x)
    one_pass = _limit_pass(model, targets)
    times = interleaved(
        {
            "limit": lambda: [t.numpy() for t in one_pass(xt)],
            "lrp": lambda: kerasviz.lrp(model, x, targets, composite="epsilon_plus"),
        },
        repeats=repeats,
    )
    print(f"\n[lrp] VGG16 weights=None, batch {batch} at {size}x{size}, composite epsilon_plus")
    for name, value in times.items():
        print(f"  {name:>13}: {value * 1000:9.1f} ms")
    ratio = times["lrp"] / times["limit"]
    print(report("  lrp / (compiled forward + backward)", ratio, "<= 1.5x", ratio <= 1.5))


def small_cnn(size: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters in (32, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    for filters in (64, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def bench_gradient_shap(size: int, batch: int, repeats: int) -> None:
    model = small_cnn(size)
    rng = np.random.default_rng(1)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    background = rng.random((10, size, size, 3), dtype=np.float32)
    targets = [i % 10 for i in range(batch)]
    xt = tf.constant(x)
    one_pass = _limit_pass(model, targets)

    def passes(count: int):
        total = tf.zeros_like(xt)
        for k in range(count):
            total += one_pass(xt * ((k + 0.5) / count))[1]
        return (total / count).numpy()

    def shap(rows):
        return kerasviz.gradient_shap(
            model, x, targets, baselines=background, samples=20, noise=0.1, batch_size=rows
        )

    times = interleaved(
        {
            "20 passes": lambda: passes(20),
            f"shap {batch} rows": lambda: shap(batch),
            "shap default": lambda: shap(None),
        },
        repeats=repeats,
    )
    print(
        f"\n[gradient_shap] small CNN, batch {batch} at {size}x{size}, 20 samples, noise 0.1, "
        "10 baselines"
    )
    for name, value in times.items():
        print(f"  {name:>13}: {value * 1000:9.1f} ms")
    ratio = times[f"shap {batch} rows"] / times["20 passes"]
    label = f"  gradient_shap ({batch} rows per pass, as the passes) / 20 passes"
    print(report(label, ratio, "<= 1.3x", ratio <= 1.3))
    default = times["shap default"] / times["20 passes"]
    print(f"  gradient_shap (default max(n, 32) rows per pass) / 20 passes: {default:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs for a smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices: "
        f"{[d.device_type for d in tf.config.list_logical_devices()]}"
    )
    if args.quick:
        bench_lrp(64, 2, args.repeats)
        bench_gradient_shap(32, 4, args.repeats)
    else:
        bench_lrp(224, 8, args.repeats)
        bench_gradient_shap(64, 8, args.repeats)


if __name__ == "__main__":
    main()
