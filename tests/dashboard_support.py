"""What the two dashboard test modules share: one tiny model (built once per session, so the
compiled steps are traced once for both modules) and image bytes for uploads."""

from __future__ import annotations

import base64
import functools
import io
import struct
import zlib

import keras
import numpy as np
from PIL import Image

SIZE = 32
CLASSES = ("zero", "one", "two")


@functools.cache
def tiny_model() -> keras.Model:
    """conv (valid) / pool / conv (same) / GAP / dense softmax on 32x32 RGB.

    Receptive fields by hand: c1 3 px stride 1 start 0; p1 4 px stride 2 start 0; c2 (same,
    pad 1 before) 4 + 2 * 2 = 8 px, stride 2, start -2.
    """
    keras.utils.set_random_seed(11)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="p1")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="tiny_dash")


def images(n: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 images (n, 40, 48, 3): wider than the model's square input, so they get cropped."""
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and header declaring ``width x height``, with almost no data:
    the shape of a decompression bomb, tiny on the wire."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def decode_url(url: str) -> np.ndarray:
    """A ``data:image/png;base64,...`` URL back to a uint8 array."""
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix), url[:40]
    with Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :]))) as image:
        return np.asarray(image.convert("RGB"))
