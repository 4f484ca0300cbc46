"""The top-k most active filters of a layer, and their consistency across several images.

`kerasviz.top_channels` ranks each image's channels by mean activation, and reports which
channels are in the top k of every image (shared detectors) and which of one image only.

    python examples/13_top_filters.py [--out DIR] [--fast]
"""

from __future__ import annotations

import numpy as np
from _common import class_names, demo_model, parse_args, save, shapes

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("13_top_filters", __doc__.splitlines()[0], argv)
    names = class_names()
    model = demo_model("shapes_cnn")
    images, labels, _ = shapes(4 if args.fast else 8)
    layer, k = "conv4", 5

    top = kerasviz.top_channels(model, images, layer, k=k)
    for i, (channels, scores) in enumerate(zip(top.indices, top.scores, strict=True)):
        print(
            f"image {i} ({names[labels[i]]}): top {k} channels {channels.tolist()} "
            f"(mean activations {np.round(scores, 2).tolist()}), "
            f"only here: {top.only_in[i]}"
        )
    print(f"channels in the top {k} of every image: {top.shared}")

    maps = kerasviz.feature_maps(model, images, layer)[layer]
    for i in range(2):
        fig = plot.feature_map_grid(
            maps[i],
            channels=top.indices[i].tolist(),
            cols=k,
            normalize="minmax",
            title=f"image {i}: top {k} of {layer}",
        )
        save(fig, args.out, f"top_channels_image_{i}")
    counts = np.bincount(top.indices.ravel(), minlength=maps.shape[-1])
    fig = plot.curve(
        list(range(maps.shape[-1])),
        {"images with the channel in their top k": counts},
        xlabel="channel",
        ylabel="images",
        title=f"{layer}: top-{k} counts",
    )
    save(fig, args.out, "top_channel_counts")


if __name__ == "__main__":
    main()
