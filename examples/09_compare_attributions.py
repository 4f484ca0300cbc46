"""Saliency, integrated gradients with four baselines, and Grad-CAM side by side.

Integrated gradients depends on its baseline: black, white, uniform noise and a blurred copy
each answer "compared with what?". The completeness gap (sum of attributions minus the change of
the logit) shows how well the path integral converged.

    python examples/09_compare_attributions.py [--out DIR] [--fast]
"""

from __future__ import annotations

import numpy as np
from _common import demo_model, parse_args, save, shapes

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("09_compare_attributions", __doc__.splitlines()[0], argv)
    model = demo_model("shapes_cnn")
    images, labels, masks = shapes(3 if args.fast else 8)
    steps = 4 if args.fast else 64

    maps = {"saliency": kerasviz.saliency(model, images, labels)}
    for baseline in ("black", "white", "noise", "blur"):
        attributions, delta = kerasviz.integrated_gradients(
            model, images, labels, baseline=baseline, steps=steps, return_delta=True
        )
        maps[f"IG {baseline}"] = plot.reduce_channels(attributions, "abs_max")
        print(f"IG {baseline:>5}: mean |completeness gap| {np.abs(delta).mean():.4f}")
    maps["Grad-CAM"] = kerasviz.grad_cam(model, images, labels)

    save(
        plot.heatmaps(images[:3], {k: v[:3] for k, v in maps.items()}, cmap="inferno"),
        args.out,
        "attributions",
    )
    signed = kerasviz.integrated_gradients(model, images[:1], labels[:1], steps=steps)
    save(
        plot.attribution(images[0], signed[0], reduce="sum", signed=True),
        args.out,
        "ig_black_signed",
    )
    for name, value in maps.items():
        energy = np.mean(kerasviz.metrics.energy_pointing_game(value, masks))
        print(f"{name:>10}: energy pointing game {energy:.3f}")


if __name__ == "__main__":
    main()
