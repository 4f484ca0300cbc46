"""Helpers shared by the examples: arguments, the demo models, photos and keras.applications.

Every example takes ``--out`` (default ``examples_output/<example>``) and ``--fast`` (fewer steps
and smaller inputs, used by the tests); the ``keras.applications`` examples also take
``--weights imagenet`` for users who are online (``none`` builds the architecture with random
weights, offline).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerasviz import plot  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(os.environ.get("KERASVIZ_MODELS", ROOT / "models"))  # where the demo models are
IMAGENET_CAT = 281  # "tabby cat"
IMAGENET_DOG = 243  # "bull mastiff"


def parse_args(
    name: str, description: str, argv: Sequence[str] | None, *, applications: bool = False
) -> argparse.Namespace:
    """Parses the common options and creates the output folder."""
    parser = argparse.ArgumentParser(prog=f"{name}.py", description=description)
    parser.add_argument("--out", default=str(Path("examples_output") / name), help="output folder")
    parser.add_argument("--fast", action="store_true", help="fewer steps, smaller inputs")
    if applications:
        parser.add_argument(
            "--weights",
            choices=("none", "imagenet"),
            default="none",
            help="none: random weights, offline (default); imagenet: download pretrained ones",
        )
    args = parser.parse_args(argv)
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def save(figure_or_array, out: Path, name: str) -> Path:
    """Saves a figure or an image array as ``out/name.png`` and prints the path."""
    path = plot.save(figure_or_array, out / f"{name}.png")
    print(f"wrote {path}")
    return path


@functools.cache
def demo_model(name: str = "shapes_cnn") -> keras.Model:
    """One of the committed demo models (``shapes_cnn`` or ``shapes_nested``)."""
    path = MODELS / f"{name}.keras"
    if not path.exists():
        sys.exit(f"{path} not found; run `python examples/train_demo_models.py` first")
    return keras.models.load_model(path, compile=False)


def shapes(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out demo images ``(n, 128, 128, 3)`` in [0, 1], labels and object masks."""
    from kerasviz.datasets import shapes as make

    return make(n, size=128, seed=seed)


def class_names() -> tuple[str, ...]:
    from kerasviz.datasets import CLASS_NAMES

    return CLASS_NAMES


def photo(name: str = "chelsea", size: int = 224) -> np.ndarray:
    """A photo from scikit-image (chelsea the cat, coffee, astronaut, rocket), square, in [0, 1]."""
    from PIL import Image
    from skimage import data

    image = np.asarray(getattr(data, name)())[..., :3]
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(image[top : top + side, left : left + side])
    square = square.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(square, dtype=np.float32) / 255.0


@functools.cache
def application(name: str, size: int, weights: str = "none") -> keras.Model:
    """``keras.applications`` VGG16 or ResNet50 with its classifier, at ``size`` x ``size``.

    ``weights="none"`` builds random weights (offline); ``"imagenet"`` needs ``size == 224``.
    """
    builders = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}
    if weights == "imagenet" and size != 224:
        size = 224  # the pretrained classifier is fixed to 224 x 224
    keras.utils.set_random_seed(0)
    return builders[name](
        weights=None if weights == "none" else weights, input_shape=(size, size, 3)
    )


def preprocess(name: str, pixels: np.ndarray) -> np.ndarray:
    """Photos in [0, 1] to the input space of ``keras.applications.<name>``."""
    module = {"vgg16": keras.applications.vgg16, "resnet50": keras.applications.resnet50}[name]
    return np.asarray(module.preprocess_input(pixels * 255.0), dtype=np.float32)


def value_range(name: str) -> tuple[float, float]:
    """The range of preprocessed inputs (VGG16 and ResNet50 subtract the BGR means)."""
    return (-123.68, 255.0 - 103.939) if name in ("vgg16", "resnet50") else (0.0, 1.0)


def to_pixels(name: str, x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`preprocess`, for display, clipped to [0, 1]."""
    if name in ("vgg16", "resnet50"):
        mean = np.array([103.939, 116.779, 123.68], np.float32)
        return np.clip((np.asarray(x) + mean)[..., ::-1] / 255.0, 0.0, 1.0)
    return np.clip(x, 0.0, 1.0)


def two_objects(images: np.ndarray, labels: np.ndarray, masks: np.ndarray):
    """An image holding two objects of different classes: one pasted into another image.

    Returns ``(image, (class_of_background_object, class_of_pasted_object), mask_a, mask_b)``.
    """
    grown = masks.copy()
    for axis in (1, 2):  # keep 4 px between the objects
        for shift in range(1, 5):
            grown |= np.roll(masks, shift, axis) | np.roll(masks, -shift, axis)
    for i in range(len(images)):
        for j in range(len(images)):
            if labels[i] != labels[j] and not np.any(grown[i] & grown[j]):
                image = np.where(masks[j][..., None], images[j], images[i])
                return image, (int(labels[i]), int(labels[j])), masks[i], masks[j]
    raise ValueError("no two non-overlapping objects of different classes; use more images")
