"""Watching maps evolve during ``fit``: a Keras callback that writes CAMs and feature maps."""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kerasviz._inputs import as_batch
from kerasviz._layers import LayerSpec, require_spatial, resolve_layer
from kerasviz._targets import Targets, target_indices

#: Method names the callback accepts as strings; any callable is accepted too.
CAM_METHODS = ("grad_cam", "grad_cam_plus_plus", "layer_cam", "score_cam")
GRADIENT_METHODS = ("saliency", "smoothgrad", "integrated_gradients")
METHODS = CAM_METHODS + GRADIENT_METHODS


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


def _image_summary(tag: str, images: np.ndarray, step: int) -> None:
    """Writes uint8 images ``(k, h, w, c)`` as a TensorBoard image summary.

    The same record ``tf.summary.image`` writes (a ``[width, height, png, ...]`` string tensor
    under the "images" plugin), built with TensorFlow alone: ``tf.summary.image`` itself is
    implemented in the ``tensorboard`` package, which kerasviz does not require.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images", content=b""),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )
    pngs = [tf.io.encode_png(image) for image in images]
    h, w = images.shape[1:3]
    header = [tf.constant(str(w)), tf.constant(str(h))]
    tf.summary.write(tag, tf.stack(header + pngs), step=step, metadata=metadata)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class VisualizationCallback(keras.callbacks.Callback):
    """Writes CAMs and feature maps of a few fixed images every ``every`` epochs of ``fit``.

    At the end of epochs ``every, 2 * every, ...`` (1-based, as Keras prints them) it writes
    into ``out_dir/epoch_XXX/``:

    - ``{method}.png``: one overlay per image, side by side, for each method;
    - ``features_{layer}_{i}.png``: a grid of the layer's channels for image ``i``, for each
      layer in ``layers``;

    and, with ``log_dir``, the same pictures as TensorBoard image summaries (the records
    ``tf.summary.image`` writes; step = the 0-based epoch, as Keras' TensorBoard callback uses). With ``masks``, the mean pointing-game
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
        methods: names from ``METHODS`` (``"grad_cam"``, ``"grad_cam_plus_plus"``,
            ``"layer_cam"``, ``"score_cam"``, ``"saliency"``, ``"smoothgrad"``,
            ``"integrated_gradients"``) or callables ``method(model, images, targets) -> maps
            (n, h, w[, c])`` at the input resolution.
        layers: layers whose feature maps are drawn; None for none.
        targets: classes to explain (see the attribution functions); None for the prediction
            at that epoch.
        cam_layer: the layer named CAM methods use; None for their default.
        upsample: how named CAM methods project onto the input (``"receptive_field"`` or
            ``"bilinear"``).
        batch_size: rows per forward pass for the named methods.
        max_channels: feature-map channels drawn per layer (the first ones).
        alpha: overlay opacity.

    Example:
        >>> cb = kerasviz.callbacks.VisualizationCallback(
        ...     x_val[:4], out_dir="viz", every=2, log_dir="logs", masks=m_val[:4],
        ...     methods=("grad_cam", "saliency"), layers=["conv2d_1"])
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
        upsample: str = "receptive_field",
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
        if upsample not in ("receptive_field", "bilinear"):
            raise ValueError(
                'Expected `upsample` to be "receptive_field" or "bilinear". '
                f"Received: {upsample!r}."
            )
        if isinstance(methods, str) or callable(methods):
            methods = (methods,)
        if not methods and not layers:
            raise ValueError(
                "Expected at least one of `methods` and `layers` to be non-empty. Received: "
                f"methods={methods!r}, layers={layers!r}."
            )
        self._methods: list[tuple[str, str | Callable[..., Any]]] = []
        for method in methods:
            if isinstance(method, str):
                if method not in METHODS:
                    raise ValueError(
                        f"Expected each of `methods` to be a callable or one of {list(METHODS)}. "
                        f"Received: {method!r}."
                    )
                self._methods.append((method, method))
            elif callable(method):
                name = getattr(method, "__name__", type(method).__name__)
                self._methods.append((_safe_name(name), method))
            else:
                raise ValueError(
                    f"Expected each of `methods` to be a callable or a method name. Received: "
                    f"{method!r}."
                )
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
            import tensorflow as tf

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
        if not callable(self.targets):
            target_indices(self.targets, n, num_classes)
        self._layer_paths = []
        for spec in self.layer_specs:
            path, layer = resolve_layer(model, spec, "layers")
            require_spatial(path, layer, "layers")
            self._layer_paths.append(path)
        if self.cam_layer is not None:
            resolve_layer(model, self.cam_layer, "cam_layer")
        self._functions = [(name, self._resolve(method)) for name, method in self._methods]
        self._checked_for = model

    def _resolve(self, method: str | Callable[..., Any]) -> Callable[..., Any]:
        if callable(method):
            return method
        import kerasviz

        fn = getattr(kerasviz, method, None)
        if fn is None:
            raise ValueError(
                f"Expected `methods` to name an attribution function of kerasviz. Received: "
                f"{method!r}, which this installation does not provide."
            )
        kwargs: dict[str, Any] = {"batch_size": self.batch_size}
        if method in CAM_METHODS:
            kwargs["upsample"] = self.upsample
            if self.cam_layer is not None:
                kwargs["layer"] = self.cam_layer

        def run(model, images, targets):
            return fn(model, images, targets, **kwargs)

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
        for name, fn in self._functions:
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
        from kerasviz import features, metrics, plot

        folder = self.out_dir / f"epoch_{epoch + 1:03d}"
        pictures: dict[str, np.ndarray] = {}  # summary tag -> uint8 (k, h, w, c)
        maps = self.compute_maps() if self._functions else {}
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
            activations = features.feature_maps(
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
                    _image_summary(tag, batch, step=epoch)
            self._writer.flush()
        scores: dict[str, float] = {}
        if self.masks is not None:
            for k, (name, value) in enumerate(maps.items()):
                score = float(np.mean(metrics.pointing_game(np.nan_to_num(value), self.masks)))
                scores[f"kerasviz_pointing_game_{name}"] = score
                if k == 0:
                    scores["kerasviz_pointing_game"] = score
        return scores


__all__ = ["METHODS", "VisualizationCallback"]
