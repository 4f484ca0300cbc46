"""Train the two demo models on `kerasviz.datasets.shapes` and save them into `models/`.

- ``shapes_cnn.keras``: the classic seed architecture, valid padding at 128x128: conv 16 /
  conv 16 / pool / conv 32 / conv 32 / pool / flatten / dropout / dense 10 (relu) / dense 10
  (relu) / dense 4 (softmax). Its last conv map is 58x58 (RF 14, stride 2).
- ``shapes_nested.keras``: a small residual backbone (same padding, BatchNorm, three residual
  blocks) as a functional model named ``backbone``, nested in a Sequential head with
  GlobalAveragePooling2D and a Dense softmax, the way transfer-learning models are built.

How the classic CNN is trained. Trained directly, its flatten -> dense 10 -> dense 10 head does
not learn this task in minutes: the objects appear anywhere, so each of the 26,912 flattened
inputs sees an object rarely, and Adam's sign-like first steps on that many all-positive
inputs push the 10 ReLU units dead (measured: 25% held-out accuracy after the same 9 epochs at
Adam learning rates 1e-3 and 3e-4). So it is trained
as a twin with the same convolutions and dense layers plus BatchNorm, and with global average
pooling in place of flatten. The twin is then converted exactly: each BatchNorm is folded into
the conv or dense layer before it (Ioffe & Szegedy, 2015; the standard inference-time fold), and
the average pooling becomes the flatten + dense 10 head by repeating the first dense kernel at
every one of the 29x29 positions divided by 841. The saved model has exactly the classic
layers, and computes what the twin computes (the script prints the largest difference).

Both train on images from seed ``TRAIN_SEED`` and are checked on a held-out split from
``HELDOUT_SEED``. They are saved without optimizer state, reloaded with ``safe_mode=True`` and
evaluated again on a fresh split from ``VERIFY_SEED``.

Usage:
    python examples/train_demo_models.py                        # full run, writes models/
    python examples/train_demo_models.py --fast --out /tmp/m    # tiny smoke run
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerasviz.datasets import CLASS_NAMES, shapes  # noqa: E402

SIZE = 128
TRAIN_SEED = 1
HELDOUT_SEED = 2
VERIFY_SEED = 3
NUM_CLASSES = len(CLASS_NAMES)


def build_cnn(size: int = SIZE, seed: int = 0) -> keras.Sequential:
    """The classic seed architecture; the last conv map is 58x58 at 128x128 input."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((size, size, 3), name="image"),
            layers.Conv2D(16, 3, activation="relu", name="conv1"),
            layers.Conv2D(16, 3, activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(32, 3, activation="relu", name="conv3"),
            layers.Conv2D(32, 3, activation="relu", name="conv4"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(10, activation="relu", name="dense1"),
            layers.Dense(10, activation="relu", name="dense2"),
            layers.Dense(NUM_CLASSES, activation="softmax", name="predictions"),
        ],
        name="shapes_cnn",
    )


def build_cnn_twin(size: int = SIZE, seed: int = 0) -> keras.Model:
    """The CNN's training twin: the same layers plus BatchNorm, with GAP instead of flatten."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    convs = (
        ("conv1", 16, None),
        ("conv2", 16, "pool1"),
        ("conv3", 32, None),
        ("conv4", 32, "pool2"),
    )
    for name, filters, pool in convs:
        x = layers.Conv2D(filters, 3, use_bias=False, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        if pool:
            x = layers.MaxPooling2D(2, name=pool)(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    for name in ("dense1", "dense2"):
        x = layers.Dense(10, use_bias=False, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="shapes_cnn_twin")


def _fold(kernel: np.ndarray, bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of ``BN(x @ kernel)`` in inference mode, as one affine layer."""
    gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.get_weights())
    scale = gamma / np.sqrt(var + bn.epsilon)
    return (kernel * scale).astype(np.float32), (beta - mean * scale).astype(np.float32)


def cnn_from_twin(twin: keras.Model, size: int = SIZE) -> keras.Sequential:
    """The classic CNN computing exactly what the trained twin computes at inference."""
    cnn = build_cnn(size)
    for name in ("conv1", "conv2", "conv3", "conv4", "dense1", "dense2"):
        kernel, bias = _fold(twin.get_layer(name).get_weights()[0], twin.get_layer(f"{name}_bn"))
        if name == "dense1":
            # GAP then dense == flatten then the dense kernel repeated at every position / count.
            h, w, c = cnn.get_layer("pool2").output.shape[1:]
            kernel = np.tile(kernel, (h * w, 1)) / (h * w)  # flatten order is (h, w, c)
        cnn.get_layer(name).set_weights([kernel, bias])
    cnn.get_layer("predictions").set_weights(twin.get_layer("predictions").get_weights())
    return cnn


