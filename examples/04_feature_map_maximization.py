"""Feature-map maximization, and the 8x8 grid of the first 64 filters of a VGG16 layer.

All channels are optimized as one batch (one row per channel). On the demo CNN the patterns use
the Fourier parametrization with jitter and scale transforms, which gives readable textures.
On VGG16 ``block3_conv1`` the first 64 filters are laid out 8x8 with a 5 px margin.

    python examples/04_feature_map_maximization.py [--out DIR] [--fast] [--weights imagenet]
"""

from __future__ import annotations

from _common import application, demo_model, parse_args, save, to_pixels, value_range

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args(
        "04_feature_map_maximization", __doc__.splitlines()[0], argv, applications=True
    )
    steps = 4 if args.fast else 128

    model = demo_model("shapes_cnn")
    patterns = kerasviz.filter_patterns(
        model,
        "conv4",
        channels=range(8 if args.fast else 32),
        steps=steps,
        parametrization="fourier",
    )
    save(plot.image_grid(patterns, cols=8, margin=5), args.out, "shapes_cnn_conv4_patterns")

    # The seed workflow: VGG16 block3_conv1, filters 0..63, in an 8x8 grid with 5 px margins.
    size = 32 if args.fast else 128
    vgg = application("vgg16", 224 if args.weights == "imagenet" else max(size, 32), args.weights)
    patterns = kerasviz.filter_patterns(
        vgg,
        "block3_conv1",
        channels=range(64),
        size=size,
        steps=2 if args.fast else 64,
        value_range=value_range("vgg16"),
        batch_size=16 if args.fast else 32,
    )
    grid = plot.image_grid(to_pixels("vgg16", patterns), cols=8, margin=5, normalize="minmax")
    save(grid, args.out, "vgg16_block3_conv1_8x8")


if __name__ == "__main__":
    main()
