"""Filter-pattern speed WITH the defaults on: against the compute limit and tf-keras-vis.

Setup (issue 12, "Faster patterns"): 16 channels x 30 steps on VGG16(weights=None,
include_top=False) ``block3_conv1`` at 128x128, everything at its default:

- kerasviz ``filter_patterns`` with its default transforms (jitter, scale, rotate, jitter) and
  regularizers (L2, total variation) and Adam, in two parametrizations: the library default
  ``"pixel"`` and ``"fourier"`` (decorrelated 1/f spectrum, what ``kerasviz report`` uses);
- compute limit: one compiled ``tf.while_loop`` of 30 forward+backward passes of the truncated
  model (input -> block3_conv1) on the 16 rows, with a trivial update (bound: <= 1.2x). It
  computes all 256 filters of ``block3_conv1``, as tf-keras-vis does; kerasviz's channel
  objectives on a plain Conv2D compute only the 16 selected ones from the layer's input
  (:func:`kerasviz.optimize.objectives.selected_filters_layer`), so it can beat this limit;
- tf-keras-vis ``ActivationMaximization`` on the same 16 objectives as one batch, with ITS
  default input modifiers (Jitter(4), Rotate2D(1)), regularizers (TotalVariation2D(1),
  Norm(0.3, p=1)) and optimizer (bound: kerasviz >= 2x faster).

Every method runs once untimed first (one step: tracing, warm caches), then ``--repeats`` times
(default 3) timed, interleaved (round robin), so that the load of the shared machine hits every
method alike. Ratios use each method's FASTEST run (the median is printed too). CPU time
(``time.process_time``, all threads of this process) is printed beside wall time; it is
steadier on a loaded machine, and its ratios are checked against the same bounds.

The first lines profile one step's own work of the defaults (parametrization, transforms and
regularizers, forward and backward, no model) against one step of the limit.

Usage: ``python benchmarks/bench_patterns.py [--quick] [--repeats N]`` (``--quick``: 64x64,
4 channels, 4 steps; a smoke run whose ratios mean little).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import channel_limit  # noqa: E402

import kerasviz  # noqa: E402
from kerasviz.optimize.params import get_parametrization  # noqa: E402
from kerasviz.optimize.regularizers import DEFAULT_REGULARIZERS, penalty  # noqa: E402
from kerasviz.optimize.transforms import DEFAULT_TRANSFORMS, apply_transforms  # noqa: E402

LAYER = "block3_conv1"
PARAMETRIZATIONS = ("pixel", "fourier")


def measure(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def defaults_only(parametrization: str, rows: int, size: int, steps: int):
    """A compiled loop of the defaults' own work (no model): parametrization, transforms,
    regularizers, forward and backward, and a trivial update."""
    param = get_parametrization(parametrization)
    var = tf.Variable(np.zeros(param.shape(rows, size, size, 3), np.float32))
    seed = tf.constant(0, tf.int64)

    @tf.function
    def loop(n):
        def body(i, total):
            with tf.GradientTape() as tape:
                unit = param.to_unit(var, size, size, 3)
                x = apply_transforms(DEFAULT_TRANSFORMS, unit, seed, i)
                loss = tf.reduce_mean(x) + tf.reduce_sum(penalty(DEFAULT_REGULARIZERS, unit))
            var.assign_sub(1e-3 * tape.gradient(loss, var))
            return i + 1, total + loss

        return tf.while_loop(lambda i, t: i < n, body, (tf.constant(0), tf.constant(0.0)))[1]

    loop(tf.constant(1)).numpy()
    return lambda: loop(tf.constant(steps)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method")
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
        f"defaults on; tf {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPU(s), "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    # -------------------------------------------------------- kerasviz, defaults on
    def patterns(parametrization):
        def run(n_steps=steps):
            return kerasviz.filter_patterns(
                model,
                LAYER,
                channels=range(channels),
                steps=n_steps,
                parametrization=parametrization,
                progress=False,
            )

        return run

    # -------------------------------------------------------- compute limit
    run_limit = channel_limit(truncated, start, rows, steps)

    # -------------------------------------------------------- tf-keras-vis, its defaults
    from tf_keras_vis.activation_maximization import ActivationMaximization
    from tf_keras_vis.utils.scores import CategoricalScore

    visualizer = ActivationMaximization(truncated, clone=False)

    def run_tfkv(n_steps=steps):
        return visualizer(
            CategoricalScore([int(c) for c in rows]),
            seed_input=start.copy(),
            input_range=(0.0, 1.0),
            steps=n_steps,
        )

    # -------------------------------------------------------- profile: the defaults' own work
    run_limit(1)
    limit_step = min(measure(run_limit)[1] for _ in range(1)) / steps
    for name in PARAMETRIZATIONS:
        own = defaults_only(name, channels, size, steps)
        cpu = min(measure(own)[1] for _ in range(3)) / steps
        print(
            f"profile: {name:7s} parametrization+transforms+regularizers {1e3 * cpu:6.1f} ms CPU "
            f"per step = {100 * cpu / limit_step:4.1f}% of one limit step ({1e3 * limit_step:.0f} "
            "ms CPU)"
        )

    methods = {f"kerasviz defaults ({p})": patterns(p) for p in PARAMETRIZATIONS}
    methods["compute limit"] = run_limit
    methods["tf-keras-vis AM (defaults)"] = run_tfkv
    for fn in methods.values():  # warm-up: one step each (the step count is a tensor)
        fn(1)
    traces = dict(kerasviz._probe.TRACES)

    walls: dict[str, list[float]] = {name: [] for name in methods}
    cpus: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):  # interleaved: machine load hits every method alike
        for name, fn in methods.items():
            wall, cpu = measure(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)
    assert dict(kerasviz._probe.TRACES) == traces, "kerasviz retraced while timed"

    print(
        f"{'':28s} {'wall s: fastest':>15s} {'median':>7s} {'CPU s: fastest':>15s} {'median':>7s}"
    )
    for name in methods:
        w, c = walls[name], cpus[name]
        print(
            f"{name:28s} {min(w):15.2f} {statistics.median(w):7.2f} {min(c):15.2f} "
            f"{statistics.median(c):7.2f}   (wall runs: {', '.join(f'{t:.2f}' for t in w)})"
        )
    limit_wall, limit_cpu = min(walls["compute limit"]), min(cpus["compute limit"])
    tfkv_wall, tfkv_cpu = (
        min(walls["tf-keras-vis AM (defaults)"]),
        min(cpus["tf-keras-vis AM (defaults)"]),
    )
    print("ratios of the fastest runs:")
    for p in PARAMETRIZATIONS:
        name = f"kerasviz defaults ({p})"
        kv_wall, kv_cpu = min(walls[name]), min(cpus[name])
        for label, ratio, op, bound in (
            (f"{p} / compute limit, wall", kv_wall / limit_wall, "<=", 1.2),
            (f"{p} / compute limit, CPU", kv_cpu / limit_cpu, "<=", 1.2),
            (f"tf-keras-vis / {p}, wall", tfkv_wall / kv_wall, ">=", 2.0),
            (f"tf-keras-vis / {p}, CPU", tfkv_cpu / kv_cpu, ">=", 2.0),
        ):
            ok = ratio <= bound if op == "<=" else ratio >= bound
            print(
                f"  {label:34s} {ratio:5.2f}x  (required {op} {bound}x)  {'OK' if ok else 'NOT MET'}"
            )


if __name__ == "__main__":
    main()
