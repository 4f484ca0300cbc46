"""Dataset-scale speed: explain_dataset (writing its store) against a plain loop and the limit.

Two setups, each measured side by side in one run (warm, interleaved repeats, median):

- the demo model (``models/shapes_cnn.keras``) on 2,000 shapes images at 128 px;
- VGG16 (``weights=None``) at 224 px on 256 shapes images.

Three ways to get the Grad-CAM map of the predicted class of every image:

- ``explain_dataset``: ``kerasviz.explain_dataset(model, tf.data.Dataset, {"grad_cam": {}},
  out)``, the maps written to the Zarr store (float16), with predictions and targets;
- ``plain loop``: what users write: ``kerasviz.grad_cam`` batch by batch, each batch saved
  with ``np.save``;
- ``limit``: one compiled pass per batch of the forward pass and the backward pass to the CAM
  layer (the gradient of the class score with respect to its output), on batches already on
  the device, nothing copied back and nothing written;
- ``Grad-CAM limit`` (shown for reference): the same plus the rest of Grad-CAM, the channel
  weights, the weighted sum and the exact receptive-field projection onto the input;
- ``no chunk writes`` (shown for reference): ``explain_dataset`` with the writes of every chunk
  but the first and the last skipped: what the store's writes cost, and the floor of the rest.

Times are wall-clock and CPU time (all threads of the process): on a shared machine the wall
times move with the other jobs, the CPU times hardly do.

Goals: explain_dataset at most 1.15x the limit's time, and at least as fast as the plain loop.

Run:
    .venv/bin/python benchmarks/bench_explain_dataset.py [--repeats N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import report  # noqa: E402

import kerasviz  # noqa: E402
from kerasviz import datasets  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
keras.config.disable_interactive_logging()
tf.get_logger().setLevel("ERROR")


def limit_fn(model: keras.Model, images: np.ndarray, batch: int, full: bool = False):
    """Compiled forward + backward to the default CAM layer, batch by batch, on the device.

    ``full`` adds the rest of Grad-CAM (channel weights, weighted sum, ReLU and the exact
    receptive-field projection): the compute limit of the maps themselves.
    """
    layer, _ = kerasviz.default_cam_layer(model)
    probe = kerasviz.get_probe(model, [layer])
    size = tuple(images.shape[1:3])
    rf = kerasviz.receptive_field(model, layer, input_size=size)

    @tf.function(reduce_retracing=True)
    def step(x):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            (activations,), logits = probe.raw([x])
            scores = tf.reduce_max(logits, axis=-1)
        grads = tape.gradient(scores, activations)
        if not full:
            return tf.reduce_sum(grads)
        a, g = tf.cast(activations, tf.float32), tf.cast(grads, tf.float32)
        weights = kerasviz.grad_cam_weights(a, g)[:, None, None, :]
        maps = tf.nn.relu(tf.reduce_sum(a * weights, axis=-1))
        return tf.reduce_sum(kerasviz.backproject_tf(maps, rf))

    batches = [tf.constant(images[i : i + batch]) for i in range(0, len(images), batch)]

    def run():
        total = 0.0
        for x in batches:
            total += step(x)
        return float(total)  # one host round trip, at the end

    return run


def plain_loop_fn(model: keras.Model, images: np.ndarray, batch: int, folder: Path):
    def run():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i in range(0, len(images), batch):
            maps = kerasviz.grad_cam(model, images[i : i + batch])
            np.save(folder / f"{i:06d}.npy", maps)

    return run


def explain_fn(model: keras.Model, images: np.ndarray, batch: int, folder: Path):
    data = tf.data.Dataset.from_tensor_slices(images)

    def run():
        shutil.rmtree(folder, ignore_errors=True)
        kerasviz.explain_dataset(model, data, {"grad_cam": {}}, folder, batch_size=batch)

    return run


def unwritten_fn(model: keras.Model, images: np.ndarray, batch: int, folder: Path):
    """``explain_dataset`` with its chunk writes skipped (all but the first and last chunk): the
    floor of everything else it does (setup, pipeline, the compiled step, host copies)."""
    from kerasviz.dataset_scale import _store

    run_explain = explain_fn(model, images, batch, folder)
    write = _store.Writer.write

    def first_and_last(self, chunk, values, seconds):
        if chunk in (0, self.layout.chunks - 1):
            write(self, chunk, values, seconds)

    def run():
        _store.Writer.write = first_and_last
        try:
            run_explain()
        finally:
            _store.Writer.write = write

    return run


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median wall and CPU seconds (all threads of this process) of each function, in turns.

    CPU time is what the work costs whatever else runs on the machine; on a shared machine
    the wall times move with the other jobs, the CPU times hardly do.
    """
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), _cpu()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(_cpu() - start_cpu)
    median = statistics.median
    return {k: median(v) for k, v in wall.items()}, {k: median(v) for k, v in cpu.items()}


