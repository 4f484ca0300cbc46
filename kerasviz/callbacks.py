"""Watching maps evolve during ``fit``: a Keras callback that writes CAMs and feature maps."""

from __future__ import annotations

import contextlib
import importlib.util
import random
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import choice
from kerasviz._inputs import as_batch
from kerasviz._layers import LayerSpec, require_spatial, resolve_layer
from kerasviz._targets import Targets, resolve_targets
from kerasviz.attribution import (
    grad_cam,
    grad_cam_plus_plus,
    integrated_gradients,
    layer_cam,
    saliency,
    score_cam,
    smoothgrad,
)
from kerasviz.attribution.cams import DEFAULT_UPSAMPLE, PROJECTIONS
from kerasviz.features import feature_maps
from kerasviz.metrics import pointing_game

#: kerasviz's attribution functions the callback calls with its ``cam_layer``, ``upsample`` and
#: ``batch_size``, whether passed as functions or, as in Keras, by name.
CAM_METHODS = (grad_cam, grad_cam_plus_plus, layer_cam, score_cam)
GRADIENT_METHODS = (saliency, smoothgrad, integrated_gradients)
METHODS = {fn.__name__: fn for fn in CAM_METHODS + GRADIENT_METHODS}


@contextlib.contextmanager
def _rng_preserved() -> Iterator[None]:
    """Restores every global random state a map computation could advance.

    Python's ``random``, numpy's global generator, Keras' global ``SeedGenerator`` (used by
    unseeded ``keras.random`` calls) and TensorFlow's eager op-seed sequence (set by
    ``tf.random.set_seed``). Training draws its dropout masks and shuffles from these, so a
    callback that advanced them would change the run it observes.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    keras_gen, keras_state = None, None
    with contextlib.suppress(Exception):  # private API: skip if it moved
        from keras.src.backend.common import global_state
        from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR

        keras_gen = global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)
        if keras_gen is not None:
            keras_state = keras.ops.convert_to_numpy(keras_gen.state)
    tf_rng, tf_state = None, None
    with contextlib.suppress(Exception):
        from tensorflow.python.eager import context

        tf_rng = getattr(context.context(), "_rng", None)
        tf_state = tf_rng.getstate() if tf_rng is not None else None
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        if keras_gen is not None and keras_state is not None:
            keras_gen.state.assign(keras_state)
        if tf_rng is not None:
            tf_rng.setstate(tf_state)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class VisualizationCallback(keras.callbacks.Callback):
    """Writes CAMs and feature maps of a few fixed images every ``every`` epochs of ``fit``.

    At the end of epochs ``every, 2 * every, ...`` (1-based, as Keras prints them) it writes
    into ``out_dir/epoch_XXX/``:

    - ``{method}.png``: one overlay per image, side by side, for each method;
    - ``features_{layer}_{i}.png``: a grid of the layer's channels for image ``i``, for each
      layer in ``layers``;

    and, with ``log_dir``, the same pictures as TensorBoard image summaries (``tf.summary.image``
    under the tags ``kerasviz/{method}`` and ``kerasviz/features/{layer}``; step = the 0-based
    epoch, as Keras' TensorBoard callback uses; needs ``pip install kerasviz[callbacks]``). With
    ``masks``, the mean pointing-game
    score (:func:`kerasviz.metrics.pointing_game`) is added to the epoch's logs as
    ``"kerasviz_pointing_game"`` (first method) and ``"kerasviz_pointing_game_{method}"``,
    so it lands in ``History`` and in callbacks listed after this one; the keys appear only in
    the epochs that are written.

    Each method runs once per written epoch on all the images, as one batched call, so an
    epoch is slowed by one explanation batch (plus PNG encoding). Nothing changes the model or
    the training: the maps are computed on read-only views, and every global random state is
    restored afterwards, so dropout and shuffling draw the same numbers as without the callback.

    Args:
        images: a few images ``(n, h, w, c)`` matching the model's input (checked at the start
            of ``fit``).
        out_dir: folder for the PNGs.
        every: write every this many epochs.
        log_dir: TensorBoard log folder; None for no summaries.
        masks: ground-truth masks ``(n, h, w)`` for the pointing game; None to skip it.
        methods: callables ``method(model, images, targets) -> maps (n, h, w[, c])`` at the
            input resolution, named by their ``__name__``. kerasviz's own attribution functions
            (:data:`METHODS`: ``grad_cam``, ``grad_cam_plus_plus``, ``layer_cam``,
            ``score_cam``, ``saliency``, ``smoothgrad``, ``integrated_gradients``) may also be
            given by name, and get ``cam_layer``, ``upsample`` and ``batch_size`` below.
        layers: layers whose feature maps are drawn; None for none.
        targets: classes to explain (see the attribution functions); None for the prediction
            at that epoch.
        cam_layer: the layer kerasviz's CAM methods use; None for their default.
        upsample: how kerasviz's CAM methods project onto the input (``"centered"``,
            ``"bilinear"``, ``"receptive_field"`` or ``"effective"``; see
            :func:`kerasviz.attribution.cams.cam`).
        batch_size: rows per forward pass for kerasviz's methods.
        max_channels: feature-map channels drawn per layer (the first ones).
        alpha: overlay opacity.

    Raises:
        ValueError: a bad argument (checked here, and against the model when ``fit`` starts).
        ImportError: ``log_dir`` is given but TensorBoard is not installed.

    Example:
        >>> cb = kerasviz.callbacks.VisualizationCallback(
        ...     x_val[:4], out_dir="viz", every=2, log_dir="logs", masks=m_val[:4],
        ...     methods=(kerasviz.grad_cam, kerasviz.saliency), layers=["conv2d_1"])
        >>> history = model.fit(x, y, epochs=10, callbacks=[cb])
        >>> history.history["kerasviz_pointing_game"]
    """

    def __init__(
        self,
        images: Any,
        *,
        out_dir: str | Path,
        every: int = 1,
        log_dir: str | Path | None = None,
        masks: Any = None,
        methods: Sequence[str | Callable[..., Any]] = ("grad_cam",),
        layers: Sequence[LayerSpec] | None = None,
        targets: Targets = None,
        cam_layer: LayerSpec | None = None,
        upsample: str = DEFAULT_UPSAMPLE,
        batch_size: int | None = None,
        max_channels: int = 16,
        alpha: float = 0.5,
    ):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Expected `every` to be a positive int. Received: {every!r}.")
        if isinstance(max_channels, bool) or not isinstance(max_channels, int) or max_channels < 1:
            raise ValueError(
                f"Expected `max_channels` to be a positive int. Received: {max_channels!r}."
            )
        choice(upsample, PROJECTIONS, "upsample")
        if isinstance(methods, str) or callable(methods):
            methods = (methods,)
        if not methods and not layers:
            raise ValueError(
                "Expected at least one of `methods` and `layers` to be non-empty. Received: "
                f"methods={methods!r}, layers={layers!r}."
            )
        self._methods: list[tuple[str, Callable[..., Any]]] = []
        for method in methods:
            if isinstance(method, str) and method in METHODS:
                method = METHODS[method]
            if not callable(method):
                raise ValueError(
                    f"Expected each of `methods` to be a callable or one of {list(METHODS)}. "
                    f"Received: {method!r}."
                )
            name = getattr(method, "__name__", type(method).__name__)
            self._methods.append((_safe_name(name), self._bind(method)))
        names = [name for name, _ in self._methods]
        if len(set(names)) != len(names):
            raise ValueError(f"Expected `methods` to have distinct names. Received: {names}.")
        self.images = np.asarray(images)
        self.masks = None
        if masks is not None:
            if not self._methods:
                raise ValueError("Expected `methods` to be non-empty when `masks` is given.")
            m = np.asarray(masks)
            if m.ndim == 4 and m.shape[-1] == 1:
                m = m[..., 0]
            if self.images.ndim < 3 or m.shape != self.images.shape[:3]:
                raise ValueError(
                    f"Expected `masks` to have shape (n, h, w) = {self.images.shape[:3]}, one "
                    f"mask per image. Received: shape {np.shape(masks)}."
                )
            empty = np.flatnonzero(~(m != 0).reshape(len(m), -1).any(axis=1))
            if empty.size:
                raise ValueError(
                    "Expected every mask to contain at least one pixel. Received: empty masks "
                    f"at indices {empty.tolist()}."
                )
            self.masks = m != 0
        if log_dir is not None and importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "VisualizationCallback(log_dir=...) writes with tf.summary.image, which needs "
                "TensorBoard: pip install 'kerasviz[callbacks]'."
            )
        self.out_dir = Path(out_dir)
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.every = every
        self.layer_specs = list(layers or [])
        self.targets = targets
        self.cam_layer = cam_layer
        self.upsample = upsample
        self.batch_size = batch_size
        self.max_channels = max_channels
        self.alpha = alpha
        self._writer = None
        self._checked_for: Any = None
        self._layer_paths: list[str] = []

    # ------------------------------------------------------------------ validation

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self._validate(model)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._validate(self.model)
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.flush()

    def _validate(self, model: keras.Model) -> None:
        if model is None or self._checked_for is model:
            return
        batch = as_batch(model, self.images, argname="images")
        if batch.single:
            raise ValueError(
                "Expected `images` to be a batch (n, h, w, c) of a few fixed images. Received: "
                f"one image of shape {self.images.shape}."
            )
        if len(batch.arrays) != 1:
            raise ValueError(
                "Expected `model` to have one image input for VisualizationCallback. Received: "
                f"a model with {len(batch.arrays)} inputs."
            )
        self._images = batch.arrays[0]
        n = len(self._images)
        num_classes = model.outputs[0].shape[-1]
        resolve_targets(self.targets, n, num_classes)
        self._layer_paths = []
        for spec in self.layer_specs:
            path, layer = resolve_layer(model, spec, "layers")
            require_spatial(path, layer, "layers")
            self._layer_paths.append(path)
        if self.cam_layer is not None:
            resolve_layer(model, self.cam_layer, "cam_layer")
        self._checked_for = model

    def _bind(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method(model, images, targets)``; kerasviz's own get this callback's options."""
        if method not in CAM_METHODS + GRADIENT_METHODS:
            return method

        def run(model, images, targets):
            kwargs: dict[str, Any] = {"batch_size": self.batch_size}
            if method in CAM_METHODS:
                kwargs["upsample"] = self.upsample
                if self.cam_layer is not None:
                    kwargs["layer"] = self.cam_layer
            return method(model, images, targets, **kwargs)

        return run

    # ------------------------------------------------------------------ writing

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        with _rng_preserved():
            scores = self._write(epoch)
        if logs is not None:
            logs.update(scores)

    def compute_maps(self) -> dict[str, np.ndarray]:
        """``{method: maps (n, h, w)}`` for the fixed images with the model's current weights."""
        self._validate(self.model)
        maps = {}
        for name, fn in self._methods:
            value = np.asarray(fn(self.model, self._images, self.targets), dtype=np.float64)
            if value.ndim == 4 and value.shape[-1] == 1:
                value = value[..., 0]
            elif value.ndim == 4:  # (n, h, w, c) gradients: the usual max |.| over channels
                value = np.abs(value).max(axis=-1)
            if value.shape != self._images.shape[:3]:
                raise ValueError(
                    f"Expected method {name!r} to return maps (n, h, w) = "
                    f"{self._images.shape[:3]} at the input resolution. Received: shape "
                    f"{value.shape}."
                )
            maps[name] = value
        return maps

    def _write(self, epoch: int) -> dict[str, float]:
        from kerasviz import plot  # presentation: `import kerasviz` must not load matplotlib

        folder = self.out_dir / f"epoch_{epoch + 1:03d}"
        pictures: dict[str, np.ndarray] = {}  # summary tag -> uint8 (k, h, w, c)
        maps = self.compute_maps() if self._methods else {}
        n = len(self._images)
        for name, value in maps.items():
            overlays = np.stack(
                [
                    plot.overlay(self._images[i], np.nan_to_num(value[i]), alpha=self.alpha)
                    for i in range(n)
                ]
            )
            plot.save(plot.image_grid(overlays, cols=n, margin=2), folder / f"{name}.png")
            pictures[f"kerasviz/{name}"] = overlays
        if self._layer_paths:
            activations = feature_maps(
                self.model, self._images, self._layer_paths, batch_size=self.batch_size
            )
            for path, value in activations.items():
                grids = []
                for i in range(n):
                    channels = np.moveaxis(value[i][..., : self.max_channels], -1, 0)
                    grid = plot.image_grid(channels, margin=1, normalize="standardize")
                    plot.save(grid, folder / f"features_{_safe_name(path)}_{i}.png")
                    grids.append(grid[..., None])
                pictures[f"kerasviz/features/{path}"] = np.stack(grids)
        if self._writer is not None:
            with self._writer.as_default():
                for tag, batch in pictures.items():
                    tf.summary.image(tag, batch, step=epoch, max_outputs=len(batch))
            self._writer.flush()
        scores: dict[str, float] = {}
        if self.masks is not None:
            for k, (name, value) in enumerate(maps.items()):
                score = float(np.mean(pointing_game(np.nan_to_num(value), self.masks)))
                scores[f"kerasviz_pointing_game_{name}"] = score
                if k == 0:
                    scores["kerasviz_pointing_game"] = score
        return scores


__all__ = ["METHODS", "VisualizationCallback"]
