"""The same analyses on VGG16 and ResNet50, to compare architectures.

For each network: the receptive field growth with depth, Grad-CAM at the default layer on a
photo, and the layer progression of activations. With ``--weights none`` (offline) the
networks are random, so the comparison is of structure (fields, resolutions), not of learning.

    python examples/14_compare_architectures.py [--out DIR] [--fast] [--weights imagenet]
"""

from __future__ import annotations

import keras
from _common import IMAGENET_CAT, application, parse_args, photo, preprocess, save

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("14_compare_architectures", __doc__.splitlines()[0], argv, applications=True)
    size = 64 if args.fast else 224
    sizes = {}
    for name in ("vgg16", "resnet50"):
        model = application(name, size, args.weights)
        side = model.inputs[0].shape[1]
        cat = photo("chelsea", side)
        x = preprocess(name, cat)[None]
        convs = [
            layer.name
            for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size != (1, 1)
        ]
        fields = [kerasviz.receptive_field(model, layer) for layer in convs]
        sizes[name] = [rf.size[0] for rf in fields]
        layer, _ = kerasviz.default_cam_layer(model)
        rf = kerasviz.receptive_field(model, layer)
        print(
            f"{name}: {len(convs)} spatial convs, CAM layer {layer} map {rf.map_size}, "
            f"RF {rf.size}, stride {rf.stride}"
        )

        cam = kerasviz.grad_cam(model, x, IMAGENET_CAT, layer)
        save(
            plot.heatmaps(cat, {f"{name} Grad-CAM (tabby cat)": cam[0]}),
            args.out,
            f"{name}_grad_cam",
        )
        picks = [convs[0], convs[len(convs) // 2], convs[-1]]
        maps = kerasviz.feature_maps(model, x, picks)
        save(plot.layer_progression(maps, title=name), args.out, f"{name}_progression")
    longest = max(len(v) for v in sizes.values())
    fig = plot.curve(
        list(range(1, longest + 1)),
        {k: v + [v[-1]] * (longest - len(v)) for k, v in sizes.items()},
        xlabel="spatial conv layer (depth)",
        ylabel="receptive field (px)",
        title="receptive field growth",
    )
    save(fig, args.out, "receptive_field_growth")


if __name__ == "__main__":
    main()
