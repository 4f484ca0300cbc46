"""Signed class activation maps of two classes on one image (the cat-vs-dog workflow).

An image holds two objects of different classes. Grad-CAM without the ReLU keeps negative
evidence; the map of class A minus the map of class B, on one scale centred at zero, shows
where the model sees A (red) and where B (blue).

    python examples/07_signed_cam.py [--out DIR] [--fast]
"""

from __future__ import annotations

import numpy as np
from _common import class_names, demo_model, parse_args, save, shapes, two_objects

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("07_signed_cam", __doc__.splitlines()[0], argv)
    names = class_names()
    images, labels, masks = shapes(24)
    image, (a, b), mask_a, mask_b = two_objects(images, labels, masks)

    for model_name in ("shapes_cnn", "shapes_nested"):
        model = demo_model(model_name)
        batch = np.stack([image, image])
        cams = kerasviz.grad_cam(model, batch, [a, b], relu=False)  # signed, (2, 128, 128)
        signed = cams[0] - cams[1]
        print(
            f"{model_name}: mean signed map on the {names[a]} {signed[mask_a].mean():+.3g}, "
            f"on the {names[b]} {signed[mask_b].mean():+.3g}"
        )
        fig = plot.signed_map(image, cams[0], cams[1], labels=(names[a], names[b]))
        save(fig, args.out, f"signed_{model_name}")
        fig = plot.heatmaps(
            image, {names[a]: cams[0], names[b]: cams[1]}, normalize="signed", cmap="RdBu_r"
        )
        save(fig, args.out, f"each_class_{model_name}")


if __name__ == "__main__":
    main()
