"""Localization benchmark: do the maps point at the object, and are they faithful to the model?

On held-out images of ``kerasviz.datasets.shapes`` (seed 12345, never used for training) and the
two demo models (``models/shapes_cnn.keras``, ``models/shapes_nested.keras``), every method
explains the true class of each image. One table per model:

- rows: Grad-CAM, Grad-CAM++, Layer-CAM and Score-CAM, each with the exact receptive-field
  back-projection (``upsample="receptive_field"``) and with a bilinear resize
  (``upsample="bilinear"``); saliency, SmoothGrad and integrated gradients (gradient maps are
  reduced over channels by max |.|, the usual saliency map);
- columns: pointing game (tolerance 0 px; every tied maximum must lie on the object), energy
  pointing game, deletion AUC (black baseline, lower is better), insertion AUC (blurred
  baseline, higher is better), both on softmax probabilities over ``--steps`` chunks, and the
  seconds per image of computing the maps (warm: compiled functions traced beforehand).

After each table, the exact projection is compared with the resize, metric by metric.

Run:
    .venv/bin/python benchmarks/localization.py [--n 500] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasviz  # noqa: E402
from kerasviz import datasets, metrics  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = (ROOT / "models" / "shapes_cnn.keras", ROOT / "models" / "shapes_nested.keras")
COLUMNS = ("pointing game", "energy PG", "deletion AUC", "insertion AUC", "s / image")
HIGHER_IS_BETTER = {
    "pointing game": True,
    "energy PG": True,
    "deletion AUC": False,
    "insertion AUC": True,
}


def _per_pixel(maps: np.ndarray) -> np.ndarray:
    """Gradient attributions ``(n, h, w, c)`` to one value per pixel: max |.| over channels."""
    maps = np.asarray(maps)
    return np.abs(maps).max(axis=-1) if maps.ndim == 4 else maps


def methods(batch_size: int) -> list[tuple[str, str, Callable]]:
    """``(method, projection, fn(model, images, targets) -> maps (n, h, w))`` rows."""
    rows = []
    cams = (
        ("Grad-CAM", kerasviz.grad_cam),
        ("Grad-CAM++", kerasviz.grad_cam_plus_plus),
        ("Layer-CAM", kerasviz.layer_cam),
        ("Score-CAM", kerasviz.score_cam),
    )
    for name, fn in cams:
        for projection in ("receptive_field", "bilinear"):
            label = "exact RF" if projection == "receptive_field" else "bilinear"
            rows.append(
                (
                    name,
                    label,
                    lambda m, x, t, fn=fn, p=projection: fn(
                        m, x, t, batch_size=batch_size, upsample=p
                    ),
                )
            )
    gradients = (
        ("saliency", kerasviz.saliency),
        ("SmoothGrad", kerasviz.smoothgrad),
        ("integrated gradients", kerasviz.integrated_gradients),
    )
    for name, fn in gradients:
        rows.append(
            (name, "-", lambda m, x, t, fn=fn: _per_pixel(fn(m, x, t, batch_size=batch_size)))
        )
    return rows


def evaluate(model, images, labels, masks, args) -> list[tuple[str, str, dict[str, float]]]:
    results = []
    warm = slice(0, min(len(images), args.batch_size))
    for name, projection, fn in methods(args.batch_size):
        fn(model, images[warm], labels[warm])  # trace the compiled functions first
        start = time.perf_counter()
        maps = np.asarray(fn(model, images, labels), dtype=np.float64)
        seconds = (time.perf_counter() - start) / len(images)
        maps = np.nan_to_num(maps)
        common = dict(steps=args.steps, batch_size=args.perturbation_batch)
        row = {
            "pointing game": float(metrics.pointing_game(maps, masks).mean()),
            "energy PG": float(metrics.energy_pointing_game(maps, masks).mean()),
            "deletion AUC": float(
                metrics.deletion_auc(model, images, maps, labels, baseline=0.0, **common).mean()
            ),
            "insertion AUC": float(
                metrics.insertion_auc(model, images, maps, labels, baseline="blur", **common).mean()
            ),
            "s / image": seconds,
        }
        results.append((name, projection, row))
        print(f"  {name:<22} {projection:<9} done", file=sys.stderr, flush=True)
    return results


def _cell(column: str, value: float) -> str:
    return f"{value:.4f}" if column == "s / image" else f"{value:.3f}"


def table(results, markdown: bool = False) -> str:
    header = ["method", "projection", *COLUMNS]
    rows = [
        [name, projection, *(_cell(c, r[c]) for c in COLUMNS)] for name, projection, r in results
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def comparison(results) -> str:
    """Exact receptive-field projection against bilinear, per CAM method and metric."""
    by_key = {(name, projection): r for name, projection, r in results}
    lines = []
    for name in ("Grad-CAM", "Grad-CAM++", "Layer-CAM", "Score-CAM"):
        exact, resize = by_key[(name, "exact RF")], by_key[(name, "bilinear")]
        parts = []
        for column, higher in HIGHER_IS_BETTER.items():
            a, b = exact[column], resize[column]
            if round(a, 3) == round(b, 3):
                verdict = "tie"
            elif (a > b) == higher:
                verdict = "exact better"
            else:
                verdict = "bilinear better"
            parts.append(f"{column} {a:.3f} vs {b:.3f} ({verdict})")
        lines.append(f"{name}: " + "; ".join(parts))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="held-out images (default 500)")
    parser.add_argument("--seed", type=int, default=12345, help="dataset seed (not a train seed)")
    parser.add_argument("--steps", type=int, default=20, help="deletion/insertion chunks")
    parser.add_argument("--batch-size", type=int, default=50, help="images per explanation pass")
    parser.add_argument(
        "--perturbation-batch", type=int, default=512, help="perturbed images per forward pass"
    )
    parser.add_argument("--models", nargs="*", type=Path, default=list(MODELS))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    keras.config.disable_interactive_logging()
    tf.get_logger().setLevel("ERROR")  # each method's first trace triggers retracing notices
    sections = []
    for path in args.models:
        model = keras.models.load_model(path, compile=False)
        size = int(model.inputs[0].shape[1])
        images, labels, masks = datasets.shapes(args.n, size=size, seed=args.seed)
        logits = model.predict(images, batch_size=args.batch_size, verbose=0)
        accuracy = float((logits.argmax(-1) == labels).mean())
        title = (
            f"{path.name}: {args.n} held-out shapes images ({size} px, seed {args.seed}), "
            f"accuracy {accuracy:.3f}; maps explain the true class; deletion/insertion over "
            f"{args.steps} steps"
        )
        print(title, file=sys.stderr, flush=True)
        results = evaluate(model, images, labels, masks, args)
        print(f"\n{title}\n{table(results)}\n\n{comparison(results)}\n", flush=True)
        bullets = "\n".join(f"- {line}" for line in comparison(results).splitlines())
        sections.append(f"### {title}\n\n{table(results, markdown=True)}\n\n{bullets}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n\n".join(sections) + "\n")
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
