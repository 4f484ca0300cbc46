"""The dashboard's model work, independent of any web framework.

An :class:`Explorer` holds the served models (:class:`ModelEntry`) and images, and answers each
kind of page request with a JSON-ready dict: predictions, feature maps with top channels and
filter weights, one unit's receptive field, CAMs with both projections, saliency; and it runs
the long jobs (feature inversion, unit patterns, SmoothGrad and integrated gradients) in
segments on the :class:`~kerasviz.dashboard.jobs.JobManager`. Every model call holds the
explorer's fair lock. Requests name models, images and layers by key or layer path, never a
file.

Where things go: a new CAM method is one line in :data:`CAM_METHODS`; a new request kind is a
method here plus one route in :mod:`kerasviz.dashboard.server`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

import kerasviz
from kerasviz import metrics

# No public function lists a model's leaf layers yet; the report uses the same walkers.
from kerasviz._graph import is_graph_model, iter_layers
from kerasviz._layers import is_conv, output_shape, require_spatial
from kerasviz.dashboard import images as im
from kerasviz.dashboard.jobs import Job, JobManager, TicketLock


class RequestError(ValueError):
    """A bad request: the message is shown in the page. ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CamMethod:
    """One CAM method of the attribution panel.

    Attributes:
        label: shown in the page.
        name: the kerasviz function's name (``kerasviz.<name>``).
        layer_resolution: the method accepts ``upsample=None``: it is computed once at the
            layer's resolution and projected both ways on the host (exact for gradient CAMs,
            whose weights do not depend on the projection). Otherwise it is called once per
            projection.
        pixels: the result is a pixel map ``(H, W, C)`` (Guided Grad-CAM), not a heat map.
        options: extra keyword arguments, from the layer's channel count.
    """

    label: str
    name: str
    layer_resolution: bool = True
    pixels: bool = False
    options: Callable[[int], dict] = field(default=lambda channels: {})


#: Score-CAM keeps the 64 most varied channels of wider layers (Faster Score-CAM).
SCORE_CAM_CHANNELS = 64

#: Every CAM method, in the page's order. Both projections are shown side by side.
CAM_METHODS: tuple[CamMethod, ...] = (
    CamMethod("Grad-CAM", "grad_cam"),
    CamMethod("Grad-CAM++", "grad_cam_plus_plus"),
    CamMethod("Layer-CAM", "layer_cam"),
    CamMethod(
        "Score-CAM",
        "score_cam",
        layer_resolution=False,
        options=lambda c: {"max_channels": SCORE_CAM_CHANNELS} if c > SCORE_CAM_CHANNELS else {},
    ),
    CamMethod("Guided Grad-CAM", "guided_grad_cam", layer_resolution=False, pixels=True),
)
PROJECTIONS = ("receptive_field", "bilinear")

#: Limits on what one request may ask for.
MAX_CHANNELS_SHOWN = 64
MAX_STEPS = 2000
MAX_SAMPLES = 256


# ------------------------------------------------------------------------------ checks


def _int(value: Any, name: str, low: int, high: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or not low <= value <= high
    ):
        raise RequestError(
            f"Expected `{name}` to be an int in [{low}, {high}]. Received: {value!r}."
        )
    return int(value)


def _channels(value: Any, total: int) -> list[int] | None:
    """None, or a list of distinct channel indices in ``[0, total)`` (at most 64)."""
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise RequestError(f"Expected `channels` to be a list of ints. Received: {value!r}.")
    chosen = list(dict.fromkeys(_int(c, "channels", 0, total - 1) for c in value))
    if len(chosen) > MAX_CHANNELS_SHOWN:
        raise RequestError(
            f"Expected at most {MAX_CHANNELS_SHOWN} `channels`. Received: {len(chosen)}."
        )
    return chosen


# ------------------------------------------------------------------------------ entries


def _layer_rows(model: keras.Model, input_size: tuple | None) -> list[dict]:
    """Every leaf layer: path, type, output shape, receptive field, and what the page can do."""
    rows = []
    for path, layer in iter_layers(model):
        if is_graph_model(layer):
            continue
        try:
            shape = [None if s is None else int(s) for s in output_shape(layer)[1:]]
        except (AttributeError, ValueError):
            shape = None
        rf = None
        try:
            field_ = kerasviz.receptive_field(model, path, input_size=input_size)
            rf = {
                "size": list(field_.size),
                "stride": list(field_.stride),
                "start": list(field_.start),
                "global": field_.is_global,
            }
        except ValueError:
            pass
        rows.append(
            {
                "path": path,
                "type": type(layer).__name__,
                "shape": shape,
                "rf": rf,
                "spatial": shape is not None and len(shape) == 3,
                "conv": bool(is_conv(layer)),
            }
        )
    return rows


