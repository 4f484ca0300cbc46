"""Batched perturbation methods against one-at-a-time loops, on the demo model, side by side.

Ablation-CAM, LIME and RISE score many perturbed copies of each image. kerasviz builds them
on the device and scores a chunk of rows per compiled forward pass. The loops here compute
the same results (checked: the maximum difference is printed) the way they are usually
written by hand, one perturbed copy per model call:

- Ablation-CAM on ``conv4`` (32 channels) of ``models/shapes_cnn.keras``:
  - "loop, full pass": one compiled pass of the whole model per ablated channel, the
    channel zeroed by a multiplier after ``conv4`` (a hook-style ablation);
  - "loop, tail pass": one compiled pass of the layers up to ``conv4`` per image, then one
    compiled pass of the layers after it per ablated channel (the hand-optimized loop).
- LIME (SLIC superpixels) and RISE: the perturbed image built with numpy and scored by
  - "loop, compiled": one compiled forward pass of one image per sample;
  - "loop, eager": ``model(x[None], training=False)`` per sample.

All timings are warm medians of interleaved repeats, so machine noise hits every column alike.
Run:
    .venv/bin/python benchmarks/bench_blackbox.py [--quick] [--repeats N] [--images N]
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
from kerasviz.attribution.blackbox import (  # noqa: E402
    _interpolation,
    _segment_means,
    _weighted_ridge,
    superpixels,
)

warnings.filterwarnings("ignore", category=UserWarning)
keras.config.disable_interactive_logging()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "shapes_cnn.keras")
LAYER = "conv4"
REQUIRED = 5.0


def _print(title: str, times: dict[str, float], difference: float) -> None:
    print(f"\n[{title}]")
    for name, value in times.items():
        print(f"  {name:>18}: {value * 1000:10.1f} ms")
    print(f"  max |kerasviz - loop| = {difference:.2e}")
    for name, value in times.items():
        if name == "kerasviz":
            continue
        ratio = value / times["kerasviz"]
        print(report(f"  speedup vs {name}", ratio, f">= {REQUIRED:g}x", ratio >= REQUIRED))


def _probabilities(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------- Ablation


def bench_ablation(model, images, targets, repeats: int, rows: int) -> None:
    index = [layer.name for layer in model.layers].index(LAYER)
    after = model.layers[index + 1 :]
    head = after[-1]  # Dense with a softmax: its logits are read from its own weights
    prefix = keras.Model(model.inputs[0], model.get_layer(LAYER).output)

    def tail(a):
        for layer in after[:-1]:
            a = layer(a, training=False)
        return tf.matmul(a, head.kernel) + head.bias

    full_pass = tf.function(lambda x, keep: tail(prefix(x, training=False) * keep))
    prefix_pass = tf.function(lambda x: prefix(x, training=False))
    tail_pass = tf.function(tail)
    channels = model.get_layer(LAYER).output.shape[-1]
    rf = kerasviz.receptive_field(model, LAYER)

    def finish(activations, drops):
        maps = np.maximum(np.einsum("nhwc,nc->nhw", activations, drops), 0)
        return kerasviz.backproject(maps.astype(np.float32), rf)

    def loop_full():
        activations = prefix_pass(images).numpy()
        drops = np.zeros((len(images), channels))
        for i, t in enumerate(targets):
            x = images[i : i + 1]
            clean = full_pass(x, np.ones((1, channels), np.float32)).numpy()[0, t]
            for c in range(channels):
                keep = np.ones((1, channels), np.float32)
                keep[0, c] = 0
                drops[i, c] = clean - full_pass(x, keep).numpy()[0, t]
        return finish(activations, drops)

    def loop_tail():
        activations = prefix_pass(images).numpy()
        drops = np.zeros((len(images), channels))
        for i, t in enumerate(targets):
            a = activations[i : i + 1]
            clean = tail_pass(a).numpy()[0, t]
            for c in range(channels):
                ablated = a.copy()
                ablated[..., c] = 0
                drops[i, c] = clean - tail_pass(ablated).numpy()[0, t]
        return finish(activations, drops)

    def ours():
        return kerasviz.ablation_cam(model, images, targets, LAYER, batch_size=rows)

    difference = max(float(np.abs(ours() - loop()).max()) for loop in (loop_full, loop_tail))
    times = interleaved(
        {"kerasviz": ours, "loop, full pass": loop_full, "loop, tail pass": loop_tail},
        repeats=repeats,
    )
    title = (
        f"ablation_cam: {len(images)} images at 128x128, layer {LAYER} ({channels} "
        f"channels), {rows} rows/pass"
    )
    _print(title, times, difference)


# ------------------------------------------------------------------------------- LIME, RISE


def _forwards(model):
    probe = kerasviz.get_probe(model)
    compiled = tf.function(lambda x: probe([x])[1], reduce_retracing=True)

    def one_compiled(x, target):
        return _probabilities(compiled(x[None]).numpy())[0, target]

    def one_eager(x, target):
        return float(np.asarray(model(x[None], training=False))[0, target])

    return {"loop, compiled": one_compiled, "loop, eager": one_eager}


def bench_lime(model, images, targets, samples: int, repeats: int, rows: int) -> None:
    segments, seed = 50, 0

    def loop(score):
        labels, counts = superpixels(images, segments)
        baselines = _segment_means(images, labels, counts)
        weights = np.zeros((len(images), counts.max()))
        for i, t in enumerate(targets):
            bank = np.random.default_rng(seed).integers(0, 2, (samples, counts[i]), np.uint8)
            bank = bank.astype(bool)
            bank[0] = True
            scores = np.empty(samples)
            for s in range(samples):
                mask = bank[s][labels[i]][..., None].astype(np.float32)
                scores[s] = score(baselines[i] + (images[i] - baselines[i]) * mask, t)
            z = bank.astype(np.float64)
            distance = 1.0 - np.sqrt(z.sum(axis=1) / counts[i])
            kernel = np.sqrt(np.exp(-(distance**2) / 0.25**2))
            weights[i, : counts[i]] = _weighted_ridge(z, scores, kernel, 1.0)[0]
        return weights

    def ours():
        result = kerasviz.lime(
            model, images, targets, segments=segments, samples=samples, seed=seed, batch_size=rows
        )
        return result.weights

    fns = {"kerasviz": ours}
    for name, score in _forwards(model).items():
        fns[name] = lambda score=score: loop(score)
    difference = max(float(np.abs(ours() - fns[k]()).max()) for k in fns if k != "kerasviz")
    times = interleaved(fns, repeats=repeats)
    title = (
        f"lime: {len(images)} images at 128x128, {segments} SLIC superpixels, {samples} "
        f"samples, {rows} rows/pass"
    )
    _print(title, times, difference)


def bench_rise(model, images, targets, masks: int, repeats: int, rows: int) -> None:
    cell, p, seed = 19, 0.5, 0  # ceil(128 / 7): the default 7 x 7 grid
    size = images.shape[1]

    def loop(score):
        rng = np.random.default_rng(seed)
        grid = size // cell + (size % cell > 0) + 1
        grids = rng.random((masks, grid, grid)) < p
        shifts = np.stack([rng.integers(0, cell, masks), rng.integers(0, cell, masks)], axis=1)
        up = _interpolation(grid, cell)
        heat = np.zeros(images.shape[:3])
        for k in range(masks):
            dy, dx = shifts[k]
            mask = up[dy : dy + size] @ grids[k].astype(np.float32) @ up[dx : dx + size].T
            for i, t in enumerate(targets):
                heat[i] += score(images[i] * mask[..., None], t) * mask
        return heat / (masks * p)

    def ours():
        return kerasviz.rise(
            model, images, targets, masks=masks, cell=cell, p=p, seed=seed, batch_size=rows
        )

    fns = {"kerasviz": ours}
    for name, score in _forwards(model).items():
        fns[name] = lambda score=score: loop(score)
    difference = max(float(np.abs(ours() - fns[k]()).max()) for k in fns if k != "kerasviz")
    times = interleaved(fns, repeats=repeats)
    title = f"rise: {len(images)} images at 128x128, {masks} masks, cell {cell}, {rows} rows/pass"
    _print(title, times, difference)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--samples", type=int, default=256, help="LIME samples, RISE masks")
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows per compiled pass for LIME and RISE (default: 256 on a GPU, 8 on a CPU, "
        "where larger chunks of 128x128 images spill the caches)",
    )
    parser.add_argument(
        "--ablation-rows",
        type=int,
        default=256,
        help="rows per compiled pass for Ablation-CAM (its rows run only the layers after conv4)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.samples, args.repeats = 1, 32, 1
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices: "
        f"{[d.device_type for d in tf.config.list_logical_devices()]}, "
        f"CPU cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}"
    )
    if args.rows is None:
        args.rows = 256 if tf.config.list_logical_devices("GPU") else 8
    model = keras.models.load_model(MODEL, safe_mode=True)
    images, labels, _ = kerasviz.datasets.shapes(args.images, size=128, seed=4)
    targets = [int(t) for t in labels]
    bench_ablation(model, images, targets, args.repeats, args.ablation_rows)
    bench_lime(model, images, targets, args.samples, args.repeats, args.rows)
    bench_rise(model, images, targets, args.samples, args.repeats, args.rows)


if __name__ == "__main__":
    main()
