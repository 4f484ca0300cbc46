"""The border of the centered projection: fade to 0 (the default) or hold the edge value.

`upsample="centered"` interpolates between the units' receptive-field centres and fades to 0
within one stride beyond the outermost centres. Holding the outermost value out to the border
instead (as a resize does) is the other choice. This script scores both, and a bilinear resize,
on the first ``--n`` held-out shapes images of both demo models for the six gradient CAMs:
average drop (lower is better), sparseness (Gini, higher is better) and the energy pointing game
(higher is better), each against bilinear by the paired 95% bootstrap of
``benchmarks/localization.py``.

The fade is checked equal to the library's own `upsample="centered"` on the first 8 images.

Run:
    .venv/bin/python benchmarks/border_variants.py [--n 300]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from localization import _paired  # noqa: E402

import kerasviz  # noqa: E402
from kerasviz import datasets, metrics  # noqa: E402
from kerasviz.receptive_field import _centers, _tents  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CAMS = ("grad_cam", "grad_cam_plus_plus", "layer_cam", "hires_cam", "xgrad_cam", "eigen_cam")
#: metric name, function of (model, images, maps, labels, masks), lower is better
METRICS = (
    ("avg drop", lambda model, x, m, y, masks: metrics.average_drop(model, x, m, y), True),
    ("sparseness", lambda model, x, m, y, masks: metrics.sparseness(m), False),
    ("energy PG", lambda model, x, m, y, masks: metrics.energy_pointing_game(m, masks), False),
)


def verdict(a: np.ndarray, b: np.ndarray, lower: bool) -> str:
    """``a`` against ``b``: better, worse or tied by the localization benchmark's paired 95%
    bootstrap of the mean per-image difference."""
    return {1: "better", 0: "tied", -1: "worse"}[_paired(a, b, higher=not lower)]


def held(tents: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """The tent matrix ``(pixels, units)`` with the pixels beyond the outermost centres given
    the outermost unit's value."""
    held = tents.copy()
    pixels = np.arange(len(tents))
    held[pixels <= centers[0]] = np.eye(tents.shape[1])[0]
    held[pixels >= centers[-1]] = np.eye(tents.shape[1])[-1]
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="held-out images")
    args = parser.parse_args()
    counts: dict[tuple[str, str, str], int] = {}
    for name in ("shapes_cnn", "shapes_nested"):
        model = keras.models.load_model(ROOT / "models" / f"{name}.keras", compile=False)
        images, labels, masks = datasets.shapes(args.n, size=128, seed=12345)
        layer, _ = kerasviz.default_cam_layer(model)
        rf = kerasviz.receptive_field(model, layer, input_size=images.shape[1:3])
        (_, ty), (_, tx) = _tents(rf)[0]
        hy, hx = held(ty, _centers(rf, 0)), held(tx, _centers(rf, 1))
        for cam in CAMS:
            method = getattr(kerasviz, cam)
            layer_maps = np.asarray(method(model, images, labels, upsample=None), np.float32)
            maps = {
                "fade": np.einsum("ph,nhw,qw->npq", ty, layer_maps, tx),
                "hold": np.einsum("ph,nhw,qw->npq", hy, layer_maps, hx),
                "bilinear": tf.image.resize(layer_maps[..., None], images.shape[1:3])[
                    ..., 0
                ].numpy(),
            }
            library = np.asarray(method(model, images[:8], labels[:8]), np.float32)
            np.testing.assert_allclose(maps["fade"][:8], library, rtol=1e-4, atol=1e-5)
            line = f"{name:14s} {cam:19s}"
            for metric, fn, lower in METRICS:
                values = {
                    k: np.asarray(fn(model, images, m, labels, masks)) for k, m in maps.items()
                }
                line += f" | {metric}: " + " ".join(
                    f"{k} {v.mean():.3f}" for k, v in values.items()
                )
                for k in ("fade", "hold"):
                    result = verdict(values[k], values["bilinear"], lower)
                    line += f" {k}:{result}"
                    key = (name, metric, f"{k} {result}")
                    counts[key] = counts.get(key, 0) + 1
            print(line, flush=True)
    print("\nagainst bilinear, CAMs per (model, metric, border verdict):")
    for (name, metric, what), count in sorted(counts.items()):
        print(f"  {name:14s} {metric:11s} {what:13s} {count}")


if __name__ == "__main__":
    main()