@dataclass
class ModelEntry:
    """A served model and how display pixels in [0, 1] become its inputs.

    Attributes:
        key: the request key (``"m0"``, ``"m1"``, ...).
        name: shown in the page.
        model: the Keras model (never modified).
        space: a :class:`kerasviz.report.InputSpace`: ``x = pixels @ matrix + offset``.
        size: ``(height, width, channels)`` of the images it sees.
        fixed_size: False when the model's input size is free and ``size`` was chosen.
        class_names: one name per class, or None for indices.
        layers: :func:`_layer_rows` of the model.
        default_layer: the last convolution (the CAM layer).
    """

    key: str
    name: str
    model: keras.Model
    space: Any
    size: tuple[int, int, int]
    fixed_size: bool
    class_names: list[str] | None
    layers: list[dict]
    default_layer: str | None

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``input_size=`` for receptive fields: None for a model of fixed size."""
        return None if self.fixed_size else self.size[:2]

    @property
    def classes(self) -> int:
        units = int(self.model.outputs[0].shape[-1])
        return 2 if units == 1 else units

    def class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return f"class {index}"

    def view(self) -> dict:
        return {
            "key": self.key,
            "name": self.name,
            "size": list(self.size),
            "classes": [self.class_name(i) for i in range(self.classes)],
            "layers": self.layers,
            "default_layer": self.default_layer,
            "value_range": list(self.space.value_range),
        }


def make_entry(
    key: str,
    name: str,
    model: keras.Model,
    *,
    preprocess: Any = "scale01",
    class_names: Sequence[str] | None = None,
    size: tuple[int, int] = (224, 224),
) -> ModelEntry:
    """A :class:`ModelEntry` for ``model``.

    Args:
        preprocess: ``"scale01"`` (x / 255), ``"none"``, a ``keras.applications`` module
            name, or a function of 0..255 float images ``(n, h, w, c)``; it must be a
            per-pixel affine map (every ``keras.applications`` preprocessing is).
        size: the image size for a model whose input size is not fixed.

    Raises:
        ValueError: the model has not one image input ``(batch, h, w, 1 or 3)`` and one
            ``(batch, classes)`` output, or ``preprocess`` is unknown or not affine.
    """
    from kerasviz.report import InputSpace

    kerasviz.resolve_layer(model, 0)  # a Sequential or functional model, with inputs
    shapes = [tuple(x.shape) for x in model.inputs]
    if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][-1] not in (1, 3):
        raise ValueError(
            f"Expected `model` to have one image input (batch, height, width, 1 or 3). "
            f"Received: model {model.name!r} with inputs {shapes}."
        )
    outputs = [tuple(o.shape) for o in model.outputs]
    if len(outputs) != 1 or len(outputs[0]) != 2:
        raise ValueError(
            f"Expected `model` to be a classifier with one output (batch, classes). "
            f"Received: model {model.name!r} with outputs {outputs}."
        )
    _, h, w, c = shapes[0]
    fixed = h is not None and w is not None
    height, width = (int(h), int(w)) if fixed else (int(size[0]), int(size[1]))
    fn = _preprocess_function(preprocess)
    space = InputSpace.from_preprocess(fn, int(c))
    try:
        default = kerasviz.default_cam_layer(model)[0]
    except ValueError:
        default = None
    input_size = None if fixed else (height, width)
    return ModelEntry(
        key=key,
        name=name,
        model=model,
        space=space,
        size=(height, width, int(c)),
        fixed_size=fixed,
        class_names=list(class_names) if class_names is not None else None,
        layers=_layer_rows(model, input_size),
        default_layer=default,
    )


def _preprocess_function(preprocess: Any) -> Callable:
    if callable(preprocess):
        return preprocess
    if preprocess == "none":
        return lambda x: x
    if preprocess == "scale01":
        return lambda x: x / 255.0
    module = getattr(keras.applications, str(preprocess), None)
    if module is None or not hasattr(module, "preprocess_input"):
        raise ValueError(
            "Expected `preprocess` to be 'scale01', 'none', a keras.applications module name or "
            f"a function. Received: {preprocess!r}."
        )
    return lambda x: module.preprocess_input(np.array(x, copy=True))


# ------------------------------------------------------------------------------ explorer


@dataclass
class StoredImage:
    key: str
    name: str
    pixels: np.ndarray  # uint8 (h, w, c), at most STORE_SIDE a side
    uploaded: bool


class Explorer:
    """Answers the dashboard's requests on a set of models and images.

    Args:
        entries: the served models.
        images: ``(name, uint8 pixels (h, w, c))`` pairs.
        max_uploads: uploads kept in memory (the oldest upload is dropped first).
        max_upload_bytes, max_pixels: the upload limits (see :mod:`kerasviz.dashboard.images`).

    Every request method takes JSON-ready arguments (keys, layer paths, ints) and returns a
    JSON-ready dict whose pictures are PNG data URLs. Bad arguments raise :class:`RequestError`
    (a ValueError with an HTTP status: 404 for an unknown model or image key, 413 for an upload
    over the limit, 400 otherwise); kerasviz's own ValueErrors (an unknown layer, with the
    closest names) pass through. Both become the message shown in the page.
    """

    def __init__(
        self,
        entries: Sequence[ModelEntry],
        images: Sequence[tuple[str, np.ndarray]] = (),
        *,
        max_uploads: int = 32,
        max_upload_bytes: int = im.MAX_UPLOAD_BYTES,
        max_pixels: int = im.MAX_PIXELS,
    ):
        if not entries:
            raise ValueError("Expected at least one model. Received: none.")
        self.entries: dict[str, ModelEntry] = {e.key: e for e in entries}
        self.images: OrderedDict[str, StoredImage] = OrderedDict()
        self.max_uploads = max_uploads
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_pixels = int(max_pixels)
        self._ids = itertools.count()
        self._guard = threading.Lock()
        self._fitted: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._maps: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.lock = TicketLock()
        self.jobs = JobManager(self.lock)
        for name, pixels in images:
            self._store(name, im.as_pixels(pixels), uploaded=False)

    # ------------------------------------------------------------------ images

    def _store(self, name: str, pixels: np.ndarray, uploaded: bool) -> StoredImage:
        with self._guard:
            key = f"i{next(self._ids)}"
            record = StoredImage(key, name, pixels, uploaded)
            self.images[key] = record
            uploads = [k for k, r in self.images.items() if r.uploaded]
            for old in uploads[: max(0, len(uploads) - self.max_uploads)]:
                del self.images[old]
        return record

    @staticmethod
    def _image_view(record: StoredImage) -> dict:
        thumb = im.fit(record.pixels, 64, 64, 3)
        return {
            "key": record.key,
            "name": record.name,
            "uploaded": record.uploaded,
            "size": list(record.pixels.shape[:2]),
            "thumb": im.png_url(im.to_uint8(thumb)),
        }

    def add_upload(self, name: str, data: bytes) -> dict:
        """Decodes an uploaded PNG or JPEG and keeps it; returns its image view.

        Raises:
            RequestError: too large (413), or not a readable PNG/JPEG within the pixel limit.
        """
        if len(data) > self.max_upload_bytes:
            raise RequestError(
                f"Expected an upload of at most {self.max_upload_bytes:,} bytes. Received: "
                f"{len(data):,} bytes.",
                413,
            )
        try:
            pixels = im.decode_upload(data, max_pixels=self.max_pixels)
        except im.UploadError as error:
            raise RequestError(str(error)) from None
        clean = "".join(ch for ch in str(name) if ch.isprintable()).strip()
        clean = clean.replace("\\", "/").rsplit("/", 1)[-1][:80] or "upload"
        return self._image_view(self._store(clean, pixels, uploaded=True))

    def _entry(self, key: Any) -> ModelEntry:
        entry = self.entries.get(key) if isinstance(key, str) else None
        if entry is None:
            raise RequestError(
                f"Expected `model` to be one of {sorted(self.entries)}. Received: {key!r}.", 404
            )
        return entry

    def _subject(self, model_key: Any, image_key: Any) -> tuple[ModelEntry, np.ndarray, np.ndarray]:
        """(entry, display pixels (h, w, c) in [0, 1], model input (h, w, c))."""
        entry = self._entry(model_key)
        record = self.images.get(image_key) if isinstance(image_key, str) else None
        if record is None:
            raise RequestError(
                f"Expected `image` to be an image key. Received: {image_key!r}.", 404
            )
        cache_key = (entry.key, record.key)
        with self._guard:
            hit = self._fitted.get(cache_key)
        if hit is None:
            display = im.fit(record.pixels, *entry.size)
            hit = (display, entry.space.to_model(display))
            with self._guard:
                self._fitted[cache_key] = hit
                while len(self._fitted) > 64:
                    self._fitted.popitem(last=False)
        return entry, hit[0], hit[1]

    def _layer(self, entry: ModelEntry, layer: Any, *, spatial: bool = True) -> tuple[str, Any]:
        if not isinstance(layer, str) or not layer:
            raise RequestError(f"Expected `layer` to be a layer name or path. Received: {layer!r}.")
        path, obj = kerasviz.resolve_layer(entry.model, layer, "layer")
        if spatial:
            require_spatial(path, obj, "layer", rank=4)
        return path, obj

    def _field(self, entry: ModelEntry, path: str):
        return kerasviz.receptive_field(entry.model, path, input_size=entry.input_size)

    def info(self) -> dict:
        """The models (with their layer tables) and the images, for the page's first load."""
        with self._guard:
            records = list(self.images.values())
        return {
            "models": [e.view() for e in self.entries.values()],
            "images": [self._image_view(r) for r in records],
            "limits": {"upload_bytes": self.max_upload_bytes, "pixels": self.max_pixels},
            "cams": [m.label for m in CAM_METHODS],
        }

    # ------------------------------------------------------------------ quick requests

    def _scores(self, entry: ModelEntry, x: np.ndarray) -> np.ndarray:
        out = np.asarray(entry.model(x[None], training=False), np.float64)[0]
        if out.shape[0] == 1:  # one-unit head: classes 0 = -z and 1 = z
            z = out[0]
            return np.array([1 - z, z]) if 0 <= z <= 1 else np.array([-z, z])
        return out

    def _target(self, entry: ModelEntry, x: np.ndarray, target: Any) -> int:
        if target is None:
            return int(np.argmax(self._scores(entry, x)))
        return _int(target, "target", 0, entry.classes - 1)

    def predict(self, model: Any, image: Any) -> dict:
        """The fitted image and the model's top classes."""
        start = time.perf_counter()
        entry, display, x = self._subject(model, image)
        with self.lock:
            scores = self._scores(entry, x)
        order = np.argsort(-scores, kind="stable")[:5]
        return {
            "image": im.png_url(im.to_uint8(display)),
            "size": list(display.shape),
            "predicted": int(order[0]),
            "top": [
                {"index": int(i), "name": entry.class_name(int(i)), "score": float(scores[i])}
                for i in order
            ],
            "ms": _ms(start),
        }

    def _feature_maps(self, entry: ModelEntry, image: str, x: np.ndarray, path: str) -> np.ndarray:
        key = (entry.key, image, path)
        with self._guard:
            maps = self._maps.get(key)
        if maps is None:
            maps = kerasviz.feature_maps(entry.model, x[None], [path])[path][0]
            with self._guard:
                self._maps[key] = maps
                while len(self._maps) > 8:
                    self._maps.popitem(last=False)
        return maps

    def features(
        self, model: Any, image: Any, layer: Any, channels: Any = None, k: Any = 16
    ) -> dict:
        """Feature maps of ``layer`` (chosen channels, or the top ``k``), top channels, filters."""
        start = time.perf_counter()
        entry, _, x = self._subject(model, image)
        with self.lock:
            path, obj = self._layer(entry, layer)
            total = int(output_shape(obj)[-1])
            chosen = _channels(channels, total)
            k = _int(k, "k", 1, MAX_CHANNELS_SHOWN)
            maps = self._feature_maps(entry, image, x, path)
            rf = self._field(entry, path)
            weights = kerasviz.filter_weights(entry.model, path) if is_conv(obj) else None
        means = maps.reshape(-1, total).mean(axis=0)
        order = np.argsort(-means, kind="stable")
        shown = chosen if chosen is not None else [int(c) for c in order[: min(k, total)]]
        tiles = []
        for c in shown:
            m = maps[..., c]
            tiles.append(
                {
                    "index": int(c),
                    "mean": float(means[c]),
                    "max": float(m.max()),
                    "png": im.png_url(im.to_uint8(im.colorize(im.unit_scale(m), "viridis"))),
                }
            )
        return {
            "layer": path,
            "shape": list(maps.shape),
            "rf": {"size": list(rf.size), "stride": list(rf.stride), "start": list(rf.start)},
            "channels": tiles,
            "top": [{"index": int(c), "mean": float(means[c])} for c in order[:8]],
            "filters": _filters(weights, shown) if weights is not None else None,
            "ms": _ms(start),
        }

    def unit(
        self, model: Any, image: Any, layer: Any, channel: Any, y: Any, x: Any, steps: Any = 96
    ) -> dict:
        """One unit: its exact receptive-field box, its activation, and a pattern job for it."""
        start = time.perf_counter()
        entry, display, xin = self._subject(model, image)
        with self.lock:
            path, obj = self._layer(entry, layer)
            maps = self._feature_maps(entry, image, xin, path)
            rf = self._field(entry, path)
        h, w, total = maps.shape
        c = _int(channel, "channel", 0, total - 1)
        row, col = _int(y, "y", 0, h - 1), _int(x, "x", 0, w - 1)
        steps = _int(steps, "steps", 1, MAX_STEPS)
        box = rf.box(row, col)
        framed = im.draw_box(im.rgb(display), box)
        job = self.jobs.submit(
            "pattern",
            lambda job: self._pattern_job(job, entry, path, c, (row, col), box, steps),
            total=steps,
        )
        return {
            "layer": path,
            "channel": c,
            "position": [row, col],
            "activation": float(maps[row, col, c]),
            "channel_max": float(maps[..., c].max()),
            "box": list(box),
            "rf": {"size": list(rf.size), "stride": list(rf.stride), "start": list(rf.start)},
            "center": list(rf.center(row, col)),
            "framed": im.png_url(im.to_uint8(framed)),
            "crop": im.png_url(im.to_uint8(im.rgb(display)[box[0] : box[2], box[1] : box[3]])),
            "job": job.id,
            "ms": _ms(start),
        }

    def cams(
        self, model: Any, image: Any, layer: Any, target: Any = None, methods: Any = None
    ) -> dict:
        """Every CAM method (or those named in ``methods``), each with both projections."""
        start = time.perf_counter()
        entry, display, x = self._subject(model, image)
        chosen = CAM_METHODS
        if methods is not None:
            labels = [m.label for m in CAM_METHODS]
            if not isinstance(methods, list) or any(m not in labels for m in methods):
                raise RequestError(f"Expected `methods` from {labels}. Received: {methods!r}.")
            chosen = tuple(m for m in CAM_METHODS if m.label in methods)
        rows = []
        with self.lock:
            path, obj = self._layer(entry, layer)
            t = self._target(entry, x, target)
            rf = self._field(entry, path)
            channels = int(output_shape(obj)[-1])
            batch = x[None]
            for method in chosen:
                began = time.perf_counter()
                fn = getattr(kerasviz, method.name)
                options = method.options(channels)
                if method.layer_resolution:
                    low = fn(entry.model, batch, [t], path, upsample=None, **options)[0]
                    maps = {
                        "receptive_field": kerasviz.backproject(low, rf),
                        "bilinear": kerasviz.resize_bilinear(low, entry.size[:2]),
                    }
                else:
                    maps = {
                        p: fn(entry.model, batch, [t], path, upsample=p, **options)[0]
                        for p in PROJECTIONS
                    }
                rows.append((method, maps, _ms(began)))
        out = []
        for method, maps, ms in rows:
            views = {}
            for projection, heat in maps.items():
                if method.pixels:
                    picture = im.to_uint8(
                        im.colorize(im.robust_scale(np.abs(heat).max(-1)), "inferno")
                    )
                else:
                    picture = im.overlay(display, im.unit_scale(heat, low=0.0))
                views[projection] = {"png": im.png_url(picture), "max": float(np.max(heat))}
            out.append({"method": method.label, "ms": ms, **views})
        return {
            "layer": path,
            "target": t,
            "target_name": entry.class_name(t),
            "methods": out,
            "ms": _ms(start),
        }

    def saliency(self, model: Any, image: Any, target: Any = None) -> dict:
        """Vanilla gradients of the target's logit (max of |gradient| over channels)."""
        start = time.perf_counter()
        entry, _, x = self._subject(model, image)
        with self.lock:
            t = self._target(entry, x, target)
            grads = kerasviz.saliency(entry.model, x[None], [t])[0]
        picture = im.to_uint8(im.colorize(im.robust_scale(grads), "inferno"))
        return {"target": t, "png": im.png_url(picture), "ms": _ms(start)}

    # ------------------------------------------------------------------ jobs

    def start_gradients(
        self, model: Any, image: Any, target: Any = None, samples: Any = 16, steps: Any = 32
    ) -> Job:
        """SmoothGrad, then integrated gradients from a black baseline, in segments."""
        entry, _, x = self._subject(model, image)
        samples = _int(samples, "samples", 1, MAX_SAMPLES)
        steps = _int(steps, "steps", 1, MAX_STEPS)
        return self.jobs.submit(
            "gradients",
            lambda job: self._gradients_job(job, entry, x, target, samples, steps),
            total=samples + steps,
        )

    def start_inversion(
        self, model: Any, image: Any, layer: Any, steps: Any = 200, every: Any = None
    ) -> Job:
        """Feature inversion of ``image`` at ``layer``: a snapshot with SSIM and PSNR every
        ``every`` steps (default 10, or every step of shorter runs)."""
        entry, display, x = self._subject(model, image)
        with self.lock:
            path, _ = self._layer(entry, layer, spatial=False)
        steps = _int(steps, "steps", 1, MAX_STEPS)
        every = min(10, steps) if every is None else _int(every, "every", 1, steps)
        return self.jobs.submit(
            "invert",
            lambda job: self._inversion_job(job, entry, display, x, path, steps, every),
            total=steps,
        )

    def warm_up(self) -> Job:
        """Traces every request kind on the first image and each model's default layer, in the
        background, so the first clicks answer at full speed. Other layers trace on first use."""

        def calls(entry: ModelEntry, image: str) -> list[Callable[[], Any]]:
            _, _, x = self._subject(entry.key, image)
            path, model = entry.default_layer, entry.model
            channels = int(output_shape(kerasviz.resolve_layer(model, path)[1])[-1])
            out = [
                lambda: self._scores(entry, x),
                lambda: self._feature_maps(entry, image, x, path),
                lambda: kerasviz.saliency(model, x[None], [0]),
            ]
            for method in CAM_METHODS:
                fn, options = getattr(kerasviz, method.name), method.options(channels)
                for projection in (None,) if method.layer_resolution else PROJECTIONS:
                    out.append(
                        lambda fn=fn, p=projection, o=options: fn(
                            model, x[None], [0], path, upsample=p, **o
                        )
                    )
            center = tuple(
                s // 2 for s in output_shape(kerasviz.resolve_layer(model, path)[1])[1:3]
            )
            out += [
                lambda: smoothgrad_in_pieces(model, x, 0, PIECE),
                lambda: integrated_gradients_in_pieces(model, x, 0, PIECE),
                lambda: _invert(entry, x, path, 1, 1, None),
                lambda: _pattern(entry, path, 0, center, 1, None),
            ]
            return out

        def run(job: Job) -> dict:
            first = next(iter(self.images), None)
            done = 0
            for entry in self.entries.values():
                if first is None or entry.default_layer is None:
                    continue
                for call in calls(entry, first):
                    call()
                    done += 1
                    job.checkpoint(done)
            return {"calls": done}

        per_model = 3 + sum(1 if m.layer_resolution else 2 for m in CAM_METHODS) + 4
        return self.jobs.submit("warmup", run, total=len(self.entries) * per_model)

    def _gradients_job(
        self, job: Job, entry: ModelEntry, x: np.ndarray, target: Any, samples: int, steps: int
    ) -> dict:
        t = self._target(entry, x, target)
        smooth_grads = smoothgrad_in_pieces(
            entry.model, x, t, samples, checkpoint=lambda done: job.checkpoint(done)
        )
        smooth = np.abs(smooth_grads).max(-1)
        job.checkpoint(samples, {"kind": "smoothgrad", "png": _heat_png(smooth)})
        black = entry.space.to_model(np.zeros(x.shape, np.float32))  # a black display image
        attributions, delta = integrated_gradients_in_pieces(
            entry.model,
            x,
            t,
            steps,
            baseline=black,
            checkpoint=lambda done: job.checkpoint(samples + done),
        )
        ig = attributions.sum(-1)
        result = {
            "target": t,
            "smoothgrad": _heat_png(smooth),
            "ig": im.png_url(im.signed(ig)),
            "ig_sum": float(attributions.sum()),
            "ig_delta": delta,
            "samples": samples,
            "steps": steps,
        }
        job.checkpoint(samples + steps, {"kind": "ig", "png": result["ig"], "delta": delta})
        return result

    def _inversion_job(
        self,
        job: Job,
        entry: ModelEntry,
        display: np.ndarray,
        x: np.ndarray,
        path: str,
        steps: int,
        every: int,
    ) -> dict:
        space = entry.space

        def frame(step: int, images: np.ndarray) -> dict:
            shown = space.to_display(images[0])
            return {
                "step": int(step),
                "png": im.png_url(im.to_uint8(im.rgb(shown))),
                "ssim": float(metrics.ssim(shown, display)),
                "psnr": _finite(metrics.psnr(shown, display)),
            }

        def callback(step: int, images: np.ndarray, rows: slice) -> None:
            job.checkpoint(step, frame(step, images))

        result = _invert(entry, x, path, steps, every, callback)
        last = frame(steps, np.asarray(result.images)[None])
        history = np.asarray(result.history, np.float64)
        return {**last, "layer": path, "loss": _finite(history[-1]) if history.size else None}

    def _pattern_job(
        self,
        job: Job,
        entry: ModelEntry,
        path: str,
        channel: int,
        position: tuple[int, int],
        box: tuple,
        steps: int,
    ) -> dict:
        space = entry.space

        def frame(step: int, images: np.ndarray) -> dict:
            pixels = space.to_display(images[0], clip=False)
            crop = pixels[box[0] : box[2], box[1] : box[3]]
            full = im.draw_box(im.rgb(_minmax(pixels)), box)
            return {
                "step": int(step),
                "png": im.png_url(im.to_uint8(full)),
                "crop": im.png_url(im.to_uint8(im.rgb(_minmax(crop)))),
            }

        def callback(step: int, images: np.ndarray, rows: slice) -> None:
            job.checkpoint(step, frame(step, images))

        result = _pattern(entry, path, channel, position, steps, callback)
        history = np.asarray(result.history, np.float64)[0]
        return {
            **frame(steps, np.asarray(result.images)),
            "layer": path,
            "channel": channel,
            "position": list(position),
            "objective": _finite(history[-1]),
        }

    def close(self, timeout: float = 10.0) -> None:
        """Cancels the jobs and ends the worker thread (waits up to ``timeout`` seconds)."""
        self.jobs.stop(timeout)


