"""Feature inversion across layers, with SSIM and PSNR against depth (Mahendran & Vedaldi).

`kerasviz.invert` finds an image whose features at a layer match the original's, with an
alpha-norm and a total-variation prior. Deeper layers keep less of the image, so the
reconstructions lose detail and their SSIM and PSNR fall.

    python examples/11_inversion_depth.py [--out DIR] [--fast]
"""

from __future__ import annotations

import keras
from _common import demo_model, parse_args, save, shapes

import kerasviz
from kerasviz import plot


def main(argv=None) -> None:
    args = parse_args("11_inversion_depth", __doc__.splitlines()[0], argv)
    model = demo_model("shapes_cnn")
    images, _, _ = shapes(1)
    image = images[0]
    layers = [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.MaxPooling2D)
    ]

    pictures, titles, ssims, psnrs = [image], ["original"], [], []
    for layer in layers:
        reconstruction = kerasviz.invert(model, image, layer, steps=3 if args.fast else 300).images
        ssims.append(kerasviz.metrics.ssim(reconstruction, image))
        psnrs.append(kerasviz.metrics.psnr(reconstruction, image))
        pictures.append(reconstruction)
        titles.append(f"{layer}\nSSIM {ssims[-1]:.2f}")
        print(f"{layer:>8}: SSIM {ssims[-1]:.3f}  PSNR {psnrs[-1]:.1f} dB")
    save(plot.gallery(pictures, titles, cols=len(pictures)), args.out, "inversions")
    save(
        plot.curve(layers, {"SSIM": ssims}, ylabel="SSIM", title="inversion vs depth"),
        args.out,
        "ssim_vs_depth",
    )
    save(
        plot.curve(layers, {"PSNR (dB)": psnrs}, ylabel="dB", title="inversion vs depth"),
        args.out,
        "psnr_vs_depth",
    )


if __name__ == "__main__":
    main()
