"""backproject vs the brute-force stack-of-fields reference (issue 3: at least 100x faster).

Setup from the issue: a 128x128 input, the 58x58 map of a valid-padded CNN
(conv16 / conv16 / pool / conv32 / conv32, 3x3 kernels, 2x2 pool: field 14, stride 2 at the last
conv) and a batch of 8 maps. The reference is the definition, vectorized: a stack of one 0/1
image per unit (3364 x 128 x 128), the values stacked over it with one matrix product, divided
by the number of covering units. Both run warm, interleaved, median of several repeats.

Run: .venv/bin/python benchmarks/bench_backproject.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _timing import interleaved  # noqa: E402

import kerasviz  # noqa: E402

REQUIRED = 100.0


def build_cnn(size: int = 128) -> keras.Model:
    """The valid-padded CNN of the issue's benchmark."""
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv3"),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv4"),
        ],
        name="valid_cnn",
    )


def stack_reference(values: np.ndarray, rf: kerasviz.ReceptiveField, fill: float = 0.0):
    """The stack-of-fields definition: (units, H, W) 0/1 images, weighted and averaged."""
    n, h, w = values.shape
    (top, bottom), (left, right) = rf.intervals(0), rf.intervals(1)
    rows = np.arange(rf.input_size[0])
    cols = np.arange(rf.input_size[1])
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])  # (h, H)
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])  # (w, W)
    stack = (in_rows[:, None, :, None] & in_cols[None, :, None, :]).astype(np.float32)
    stack = stack.reshape(h * w, -1)  # one image per unit
    total = values.reshape(n, h * w).astype(np.float32) @ stack
    count = stack.sum(axis=0)
    out = np.where(count > 0, total / np.maximum(count, 1), fill)
    return out.reshape(n, *rf.input_size).astype(np.float32)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    model = build_cnn()
    rf = kerasviz.receptive_field(model, "conv4")
    assert rf.size == (14, 14) and rf.stride == (2, 2) and rf.start == (0, 0), rf
    assert rf.map_size == (58, 58) and rf.input_size == (128, 128), rf
    maps = np.random.default_rng(0).random((8, 58, 58), dtype=np.float32)

    fast = kerasviz.backproject(maps, rf)
    slow = stack_reference(maps, rf)
    error = float(np.abs(fast - slow).max())
    assert error < 1e-5, error

    times = interleaved(
        {
            "backproject": lambda: kerasviz.backproject(maps, rf),
            "stack": lambda: stack_reference(maps, rf),
        },
        repeats=args.repeats,
    )
    ratio = times["stack"] / times["backproject"]
    print(f"receptive field of conv4: size {rf.size}, stride {rf.stride}, start {rf.start}")
    print(f"input {rf.input_size}, map {rf.map_size}, batch 8, max |difference| {error:.1e}")
    print(f"backproject:               {times['backproject'] * 1e3:9.3f} ms (median)")
    print(f"brute-force stack:         {times['stack'] * 1e3:9.3f} ms (median)")
    verdict = "OK" if ratio >= REQUIRED else "NOT MET"
    print(
        f"backproject speedup vs brute-force stack: {ratio:.1f}x "
        f"(required >= {REQUIRED:.0f}x) {verdict}"
    )
    return ratio


if __name__ == "__main__":
    main()
