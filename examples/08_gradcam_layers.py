"""Grad-CAM across layers (one forward and backward pass), and for an alternative class.

``layer=[...]`` returns the CAM of every listed layer at once; early layers give sharp but
class-agnostic maps, the last conv the class-specific one. The alternative-class map explains
the runner-up prediction instead of the winner. Nested layers use "outer/inner" paths.

    python examples/08_gradcam_layers.py [--out DIR] [--fast]
"""

from __future__ import annotations

import keras
import numpy as np
from _common import class_names, demo_model, parse_args, save, shapes

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("08_gradcam_layers", __doc__.splitlines()[0], argv)
    names = class_names()
    images, labels, _ = shapes(3)

    model = demo_model("shapes_cnn")
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    per_layer = kerasviz.grad_cam(model, images, labels, convs)  # {layer: (n, 128, 128)}
    save(plot.heatmaps(images, per_layer), args.out, "grad_cam_per_layer")

    nested = demo_model("shapes_nested")
    backbone = next(layer for layer in nested.layers if isinstance(layer, keras.Model))
    inner = [
        f"{backbone.name}/{layer.name}"
        for layer in backbone.layers
        if isinstance(layer, keras.layers.Conv2D)
    ]
    picks = [inner[0], inner[len(inner) // 2], inner[-1]]
    save(
        plot.heatmaps(images, kerasviz.grad_cam(nested, images, labels, picks)),
        args.out,
        "nested_grad_cam_per_layer",
    )

    # The winner and the runner-up class of each image.
    scores = np.asarray(model(images))
    order = np.argsort(-scores, axis=1)
    first = kerasviz.grad_cam(model, images, order[:, 0])
    second = kerasviz.grad_cam(model, images, order[:, 1])
    for i in range(len(images)):
        print(
            f"image {i}: {names[order[i, 0]]} {scores[i, order[i, 0]]:.2f}, "
            f"runner-up {names[order[i, 1]]} {scores[i, order[i, 1]]:.2f}"
        )
    save(
        plot.heatmaps(images, {"predicted class": first, "runner-up class": second}),
        args.out,
        "grad_cam_alternative_class",
    )


if __name__ == "__main__":
    main()