def _conv_bn_relu(x, filters: int, strides: int, name: str):
    x = keras.layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _residual_block(x, filters: int, name: str):
    y = _conv_bn_relu(x, filters, 1, f"{name}_a")
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_b_bn")(y)
    x = keras.layers.Add(name=f"{name}_add")([x, y])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def build_backbone(size: int = SIZE) -> keras.Model:
    """Residual backbone: 128 -> 64 -> 32 -> 16 with same padding and BatchNorm."""
    inputs = keras.Input((size, size, 3), name="image")
    x = _conv_bn_relu(inputs, 16, 2, "stem")  # 64x64
    x = _residual_block(x, 16, "block1")
    x = _conv_bn_relu(x, 32, 2, "down2")  # 32x32
    x = _residual_block(x, 32, "block2")
    x = _conv_bn_relu(x, 48, 2, "down3")  # 16x16
    x = _residual_block(x, 48, "block3")
    return keras.Model(inputs, x, name="backbone")


def build_nested(size: int = SIZE, seed: int = 0) -> keras.Sequential:
    """The backbone nested in a Sequential head, as in transfer learning."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((size, size, 3), name="image"),
            build_backbone(size),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", name="predictions"),
        ],
        name="shapes_nested",
    )


def fit(
    model, x, y, validation, *, lr: float, epochs: int, verbose: int, batch_size: int = 32
) -> None:
    """Adam with a cosine-decayed learning rate."""
    steps = epochs * int(np.ceil(len(x) / batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        x, y, batch_size=batch_size, epochs=epochs, validation_data=validation, verbose=verbose
    )


def train_cnn(x, y, validation, *, epochs: int, verbose: int) -> keras.Model:
    twin = build_cnn_twin(SIZE)
    fit(twin, x, y, validation, lr=3e-3, epochs=epochs, verbose=verbose, batch_size=16)
    cnn = cnn_from_twin(twin)
    probe = validation[0][:64]
    diff = np.abs(cnn.predict(probe, verbose=0) - twin.predict(probe, verbose=0)).max()
    print(f"shapes_cnn: max |classic - twin| probability difference {diff:.2e}", flush=True)
    return cnn


def train_nested(x, y, validation, *, epochs: int, verbose: int) -> keras.Model:
    model = build_nested(SIZE)
    fit(model, x, y, validation, lr=3e-3, epochs=epochs, verbose=verbose)
    return model


TRAINERS = {
    "shapes_cnn": (train_cnn, build_cnn, 9),
    "shapes_nested": (train_nested, build_nested, 8),
}


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on ``images``."""
    probs = model.predict(images, batch_size=64, verbose=0)
    return float(np.mean(np.argmax(probs, axis=-1) == labels))


def train(
    out: str | Path = "models",
    *,
    epochs: int | None = None,
    n_train: int = 4000,
    n_heldout: int = 500,
    fast: bool = False,
    verbose: int = 2,
) -> dict[str, dict[str, float]]:
    """Train, evaluate, save and re-check both demo models; return their numbers.

    Returns:
        ``{name: {"heldout_acc", "verify_acc", "train_s", "size_bytes"}}``.
    """
    if fast:
        n_train, n_heldout, epochs = 32, 16, 1
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, _ = shapes(n_train, size=SIZE, seed=TRAIN_SEED)
    x_held, y_held, _ = shapes(n_heldout, size=SIZE, seed=HELDOUT_SEED)
    x_ver, y_ver, _ = shapes(n_heldout, size=SIZE, seed=VERIFY_SEED)
    results = {}
    for name, (trainer, build, default_epochs) in TRAINERS.items():
        start = time.perf_counter()
        model = trainer(
            x_train, y_train, (x_held, y_held), epochs=epochs or default_epochs, verbose=verbose
        )
        train_s = time.perf_counter() - start
        held = accuracy(model, x_held, y_held)
        # Save the weights in a fresh, uncompiled copy: no optimizer state, a small file.
        clean = build(SIZE)
        clean.set_weights(model.get_weights())
        path = out / f"{name}.keras"
        clean.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        ver = accuracy(loaded, x_ver, y_ver)
        results[name] = {
            "heldout_acc": held,
            "verify_acc": ver,
            "train_s": train_s,
            "size_bytes": path.stat().st_size,
        }
        print(
            f"{name}: held-out accuracy {held:.4f} ({n_heldout} images, seed {HELDOUT_SEED}), "
            f"reloaded with safe_mode=True: {ver:.4f} (seed {VERIFY_SEED}), "
            f"training {train_s:.1f} s, {path} {path.stat().st_size / 1e6:.2f} MB",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="models", help="output folder (default: models)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for both models")
    parser.add_argument("--n-train", type=int, default=4000, help="training images")
    parser.add_argument("--fast", action="store_true", help="tiny run for smoke tests")
    args = parser.parse_args(argv)
    return train(
        args.out,
        epochs=args.epochs,
        n_train=args.n_train,
        fast=args.fast,
        verbose=0 if args.fast else 2,
    )


if __name__ == "__main__":
    main()
