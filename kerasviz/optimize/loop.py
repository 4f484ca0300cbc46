"""Gradient ascent in input space: many objectives as one batch, the step loop compiled.

The whole inner loop of a chunk of rows runs inside one ``tf.function``: a ``tf.while_loop``
over the steps, with the parametrization, the random transforms, the probe's forward and
backward pass, the regularizers and the optimizer update. Nothing returns to the host inside
the loop; the loop runs in segments only where the host asked for something between steps
(snapshots every N steps, or a progress bar). The compiled function and its variables are
cached per structure, so a second call with the same shapes does not trace again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._graph import check_graph_model, model_inputs
from kerasviz._inputs import chunk_slices
from kerasviz._layers import LayerSpec, output_shape, resolve_layer
from kerasviz._probe import compiled, get_probe, note_trace
from kerasviz.optimize.objectives import (
    Objective,
    as_objectives,
    channel,
    layer_norm,
    resolve,
)
from kerasviz.optimize.params import Parametrization, get_parametrization
from kerasviz.optimize.regularizers import DEFAULT_REGULARIZERS, check_regularizers, penalty
from kerasviz.optimize.transforms import DEFAULT_TRANSFORMS, apply_transforms, check_transforms

#: Default step size (unit space): Adam's learning rate, or the RMS step of "normalized".
DEFAULT_LEARNING_RATE = 0.05


@dataclass
class OptimizationResult:
    """What an optimization returns.

    Attributes:
        images: ``(n, h, w, c)`` optimized images in ``value_range``.
        history: ``(n, steps)`` each row's objective value at every step (before that step's
            update, on the transformed image the step saw).
        snapshots: ``(n, k, h, w, c)`` images after steps ``snapshot_steps``, or None.
        snapshot_steps: the step counts at which the snapshots were taken.

    ``np.asarray(result)`` gives ``result.images``.
    """

    images: np.ndarray
    history: np.ndarray
    snapshots: np.ndarray | None = None
    snapshot_steps: tuple[int, ...] = ()

    def __array__(self, dtype=None, copy=None):
        return self.images if dtype is None else self.images.astype(dtype)


# ---------------------------------------------------------------- argument checks


def _check_positive_int(value: Any, argname: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"Expected `{argname}` to be an int >= 1. Received: {argname}={value!r}.")
    return int(value)


def _check_range(value_range: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        lo, hi = math.nan, math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            "Expected `value_range` to be (low, high) with finite low < high. "
            f"Received: value_range={value_range!r}."
        )
    return lo, hi


def _image_input(model: keras.Model) -> tuple:
    check_graph_model(model)
    inputs = model_inputs(model)
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = [tuple(t.shape) for t in inputs]
        raise ValueError(
            "Expected `model` to take one image input (batch, height, width, channels) for "
            f"input-space optimization. Received: model inputs of shapes {shapes}."
        )
    return tuple(inputs[0].shape[1:])


def canvas_shape(model: keras.Model, size: Any) -> tuple[tuple[int, int, int], tuple | None]:
    """``((h, w, c) of the optimized images, (h, w) the model needs or None if any size)``."""
    mh, mw, c = _image_input(model)
    model_hw = (mh, mw) if mh is not None and mw is not None else None
    if size is None:
        if model_hw is None:
            raise ValueError(
                f"Expected `size` for a model whose input has no fixed spatial size "
                f"(input shape {(None, mh, mw, c)}). Received: size=None."
            )
        return (mh, mw, c), model_hw
    hw = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(hw) != 2 or any(
        isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1 for s in hw
    ):
        raise ValueError(f"Expected `size` to be an int or (height, width). Received: {size!r}.")
    return (int(hw[0]), int(hw[1]), c), model_hw


def _start_params(
    start: Any,
    param: Parametrization,
    canvas: tuple,
    value_range: tuple,
    seed: int,
    argname: str = "start",
) -> np.ndarray:
    """Start variables ``(m, ...)``, ``m`` = 1 (shared by every row) or one per start image."""
    h, w, c = canvas
    lo, hi = value_range
    if isinstance(start, str):
        if start == "gray":
            return param.from_unit(np.full((1, h, w, c), 0.5, np.float32))
        if start == "noise":
            return param.noise(np.random.default_rng(seed), h, w, c)[None]
        raise ValueError(
            f"Expected `{argname}` to be 'gray', 'noise' or an image array. Received: {start!r}."
        )
    array = np.asarray(start, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1:] != (h, w, c) or array.shape[0] == 0:
        raise ValueError(
            f"Expected `{argname}` to be an image of shape {(h, w, c)} or a batch (n, {h}, {w}, "
            f"{c}) matching the optimized size. Received: shape {np.shape(start)}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"Expected `{argname}` to be finite. Received: values with NaN or Inf.")
    tol = 1e-4 * (hi - lo)
    if array.min() < lo - tol or array.max() > hi + tol:
        raise ValueError(
            f"Expected `{argname}` values inside value_range={value_range}. Received: values in "
            f"[{array.min():g}, {array.max():g}]. Pass the model's input range as `value_range`."
        )
    unit = np.clip((array - lo) / (hi - lo), 0.0, 1.0)
    return param.from_unit(unit)


def _optimizer_spec(optimizer: Any, learning_rate: Any) -> tuple[Any, float | None]:
    """(cache key, normalized-ascent learning rate or None)."""
    if learning_rate is not None and (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, int | float)
        or not learning_rate > 0
    ):
        raise ValueError(
            f"Expected `learning_rate` to be a positive number. Received: {learning_rate!r}."
        )
    if optimizer is None:
        lr = DEFAULT_LEARNING_RATE if learning_rate is None else float(learning_rate)
        return ("keras", "Adam", repr(sorted({"learning_rate": lr}.items()))), None
    if isinstance(optimizer, str):
        if optimizer != "normalized":
            raise ValueError(
                "Expected `optimizer` to be None (Adam), 'normalized' or a keras optimizer. "
                f"Received: optimizer={optimizer!r}."
            )
        return ("normalized",), DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate
    if isinstance(optimizer, keras.optimizers.Optimizer):
        if learning_rate is not None:
            raise ValueError(
                "Expected `learning_rate` to be None when a keras optimizer is given (it has its "
                f"own). Received: learning_rate={learning_rate!r}."
            )
        config = optimizer.get_config()
        config.pop("name", None)
        return ("keras", type(optimizer), repr(sorted(config.items(), key=str))), None
    raise ValueError(
        "Expected `optimizer` to be None (Adam), 'normalized' or a keras optimizer instance. "
        f"Received: {optimizer!r}."
    )


def _make_optimizer(optimizer: Any, learning_rate: float | None):
    if optimizer is None:
        lr = DEFAULT_LEARNING_RATE if learning_rate is None else float(learning_rate)
        return keras.optimizers.Adam(learning_rate=lr)
    # A fresh copy: the user's optimizer keeps its own state and is never built here.
    return type(optimizer).from_config(optimizer.get_config())


# ---------------------------------------------------------------- the compiled loop


class _Runner:
    """Variables, optimizer and the compiled segment for one structure and chunk size."""

    def __init__(
        self, probe, scorer, param, transforms, regs, optimizer, rows, canvas, model_hw, value_range
    ):
        h, w, c = canvas
        self.shape = param.shape(rows, h, w, c)
        self.var = keras.Variable(np.zeros(self.shape, np.float32), name="kerasviz_input")
        self.opt = optimizer
        self.opt_init: list[np.ndarray] = []
        if optimizer is not None:
            optimizer.build([self.var])
            self.opt_init = [keras.ops.convert_to_numpy(v) for v in optimizer.variables]
        lo, hi = value_range
        resize = model_hw is not None and tuple(model_hw) != (h, w)
        clip = type(param).project is not Parametrization.project

        def segment(step0, k, seed, lr, arrays):
            note_trace("maximize")
            tvar = self.var.value

            def body(i, hist, bad):
                step = step0 + i
                with tf.GradientTape() as tape:
                    unit = param.to_unit(tvar, h, w, c)
                    x = apply_transforms(transforms, unit, seed, step)
                    x = lo + x * (hi - lo)
                    if resize:
                        x = tf.image.resize(x, model_hw, method="bilinear")
                    outputs, logits = probe([x])
                    scores = scorer.score(outputs, logits, arrays)
                    loss_rows = penalty(regs, unit) - scores
                    loss = tf.reduce_sum(loss_rows)
                grad = tape.gradient(loss, tvar)
                bad = tf.where((bad < 0) & ~tf.math.is_finite(loss_rows), step, bad)
                if self.opt is None:
                    # Normalized ascent: a step of RMS length lr per row (the seeds' g / ||g||).
                    axes = list(range(1, len(self.shape)))
                    rms = tf.sqrt(tf.reduce_mean(tf.square(grad), axis=axes, keepdims=True))
                    tvar.assign_sub(lr * grad / (rms + 1e-12))
                else:
                    self.opt.apply([grad], [self.var])
                if clip:
                    tvar.assign(param.project(tvar))
                return i + 1, hist.write(i, scores), bad

            def cond(i, hist, bad):
                return (i < k) & tf.reduce_all(bad < 0)

            hist = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
            bad = tf.fill([rows], tf.constant(-1, tf.int32))
            _, hist, bad = tf.while_loop(cond, body, (tf.constant(0), hist, bad))
            image = lo + param.to_unit(tvar, h, w, c) * (hi - lo)
            return hist.stack(), bad, image

        self.segment = compiled(segment)

    def reset(self, params0: np.ndarray) -> None:
        self.var.assign(np.broadcast_to(params0, self.shape))
        if self.opt is not None:
            for variable, value in zip(self.opt.variables, self.opt_init, strict=True):
                variable.assign(value)


def run_optimization(
    model: keras.Model,
    scorer: Any,
    n: int,
    *,
    canvas: tuple,
    model_hw: tuple | None,
    start_params: np.ndarray,
    steps: int,
    param: Parametrization,
    transforms: tuple,
    regularizers: tuple,
    optimizer: Any,
    learning_rate: float | None,
    value_range: tuple,
    seed: int,
    batch_size: int | None,
    snapshot_every: int | None,
    callback: Callable | None,
    progress: bool | None,
    name: str = "objective",
    pre_relu: bool = False,
) -> OptimizationResult:
    """The shared engine of :func:`maximize` and :func:`kerasviz.invert` (see there).

    ``pre_relu`` scores layers that end in a ReLU before it (see :class:`kerasviz.Probe`).
    """
    opt_key, normalized_lr = _optimizer_spec(optimizer, learning_rate)
    probe = get_probe(model, scorer.layers, logits=scorer.logits, pre_relu=pre_relu)
    slices = chunk_slices(n, batch_size)
    if snapshot_every is not None:
        snapshot_every = _check_positive_int(snapshot_every, "snapshot_every")
    if progress is None:
        progress = steps * len(slices) >= 2000
    if snapshot_every is not None:
        segment = snapshot_every
    elif progress:
        segment = max(1, -(-steps // 20))
    else:
        segment = steps
    bar = keras.utils.Progbar(steps * len(slices)) if progress else None
    seed_t = tf.constant(seed, tf.int64)
    lr_t = tf.constant(normalized_lr or 0.0, tf.float32)

    images, history, snapshots = [], [], []
    snapshot_steps = (
        tuple(range(snapshot_every, steps + 1, snapshot_every)) if snapshot_every else ()
    )
    done = 0
    for rows in slices:
        count = rows.stop - rows.start
        key = (
            "optimize",
            scorer.key,
            param,
            canvas,
            model_hw,
            transforms,
            regularizers,
            opt_key,
            count,
            value_range,
        )

        def factory(probe, count=count):
            opt = None if opt_key[0] == "normalized" else _make_optimizer(optimizer, learning_rate)
            return _Runner(
                probe,
                scorer,
                param,
                transforms,
                regularizers,
                opt,
                count,
                canvas,
                model_hw,
                value_range,
            )

        runner = probe.function(key, factory)
        params0 = start_params if start_params.shape[0] == 1 else start_params[rows]
        runner.reset(params0)
        arrays = [tf.constant(a[rows]) for a in scorer.arrays]
        chunk_hist, chunk_snaps = [], []
        for s0 in range(0, steps, segment):
            k = min(segment, steps - s0)
            hist, bad, image = runner.segment(
                tf.constant(s0, tf.int32), tf.constant(k, tf.int32), seed_t, lr_t, arrays
            )
            bad = bad.numpy()
            if np.any(bad >= 0):
                row = int(np.argmin(np.where(bad >= 0, bad, np.iinfo(np.int32).max)))
                raise ValueError(
                    f"The loss became NaN or Inf at step {int(bad[row])} (steps count from 0) "
                    f"for row {rows.start + row}, {name} {scorer.labels[rows.start + row]}. "
                    "Check the objective, the learning rate and the model's numerics."
                )
            chunk_hist.append(hist)
            if snapshot_every is not None and (s0 + k) % snapshot_every == 0:
                frame = image.numpy()
                chunk_snaps.append(frame)
                if callback is not None:
                    callback(s0 + k, frame, rows)
            done += k
            if bar is not None:
                bar.update(done)
        history.append(tf.concat(chunk_hist, axis=0))
        images.append(image)
        if chunk_snaps:
            snapshots.append(np.stack(chunk_snaps, axis=1))
    history = tf.transpose(tf.concat(history, axis=1)).numpy()
    images = tf.concat(images, axis=0).numpy()
    return OptimizationResult(
        images=images,
        history=history,
        snapshots=np.concatenate(snapshots, axis=0) if snapshots else None,
        snapshot_steps=snapshot_steps,
    )


# ---------------------------------------------------------------- public functions


def maximize(
    model: keras.Model,
    objectives: Objective | Sequence[Objective],
    *,
    steps: int = 256,
    size: int | tuple[int, int] | None = None,
    start: str | np.ndarray = "gray",
    parametrization: str | Parametrization = "pixel",
    regularizers: Sequence = DEFAULT_REGULARIZERS,
    transforms: Sequence = DEFAULT_TRANSFORMS,
    optimizer: keras.optimizers.Optimizer | str | None = None,
    learning_rate: float | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int | None = None,
    snapshot_every: int | None = None,
    callback: Callable[[int, np.ndarray, slice], None] | None = None,
    progress: bool | None = None,
) -> OptimizationResult:
    """Gradient ascent on the input: row ``i`` of one batch maximizes objective ``i``.

    The loop over steps runs compiled on the device, all rows at once (chunked by
    ``batch_size``). Every row uses the same random stream (noise start, transform draws), so
    ``maximize(m, objs, seed=s).images[i]`` equals ``maximize(m, [objs[i]], seed=s).images[0]``
    up to float round-off, whatever the batch size.

    Layer objectives on a layer that ends in a ReLU are ascended on its value before the ReLU
    (as Lucid does): a channel that is off everywhere on the start image still gets a gradient,
    instead of staying gray. ``history`` holds these pre-ReLU values.

    Args:
        model: a Sequential or functional model with one image input.
        objectives: one objective, or a list (one row each); with a batch of start images and
            one objective, every image is optimized for it.
        steps: optimization steps (>= 1).
        size: ``(h, w)`` of the optimized images; defaults to the model's input size (required
            when that size is not fixed). With a fixed-size model a different size is resized
            (bilinear, inside the loop) to the model's size before each forward pass.
        start: ``"gray"`` (middle of ``value_range``), ``"noise"`` (seeded) or images
            ``(h, w, c)`` / ``(n, h, w, c)`` in ``value_range``, e.g. a photo.
        parametrization: ``"pixel"`` (values clipped to the range after each step; unchanged
            pixels stay exactly as they started) or ``"fourier"`` (decorrelated, 1/f-scaled
            spectrum through a sigmoid), or a :class:`~kerasviz.optimize.params.Parametrization`.
        regularizers: penalties from :mod:`kerasviz.optimize.regularizers`; ``()`` for none.
        transforms: random transforms from :mod:`kerasviz.optimize.transforms`; ``()`` for none.
        optimizer: None for ``keras.optimizers.Adam(learning_rate)``, any keras optimizer
            instance (copied, never changed), or ``"normalized"``: the seeds' normalized ascent
            ``x += lr * g / rms(g)``, i.e. ``lr * sqrt(h*w*c) * g / ||g||`` per image.
        learning_rate: Adam's or the normalized step's size in unit space (default 0.05).
        value_range: the model's input range; images are produced inside it.
        seed: makes noise and transforms reproducible.
        batch_size: rows optimized at once; None for all.
        snapshot_every: keep the images every N steps (``result.snapshots``).
        callback: ``callback(step, images, rows)`` with each chunk's snapshot, as it is taken.
        progress: show a progress bar; None shows one for long runs.

    Returns:
        :class:`OptimizationResult` with ``images (n, h, w, c)``, ``history (n, steps)`` and
        ``snapshots``.

    Reference: Erhan et al., "Visualizing Higher-Layer Features of a Deep Network", 2009;
    Olah et al., "Feature Visualization", Distill 2017.

    Example:
        >>> objs = [kerasviz.channel("block3_conv1", i) for i in range(64)]
        >>> images = kerasviz.maximize(model, objs, steps=128).images  # (64, 224, 224, 3)
        >>> dream = kerasviz.maximize(model, kerasviz.logit(3), start=photo).images[0]
    """
    steps = _check_positive_int(steps, "steps")
    value_range = _check_range(value_range)
    canvas, model_hw = canvas_shape(model, size)
    param = get_parametrization(parametrization)
    transforms = check_transforms(transforms, canvas[0], canvas[1])
    regularizers = check_regularizers(regularizers)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"Expected `seed` to be an int. Received: seed={seed!r}.")
    objs = as_objectives(objectives)
    start_params = _start_params(start, param, canvas, value_range, int(seed))
    m = start_params.shape[0]
    if len(objs) == 1 and m > 1:
        objs = objs * m
    if m not in (1, len(objs)):
        raise ValueError(
            f"Expected `start` to hold one image or one per objective ({len(objs)}). "
            f"Received: {m} images."
        )
    input_shape = (*model_hw, canvas[2]) if model_hw is not None else canvas
    plan = resolve(model, objs, input_shape)
    return run_optimization(
        model,
        plan,
        len(objs),
        canvas=canvas,
        model_hw=model_hw,
        start_params=start_params,
        steps=steps,
        param=param,
        transforms=transforms,
        regularizers=regularizers,
        optimizer=optimizer,
        learning_rate=learning_rate,
        value_range=value_range,
        seed=int(seed),
        batch_size=batch_size,
        snapshot_every=snapshot_every,
        callback=callback,
        progress=progress,
        pre_relu=True,
    )


def filter_patterns(
    model: keras.Model,
    layer: LayerSpec,
    channels: Sequence[int] | None = None,
    *,
    size: int | tuple[int, int] | None = None,
    steps: int = 256,
    batch_size: int | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """One image per channel of ``layer``, each maximizing that channel's mean activation.

    Args:
        model: the model.
        layer: the layer (name, path, index or object).
        channels: channel indices; None for the first 64 (or all, when fewer).
        size, steps, batch_size, **kwargs: passed to :func:`maximize`.

    Returns:
        ``(len(channels), h, w, c)`` images in ``value_range``.

    Example:
        >>> patterns = kerasviz.filter_patterns(vgg, "block3_conv1", size=128, steps=64)
        >>> kerasviz.plot.save(kerasviz.plot.image_grid(patterns, cols=8), "filters.png")
    """
    path, obj = resolve_layer(model, layer)
    total = output_shape(obj)[-1]
    if channels is None:
        channels = range(min(64, total))
    objs = [channel(path, c) for c in channels]
    return maximize(model, objs, size=size, steps=steps, batch_size=batch_size, **kwargs).images


def _resize(images: np.ndarray, hw: tuple) -> np.ndarray:
    if images.shape[1:3] == tuple(hw):
        return images
    return tf.image.resize(images, hw, method="bilinear").numpy()


def deep_dream(
    model: keras.Model,
    image: Any,
    layers: LayerSpec | Sequence[LayerSpec] | dict,
    *,
    octaves: int = 3,
    octave_scale: float = 1.4,
    steps_per_octave: int = 20,
    learning_rate: float = 0.01,
    optimizer: Any = "normalized",
    transforms: Sequence = (),
    regularizers: Sequence = (),
    value_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """DeepDream: amplifies what ``layers`` see in a photo, from coarse to fine octaves.

    Each octave runs :func:`maximize` on the :func:`layer_norm` objectives at a larger size,
    starting from the previous result upscaled, with the detail lost by downscaling added
    back. A model with a variable input size runs each octave at its own size; a fixed-size
    model sees each octave's canvas resized to its input size inside the loop.

    Args:
        model: the model.
        image: ``(h, w, c)`` or ``(n, h, w, c)`` in ``value_range``.
        layers: a layer, a list of layers, or ``{layer: weight}``.
        octaves: number of scales (>= 1); the smallest is ``octave_scale ** (octaves - 1)``
            times smaller than the image.
        steps_per_octave, learning_rate, optimizer, transforms, regularizers, value_range,
            seed, batch_size, progress: as in :func:`maximize` (normalized ascent by default).

    Returns:
        The dreamed image(s), same shape as ``image``.

    Reference: Mordvintsev et al., "Inceptionism", Google Research blog, 2015.

    Example:
        >>> dream = kerasviz.deep_dream(model, photo, {"mixed4": 1.0, "mixed5": 1.5})
    """
    octaves = _check_positive_int(octaves, "octaves")
    if (
        isinstance(octave_scale, bool)
        or not isinstance(octave_scale, int | float)
        or not (octave_scale >= 1)
    ):
        raise ValueError(
            f"Expected `octave_scale` to be a number >= 1. Received: {octave_scale!r}."
        )
    value_range = _check_range(value_range)
    if isinstance(layers, dict):
        weighted = list(layers.items())
    elif isinstance(layers, list | tuple):
        weighted = [(spec, 1.0) for spec in layers]
    else:
        weighted = [(layers, 1.0)]
    if not weighted:
        raise ValueError("Expected `layers` to name at least one layer. Received: none.")
    objective = sum(float(w) * layer_norm(spec) for spec, w in weighted)
    _, _, c = _image_input(model)
    array = np.asarray(image, np.float32)
    single = array.ndim == 3
    array = array[None] if single else array
    if array.ndim != 4 or (c is not None and array.shape[-1] != c):
        raise ValueError(
            f"Expected `image` to be (h, w, {c}) or (n, h, w, {c}). Received: shape {np.shape(image)}."
        )
    h, w = array.shape[1:3]
    sizes = [
        (max(1, round(h / octave_scale**k)), max(1, round(w / octave_scale**k)))
        for k in range(octaves - 1, -1, -1)
    ]
    lo, hi = value_range
    dream = array
    shrunk = _resize(array, sizes[0])
    for hw in sizes:
        dream = np.clip(_resize(dream, hw), lo, hi)
        dream = maximize(
            model,
            objective,
            steps=steps_per_octave,
            size=hw,
            start=dream,
            regularizers=regularizers,
            transforms=transforms,
            optimizer=optimizer,
            learning_rate=learning_rate,
            value_range=value_range,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        ).images
        lost_detail = _resize(array, hw) - _resize(shrunk, hw)
        dream = dream + lost_detail
        shrunk = _resize(array, hw)
    dream = np.clip(dream, lo, hi)
    return dream[0] if single else dream
