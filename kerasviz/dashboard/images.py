"""Images in and out of the dashboard: upload decoding with limits, fitting, PNG data URLs.

Uploads are decoded by PIL, PNG and JPEG only. Two limits guard the server: the upload's size
in bytes, checked before decoding, and its pixel count, read from the header before any pixel
is decoded (a small file can declare a huge image: a decompression bomb). Everything the page
shows travels as ``data:image/png;base64,...`` URLs inside JSON; nothing names a file.
"""

from __future__ import annotations

import base64
import functools
import io
import warnings
from typing import Any

import numpy as np
from PIL import Image

#: Default limits for an upload: 20 MB of file, 40 million decoded pixels.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
#: Stored images are shrunk to this longest side (they are fitted to the model's input later).
STORE_SIDE = 1024
FORMATS = ("PNG", "JPEG")


class UploadError(ValueError):
    """An upload that is not a usable image; the message is shown in the page."""


def decode_upload(data: bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decodes a PNG or JPEG upload to uint8 RGB ``(h, w, 3)``, at most STORE_SIDE px a side.

    Raises:
        UploadError: not a PNG or JPEG, a damaged file, or more than ``max_pixels`` pixels.
    """
    if not data:
        raise UploadError("Expected a PNG or JPEG image. Received: an empty upload.")
    try:
        with warnings.catch_warnings():
            # The pixel limit below replaces PIL's own bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise UploadError(
                    f"Expected an image of at most {max_pixels:,} pixels. Received: "
                    f"{width}x{height} = {width * height:,} pixels."
                )
            image.draft("RGB", (STORE_SIDE, STORE_SIDE))  # JPEG: decode at a reduced scale
            image = image.convert("RGB")
    except UploadError:
        raise
    except Image.DecompressionBombError as error:
        raise UploadError(f"Expected a reasonably sized image. Received: {error}") from None
    except Exception as error:  # noqa: BLE001 - PIL raises many types for bad files
        head = data[:16]
        kind = "a PNG or JPEG image"
        raise UploadError(
            f"Expected {kind}. Received: {len(data):,} bytes that PIL cannot read as one "
            f"({type(error).__name__}; first bytes {head!r})."
        ) from None
    if max(image.size) > STORE_SIDE:
        image.thumbnail((STORE_SIDE, STORE_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def as_pixels(image: Any) -> np.ndarray:
    """An image given from Python as uint8 ``(h, w, c)``: uint8 0..255 or floats in [0, 1].

    Raises:
        ValueError: not ``(h, w)`` or ``(h, w, 1 or 3)``, or floats outside [0, 1].
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3) or min(array.shape[:2]) < 1:
        raise ValueError(
            "Expected `images` to hold images (h, w), (h, w, 1) or (h, w, 3). Received: an "
            f"image of shape {array.shape}."
        )
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)) or array.min() < -1e-4 or array.max() > 1 + 1e-4:
        raise ValueError(
            "Expected `images` as uint8 (0..255) or floats in [0, 1]. Received: values in "
            f"[{np.nanmin(array):g}, {np.nanmax(array):g}]."
        )
    return np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)


def fit(pixels: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Centre-crops ``pixels`` to the aspect ratio ``height:width`` and resizes it (bilinear).

    Returns:
        float32 ``(height, width, channels)`` in [0, 1]; RGB is converted to grey (ITU-R 601-2
        luma) for one-channel models, grey repeated for three.
    """
    h, w = pixels.shape[:2]
    if (h, w) != (height, width):
        if h * width > w * height:  # too tall: keep the middle rows
            keep = max(1, round(w * height / width))
            top = (h - keep) // 2
            pixels = pixels[top : top + keep]
        elif h * width < w * height:
            keep = max(1, round(h * width / height))
            left = (w - keep) // 2
            pixels = pixels[:, left : left + keep]
    mode = "L" if pixels.shape[-1] == 1 else "RGB"
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    image = image.convert("L" if channels == 1 else "RGB")
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[..., None] if array.ndim == 2 else array


# ---------------------------------------------------------------------------------- output


def png_url(pixels: np.ndarray) -> str:
    """uint8 ``(h, w)``, ``(h, w, 1)`` or ``(h, w, 3)`` as a PNG data URL."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        array = to_uint8(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def to_uint8(unit: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) to uint8."""
    return np.round(np.clip(np.nan_to_num(unit), 0.0, 1.0) * 255.0).astype(np.uint8)


def rgb(image: np.ndarray) -> np.ndarray:
    """Grey ``(h, w, 1)`` repeated to RGB; RGB unchanged."""
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


@functools.cache
def lut(name: str) -> np.ndarray:
    """A matplotlib colormap as a ``(256, 3)`` float32 table (matplotlib, not pyplot)."""
    import matplotlib

    return matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)


def colorize(unit: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """Maps ``(h, w)`` values in [0, 1] through ``cmap`` to float RGB ``(h, w, 3)``."""
    index = np.round(np.clip(np.nan_to_num(unit), 0.0, 1.0) * 255.0).astype(np.int32)
    return lut(cmap)[index]


def unit_scale(values: np.ndarray, *, low: float | None = None) -> np.ndarray:
    """Min-max to [0, 1] (``low`` fixes the minimum, e.g. 0 for rectified maps); flat -> 0."""
    values = np.asarray(values, np.float64)
    lo = float(values.min()) if low is None else low
    hi = float(values.max())
    if not hi > lo:
        return np.zeros(values.shape, np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


def robust_scale(values: np.ndarray, quantile: float = 99.5) -> np.ndarray:
    """Non-negative maps to [0, 1] by their ``quantile`` percentile (saliency maps are spiky)."""
    values = np.abs(np.asarray(values, np.float64))
    top = float(np.percentile(values, quantile))
    if not top > 0:
        top = float(values.max())
    return np.zeros(values.shape, np.float32) if not top > 0 else (values / top).astype(np.float32)


def overlay(image: np.ndarray, heat: np.ndarray, cmap: str = "turbo") -> np.ndarray:
    """A heat map in [0, 1] over a display image: colour weighted by the heat (cold = image)."""
    base = rgb(image)
    alpha = (0.15 + 0.6 * np.clip(heat, 0, 1))[..., None]
    return to_uint8((1 - alpha) * base + alpha * colorize(heat, cmap))


def signed(values: np.ndarray, cmap: str = "RdBu_r", quantile: float = 99.5) -> np.ndarray:
    """Signed ``(h, w)`` values to uint8 RGB, 0 at the colormap's middle."""
    top = float(np.percentile(np.abs(values), quantile))
    top = top if top > 0 else float(np.abs(values).max()) or 1.0
    return to_uint8(colorize(0.5 + 0.5 * np.clip(values / top, -1, 1), cmap))


def draw_box(
    image: np.ndarray, box: tuple[int, int, int, int], color=(1.0, 0.2, 0.1)
) -> np.ndarray:
    """A 1-px rectangle (top, left, bottom, right; exclusive ends) on a float RGB copy."""
    out = rgb(np.asarray(image, np.float32)).copy()
    top, left, bottom, right = box
    if bottom <= top or right <= left:
        return out
    out[top, left:right] = color
    out[bottom - 1, left:right] = color
    out[top:bottom, left] = color
    out[top:bottom, right - 1] = color
    return out