# ------------------------------------------------------------------------------ helpers


#: Samples or path points per compiled call in the segmented jobs (one trace serves all).
PIECE = 8


def _invert(entry: ModelEntry, x: np.ndarray, path: str, steps: int, every: int, callback):
    """The dashboard's inversion settings (the warm-up traces exactly this call)."""
    return kerasviz.invert(
        entry.model,
        x,
        path,
        steps=steps,
        value_range=entry.space.value_range,
        snapshot_every=every,
        callback=callback,
    )


def _pattern(entry: ModelEntry, path: str, channel: int, position: tuple, steps: int, callback):
    """A pattern for one unit: plain pixel steps from noisy gray, as the report's neuron
    patterns (pixels outside the unit's receptive field get no gradient and stay put)."""
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, entry.size).astype(np.float32)
    return kerasviz.maximize(
        entry.model,
        kerasviz.neuron(path, channel, position),
        steps=steps,
        size=None if entry.fixed_size else entry.size[:2],
        start=entry.space.to_model(0.5 + noise),
        parametrization="pixel",
        regularizers=(),
        transforms=(),
        learning_rate=0.01,
        value_range=entry.space.value_range,
        snapshot_every=max(1, min(8, steps)),
        callback=callback,
    )


def smoothgrad_in_pieces(
    model: keras.Model,
    image: np.ndarray,
    target: int,
    samples: int,
    *,
    piece: int = PIECE,
    checkpoint: Callable[[int], None] | None = None,
) -> np.ndarray:
    """SmoothGrad's mean raw gradient ``(h, w, c)`` over ``samples`` noisy copies, ``piece``
    copies per call, each piece with its own seed (the mean of piece means, weighted by their
    sizes, is the mean over all copies). ``checkpoint(done)`` runs after each piece."""
    batch = np.asarray(image, np.float32)[None]
    total = np.zeros(batch.shape[1:], np.float64)
    done = 0
    for seed, count in enumerate(_segments(samples, piece)):
        grads = kerasviz.smoothgrad(model, batch, [target], samples=count, seed=seed, reduce=None)
        total += grads[0] * count
        done += count
        if checkpoint is not None:
            checkpoint(done)
    return (total / samples).astype(np.float32)


