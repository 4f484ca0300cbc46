"""Tiny models shared by the tests. Each builds in well under a second."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def make_tiny_cnn(size: int = 16, classes: int = 3, seed: int = 0) -> keras.Model:
    """conv-relu / conv-relu / pool / flatten / dense softmax, valid padding."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(classes, activation="softmax", name="probs"),
        ],
        name="tiny_cnn",
    )


def make_gap_model(size: int = 16, classes: int = 3, seed: int = 0) -> keras.Model:
    """conv / conv / GlobalAveragePooling / Dense / separate softmax, functional."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(classes, name="logits")(x)
    outputs = keras.layers.Softmax(name="softmax")(x)
    return keras.Model(inputs, outputs, name="gap_model")


def make_nested_model(size: int = 32, classes: int = 3, seed: int = 0) -> keras.Model:
    """A functional backbone nested inside a Sequential head, as in transfer learning."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="b_conv1")(inputs)
    x = keras.layers.BatchNormalization(name="b_bn1")(x)
    x = keras.layers.ReLU(name="b_relu1")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="b_conv2")(x)
    x = keras.layers.Add(name="b_add")([x, y])
    x = keras.layers.MaxPooling2D(2, name="b_pool")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="b_conv3")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(name="head_gap"),
            keras.layers.Dense(classes, activation="softmax", name="head_dense"),
        ],
        name="nested",
    )


@pytest.fixture
def tiny_cnn() -> keras.Model:
    return make_tiny_cnn()


@pytest.fixture
def gap_model() -> keras.Model:
    return make_gap_model()


@pytest.fixture
def nested_model() -> keras.Model:
    return make_nested_model()


@pytest.fixture
def images16() -> np.ndarray:
    return np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)


@pytest.fixture
def images32() -> np.ndarray:
    return np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
