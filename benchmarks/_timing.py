"""Side-by-side timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1):
    """Median times of several functions, run in turns so that machine noise hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(label: str, ratio: float, bound: str, ok: bool) -> str:
    verdict = "OK" if ok else "NOT MET"
    return f"{label}: {ratio:.2f}x (required {bound}) {verdict}"


def channel_limit(truncated, start, rows, steps: int) -> Callable[..., object]:
    """The compute limit of activation maximization: ``run(n_steps=steps)`` runs one compiled
    ``tf.while_loop`` of forward+backward passes of ``truncated`` on ``start`` (one row per
    channel of ``rows``, score = the channel's mean) with a trivial update."""
    import tensorflow as tf

    @tf.function
    def limit_loop(x, index, n):
        def body(i, x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                maps = truncated(x, training=False)
                means = tf.reduce_mean(maps, axis=[1, 2])
                score = tf.reduce_sum(tf.gather(means, index, batch_dims=1))
            return i + 1, x + 0.01 * tape.gradient(score, x)

        return tf.while_loop(lambda i, x: i < n, body, (tf.constant(0), x))[1]

    def run(n_steps: int = steps):
        return limit_loop(tf.constant(start), tf.constant(rows), tf.constant(n_steps)).numpy()

    return run
