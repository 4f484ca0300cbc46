"""Intermediate activations: single channels, whole-layer grids and a layer progression.

One forward pass (`kerasviz.feature_maps`) returns the maps of every conv layer of the demo CNN;
`kerasviz.plot` shows them as single channels, as grids with the three normalizations of the
seed workflows, and as a progression through the depth of the network.

    python examples/01_activations.py [--out DIR] [--fast]
"""

from __future__ import annotations

import keras
from _common import class_names, demo_model, parse_args, save, shapes

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("01_activations", __doc__.splitlines()[0], argv)
    model = demo_model("shapes_cnn")
    images, labels, _ = shapes(2)
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]

    maps = kerasviz.feature_maps(model, images)  # every spatial layer, one forward pass
    save(images[0], args.out, "input")
    print(
        f"image 0 is a {class_names()[labels[0]]}; layers: {[(k, v.shape) for k, v in maps.items()]}"
    )

    # Single channels, in the layer's own units and min-max scaled.
    first = maps[convs[0]][0]
    save(plot.channel(first, 3, title=f"{convs[0]}, channel 3"), args.out, "channel_raw")
    save(plot.channel(first, 7, normalize="minmax"), args.out, "channel_minmax")

    # Whole layers: standardized (mean 128, std 64), and global-then-max with factors in titles.
    channels = 8 if args.fast else None
    for name in convs:
        grid = plot.feature_map_grid(maps[name][0], normalize="standardize", channels=channels)
        save(grid, args.out, f"grid_{name}")
    grid = plot.feature_map_grid(maps[convs[-1]][0], normalize="global_then_max", channels=channels)
    save(grid, args.out, f"grid_{convs[-1]}_global_then_max")

    # How the representation changes with depth: the channel mean of every spatial layer.
    save(plot.layer_progression(maps, image=0), args.out, "layer_progression")


if __name__ == "__main__":
    main()
