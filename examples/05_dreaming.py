"""Class dreaming (a photo pushed towards another class) and DeepDream with octaves.

Class dreaming starts from a demo image of one shape and maximizes the logit of another class
until the demo CNN predicts it. DeepDream amplifies what two VGG16 layers see in a photo (with
``--weights none`` the network is random, so the dream shows its random filters).

    python examples/05_dreaming.py [--out DIR] [--fast] [--weights imagenet]
"""

from __future__ import annotations

import numpy as np
from _common import (
    application,
    class_names,
    demo_model,
    parse_args,
    photo,
    preprocess,
    save,
    shapes,
    to_pixels,
    value_range,
)

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("05_dreaming", __doc__.splitlines()[0], argv, applications=True)
    names = class_names()
    model = demo_model("shapes_cnn")
    images, labels, _ = shapes(4)
    image, source = images[0], int(labels[0])
    goal = (source + 1) % len(names)
    result = kerasviz.maximize(
        model,
        kerasviz.logit(goal),
        start=image,
        steps=3 if args.fast else 64,
        learning_rate=0.01,
        regularizers=(),
        transforms=(),
    )
    before = np.asarray(model(image[None]))[0]
    after = np.asarray(model(result.images))[0]
    print(
        f"{names[source]} -> {names[int(after.argmax())]} (p {names[goal]}: "
        f"{before[goal]:.3f} -> {after[goal]:.3f})"
    )
    titles = [
        f"{names[source]} ({before.argmax() == source})",
        f"dreamed {names[goal]}: {after[goal]:.2f}",
        "change",
    ]
    change = plot.normalize(result.images[0] - image, "signed")
    save(plot.gallery([image, result.images[0], change], titles, cols=3), args.out, "class_dream")
    save(
        plot.curve(
            np.arange(result.history.shape[1]),
            result.history[0],
            xlabel="step",
            ylabel=f"logit of {names[goal]}",
        ),
        args.out,
        "class_dream_history",
    )

    # DeepDream on a photo with VGG16, three octaves.
    size = 64 if args.fast else 224
    vgg = application("vgg16", size, args.weights)
    cat = photo("chelsea", vgg.inputs[0].shape[1])
    dream = kerasviz.deep_dream(
        vgg,
        preprocess("vgg16", cat),
        {"block4_conv3": 1.0, "block5_conv2": 1.5},
        octaves=2 if args.fast else 3,
        steps_per_octave=2 if args.fast else 20,
        value_range=value_range("vgg16"),
    )
    save(
        plot.gallery([cat, to_pixels("vgg16", dream)], ["photo", "DeepDream"]),
        args.out,
        "deep_dream",
    )


if __name__ == "__main__":
    main()
