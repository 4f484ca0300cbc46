"""Class activation maps: one core, and one small weighting function per method.

A CAM of layer ``A`` (activations ``(n, h, w, c)``) for a score ``y`` (a logit) is
``relu(sum_c W * A)``, the channels weighted by ``W``. Methods differ only in ``W``.

**The weighting protocol.** A weighting is a function ``weighting(activations, gradients) ->
weights`` on TensorFlow tensors, run inside the compiled step: ``activations`` and ``gradients``
(``dy/dA``) are both ``(n, h, w, c)``; it returns either per-channel weights ``(n, c)`` or
elementwise weights ``(n, h, w, c)``. :func:`cam` does the rest: one forward and backward pass
per chunk, ``sum_c weights * A``, the optional ReLU, and the projection onto the input. A new
gradient CAM is one such function, passed as ``cam(..., weighting=my_weights)``:

- :func:`grad_cam_weights`: the spatial mean of the gradients (Selvaraju et al., 2017).
- :func:`grad_cam_plus_plus_weights`: Grad-CAM++'s closed form (Chattopadhay et al., 2018).
- :func:`layer_cam_weights`: elementwise ``relu(gradient)`` (Jiang et al., 2021).

Score-CAM (:func:`score_cam`) weights channels by forward passes instead of gradients, so it
has its own weighting step (batched masked passes), and shares the layer checks, the weighted
sum and the projection with the gradient CAMs.

**Projection.** ``upsample="receptive_field"`` (default) gives each input pixel the mean of the
map values whose receptive fields cover it (:func:`kerasviz.receptive_field.backproject`);
``"bilinear"`` resizes with half-pixel centres; ``None`` returns the layer-resolution map. Maps
are raw: not normalized (a constant or zero map comes back as zeros, never NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._inputs import run_chunked
from kerasviz._layers import LayerSpec, default_cam_layer, require_spatial, resolve_layer
from kerasviz._probe import Probe, compiled, get_probe, note_trace
from kerasviz._targets import Targets, callable_key, select_scores
from kerasviz.attribution.gradients import expanded_rows, rows_per_pass, setup
from kerasviz.receptive_field import (
    ReceptiveField,
    backproject,
    backproject_tf,
    receptive_field,
    resize_bilinear,
)

Weighting = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
_UPSAMPLE = ("receptive_field", "bilinear", None)


# ---------------------------------------------------------------------------------------------
# Weighting functions


def _spatial_axes(x: tf.Tensor) -> list[int]:
    return list(range(1, x.shape.rank - 1))


def grad_cam_weights(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Grad-CAM: each channel weighted by its spatially averaged gradient, ``(n, c)``."""
    return tf.reduce_mean(gradients, axis=_spatial_axes(gradients))


