"""Gradient ascent in input space: many objectives as one batch, the step loop compiled.

The whole inner loop of a chunk of rows runs inside one ``tf.function``: a ``tf.while_loop``
over the steps, with the parametrization, the random transforms, the probe's forward and
backward pass, the regularizers and the optimizer update. Nothing returns to the host inside
the loop; the loop runs in segments only where the host asked for something between steps
(snapshots every N steps, or a progress bar). The compiled loop and its variables are cached
on the probe by structure (:meth:`kerasviz.Probe.cached`), so a second call with the same
shapes does not trace again.

How to optimize is one frozen value, :class:`OptimizationSettings`, validated once; the
keyword arguments of :func:`maximize`, :func:`filter_patterns`, :func:`deep_dream` and
:func:`kerasviz.invert` are its fields.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import (
    boolean,
    finite,
    in_value_range,
    integer,
    number,
    optional_positive_int,
    positive_int,
    value_range,
)
from kerasviz._graph import check_graph_model, model_inputs
from kerasviz._inputs import chunk_slices
from kerasviz._layers import LayerSpec, output_shape, resolve_layer
from kerasviz._probe import Probe, compiled, get_probe, note_trace
from kerasviz.optimize.objectives import (
    Objective,
    Plan,
    Scorer,
    as_objectives,
    channel,
    layer_norm,
    plan,
)
from kerasviz.optimize.params import Parametrization, get_parametrization
from kerasviz.optimize.regularizers import DEFAULT_REGULARIZERS, check_regularizers, penalty
from kerasviz.optimize.transforms import DEFAULT_TRANSFORMS, apply_transforms, check_transforms

#: Default step size (unit space): Adam's learning rate, or the RMS step of "normalized".
DEFAULT_LEARNING_RATE = 0.05


@dataclass(frozen=True)
class _OptimizerSpec:
    """The optimizer as a hashable value (it keys the compiled loop); builds fresh copies."""

    cls: Any  # a keras optimizer class, or None for normalized ascent
    key: str = ""
    config: dict | None = field(default=None, compare=False)

    def build(self):
        return None if self.cls is None else self.cls.from_config(self.config)


@dataclass(frozen=True)
class OptimizationSettings:
    """How an input is optimized: the keyword arguments of :func:`maximize`,
    :func:`filter_patterns`, :func:`deep_dream` and :func:`kerasviz.invert`.

    Attributes:
        steps: optimization steps (>= 1).
        parametrization: ``"pixel"`` (unit-space values clipped to ``[0, 1]`` after each step;
            unchanged pixels stay exactly as they started), ``"fourier"`` (decorrelated,
            1/f-scaled spectrum through a sigmoid) or a
            :class:`~kerasviz.optimize.params.Parametrization`.
        regularizers: penalties from :mod:`kerasviz.optimize.regularizers`; ``()`` for none.
        transforms: random transforms from :mod:`kerasviz.optimize.transforms`; ``()`` for none.
        optimizer: None for ``keras.optimizers.Adam(learning_rate)``, any keras optimizer
            instance (copied, never changed), or ``"normalized"``: the seeds' normalized ascent
            ``x += lr * g / rms(g)``, i.e. ``lr * sqrt(h*w*c) * g / ||g||`` per image.
        learning_rate: Adam's or the normalized step's size in unit space (default 0.05);
            None with a keras optimizer instance.
        value_range: the model's input range ``(low, high)``, e.g. ``(0, 255)`` for 8-bit
            images fed to a model that rescales inside. Start images must lie inside it (a
            ValueError names it otherwise; nothing is clipped silently); results lie inside it.
        seed: makes noise starts and transforms reproducible.
        batch_size: rows optimized (and run through the model) at once; None for all.
        snapshot_every: keep the images every N steps (``result.snapshots``).
        callback: ``callback(step, images, rows)`` with each chunk's snapshot, as it is taken.
        progress: show a progress bar; None shows one for long runs.

    Raises:
        ValueError: on construction, naming the invalid field.
    """

    steps: int = 256
    parametrization: str | Parametrization = "pixel"
    regularizers: Sequence = DEFAULT_REGULARIZERS
    transforms: Sequence = DEFAULT_TRANSFORMS
    optimizer: keras.optimizers.Optimizer | str | None = None
    learning_rate: float | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    batch_size: int | None = None
    snapshot_every: int | None = None
    callback: Callable[[int, np.ndarray, slice], None] | None = None
    progress: bool | None = None
    optimizer_spec: _OptimizerSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("steps", positive_int(self.steps, "steps"))
        put("parametrization", get_parametrization(self.parametrization))
        put("regularizers", check_regularizers(self.regularizers))
        put("transforms", check_transforms(self.transforms))
        put("value_range", value_range(self.value_range))
        put("seed", integer(self.seed, "seed"))
        put("batch_size", optional_positive_int(self.batch_size, "batch_size"))
        put("snapshot_every", optional_positive_int(self.snapshot_every, "snapshot_every"))
        if self.progress is not None:
            put("progress", boolean(self.progress, "progress"))
        if self.callback is not None and not callable(self.callback):
            raise ValueError(f"Expected `callback` to be callable. Received: {self.callback!r}.")
        if self.learning_rate is not None:
            put("learning_rate", number(self.learning_rate, "learning_rate", 0, open_low=True))
        put("optimizer_spec", _optimizer_spec(self.optimizer, self.learning_rate))


def _optimizer_spec(optimizer: Any, learning_rate: float | None) -> _OptimizerSpec:
    if optimizer is None:
        lr = learning_rate or DEFAULT_LEARNING_RATE
        return _OptimizerSpec(keras.optimizers.Adam, repr(lr), {"learning_rate": lr})
    if isinstance(optimizer, keras.optimizers.Optimizer):
        if learning_rate is not None:
            raise ValueError(
                "Expected `learning_rate` to be None when a keras optimizer is given (it has "
                f"its own). Received: learning_rate={learning_rate!r}."
            )
        config = {k: v for k, v in optimizer.get_config().items() if k != "name"}
        return _OptimizerSpec(type(optimizer), repr(sorted(config.items())), config)
    if isinstance(optimizer, str) and optimizer == "normalized":
        return _OptimizerSpec(None)
    raise ValueError(
        "Expected `optimizer` to be None (Adam), 'normalized' or a keras optimizer instance. "
        f"Received: optimizer={optimizer!r}."
    )


@dataclass
class OptimizationResult:
    """What an optimization returns.

    Attributes:
        images: ``(n, h, w, c)`` float32 optimized images in ``value_range``.
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


