"""FGSM: an adversarial image, and how its saliency and per-layer activations change.

One signed-gradient step of 2% of the pixel range flips predictions of the demo CNN. The
saliency map of the attacked image, and the relative change of every layer's activations,
show where the perturbation acts: small at the input, amplified with depth.

    python examples/12_fgsm.py [--out DIR] [--fast]
"""

from __future__ import annotations

import numpy as np
from _common import class_names, demo_model, parse_args, save, shapes

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("12_fgsm", __doc__.splitlines()[0], argv)
    names = class_names()
    model = demo_model("shapes_cnn")
    images, labels, _ = shapes(4 if args.fast else 16)
    adversarial = np.asarray(kerasviz.fgsm(model, images, labels, epsilon=0.02))
    before = np.asarray(model(images)).argmax(1)
    after = np.asarray(model(adversarial)).argmax(1)
    print(
        f"accuracy {np.mean(before == labels):.0%} -> {np.mean(after == labels):.0%} "
        "after FGSM with epsilon 0.02"
    )

    pictures, titles = [], []
    for i in range(2):
        pictures += [
            images[i],
            plot.normalize(adversarial[i] - images[i], "signed"),
            adversarial[i],
        ]
        titles += [names[before[i]], "perturbation", names[after[i]]]
    save(plot.gallery(pictures, titles, cols=3), args.out, "fgsm_examples")

    clean = kerasviz.saliency(model, images[:2], labels[:2])
    attacked = kerasviz.saliency(model, adversarial[:2], labels[:2])
    save(
        plot.heatmaps(
            images[:2],
            {"saliency": clean, "saliency, attacked": attacked},
            cmap="inferno",
            alpha=0.8,
        ),
        args.out,
        "fgsm_saliency",
    )

    clean_maps = kerasviz.feature_maps(model, images)
    attacked_maps = kerasviz.feature_maps(model, adversarial)
    change = {}
    for layer, value in clean_maps.items():
        diff = np.linalg.norm((attacked_maps[layer] - value).reshape(len(images), -1), axis=1)
        change[layer] = float(
            np.mean(diff / (np.linalg.norm(value.reshape(len(images), -1), axis=1) + 1e-12))
        )
        print(f"{layer:>8}: relative activation change {change[layer]:.3f}")
    save(
        plot.curve(
            list(change),
            {"relative change": list(change.values())},
            ylabel="||a(x adv) - a(x)|| / ||a(x)||",
            title="FGSM, per layer",
        ),
        args.out,
        "fgsm_activation_change",
    )


if __name__ == "__main__":
    main()