def _safe_divide(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """``a / b``, and 0 where ``b == 0``."""
    nonzero = tf.not_equal(b, 0.0)
    return tf.where(nonzero, a / tf.where(nonzero, b, 1.0), 0.0)


def grad_cam_plus_plus_weights(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++: ``sum_ij alpha_ij * relu(g_ij)`` per channel, ``(n, c)``.

    With an exponential score ``S = exp(y)``, the higher derivatives are ``S g^2`` and
    ``S g^3``, so ``alpha = g^2 / (2 g^2 + sum_ab(A) g^3)``: the factor ``S`` cancels. It
    would only scale the map by ``exp(y)``, which overflows for large logits, so it is left
    out. As in the authors' code and tf-keras-vis, the alphas are normalized to sum to one over
    the spatial positions of each channel.
    """
    axes = _spatial_axes(gradients)
    g2 = tf.square(gradients)
    g3 = g2 * gradients
    total = tf.reduce_sum(activations, axis=axes, keepdims=True)
    alphas = _safe_divide(g2, 2.0 * g2 + total * g3)
    alphas = _safe_divide(alphas, tf.reduce_sum(alphas, axis=axes, keepdims=True))
    return tf.reduce_sum(alphas * tf.nn.relu(gradients), axis=axes)


def layer_cam_weights(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Layer-CAM: elementwise weights ``relu(gradient)``, ``(n, h, w, c)``."""
    return tf.nn.relu(gradients)


# ---------------------------------------------------------------------------------------------
# The core


def combine(activations: tf.Tensor, weights: tf.Tensor, relu: bool) -> tf.Tensor:
    """``sum_c weights * activations`` (``(n, h, w)``), rectified when ``relu``."""
    if weights.shape.rank == 2:
        rank = activations.shape.rank
        weights = tf.reshape(weights, [tf.shape(weights)[0]] + [1] * (rank - 2) + [-1])
    elif weights.shape.rank != activations.shape.rank:
        raise ValueError(
            "Expected `weighting` to return per-channel weights (n, c) or elementwise weights "
            f"shaped like the activations {tuple(activations.shape)}. Received: a tensor of "
            f"shape {tuple(weights.shape)}."
        )
    maps = tf.reduce_sum(activations * weights, axis=-1)
    return tf.nn.relu(maps) if relu else maps


def check_upsample(upsample: Any) -> None:
    if not (upsample is None or isinstance(upsample, str)) or upsample not in _UPSAMPLE:
        raise ValueError(
            f"Expected `upsample` to be one of {_UPSAMPLE}. Received: upsample={upsample!r}."
        )


def _check_relu(relu: Any) -> None:
    if not isinstance(relu, bool | np.bool_):
        raise ValueError(f"Expected `relu` to be True or False. Received: relu={relu!r}.")


def cam_layers(model: keras.Model, layer: Any) -> tuple[list[str], bool]:
    """Resolved CAM layer paths (spatial outputs checked), and whether a list was given."""
    if layer is None:
        specs, many = [default_cam_layer(model)[0]], False
    elif isinstance(layer, list | tuple):
        if not layer:
            raise ValueError("Expected `layer` to name at least one layer. Received: [].")
        specs, many = list(layer), True
    else:
        specs, many = [layer], False
    paths = []
    for spec in specs:
        path, obj = resolve_layer(model, spec)
        require_spatial(path, obj, "layer")
        paths.append(path)
    return paths, many


def _field(model: keras.Model, path: str, batch) -> ReceptiveField:
    """The layer's receptive field, for the input size actually given (models built with None)."""
    size = tuple(batch.arrays[0].shape[1:-1]) if len(batch.arrays) == 1 else None
    return receptive_field(model, path, input_size=size)


def project_host(maps: np.ndarray, rf: ReceptiveField | None, upsample: str | None) -> np.ndarray:
    """Projects layer maps onto the input on the host (``None`` keeps the layer resolution)."""
    if upsample is None:
        return maps
    if upsample == "bilinear":
        return resize_bilinear(maps, rf.input_size)
    return backproject(maps, rf)


def _cam_factory(
    weighting: Weighting, relu: bool, targets: Targets, fields: Sequence[ReceptiveField | None]
) -> Callable[[Probe], Callable]:
    def factory(probe: Probe):
        def step(inputs, indices):
            note_trace("cam")
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(inputs)
                activations, logits = probe(inputs)
                scores = select_scores(logits, indices, targets)
            gradients = tape.gradient(scores, activations, unconnected_gradients="zero")
            maps = []
            for a, g, rf in zip(activations, gradients, fields, strict=True):
                m = combine(a, weighting(a, g), relu)
                maps.append(backproject_tf(m, rf) if rf is not None else m)
            return maps

        return compiled(step)

    return factory


def cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    weighting: Weighting = grad_cam_weights,
    batch_size: int | None = None,
    upsample: str | None = "receptive_field",
    relu: bool = True,
    output: int | str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """A gradient class activation map with any weighting; the core of the Grad-CAM family.

    Args:
        model: a Sequential or functional Keras model (nested models included).
        inputs: images ``(n, H, W, C)`` or one image ``(H, W, C)``; a list for several inputs.
        targets: an int, one int per image, a callable ``logits -> (n,)`` or None (predicted).
        layer: the layer (name, ``"outer/inner"`` path, index or object); None for the last
            convolution with a map larger than 1x1; a list for several layers, all computed
            from one forward and backward pass.
        weighting: ``weighting(activations, gradients) -> (n, c) or (n, h, w, c)`` weights.
        batch_size: rows per forward pass; None for all images at once.
        upsample: ``"receptive_field"`` (exact back-projection), ``"bilinear"`` or None.
        relu: rectify the map (standard); False keeps the negative evidence (signed maps).
        output: which model output to explain, for models with several.

    Returns:
        float32 maps ``(n, H, W)`` at the resolution of the input the layer sees (``(n, h,
        w)`` with ``upsample=None``); a dict ``{layer_path: maps}`` when ``layer`` is a list.

    Reference: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization" (2017).

    Example:
        >>> heat = kerasviz.cam(model, images, 281, weighting=kerasviz.layer_cam_weights)
    """
    check_upsample(upsample)
    _check_relu(relu)
    if not callable(weighting):
        raise ValueError(f"Expected `weighting` to be a function. Received: {weighting!r}.")
    paths, many = cam_layers(model, layer)
    batch, probe, indices = setup(model, inputs, targets, layers=paths, output=output)
    fields = [_field(model, p, batch) if upsample is not None else None for p in paths]
    in_graph = [rf if upsample == "receptive_field" else None for rf in fields]
    key = ("cam", weighting, bool(relu), tuple(in_graph), callable_key(targets))
    fn = probe.function(key, _cam_factory(weighting, bool(relu), targets, in_graph))
    maps = run_chunked(fn, batch.arrays, batch_size, extra=[indices])
    if upsample == "bilinear":
        maps = [resize_bilinear(m, rf.input_size) for m, rf in zip(maps, fields, strict=True)]
    result = dict(zip(probe.paths, maps, strict=True)) if many else maps[0]
    return batch.squeeze(result)


def grad_cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    batch_size: int | None = None,
    upsample: str | None = "receptive_field",
    relu: bool = True,
    output: int | str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """Grad-CAM: :func:`cam` with :func:`grad_cam_weights`.

    Example:
        >>> heat = kerasviz.grad_cam(model, images, targets=[281, 243])  # (2, H, W)
    """
    return cam(
        model,
        inputs,
        targets,
        layer,
        weighting=grad_cam_weights,
        batch_size=batch_size,
        upsample=upsample,
        relu=relu,
        output=output,
    )


def grad_cam_plus_plus(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    batch_size: int | None = None,
    upsample: str | None = "receptive_field",
    relu: bool = True,
    output: int | str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """Grad-CAM++: :func:`cam` with :func:`grad_cam_plus_plus_weights`.

    Reference: Chattopadhay et al., "Grad-CAM++" (2018).

    Example:
        >>> heat = kerasviz.grad_cam_plus_plus(model, images)
    """
    return cam(
        model,
        inputs,
        targets,
        layer,
        weighting=grad_cam_plus_plus_weights,
        batch_size=batch_size,
        upsample=upsample,
        relu=relu,
        output=output,
    )


def layer_cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    batch_size: int | None = None,
    upsample: str | None = "receptive_field",
    relu: bool = True,
    output: int | str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """Layer-CAM: :func:`cam` with :func:`layer_cam_weights`; suited to shallow layers too.

    Reference: Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps" (2021).

    Example:
        >>> maps = kerasviz.layer_cam(model, images, layer=["conv2", "conv4", "conv6"])
    """
    return cam(
        model,
        inputs,
        targets,
        layer,
        weighting=layer_cam_weights,
        batch_size=batch_size,
        upsample=upsample,
        relu=relu,
        output=output,
    )


# ---------------------------------------------------------------------------------------------
# Score-CAM


def _activations_factory(probe: Probe):
    def forward(inputs, indices):
        note_trace("score_cam_activations")
        (activations,), logits = probe(inputs)
        flat = tf.reshape(logits, [tf.shape(logits)[0], -1])
        predicted = tf.argmax(flat, axis=-1, output_type=tf.int32)
        return activations, tf.where(indices < 0, predicted, indices)

    return compiled(forward)


def _masked_factory(
    targets: Targets, channels: int, rf: ReceptiveField, bilinear: bool
) -> Callable[[Probe], Callable]:
    image = rf.input_index

    def factory(probe: Probe):
        def step(inputs, maps, indices, start, stop):
            note_trace("score_cam")
            rows, images, _, _ = expanded_rows(start, stop, channels)
            # maps: (n, channels, h, w); one upsampled, min-max normalized mask per row.
            low = tf.gather_nd(maps, tf.stack([images, rows % channels], axis=1))
            if bilinear:
                up = tf.image.resize(low[..., None], rf.input_size, method="bilinear")[..., 0]
            else:
                up = backproject_tf(low, rf)
            axes = list(range(1, up.shape.rank))
            lo = tf.reduce_min(up, axis=axes, keepdims=True)
            hi = tf.reduce_max(up, axis=axes, keepdims=True)
            masks = tf.math.divide_no_nan(up - lo, hi - lo)
            masked = [tf.gather(x, images) for x in inputs]
            masked[image] = masked[image] * masks[..., None]
            _, logits = probe(masked)
            chosen = tf.gather(indices, images)
            if callable(targets):
                return select_scores(logits, chosen, targets)
            squash = tf.nn.softmax if logits.shape[-1] > 1 else tf.sigmoid
            return select_scores(squash(logits), chosen)

        return compiled(step)

    return factory


def score_cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | None = None,
    *,
    batch_size: int | None = None,
    max_channels: int | None = None,
    upsample: str | None = "receptive_field",
    relu: bool = True,
    output: int | str | None = None,
) -> np.ndarray:
    """Score-CAM: channels weighted by the class score of the image masked by each channel.

    For each kept channel ``k``: its map is projected onto the input (as ``upsample`` says;
    the receptive-field projection when ``upsample`` is None), min-max normalized to [0, 1],
    and multiplied with the image. The weight ``w_k`` is the target's probability for that
    masked image: the softmax over classes of the logits (a sigmoid for a single logit), as in
    the paper's algorithm, its reference code and tf-keras-vis. A callable target's own value
    on the logits is used as is. The ``n * channels`` masked images are built on the device and
    scored in chunks of ``batch_size`` rows (None: ``max(n, 32)``), never one pass per channel.

    Args:
        max_channels: keep only this many channels per image, those with the largest spatial
            standard deviation of their activation (Faster Score-CAM); None for all.
        Others: as in :func:`cam`.

    Returns:
        float32 maps ``(n, H, W)``, or ``(n, h, w)`` with ``upsample=None``.

    Reference: Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks" (2020).

    Example:
        >>> heat = kerasviz.score_cam(model, images, max_channels=64, batch_size=128)
    """
    check_upsample(upsample)
    _check_relu(relu)
    if isinstance(layer, list | tuple):
        raise ValueError(f"Expected `layer` to name one layer for Score-CAM. Received: {layer!r}.")
    (path,), _ = cam_layers(model, layer)
    batch, probe, indices = setup(model, inputs, targets, layers=[path], output=output)
    rf = _field(model, path, batch)
    fn = probe.function("score_cam_activations", _activations_factory)
    activations, indices = run_chunked(fn, batch.arrays, batch_size, extra=[indices])
    n, channels = activations.shape[0], activations.shape[-1]
    if max_channels is not None:
        if isinstance(max_channels, bool) or not isinstance(max_channels, int | np.integer):
            raise ValueError(
                f"Expected `max_channels` to be an int or None. Received: {max_channels!r}."
            )
        if not 1 <= max_channels <= channels:
            raise ValueError(
                f"Expected `max_channels` in [1, {channels}] for layer {path!r}. Received: "
                f"max_channels={max_channels}."
            )
        spread = activations.reshape(n, -1, channels).std(axis=1)
        keep = np.argsort(-spread, axis=1, kind="stable")[:, :max_channels]
        spatial = (1,) * (activations.ndim - 2)
        activations = np.take_along_axis(activations, keep.reshape(n, *spatial, -1), axis=-1)
        channels = max_channels
    maps = np.moveaxis(activations, -1, 1)  # (n, channels, h, w)
    plain = get_probe(model, (), output=output)
    bilinear = upsample == "bilinear"
    key = ("score_cam", rf, channels, bilinear, callable_key(targets))
    step = plain.function(key, _masked_factory(targets, channels, rf, bilinear))
    total = n * channels
    rows = rows_per_pass(batch_size, n, total)
    xs = [tf.constant(a) for a in batch.arrays]
    maps_t, indices_t = tf.constant(maps), tf.constant(indices)
    weights = [
        step(xs, maps_t, indices_t, tf.constant(s, tf.int32), tf.constant(min(s + rows, total)))
        for s in range(0, total, rows)
    ]
    weights = tf.reshape(tf.concat(weights, axis=0), [n, channels])
    result = combine(tf.constant(activations), weights, bool(relu)).numpy()
    return batch.squeeze(project_host(result, rf, upsample))