def bench(name: str, model: keras.Model, images: np.ndarray, batch: int, repeats: int) -> bool:
    scratch = Path(tempfile.mkdtemp(prefix="kerasviz-bench-"))
    try:
        fns = {
            "explain_dataset": explain_fn(model, images, batch, scratch / "store"),
            "plain loop": plain_loop_fn(model, images, batch, scratch / "npy"),
            "limit": limit_fn(model, images, batch),
            "Grad-CAM limit": limit_fn(model, images, batch, full=True),
            "no chunk writes": unwritten_fn(model, images, batch, scratch / "unwritten"),
        }
        # Warm: every compiled step is traced once on a small slice first.
        warm = images[: 2 * batch]
        explain_fn(model, warm, batch, scratch / "warm")()
        plain_loop_fn(model, warm, batch, scratch / "warm_npy")()
        limit_fn(model, warm, batch)()
        limit_fn(model, warm, batch, full=True)()
        times, cpu = measure(fns, repeats)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    n = len(images)
    load = os.getloadavg()[0]
    print(f"\n{name}: {n} images, batch {batch} (load average {load:.1f} on {os.cpu_count()} CPUs)")
    for label, seconds in times.items():
        print(
            f"  {label:<16} {seconds:8.2f} s wall {n / seconds:8.1f} images/s "
            f"{cpu[label]:8.2f} s CPU"
        )
    ok = True
    for what, t in (("wall", times), ("CPU", cpu)):
        over_limit = t["explain_dataset"] / t["limit"]
        over_loop = t["plain loop"] / t["explain_dataset"]
        ok_limit, ok_loop = over_limit <= 1.15, over_loop >= 1.0
        print(
            "  " + report(f"{what}: explain_dataset time / limit", over_limit, "<= 1.15x", ok_limit)
        )
        print(
            "  "
            + report(f"{what}: plain loop time / explain_dataset", over_loop, ">= 1.00x", ok_loop)
        )
        ok = ok and ok_limit and ok_loop
        full = t["explain_dataset"] / t["Grad-CAM limit"]
        print(f"  {what}: explain_dataset time / compiled Grad-CAM with projection: {full:.2f}x")
        floor = t["no chunk writes"] / t["limit"]
        print(f"  {what}: explain_dataset with its chunk writes skipped / limit: {floor:.2f}x")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    parser.add_argument("--quick", action="store_true", help="500 demo images, 64 VGG16 images")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (demo)")
    parser.add_argument("--vgg-batch-size", type=int, default=16, help="images per batch (VGG16)")
    parser.add_argument("--skip-vgg", action="store_true")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument(
        "--vgg-repeats", type=int, default=None, help="repeats for VGG16 (default: --repeats)"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    print(
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, GPUs: "
        f"{len(tf.config.list_physical_devices('GPU'))}"
    )
    results = []
    if not args.skip_demo:
        model = keras.models.load_model(ROOT / "models" / "shapes_cnn.keras", compile=False)
        n = 500 if args.quick else 2000
        images, _, _ = datasets.shapes(n, size=128, seed=12345)
        results.append(
            bench("demo model (shapes_cnn)", model, images, args.batch_size, args.repeats)
        )
    if not args.skip_vgg:
        vgg = keras.applications.VGG16(weights=None, input_shape=(224, 224, 3))
        n = 64 if args.quick else 256
        images, _, _ = datasets.shapes(n, size=224, seed=12345)
        images = keras.applications.vgg16.preprocess_input(images * 255.0)
        repeats = args.vgg_repeats or args.repeats
        results.append(bench("VGG16 at 224", vgg, images, args.vgg_batch_size, repeats))
    print(f"\nall goals met: {all(results)}  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