def integrated_gradients_in_pieces(
    model: keras.Model,
    image: np.ndarray,
    target: int,
    steps: int,
    *,
    baseline: np.ndarray | None = None,
    piece: int = PIECE,
    checkpoint: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, float]:
    """Integrated gradients from ``baseline`` (None: zeros), computed in pieces of the path.

    The path ``[0, 1]`` is cut into pieces of ``piece`` midpoints; the IG of a piece (its end as
    the input, its start as the baseline) is ``(x - b) / K`` times the mean gradient at its
    midpoints, so the pieces sum to exactly :func:`kerasviz.integrated_gradients` with ``steps``
    midpoints, and their completeness gaps add up to the whole path's gap. ``checkpoint(done)``
    runs after each piece (progress, cancellation).

    Returns:
        ``(attributions (h, w, c), completeness gap)``.
    """
    batch = np.asarray(image, np.float32)[None]
    base = np.zeros_like(batch) if baseline is None else np.broadcast_to(baseline, batch.shape)
    attributions = np.zeros(batch.shape[1:], np.float64)
    delta, low = 0.0, 0
    for count in _segments(steps, piece):
        high = low + count
        start = base + (batch - base) * np.float32(low / steps)
        end = base + (batch - base) * np.float32(high / steps)
        attr, gap = kerasviz.integrated_gradients(
            model, end, [target], baseline=start, steps=count, return_delta=True
        )
        attributions += attr[0]
        delta += float(gap[0])
        low = high
        if checkpoint is not None:
            checkpoint(low)
    return attributions, delta


