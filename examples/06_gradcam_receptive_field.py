"""Grad-CAM with exact receptive-field back-projection, compared with a bilinear resize.

The last conv map of the demo CNN is 58x58 for a 128x128 input, with `valid` padding: unit
(0, 0) sees pixels 0..13, so its centre is at 6.5, not at 0 where a resize puts it. The map is
computed once at layer resolution and projected both ways; the pointing game on the ground-truth
masks scores both projections.

    python examples/06_gradcam_receptive_field.py [--out DIR] [--fast]
"""

from __future__ import annotations

import numpy as np
from _common import demo_model, parse_args, save, shapes

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("06_gradcam_receptive_field", __doc__.splitlines()[0], argv)
    model = demo_model("shapes_cnn")
    images, labels, masks = shapes(6 if args.fast else 64)
    layer, _ = kerasviz.default_cam_layer(model)  # the last conv with a map larger than 1x1
    rf = kerasviz.receptive_field(model, layer)
    print(f"{layer}: map {rf.map_size}, RF {rf.size}, stride {rf.stride}, start {rf.start}")

    cams = kerasviz.grad_cam(model, images, labels, layer, upsample=None)  # (n, 58, 58)
    exact = kerasviz.backproject(cams, rf)  # (n, 128, 128)
    resized = kerasviz.resize_bilinear(cams, rf.input_size)
    shown = slice(0, 3)
    fig = plot.heatmaps(
        images[shown], {"exact RF": exact[shown], "bilinear resize": resized[shown]}
    )
    save(fig, args.out, "grad_cam_exact_vs_resize")
    corners = [rf.box(0, 0), rf.box(*(m // 2 for m in rf.map_size)), rf.box(57, 57)]
    save(
        plot.receptive_field_boxes(images[0], corners, labels=["(0, 0)", "centre", "(57, 57)"]),
        args.out,
        "receptive_fields",
    )

    for name, maps in (("exact RF", exact), ("bilinear resize", resized)):
        hits = np.mean(kerasviz.metrics.pointing_game(maps, masks))
        energy = np.mean(kerasviz.metrics.energy_pointing_game(maps, masks))
        print(f"{name:>16}: pointing game {hits:.3f}, energy pointing game {energy:.3f}")


if __name__ == "__main__":
    main()
