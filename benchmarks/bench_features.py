"""feature_maps for all 13 VGG16 conv layers vs one compiled forward pass of the same batch.

Run: .venv/bin/python benchmarks/bench_features.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import interleaved, report  # noqa: E402

import kerasviz  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small input for a smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    size, batch = (64, 2) if args.quick else (224, 8)
    model = keras.applications.VGG16(weights=None, input_shape=(size, size, 3))
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13
    forward = tf.function(lambda t: model(t, training=False))
    xt = tf.constant(x)
    times = interleaved(
        {
            "forward": lambda: forward(xt).numpy(),
            "feature_maps": lambda: kerasviz.feature_maps(model, x, convs),
        },
        repeats=args.repeats,
    )
    ratio = times["feature_maps"] / times["forward"]
    print(f"VGG16 weights=None, batch {batch} at {size}x{size}, 13 conv layers")
    print(f"compiled forward pass model(x): {times['forward'] * 1000:.1f} ms")
    print(f"kerasviz.feature_maps (13 layers, to numpy): {times['feature_maps'] * 1000:.1f} ms")
    print(report("feature_maps / forward", ratio, "<= 1.2x", ratio <= 1.2))


if __name__ == "__main__":
    main()