# ---------------------------------------------------------------- images and starts


def image_input(model: keras.Model) -> tuple:
    """``(h, w, c)`` of the model's one image input (None for a free size).

    Raises:
        ValueError: for a model without exactly one ``(batch, h, w, c)`` input.
    """
    check_graph_model(model)
    inputs = model_inputs(model)
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ValueError(
            "Expected `model` to take one image input (batch, height, width, channels) for "
            f"input-space optimization. Received: model inputs of shapes "
            f"{[tuple(t.shape) for t in inputs]}."
        )
    return tuple(inputs[0].shape[1:])


def canvas_shape(model: keras.Model, size: Any) -> tuple[tuple[int, int, int], tuple | None]:
    """``((h, w, c) of the optimized images, (h, w) the model needs or None if any size)``."""
    mh, mw, c = image_input(model)
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


def start_params(start: Any, settings: OptimizationSettings, canvas: tuple) -> np.ndarray:
    """Start variables ``(m, ...)``, ``m`` = 1 (shared by every row) or one per start image.

    Raises:
        ValueError: an unknown start, images of the wrong shape, non-finite or outside
            ``value_range``.
    """
    h, w, c = canvas
    param = settings.parametrization
    if isinstance(start, str):
        if start == "gray":
            return param.from_unit(np.full((1, h, w, c), 0.5, np.float32))
        if start == "noise":
            return param.noise(np.random.default_rng(settings.seed), h, w, c)[None]
        raise ValueError(
            f"Expected `start` to be 'gray', 'noise' or an image array. Received: {start!r}."
        )
    array = np.asarray(start).astype(np.float32)
    array = array[None] if array.ndim == 3 else array
    if array.ndim != 4 or array.shape[1:] != (h, w, c) or array.shape[0] == 0:
        raise ValueError(
            f"Expected `start` to be an image of shape {(h, w, c)} or a batch (n, {h}, {w}, "
            f"{c}) matching the optimized size. Received: shape {np.shape(start)}."
        )
    finite(array, "start")
    in_value_range(array, settings.value_range, "start")
    lo, hi = settings.value_range
    return param.from_unit(np.clip((array - lo) / (hi - lo), 0.0, 1.0))  # round-off only


