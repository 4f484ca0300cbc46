"""Neuron maximization from gray, from noise and from a photo, cropped to the receptive field.

A unit of the last conv layer of the demo CNN sees a 14x14 patch of the input. Maximizing it
with plain pixel steps (no transforms, no regularizers) from a gray start changes no pixel
outside that patch, so `kerasviz.crop_to_receptive_field` cuts exactly the part that matters.

    python examples/03_neuron_maximization.py [--out DIR] [--fast]
"""

from __future__ import annotations

import numpy as np
from _common import demo_model, parse_args, photo, save

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("03_neuron_maximization", __doc__.splitlines()[0], argv)
    model = demo_model("shapes_cnn")
    layer = "conv4"
    rf = kerasviz.receptive_field(model, layer)
    centre = tuple(m // 2 for m in rf.map_size)
    print(f"{layer}: RF {rf.size}, stride {rf.stride}, unit {centre} sees {rf.box(*centre)}")

    channels = range(4 if args.fast else 8)
    objectives = [kerasviz.neuron(layer, c, centre) for c in channels]
    starts = {"gray": "gray", "noise": "noise", "photo": photo("chelsea", 128)}
    crops, titles = [], []
    for name, start in starts.items():
        result = kerasviz.maximize(
            model,
            objectives,
            steps=4 if args.fast else 128,
            start=start,
            parametrization="pixel",
            regularizers=(),
            transforms=(),
            seed=0,
        )
        patches = kerasviz.crop_to_receptive_field(result.images, rf, centre)
        crops += list(patches)
        titles += [f"{name}, ch {c}" for c in channels]
        if name == "gray":
            outside = np.ones(rf.input_size, bool)
            top, left, bottom, right = rf.box(*centre)
            outside[top:bottom, left:right] = False
            changed = np.abs(result.images - 0.5).max(axis=-1)[:, outside].max()
            print(f"largest change outside the receptive field, from gray: {changed:g}")
            boxes = plot.receptive_field_boxes(result.images[0], [rf.box(*centre)], labels=["RF"])
            save(boxes, args.out, "whole_input_with_rf")
    save(plot.gallery(crops, titles, cols=len(channels)), args.out, "neurons_cropped_to_rf")


if __name__ == "__main__":
    main()
