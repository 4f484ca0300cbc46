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

from kerasviz._checks import boolean, choice, integer
from kerasviz._engine import expanded_rows, rows_per_pass, run_rows, setup
from kerasviz._inputs import Batch, run_chunked
from kerasviz._layers import LayerSpec, default_cam_layer, require_spatial, resolve_layer
from kerasviz._probe import Probe, get_probe
from kerasviz._targets import ScoreRule, Targets
from kerasviz.receptive_field import (
    ReceptiveField,
    backproject,
    backproject_tf,
    receptive_field,
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
    choice(upsample, _UPSAMPLE, "upsample")


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


def _field(model: keras.Model, path: str, batch: Batch) -> ReceptiveField:
    """The layer's receptive field, for the input size actually given (models built with None)."""
    size = tuple(batch.arrays[0].shape[1:-1]) if len(batch.arrays) == 1 else None
    return receptive_field(model, path, input_size=size)


def _linear_target(batch: Batch, rank: int) -> tuple[int, tuple[int, ...]]:
    """The model input a linear resize targets, and its spatial size: the first input with
    ``rank`` spatial axes (a resize needs no receptive field, so it cannot tell which input a
    layer sees; ``upsample="receptive_field"`` can)."""
    for k, x in enumerate(batch.arrays):
        if x.ndim - 2 == rank:
            return k, tuple(x.shape[1:-1])
    raise ValueError(
        f"Expected a model input with {rank} spatial axes to resize the maps onto. Received: "
        f"inputs of shapes {[x.shape for x in batch.arrays]}. Use `upsample=None`."
    )


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` linear interpolation with half-pixel centres (``tf.image.resize``)."""
    centres = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = centres - low
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), low), 1 - frac)
    np.add.at(weights, (np.arange(n_out), high), frac)
    return weights


def resize_linear(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Separable linear resize of ``(n, *spatial)`` maps to ``(n, *size)``: bilinear for 2D.

    Equals ``tf.image.resize(method="bilinear", antialias=False)`` on 2D maps (half-pixel
    centres), and extends it to 1D (linear) and 3D (trilinear) maps.

    Args:
        maps: float maps ``(n, *spatial)``, one to three spatial axes.
        size: the output's spatial size, one int per spatial axis.

    Returns:
        float32 ``(n, *size)``.
    """
    out = np.asarray(maps, np.float64)
    for axis, n_out in enumerate(size, start=1):
        weights = _linear_weights(out.shape[axis], int(n_out))
        out = np.moveaxis(np.tensordot(weights, out, axes=([1], [axis])), 0, axis)
    return out.astype(np.float32)


def _resize_tf(maps: tf.Tensor, weights: Sequence[tf.Tensor]) -> tf.Tensor:
    """:func:`resize_linear` inside compiled code, with the per-axis ``(n_out, n_in)`` matrices
    of :func:`_linear_weights` given as tensors (the spatial shape may be unknown when traced)."""
    x = maps
    for axis, w in enumerate(weights, start=1):
        x = tf.tensordot(w, x, axes=[[1], [axis]])  # the resized axis comes first
        perm = list(range(1, axis + 1)) + [0] + list(range(axis + 1, x.shape.rank))
        x = tf.transpose(x, perm)
    return x


def project_host(
    maps: np.ndarray, rf: ReceptiveField | None, upsample: str | None, size=None
) -> np.ndarray:
    """Projects layer maps onto the input on the host (``None`` keeps the layer resolution)."""
    if upsample is None:
        return maps
    if upsample == "bilinear":
        return resize_linear(maps, size if size is not None else rf.input_size)
    return backproject(maps, rf)


def _cam(
    probe: Probe,
    rule: ScoreRule,
    weighting: Weighting,
    relu: bool,
    fields: tuple,
    inputs,
    indices,
):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(inputs)
        activations, logits = probe.raw(inputs)
        scores = rule.scores(logits, indices)
    # Gradients with respect to the activations the logits were computed from (in their own
    # dtype: float16 under mixed precision); a float32 copy would get zero gradients.
    gradients = tape.gradient(scores, activations, unconnected_gradients="zero")
    maps = []
    for a, g, rf in zip(activations, gradients, fields, strict=True):
        a, g = tf.cast(a, tf.float32), tf.cast(g, tf.float32)
        m = combine(a, weighting(a, g), relu)
        maps.append(backproject_tf(m, rf) if rf is not None else m)
    return maps


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
    relu = boolean(relu, "relu")
    if not callable(weighting):
        raise ValueError(f"Expected `weighting` to be a function. Received: {weighting!r}.")
    paths, many = cam_layers(model, layer)
    batch, probe, target = setup(model, inputs, targets, layers=paths, output=output)
    fields = tuple(
        _field(model, p, batch) if upsample == "receptive_field" else None for p in paths
    )
    fn = probe.step(_cam, target.rule, weighting, relu, fields)
    maps = run_chunked(fn, batch.arrays, batch_size, extra=[target.indices])
    if upsample == "bilinear":
        maps = [resize_linear(m, _linear_target(batch, m.ndim - 1)[1]) for m in maps]
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


def _score_cam_activations(probe: Probe, rule: ScoreRule, inputs, indices):
    (activations,), logits = probe(inputs)
    return activations, rule.choose(logits, indices)


def _score_cam(
    probe: Probe,
    rule: ScoreRule,
    channels: int,
    rf: ReceptiveField | None,
    image: int,
    inputs,
    maps,
    resize,
    indices,
    start,
    stop,
):
    rows, images, _, _ = expanded_rows(start, stop, channels)
    # maps: (n, channels, *spatial); one upsampled, min-max normalized mask per row.
    low = tf.gather_nd(maps, tf.stack([images, rows % channels], axis=1))
    up = backproject_tf(low, rf) if rf is not None else _resize_tf(low, resize)
    axes = list(range(1, up.shape.rank))
    lo = tf.reduce_min(up, axis=axes, keepdims=True)
    hi = tf.reduce_max(up, axis=axes, keepdims=True)
    masks = tf.math.divide_no_nan(up - lo, hi - lo)
    masked = [tf.gather(x, images) for x in inputs]
    masked[image] = masked[image] * masks[..., None]
    _, logits = probe(masked)
    return rule.probabilities(logits, tf.gather(indices, images))


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
    relu = boolean(relu, "relu")
    if isinstance(layer, list | tuple):
        raise ValueError(f"Expected `layer` to name one layer for Score-CAM. Received: {layer!r}.")
    (path,), _ = cam_layers(model, layer)
    batch, probe, target = setup(model, inputs, targets, layers=[path], output=output)
    fn = probe.step(_score_cam_activations, target.rule)
    activations, indices = run_chunked(fn, batch.arrays, batch_size, extra=[target.indices])
    n, channels = activations.shape[0], activations.shape[-1]
    bilinear = upsample == "bilinear"
    resize, size = [], None
    if bilinear:
        rf = None
        image, size = _linear_target(batch, activations.ndim - 2)
        resize = [
            tf.constant(_linear_weights(n_in, n_out), tf.float32)
            for n_in, n_out in zip(activations.shape[1:-1], size, strict=True)
        ]
    else:
        rf = _field(model, path, batch)
        image = rf.input_index
    if max_channels is not None:
        max_channels = integer(max_channels, "max_channels", minimum=1)
        if max_channels > channels:
            raise ValueError(
                f"Expected `max_channels` in [1, {channels}], at most the channels of layer "
                f"{path!r}. Received: max_channels={max_channels}."
            )
        spread = activations.reshape(n, -1, channels).std(axis=1)
        keep = np.argsort(-spread, axis=1, kind="stable")[:, :max_channels]
        spatial = (1,) * (activations.ndim - 2)
        activations = np.take_along_axis(activations, keep.reshape(n, *spatial, -1), axis=-1)
        channels = max_channels
    maps = np.moveaxis(activations, -1, 1)  # (n, channels, *spatial)
    plain = get_probe(model, (), output=output)
    step = plain.step(_score_cam, target.rule, channels, rf, image)
    total = n * channels
    rows = rows_per_pass(batch_size, n, total)
    xs = [tf.constant(a) for a in batch.arrays]
    weights = run_rows(step, total, rows, xs, tf.constant(maps), resize, tf.constant(indices))
    weights = tf.reshape(weights, [n, channels])
    result = combine(tf.constant(activations), weights, relu).numpy()
    return batch.squeeze(project_host(result, rf, upsample, size))