# ---------------------------------------------------------------- the compiled loop


class _Runner:
    """Variables, optimizer and the compiled segment for one structure and chunk size.

    ``static`` is ``(parametrization, transforms, regularizers, optimizer spec, value_range)``.
    """

    def __init__(self, probe: Probe, scorer: Scorer, rows: int, canvas, model_hw, *static):
        param, transforms, regularizers, optimizer, (lo, hi) = static
        h, w, c = canvas
        self.shape = param.shape(rows, h, w, c)
        self.var = keras.Variable(np.zeros(self.shape, np.float32), name="kerasviz_input")
        self.opt = optimizer.build()
        self.opt_init: list[np.ndarray] = []
        if self.opt is not None:
            self.opt.build([self.var])
            self.opt_init = [keras.ops.convert_to_numpy(v) for v in self.opt.variables]
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
                    if (lo, hi) != (0.0, 1.0):
                        x = lo + x * (hi - lo)
                    if resize:
                        x = tf.image.resize(x, model_hw, method="bilinear")
                    scores = scorer(probe, [x], arrays)
                    loss_rows = penalty(regularizers, unit) - scores
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
        for variable, value in zip(
            self.opt.variables if self.opt else [], self.opt_init, strict=True
        ):
            variable.assign(value)


def run_optimization(
    model: keras.Model,
    plan: Plan,
    settings: OptimizationSettings,
    start: np.ndarray,
    canvas: tuple,
    model_hw: tuple | None,
    *,
    pre_relu: bool,
) -> OptimizationResult:
    """The engine of :func:`maximize` and :func:`kerasviz.invert`: optimizes ``plan``'s rows.

    ``start`` holds start variables from :func:`start_params`, one row for all or one per row.
    ``pre_relu`` scores layers that end in a ReLU before it (see :class:`kerasviz.Probe`).

    Raises:
        ValueError: a start count other than 1 or the row count; a NaN or Inf loss (naming the
            step, the row and its objective).
    """
    s = settings
    n = len(plan.labels)
    if start.shape[0] not in (1, n):
        raise ValueError(
            f"Expected `start` to hold one image or one per row ({n}). "
            f"Received: {start.shape[0]} images."
        )
    transforms = check_transforms(s.transforms, canvas[:2])
    probe = get_probe(
        model,
        plan.scorer.layers,
        logits=plan.scorer.logits,
        pre_relu=pre_relu,
        inputs_of=plan.scorer.inputs,
    )
    slices = chunk_slices(n, s.batch_size)
    progress = s.steps * len(slices) >= 2000 if s.progress is None else s.progress
    segment = s.snapshot_every or (max(1, -(-s.steps // 20)) if progress else s.steps)
    bar = keras.utils.Progbar(s.steps * len(slices)) if progress else None
    seed, lr = (
        tf.constant(s.seed, tf.int64),
        tf.constant(s.learning_rate or DEFAULT_LEARNING_RATE, tf.float32),
    )
    static = (s.parametrization, transforms, s.regularizers, s.optimizer_spec, s.value_range)

    images, history, snapshots, done = [], [], [], 0
    for rows in slices:
        runner = probe.cached(
            _Runner, plan.scorer, rows.stop - rows.start, canvas, model_hw, *static
        )
        runner.reset(start if start.shape[0] == 1 else start[rows])
        arrays = [tf.constant(a[rows]) for a in plan.arrays]
        chunk_hist, chunk_snaps = [], []
        for s0 in range(0, s.steps, segment):
            k = min(segment, s.steps - s0)
            hist, bad, image = runner.segment(
                tf.constant(s0, tf.int32), tf.constant(k, tf.int32), seed, lr, arrays
            )
            bad = bad.numpy()
            if np.any(bad >= 0):
                row = int(np.argmin(np.where(bad >= 0, bad, np.iinfo(np.int32).max)))
                raise ValueError(
                    f"The loss became NaN or Inf at step {int(bad[row])} (steps count from 0) "
                    f"for row {rows.start + row}, objective {plan.labels[rows.start + row]}. "
                    "Check the objective, the learning rate and the model's numerics."
                )
            chunk_hist.append(hist)
            if s.snapshot_every is not None and (s0 + k) % s.snapshot_every == 0:
                chunk_snaps.append(image.numpy())
                if s.callback is not None:
                    s.callback(s0 + k, chunk_snaps[-1], rows)
            done += k
            if bar is not None:
                bar.update(done)
        history.append(tf.concat(chunk_hist, axis=0))
        images.append(image)
        if chunk_snaps:
            snapshots.append(np.stack(chunk_snaps, axis=1))
    step_counts = range(s.snapshot_every, s.steps + 1, s.snapshot_every) if s.snapshot_every else ()
    return OptimizationResult(
        images=tf.concat(images, axis=0).numpy(),
        history=tf.transpose(tf.concat(history, axis=1)).numpy(),
        snapshots=np.concatenate(snapshots, axis=0) if snapshots else None,
        snapshot_steps=tuple(step_counts),
    )


# ---------------------------------------------------------------- public functions


def _maximize(
    model: keras.Model, objectives: Any, settings: OptimizationSettings, size: Any, start: Any
) -> OptimizationResult:
    canvas, model_hw = canvas_shape(model, size)
    objs = as_objectives(objectives)
    params0 = start_params(start, settings, canvas)
    if len(objs) == 1 and params0.shape[0] > 1:
        objs = objs * params0.shape[0]
    input_shape = (*model_hw, canvas[2]) if model_hw is not None else canvas
    p = plan(model, objs, input_shape)
    return run_optimization(model, p, settings, params0, canvas, model_hw, pre_relu=True)


def maximize(
    model: keras.Model,
    objectives: Objective | Sequence[Objective],
    *,
    size: int | tuple[int, int] | None = None,
    start: str | np.ndarray = "gray",
    **settings: Any,
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
        size: ``(h, w)`` of the optimized images; defaults to the model's input size (required
            when that size is not fixed). With a fixed-size model a different size is resized
            (bilinear, inside the loop) to the model's size before each forward pass.
        start: ``"gray"`` (middle of ``value_range``), ``"noise"`` (seeded) or images
            ``(h, w, c)`` / ``(n, h, w, c)`` in ``value_range`` (uint8 included), e.g. a photo.
        **settings: the fields of :class:`OptimizationSettings`: ``steps`` (256),
            ``parametrization``, ``regularizers``, ``transforms``, ``optimizer``,
            ``learning_rate``, ``value_range`` ((0, 1)), ``seed``, ``batch_size``,
            ``snapshot_every``, ``callback``, ``progress``.

    Returns:
        :class:`OptimizationResult` with float32 ``images (n, h, w, c)``, ``history (n, steps)``
        and ``snapshots``.

    Raises:
        ValueError: an invalid setting or objective, or ``start`` outside ``value_range``.

    Reference: Erhan et al., "Visualizing Higher-Layer Features of a Deep Network", 2009;
    Olah et al., "Feature Visualization", Distill 2017.

    Example:
        >>> objs = [kerasviz.channel("block3_conv1", i) for i in range(64)]
        >>> images = kerasviz.maximize(model, objs, steps=128).images  # (64, 224, 224, 3)
        >>> dream = kerasviz.maximize(model, kerasviz.logit(3), start=photo).images[0]
    """
    return _maximize(model, objectives, OptimizationSettings(**settings), size, start)


def filter_patterns(
    model: keras.Model,
    layer: LayerSpec,
    channels: Sequence[int] | None = None,
    *,
    size: int | tuple[int, int] | None = None,
    start: str | np.ndarray = "gray",
    **settings: Any,
) -> np.ndarray:
    """One image per channel of ``layer``, each maximizing that channel's mean activation.

    On a plain ``keras.layers.Conv2D`` only the selected filters of ``layer`` are computed,
    from its input (one conv with ``len(channels)`` filters when that is fewer than the
    layer's; see :func:`kerasviz.optimize.objectives.selected_filters_layer`): the same images
    to float round-off, for a fraction of that layer's cost.

    Args:
        model: the model.
        layer: the layer (name, path, index or object).
        channels: channel indices; None for the first 64 (or all, when fewer).
        size, start, **settings: as in :func:`maximize`.

    Returns:
        float32 ``(len(channels), h, w, c)`` images in ``value_range``.

    Example:
        >>> patterns = kerasviz.filter_patterns(vgg, "block3_conv1", size=128, steps=64)
        >>> kerasviz.plot.save(kerasviz.plot.image_grid(patterns, cols=8), "filters.png")
    """
    path, obj = resolve_layer(model, layer)
    channels = range(min(64, output_shape(obj)[-1])) if channels is None else channels
    objs = [channel(path, c) for c in channels]
    return _maximize(model, objs, OptimizationSettings(**settings), size, start).images


def _resize(images: np.ndarray, hw: tuple) -> np.ndarray:
    if images.shape[1:3] == tuple(hw):
        return images
    return tf.image.resize(images, hw, method="bilinear").numpy()


#: deep_dream's defaults where they differ from :class:`OptimizationSettings`.
_DREAM = {"optimizer": "normalized", "learning_rate": 0.01, "transforms": (), "regularizers": ()}


def deep_dream(
    model: keras.Model,
    inputs: Any,
    layers: LayerSpec | Sequence[LayerSpec] | dict,
    *,
    octaves: int = 3,
    octave_scale: float = 1.4,
    steps_per_octave: int = 20,
    **settings: Any,
) -> np.ndarray:
    """DeepDream: amplifies what ``layers`` see in a photo, from coarse to fine octaves.

    Each octave runs :func:`maximize` on the :func:`layer_norm` objectives at a larger size,
    starting from the previous result upscaled, with the detail lost by downscaling added
    back (the sum kept inside ``value_range``). A model with a variable input size runs each
    octave at its own size; a fixed-size model sees each octave's canvas resized to its input
    size inside the loop.

    Args:
        model: the model.
        inputs: ``(h, w, c)`` or ``(n, h, w, c)`` images in ``value_range`` (uint8 included).
        layers: a layer, a list of layers, or ``{layer: weight}``.
        octaves: number of scales (>= 1); the smallest is ``octave_scale ** (octaves - 1)``
            times smaller than the image.
        octave_scale: size ratio of consecutive octaves (>= 1).
        steps_per_octave: optimization steps per octave (>= 1).
        **settings: as in :func:`maximize` but ``steps``; the defaults here are normalized
            ascent with ``learning_rate=0.01``, no transforms and no regularizers.

    Returns:
        float32 dreamed images, the shape of ``inputs``.

    Raises:
        ValueError: invalid arguments, or ``inputs`` outside ``value_range``.

    Reference: Mordvintsev et al., "Inceptionism", Google Research blog, 2015.

    Example:
        >>> dream = kerasviz.deep_dream(model, photo, {"mixed4": 1.0, "mixed5": 1.5})
    """
    octaves = positive_int(octaves, "octaves")
    octave_scale = number(octave_scale, "octave_scale", low=1)
    if "steps" in settings:
        raise ValueError(
            f"Expected `steps_per_octave` for deep_dream. Received: steps={settings['steps']!r}."
        )
    s = OptimizationSettings(**{**_DREAM, **settings, "steps": steps_per_octave})
    if isinstance(layers, dict):
        weighted = list(layers.items())
    else:
        weighted = [
            (spec, 1.0) for spec in (layers if isinstance(layers, list | tuple) else [layers])
        ]
    if not weighted:
        raise ValueError("Expected `layers` to name at least one layer. Received: none.")
    objective = sum(float(w) * layer_norm(spec) for spec, w in weighted)
    c = image_input(model)[-1]
    array = np.asarray(inputs).astype(np.float32)  # uint8 gives 0..255 values
    single = array.ndim == 3
    array = array[None] if single else array
    if array.ndim != 4 or array.shape[-1] != (c or array.shape[-1]):
        raise ValueError(
            f"Expected `inputs` to be (h, w, {c}) or (n, h, w, {c}) images. Received: shape "
            f"{np.shape(inputs)}."
        )
    finite(array, "inputs")
    in_value_range(array, s.value_range, "inputs")
    h, w = array.shape[1:3]
    sizes = [
        (max(1, round(h / octave_scale**k)), max(1, round(w / octave_scale**k)))
        for k in range(octaves - 1, -1, -1)
    ]
    lo, hi = s.value_range
    dream, shrunk = array, _resize(array, sizes[0])
    for hw in sizes:
        # Resizing keeps values inside the range; the clip only undoes the detail added below.
        dream = np.clip(_resize(dream, hw), lo, hi)
        dream = _maximize(model, objective, s, hw, dream).images
        dream = dream + _resize(array, hw) - _resize(shrunk, hw)
        shrunk = _resize(array, hw)
    dream = np.clip(dream, lo, hi)
    return dream[0] if single else dream
