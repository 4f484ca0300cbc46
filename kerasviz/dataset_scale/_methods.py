"""The maps a data-set run computes: method specs, their per-replica kernels, a host fallback.

``methods`` maps store names to public map methods and their keyword arguments. Each one is
checked before any work by calling the public function on the data's first image, which raises the
method's own errors for bad keyword arguments and tells the map's shape.

**Kernels.** Most methods have a *kernel*: a function of one replica's images and target
indices, written with TensorFlow ops only, so that ``strategy.run`` can trace it on every
device into one compiled step per batch. Kernels reuse the methods' own compiled bodies where
those return all that is needed (integrated gradients and SmoothGrad run the engine's
expanded-row bodies in a ``tf.while_loop`` over row chunks) and the methods' building blocks
otherwise (a CAM kernel is the CAM's forward and backward pass with its weighting,
:func:`~kerasviz.attribution.cams.combine` and the exact back-projection, and also returns the
logits it computed, so the predictions cost no extra pass). Tests check every kernel against
its public function.

**Host fallback.** The other methods (Score-CAM, occlusion, LRP, LIME, RISE, ...), and methods
given keyword arguments their kernel does not implement, run the public function on each
worker's host batch (on its first device), with the targets the step resolved.

**One map per image.** Methods that return one value per channel ``(n, H, W, C)`` (saliency
with ``reduce=None``, SmoothGrad, integrated gradients, guided backprop, Guided Grad-CAM, the
other input attributions) are reduced to ``(n, H, W)`` by the maximum of ``|value|`` over channels, the library's
``reduce="abs_max"`` rule.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import kerasviz.attribution as attribution
from kerasviz._gaussian import gaussian_blur
from kerasviz._probe import Probe, get_probe
from kerasviz._targets import ScoreRule
from kerasviz.attribution import cams, gradients, guided
from kerasviz.dataset_scale._store import jsonable
from kerasviz.receptive_field import backproject_tf, receptive_field


def _map_methods() -> dict[str, Callable]:
    """The public functions of :mod:`kerasviz.attribution` shaped ``fn(model, inputs, targets,
    ...)``: every map method this kerasviz version has."""
    found = {}
    for name in attribution.__all__:
        fn = getattr(attribution, name)
        if not callable(fn) or isinstance(fn, type):
            continue
        try:
            params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):  # pragma: no cover - builtins
            continue
        if params[:3] == ["model", "inputs", "targets"]:
            found[name] = fn
    return found


#: The public map methods ``methods`` may name.
METHODS: dict[str, Callable] = _map_methods()

_CAM_WEIGHTS = {
    "grad_cam": cams.grad_cam_weights,
    "grad_cam_plus_plus": cams.grad_cam_plus_plus_weights,
    "layer_cam": cams.layer_cam_weights,
}
#: Keyword arguments explain_dataset sets itself.
_RESERVED = {
    "targets": "pass `targets=` to explain_dataset",
    "output": "pass `output=` to explain_dataset",
    "return_delta": "explain_dataset stores maps only",
}
#: Default rows per compiled pass of the expanded methods, per replica.
DEFAULT_ROWS = 32


@dataclass
class MethodSpec:
    """One entry of ``methods``: its store name, public method and keyword arguments."""

    name: str
    method: str
    kwargs: dict[str, Any]
    shape: tuple[int, ...] = ()
    kernel: Kernel | None = None

    def settings(self) -> dict:
        return {"method": self.method, "kwargs": jsonable(self.kwargs, f"methods[{self.name!r}]")}


@dataclass
class Kernel:
    """A map method on one replica's images, in TensorFlow ops.

    ``fn(x, indices) -> (maps (n, H, W) float32, logits or None)``. ``clean`` kernels run one
    forward pass on the clean images and resolve predicted targets (``ARGMAX``) themselves;
    the others need the target indices resolved beforehand.
    """

    fn: Callable
    clean: bool


def _valid_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and "/" not in name
        and not name.startswith((".", "__"))
        and name.strip() == name
    )


def parse_methods(methods: Any) -> list[MethodSpec]:
    """Checks ``methods`` (its structure and names; the keyword arguments come later).

    Raises:
        ValueError: for a wrong structure, a bad store name or an unknown method, listing the
            valid method names.
    """
    valid = ", ".join(sorted(METHODS))
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, list | tuple):
        methods = {m: {} for m in methods}
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError(
            "Expected `methods` to map store names to methods, e.g. {'grad_cam': {}, 'ig': "
            f"('integrated_gradients', {{'steps': 32}})}}. Received: {methods!r}."
        )
    specs = []
    for name, value in methods.items():
        if not _valid_name(name):
            raise ValueError(
                "Expected the names of `methods` to be non-empty strings without '/' that do "
                f"not start with '.' or '__' (they name arrays in the store). Received: {name!r}."
            )
        if isinstance(value, str):
            method, kwargs = value, {}
        elif isinstance(value, Mapping):
            method, kwargs = name, value
        elif isinstance(value, tuple | list) and len(value) == 2:
            method, kwargs = value
        else:
            raise ValueError(
                f"Expected `methods[{name!r}]` to be keyword arguments (a dict), a method name, "
                f"or a pair (method name, keyword arguments). Received: {value!r}."
            )
        if method not in METHODS:
            close = difflib.get_close_matches(str(method), list(METHODS), n=3)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise ValueError(
                f"Expected `methods[{name!r}]` to name one of the map methods: {valid}. "
                f"Received: {method!r}.{hint}"
            )
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise ValueError(
                f"Expected the keyword arguments of `methods[{name!r}]` to be a dict with "
                f"string keys. Received: {kwargs!r}."
            )
        for key, why in _RESERVED.items():
            if key in kwargs:
                raise ValueError(
                    f"Expected `methods[{name!r}]` not to set {key!r}: {why}. Received: "
                    f"{key}={kwargs[key]!r}."
                )
        specs.append(MethodSpec(str(name), method, dict(kwargs)))
        specs[-1].settings()  # JSON-able, or an error naming the method now
    return specs


def to_map(values: Any) -> np.ndarray:
    """``(n, H, W, C)`` -> ``(n, H, W)`` by max ``|value|`` over channels; maps pass as they are.

    A result object with a ``maps`` field (LIME and KernelSHAP's superpixel attributions) gives
    its maps.
    """
    values = getattr(values, "maps", values)
    values = np.asarray(values, dtype=np.float32)
    return np.max(np.abs(values), axis=-1) if values.ndim == 4 else values


def _to_map_tf(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_max(tf.abs(values), axis=-1) if values.shape.rank == 4 else values


def check_method(spec: MethodSpec, model: keras.Model, sample: np.ndarray, output) -> None:
    """Runs the public method on one image of the data ``(1, H, W, C)``: its own errors for bad
    keyword arguments, and the map's shape."""
    try:
        result = METHODS[spec.method](model, sample, [0], output=output, **spec.kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"methods[{spec.name!r}] ({spec.method}): {error}") from None
    if isinstance(result, dict | list | tuple) and not hasattr(result, "maps"):
        raise ValueError(
            f"Expected `methods[{spec.name!r}]` to give one map per image. Received: a "
            f"{type(result).__name__} of results (pass one `layer`, not a list)."
        )
    spec.shape = tuple(to_map(result).shape[1:])


# ----------------------------------------------------------------------------- kernels


def _cam_kernel(model, spec: MethodSpec, image_shape, output):
    kwargs = spec.kwargs
    weighting = kwargs.get("weighting", cams.grad_cam_weights)
    weighting = _CAM_WEIGHTS.get(spec.method, weighting)
    upsample = kwargs.get("upsample", cams.DEFAULT_UPSAMPLE)
    relu = bool(kwargs.get("relu", True))
    (path,), _ = cams.cam_layers(model, kwargs.get("layer"))
    probe = get_probe(model, [path], output=output)
    rf = None
    if upsample in cams._FIELD_RULES:
        rf = receptive_field(model, path, input_size=tuple(image_shape[:-1]))
    size = tuple(image_shape[:-1])

    def fn(rule: ScoreRule, x, indices):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            (activations,), logits = probe.raw([x])
            scores = rule.scores(logits, indices)
        # d score / d activations in their own dtype (mixed precision), as the CAMs take it.
        grads = tape.gradient(scores, activations, unconnected_gradients="zero")
        a, g = tf.cast(activations, tf.float32), tf.cast(grads, tf.float32)
        maps = cams.combine(a, weighting(a, g), relu)
        if rf is not None:
            maps = backproject_tf(maps, rf, method=cams._FIELD_RULES[upsample])
        elif upsample == "bilinear":
            maps = tf.image.resize(maps[..., None], size, method="bilinear")[..., 0]
        return maps, logits

    return Kernel(fn, clean=True)


def _input_grad_kernel(model, spec: MethodSpec, output, guided_view: bool):
    probe = get_probe(model, (), output=output)
    view = guided.guided_model(model, output) if guided_view else None

    def fn(rule: ScoreRule, x, indices):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            logits = tf.cast(view(x, training=False), tf.float32) if view else probe([x])[1]
            scores = rule.scores(logits, indices)
        grads = tape.gradient(scores, x, unconnected_gradients="zero")
        return _to_map_tf(tf.cast(grads, tf.float32)), logits

    return Kernel(fn, clean=True)


def _guided_grad_cam_kernel(model, spec: MethodSpec, image_shape, output):
    kwargs = dict(spec.kwargs)
    # the public function's own default projection, which need not be the CAMs' default
    upsample = inspect.signature(guided.guided_grad_cam).parameters["upsample"].default
    kwargs.setdefault("upsample", upsample)
    cam = _cam_kernel(model, MethodSpec(spec.name, "grad_cam", kwargs), image_shape, output)
    view = guided.guided_model(model, output)

    def fn(rule: ScoreRule, x, indices):
        maps, logits = cam.fn(rule, x, indices)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            scores = rule.scores(tf.cast(view(x, training=False), tf.float32), indices)
        g = tf.cast(tape.gradient(scores, x, unconnected_gradients="zero"), tf.float32)
        return _to_map_tf(g * maps[..., None]), logits

    return Kernel(fn, clean=True)


def _expanded(body: Callable, per_image: int, rows: int, x, *args):
    """Runs an engine body ``body(*args, start, stop)`` over the ``n * per_image`` expanded rows
    of ``x`` in chunks of ``rows``, summing its per-image outputs: ``(n, *x.shape[1:])``."""
    total = tf.shape(x)[0] * per_image

    def step(start, acc):
        stop = tf.minimum(start + rows, total)
        (part,) = body(*args, start, stop)
        ids = tf.range(start // per_image, start // per_image + tf.shape(part)[0])
        return start + rows, tf.tensor_scatter_nd_add(acc, ids[:, None], part)

    _, acc = tf.while_loop(
        lambda start, _: start < total,
        step,
        [tf.constant(0), tf.zeros_like(x)],
        parallel_iterations=1,
    )
    return acc


def _ig_baseline(spec: MethodSpec, image_shape):
    kwargs = spec.kwargs
    baseline = kwargs.get("baseline", "black")
    seed = int(kwargs.get("seed", 0))
    sigma = float(kwargs.get("blur_sigma", 5.0))
    axes = list(range(1, len(image_shape) + 1))
    if isinstance(baseline, str):
        if baseline == "black":
            return lambda x: tf.zeros_like(x)
        if baseline == "white":
            return lambda x: tf.broadcast_to(
                tf.reduce_max(x, axis=axes, keepdims=True), tf.shape(x)
            )
        if baseline == "noise":
            # The public function's draw: one uniform sample shared by all images (stream 0).
            unit = np.random.default_rng([seed, 0]).random(image_shape, dtype=np.float32)

            def noise(x):
                low = tf.reduce_min(x, axis=axes, keepdims=True)
                high = tf.reduce_max(x, axis=axes, keepdims=True)
                return low + tf.constant(unit) * (high - low)

            return noise
        return lambda x: gaussian_blur(x, sigma)
    array = np.asarray(baseline, dtype=np.float32)
    try:
        constant = np.broadcast_to(array, (1, *image_shape)).copy()
    except ValueError:
        raise ValueError(
            f"Expected the `baseline` of `methods[{spec.name!r}]` to be a name or an array "
            f"broadcastable to one image {tuple(image_shape)} (the same for every image of the "
            f"data set). Received: an array of shape {array.shape}."
        ) from None
    return lambda x: tf.broadcast_to(tf.constant(constant), tf.shape(x))


def _ig_kernel(model, spec: MethodSpec, image_shape, output, rows: int):
    steps = int(spec.kwargs.get("steps", 50))
    rows = int(spec.kwargs.get("batch_size") or rows)
    probe = get_probe(model, (), output=output)
    baseline = _ig_baseline(spec, image_shape)

    def fn(rule: ScoreRule, x, indices):
        b = baseline(x)
        body = gradients._integrated_gradients
        sums = _expanded(body, steps, rows, x, probe, rule, steps, [x], [b], indices)
        return _to_map_tf((x - b) * (sums / steps)), None

    return Kernel(fn, clean=False)


def _smoothgrad_kernel(model, spec: MethodSpec, image_shape, output, rows: int):
    samples = int(spec.kwargs.get("samples", 20))
    noise = float(spec.kwargs.get("noise", 0.1))
    seed = int(spec.kwargs.get("seed", 0))
    rows = int(spec.kwargs.get("batch_size") or rows)
    probe = get_probe(model, (), output=output)
    axes = list(range(1, len(image_shape) + 1))

    def fn(rule: ScoreRule, x, indices):
        spread = tf.reduce_max(x, axis=axes) - tf.reduce_min(x, axis=axes)
        # float64 product, as numpy computes the public function's sigmas.
        sigma = tf.cast(noise * tf.cast(spread, tf.float64), tf.float32)
        draws = tf.random.stateless_normal((samples, *image_shape), seed=[seed, 0])
        body = gradients._smoothgrad
        sums = _expanded(
            body, samples, rows, x, probe, rule, samples, [x], [sigma], [draws], indices
        )
        return _to_map_tf(sums / samples), None

    return Kernel(fn, clean=False)


#: The keyword arguments each kernel implements; any other one (set to anything but None)
#: sends the method to the host, where the public function handles it.
_KERNEL_KWARGS = {
    "cam": {"layer", "upsample", "relu", "batch_size", "weighting", "smooth"},
    "grad_cam": {"layer", "upsample", "relu", "batch_size", "smooth"},
    "grad_cam_plus_plus": {"layer", "upsample", "relu", "batch_size", "smooth"},
    "layer_cam": {"layer", "upsample", "relu", "batch_size", "smooth"},
    "saliency": {"reduce", "batch_size"},
    "guided_backprop": {"batch_size"},
    "guided_grad_cam": {"layer", "upsample", "batch_size"},
    "integrated_gradients": {"baseline", "steps", "batch_size", "blur_sigma", "seed"},
    "smoothgrad": {"samples", "noise", "seed", "batch_size", "reduce"},
}


def build_kernel(
    spec: MethodSpec, model: keras.Model, image_shape: tuple, output, rows: int
) -> Kernel | None:
    """The per-replica kernel of ``spec``, or None for the methods that run on the host."""
    known = _KERNEL_KWARGS.get(spec.method)
    if known is None or any(
        key not in known or (key == "smooth" and value is not None)
        for key, value in spec.kwargs.items()
    ):
        return None
    if spec.kwargs.get("upsample", cams.DEFAULT_UPSAMPLE) not in cams.PROJECTIONS:
        return None  # layer-resolution maps or another projection: the public function
    if spec.method in ("cam", *_CAM_WEIGHTS):
        return _cam_kernel(model, spec, image_shape, output)
    if spec.method == "saliency":
        return _input_grad_kernel(model, spec, output, guided_view=False)
    if spec.method == "guided_backprop":
        return _input_grad_kernel(model, spec, output, guided_view=True)
    if spec.method == "guided_grad_cam":
        return _guided_grad_cam_kernel(model, spec, image_shape, output)
    if spec.method == "integrated_gradients":
        return _ig_kernel(model, spec, image_shape, output, rows)
    if spec.method == "smoothgrad":
        return _smoothgrad_kernel(model, spec, image_shape, output, rows)
    return None


def host_maps(
    spec: MethodSpec, model: keras.Model, images: np.ndarray, targets: np.ndarray, output
) -> np.ndarray:
    """The public function on a host batch, with explicit targets; ``(n, H, W)`` float32."""
    result = METHODS[spec.method](model, images, targets, output=output, **spec.kwargs)
    return to_map(result)


def plain_probe(model: keras.Model, output) -> Probe:
    return get_probe(model, (), output=output)
