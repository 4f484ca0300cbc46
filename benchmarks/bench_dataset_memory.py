"""Peak memory of explain_dataset does not grow with the number of images.

Runs ``kerasviz.explain_dataset`` on 1,000 and on 8,000 images of the demo data set (shapes
images at 128 px with their labels and masks; the demo model ``models/shapes_cnn.keras``;
Grad-CAM and saliency; pointing game and energy pointing game per image), each in a fresh
subprocess, and prints the peak resident set size of both (``resource.getrusage(...).ru_maxrss``:
the high-water mark of the whole process, TensorFlow included). Goal: they differ by less than
15%.

The images stream from a generator that renders them 16 at a time from per-call seeds, so every
image is distinct and the source holds none in memory (``--source pool`` cycles one pool
of 256 rendered images instead, which is faster).

Run:
    .venv/bin/python benchmarks/bench_dataset_memory.py [--sizes 1000 8000] [--source pool]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 64  # images per batch and per chunk of the store
RENDER = 16  # images rendered per generator call: the source's own transient memory stays small


def child(n: int, out: str, source: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    import kerasviz
    from kerasviz import datasets

    tf.get_logger().setLevel("ERROR")
    model = keras.models.load_model(ROOT / "models" / "shapes_cnn.keras", compile=False)
    signature = (
        tf.TensorSpec((128, 128, 3), tf.float32),
        tf.TensorSpec((), tf.int64),
        tf.TensorSpec((128, 128), tf.bool),
    )
    if source == "pool":
        pool = datasets.shapes(256, size=128, seed=99)
        data = tf.data.Dataset.from_tensor_slices(pool).repeat().take(n)
    else:

        def generate():
            for k in range(-(-n // RENDER)):
                images, labels, masks = datasets.shapes(
                    min(RENDER, n - k * RENDER), size=128, seed=1000 + k
                )
                yield from zip(images, labels, masks, strict=True)

        data = tf.data.Dataset.from_generator(generate, output_signature=signature)
        data = data.apply(tf.data.experimental.assert_cardinality(n))
    start = time.perf_counter()
    store = kerasviz.explain_dataset(
        model,
        data,
        {"grad_cam": {}, "saliency": {}},
        out,
        batch_size=CHUNK,
        targets="labels",
        metrics=["pointing_game", "energy_pointing_game"],
    )
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    table = store.table()
    print(
        json.dumps(
            {
                "n": n,
                "peak_mib": peak_kb / 1024,
                "seconds": seconds,
                "images_per_s": n / seconds,
                "complete": int(table["complete"].sum()),
                "pointing_game": float(np.nanmean(table["grad_cam/pointing_game"])),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 8000])
    parser.add_argument("--source", choices=("generate", "pool"), default="generate")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out, args.source)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="kerasviz-memory-") as folder:
        for n in args.sizes:
            command = [sys.executable, __file__, "--child", str(n), "--source", args.source]
            command += ["--out", str(Path(folder) / f"store_{n}")]
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                cwd=ROOT,
            )
            if done.returncode != 0:
                sys.exit(f"the run on {n} images failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(result)
            print(
                f"{n:>6} images: peak RSS {result['peak_mib']:8.1f} MiB, "
                f"{result['images_per_s']:6.1f} images/s, {result['complete']} complete, "
                f"pointing game {result['pointing_game']:.3f}",
                flush=True,
            )
    small, large = results
    growth = large["peak_mib"] / small["peak_mib"] - 1.0
    verdict = "OK" if abs(growth) < 0.15 else "NOT MET"
    print(
        f"peak RSS, {large['n']} vs {small['n']} images: {100 * growth:+.1f}% "
        f"(required: less than 15%) {verdict}"
    )


if __name__ == "__main__":
    main()