def _ms(start: float) -> float:
    return round(1000 * (time.perf_counter() - start), 1)


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _segments(total: int, size: int) -> list[int]:
    return [min(size, total - s) for s in range(0, total, size)]


def _minmax(pixels: np.ndarray) -> np.ndarray:
    low, high = float(pixels.min()), float(pixels.max())
    return np.zeros_like(pixels) if not high > low else (pixels - low) / (high - low)


def _heat_png(values: np.ndarray) -> str:
    return im.png_url(im.to_uint8(im.colorize(im.robust_scale(values), "inferno")))


def _filters(weights: Mapping[str, np.ndarray], channels: list[int]) -> dict:
    """Tiles of the filters that produce ``channels``: RGB for 3-channel inputs, else the
    mean over input channels on a diverging scale (blue negative, red positive)."""
    if "kernel" in weights:
        kernel, kind = weights["kernel"], "kernel"
    else:
        kernel, kind = weights["depthwise_kernel"], "depthwise kernel"
    if kernel.ndim != 4:
        return {"kind": kind, "shape": list(kernel.shape), "tiles": [], "note": "not 2D"}
    kh, kw, cin, cout = kernel.shape
    if kind == "depthwise kernel":  # output channel c comes from input c // multiplier
        flat = kernel.reshape(kh, kw, cin * cout)
        picks = {c: flat[..., c] for c in channels if c < cin * cout}
        rgb = False
    else:
        rgb = cin == 3
        picks = {
            c: kernel[..., c] if rgb else kernel[..., c].mean(-1) for c in channels if c < cout
        }
    if not picks:
        return {"kind": kind, "shape": list(kernel.shape), "tiles": [], "note": ""}
    scale = max(float(np.abs(v).max()) for v in picks.values()) or 1.0
    tiles = []
    for c, v in picks.items():
        if rgb:
            picture = im.to_uint8(0.5 + 0.5 * v / scale)
        else:
            picture = im.to_uint8(im.colorize(0.5 + 0.5 * v / scale, "RdBu_r"))
        tiles.append({"index": int(c), "png": im.png_url(picture)})
    note = "RGB weights" if rgb else "mean over input channels" if kind == "kernel" else ""
    return {"kind": kind, "shape": list(kernel.shape), "tiles": tiles, "note": note}


