"""Filter weights of the first and of deeper layers, also inside a nested backbone.

First-layer filters are shown as RGB tiles with their R, G and B sections; deeper filters as
depth sections (one filter per row, one input channel per column) and as channel averages.

    python examples/02_filter_weights.py [--out DIR] [--fast]
"""

from __future__ import annotations

import keras
from _common import demo_model, parse_args, save

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("02_filter_weights", __doc__.splitlines()[0], argv)
    model = demo_model("shapes_cnn")
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]

    first = kerasviz.filter_weights(model, convs[0])  # {"kernel": (3, 3, 3, 16), "bias": (16,)}
    print(f"{convs[0]}: kernel {first['kernel'].shape}, bias {first['bias'].shape}")
    save(plot.filter_rgb(first, title=convs[0]), args.out, "first_layer_rgb")

    deeper = kerasviz.filter_weights(model, convs[1])
    save(
        plot.filter_depth_sections(deeper, max_filters=8, max_inputs=8), args.out, "depth_sections"
    )
    last = kerasviz.filter_weights(model, convs[-1])
    save(plot.filter_channel_average(last, title=convs[-1]), args.out, "channel_average")

    # The same on the transfer-learning model: inner layers are reached by "outer/inner" paths.
    nested = demo_model("shapes_nested")
    backbone = next(layer for layer in nested.layers if isinstance(layer, keras.Model))
    inner = [layer.name for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    path = f"{backbone.name}/{inner[0]}"
    save(
        plot.filter_rgb(kerasviz.filter_weights(nested, path), title=path), args.out, "nested_first"
    )


if __name__ == "__main__":
    main()
