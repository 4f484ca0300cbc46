"""How unstable saliency is under 1% noise, compared with SmoothGrad and Grad-CAM.

Each image gets Gaussian noise with a standard deviation of 1% of the pixel range: invisible,
and the prediction does not change. The rank correlation between the maps of the clean and the
noisy image measures how much the explanation moves anyway.

    python examples/10_saliency_noise.py [--out DIR] [--fast]
"""

from __future__ import annotations

import numpy as np
from _common import demo_model, parse_args, save, shapes

import kerasviz
from kerasviz import plot


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two maps (ties are rare for float maps)."""
    ra = np.argsort(np.argsort(a.ravel())).astype(np.float64)
    rb = np.argsort(np.argsort(b.ravel())).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv=None) -> None:
    args = parse_args("10_saliency_noise", __doc__.splitlines()[0], argv)
    model = demo_model("shapes_cnn")
    images, labels, _ = shapes(3 if args.fast else 8)
    rng = np.random.default_rng(0)
    noisy = np.clip(images + rng.normal(0, 0.01, images.shape), 0, 1).astype(np.float32)
    same = np.asarray(model(images)).argmax(1) == np.asarray(model(noisy)).argmax(1)
    print(f"prediction unchanged by the noise for {same.mean():.0%} of the images")

    samples = 4 if args.fast else 32
    methods = {
        "saliency": lambda x: kerasviz.saliency(model, x, labels),
        "SmoothGrad": lambda x: kerasviz.smoothgrad(model, x, labels, samples=samples),
        "Grad-CAM": lambda x: kerasviz.grad_cam(model, x, labels),
    }
    correlations = {}
    for name, method in methods.items():
        clean, moved = method(images), method(noisy)
        correlations[name] = [rank_correlation(c, m) for c, m in zip(clean, moved, strict=True)]
        print(f"{name:>10}: rank correlation clean vs noisy {np.mean(correlations[name]):.3f}")
        if name == "saliency":
            fig = plot.heatmaps(
                images[:2], {"clean": clean[:2], "1% noise": moved[:2]}, cmap="inferno", alpha=0.8
            )
            save(fig, args.out, "saliency_clean_vs_noisy")
    fig = plot.curve(
        list(range(len(images))),
        correlations,
        xlabel="image",
        ylabel="rank correlation",
        title="clean vs 1% noise",
    )
    save(fig, args.out, "rank_correlation")


if __name__ == "__main__":
    main()