def make_explorer(
    model: Any,
    images: Any = None,
    *,
    names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    preprocess: Any = "scale01",
    size: tuple[int, int] = (224, 224),
    max_upload_bytes: int | None = None,
    max_pixels: int | None = None,
) -> Explorer:
    """An :class:`Explorer` from the arguments of :func:`kerasviz.dashboard` (see there)."""
    from kerasviz.dashboard import as_models, read_image_files

    entries = [
        make_entry(f"m{i}", name, m, preprocess=preprocess, class_names=class_names, size=size)
        for i, (name, m) in enumerate(as_models(model))
    ]
    pairs: list[tuple[str, Any]] = []
    if images is not None:
        items = list(images) if isinstance(images, list | tuple) else images
        if isinstance(items, list) and items and isinstance(items[0], str | Path):
            pairs = read_image_files(items)
        else:
            array = items if isinstance(items, list) else np.asarray(items)
            if (
                isinstance(array, np.ndarray)
                and array.ndim in (2, 3)
                and array.shape[-1]
                not in (
                    1,
                    3,
                )
            ):
                array = [array]  # one grey image (h, w)
            elif isinstance(array, np.ndarray) and array.ndim == 3:
                array = [array]  # one image (h, w, c)
            pairs = [(f"image {i}", a) for i, a in enumerate(array)]
    if names is not None:
        if len(names) != len(pairs):
            raise ValueError(
                f"Expected one name per image ({len(pairs)}). Received: {len(names)} names."
            )
        pairs = [(str(n), p) for n, (_, p) in zip(names, pairs, strict=True)]
    return Explorer(
        entries,
        pairs,
        max_upload_bytes=max_upload_bytes or im.MAX_UPLOAD_BYTES,
        max_pixels=max_pixels or im.MAX_PIXELS,
    )
