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
- :func:`hires_cam_weights`: elementwise gradients (Draelos and Carin, 2020).
- :func:`xgrad_cam_weights`: gradients averaged with the activations as weights (Fu et al.,
  2020).

Score-CAM (:func:`score_cam`) and Ablation-CAM (:func:`ablation_cam`) weight channels by
forward passes instead of gradients, so each has its own weighting step (batched masked or
ablated passes); Eigen-CAM (:func:`eigen_cam`) needs no score at all. They share the layer
checks, the combination and the projection with the gradient CAMs.

**Smoothing.** Every CAM takes ``smooth``: None; ``"eigen"``, the weighted sum replaced by
the first principal component of ``weights * activations`` (:func:`principal_map`); or
``"augment"``, the mean over test-time horizontal flips and intensity factors
(:data:`AUGMENT_FACTORS`), each map flipped back onto the original pixels (:func:`augmented`).

**Projection.** ``upsample="centered"`` (default: it wins the most comparisons of
``benchmarks/localization.py``, docs/localization.md) interpolates bilinearly between the units'
receptive-field centres (``backproject(..., method="centered")``); ``"bilinear"`` resizes with
half-pixel centres, which sit off the fields' centres by up to several pixels;
``"receptive_field"`` gives each input pixel the mean of the map values whose receptive fields
cover it (:func:`kerasviz.receptive_field.backproject`); ``"effective"`` weights each unit by its
number of paths to the pixel (its effective receptive field, ``backproject(...,
method="effective")``); ``None`` returns the layer-resolution map. Maps are raw: not normalized (a
constant or zero map comes back as zeros, never NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import boolean, choice, integer
from kerasviz._engine import expanded_rows, fix_predictions, rows_per_pass, run_rows, setup
from kerasviz._graph import model_inputs, run_graph
from kerasviz._inputs import Batch, run_chunked
from kerasviz._layers import LayerSpec, default_cam_layer, require_spatial, resolve_layer
from kerasviz._probe import Probe, get_probe, pre_activation
from kerasviz._targets import ScoreRule, Targets
from kerasviz.receptive_field import (
    ReceptiveField,
    backproject,
    backproject_tf,
    receptive_field,
)

Weighting = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
#: The projections through receptive fields: ``upsample`` -> ``backproject`` method.
_FIELD_RULES = {"receptive_field": "mean", "effective": "effective", "centered": "centered"}
_UPSAMPLE = ("receptive_field", "bilinear", None, "effective", "centered")
#: Every way a CAM reaches the input (``upsample`` values other than None).
PROJECTIONS = tuple(u for u in _UPSAMPLE if u is not None)
#: The default projection: it wins the most comparisons of ``benchmarks/localization.py``.
DEFAULT_UPSAMPLE = "centered"
_SMOOTH = (None, "augment", "eigen")

#: Intensity factors of ``smooth="augment"``, each with and without a horizontal flip: the
#: test-time augmentations of pytorch-grad-cam's ``aug_smooth``.
AUGMENT_FACTORS = (0.9, 1.0, 1.1)


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


def hires_cam_weights(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """HiResCAM: elementwise weights, the gradients themselves, ``(n, h, w, c)``.

    The map is ``sum_c gradient * activation`` at every position: unlike Grad-CAM's spatial
    average, it is faithful to what the layers after a Flatten-Dense head actually use.
    """
    return gradients


def xgrad_cam_weights(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """XGrad-CAM: ``sum_ij A_ij g_ij / sum_ij A_ij`` per channel, ``(n, c)``.

    The gradients averaged with the normalized activations as weights; 0 for a channel whose
    activations sum to 0.
    """
    axes = _spatial_axes(gradients)
    return _safe_divide(
        tf.reduce_sum(activations * gradients, axis=axes), tf.reduce_sum(activations, axis=axes)
    )


# ---------------------------------------------------------------------------------------------
# The core


def principal_map(values: tf.Tensor) -> tf.Tensor:
    """The first principal component of ``(n, *spatial, c)`` values, ``(n, *spatial)``.

    Per image, the positions are the samples and the channels the variables: the values are
    centred over the positions and projected onto their first right singular vector (batched
    SVD on the device, in float64). Its sign is chosen so that the projection correlates
    positively with the channel sum, the map it replaces (equivalently, the vector's entries
    sum to >= 0).

    Reference: Muhammad and Yeasin, "Eigen-CAM: Class Activation Map using Principal
    Components" (2020).
    """
    shape = tf.shape(values)
    flat = tf.cast(tf.reshape(values, [shape[0], -1, shape[-1]]), tf.float64)
    centred = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
    _, _, v = tf.linalg.svd(centred)
    first = v[..., 0]  # (n, c)
    flip = tf.reduce_sum(first, axis=-1, keepdims=True) < 0
    first = tf.where(flip, -first, first)
    maps = tf.cast(tf.reshape(tf.einsum("npc,nc->np", centred, first), shape[:-1]), tf.float32)
    maps.set_shape(values.shape[:-1])
    return maps


def combine(
    activations: tf.Tensor, weights: tf.Tensor, relu: bool, eigen: bool = False
) -> tf.Tensor:
    """``sum_c weights * activations`` (``(n, h, w)``), rectified when ``relu``; with
    ``eigen``, the first principal component of ``weights * activations`` instead."""
    if weights.shape.rank == 2:
        rank = activations.shape.rank
        weights = tf.reshape(weights, [tf.shape(weights)[0]] + [1] * (rank - 2) + [-1])
    elif weights.shape.rank != activations.shape.rank:
        raise ValueError(
            "Expected `weighting` to return per-channel weights (n, c) or elementwise weights "
            f"shaped like the activations {tuple(activations.shape)}. Received: a tensor of "
            f"shape {tuple(weights.shape)}."
        )
    weighted = activations * weights
    maps = principal_map(weighted) if eigen else tf.reduce_sum(weighted, axis=-1)
    return tf.nn.relu(maps) if relu else maps


def check_upsample(upsample: Any) -> None:
    choice(upsample, _UPSAMPLE, "upsample")


def check_smooth(smooth: Any) -> str | None:
    return choice(smooth, _SMOOTH, "smooth")


def augmented(
    compute: Callable[[Any, Targets], Any],
    model: keras.Model,
    inputs: Any,
    targets: Targets,
    *,
    output: int | str | None,
    batch_size: int | None,
    upsample: str | None,
) -> Any:
    """``smooth="augment"``: the mean of a CAM over test-time augmentations, mapped back.

    Every image (every input with spatial axes) is multiplied by each of
    :data:`AUGMENT_FACTORS`, with and without a horizontal flip (its last spatial axis);
    ``compute(augmented_inputs, targets)`` maps all copies in one call, each map of a flipped
    copy is flipped back (an exact pixel correspondence; intensity factors move no pixel),
    and the maps are averaged. The predicted class is read on the original images and held
    for every copy.
    """
    if upsample is None:
        raise ValueError(
            "Expected `upsample` to be 'receptive_field', 'effective' or 'bilinear' with "
            "smooth='augment', "
            "which maps every augmented map back onto the input's pixels. Received: "
            "upsample=None."
        )
    batch, probe, target = setup(model, inputs, targets, output=output)
    variants = [(flip, factor) for flip in (False, True) for factor in AUGMENT_FACTORS]
    if target.rule.fn is None:
        target = fix_predictions(probe, batch, target, batch_size)
        targets = np.tile(target.indices, len(variants))
    arrays = []
    for x in batch.arrays:
        if x.ndim < 3:  # no spatial axes (tabular features): the same for every copy
            arrays.append(np.tile(x, (len(variants),) + (1,) * (x.ndim - 1)))
            continue
        copies = [(np.flip(x, axis=-2) if flip else x) * factor for flip, factor in variants]
        arrays.append(np.concatenate(copies).astype(np.float32))
    result = compute(arrays if len(arrays) > 1 else arrays[0], targets)

    def back(maps: np.ndarray) -> np.ndarray:
        maps = maps.reshape(len(variants), batch.n, *maps.shape[1:])
        maps = [
            np.flip(m, axis=-1) if flip else m for m, (flip, _) in zip(maps, variants, strict=True)
        ]
        return np.mean(maps, axis=0, dtype=np.float64).astype(np.float32)

    if isinstance(result, dict):
        return batch.squeeze({k: back(v) for k, v in result.items()})
    return batch.squeeze(back(result))


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


@dataclass(frozen=True)
class Projection:
    """A layer map's way onto the input through receptive fields, inside compiled code: the
    field and the :func:`~kerasviz.receptive_field.backproject` method (``"mean"`` or
    ``"effective"``). Hashable: it keys compiled steps."""

    rf: ReceptiveField
    method: str = "mean"

    def __call__(self, maps: tf.Tensor) -> tf.Tensor:
        return backproject_tf(maps, self.rf, method=self.method)


def projection(model: keras.Model, path: str, batch: Batch, upsample: Any) -> Projection | None:
    """The :class:`Projection` for ``upsample="receptive_field"`` or ``"effective"``; None for
    a resize or the layer's resolution."""
    if upsample not in _FIELD_RULES:
        return None
    return Projection(_field(model, path, batch), _FIELD_RULES[upsample])


def _inputs_read(model: keras.Model, path: str, batch: Batch) -> list[int]:
    """Indices of the model inputs that layer ``path``'s output depends on: one forward and
    backward pass of one zero row, where an input the layer does not read gets no gradient."""
    rows = [tf.zeros((1, *x.shape[1:]), tf.float32) for x in batch.arrays]
    seen: list = []

    def visit(layer, at, outputs):
        if at == path:
            seen.append(outputs)

    with tf.GradientTape() as tape:
        tape.watch(rows)
        run_graph(model, rows, visit=visit)
        total = tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in keras.tree.flatten(seen)])
    return [k for k, g in enumerate(tape.gradient(total, rows)) if g is not None]


def _linear_target(
    batch: Batch, rank: int, model: keras.Model, path: str
) -> tuple[int, tuple[int, ...]]:
    """The model input a linear resize targets, and its spatial size: the input with ``rank``
    spatial axes that layer ``path`` reads (a resize needs no receptive field; the graph says
    which input the layer sees when several inputs could be images)."""
    candidates = [k for k, x in enumerate(batch.arrays) if x.ndim - 2 == rank]
    if len(candidates) > 1:
        read = _inputs_read(model, path, batch)
        candidates = [k for k in candidates if k in read] or candidates
    if not candidates:
        raise ValueError(
            f"Expected a model input with {rank} spatial axes to resize the maps onto. Received: "
            f"inputs of shapes {[x.shape for x in batch.arrays]}. Use `upsample=None`."
        )
    if len(candidates) > 1:
        raise ValueError(
            f"Expected layer {path!r} to read one image input to resize its maps onto. "
            f"Received: it reads inputs {candidates} of shapes "
            f"{[batch.arrays[k].shape for k in candidates]}. Use `upsample=None`."
        )
    return candidates[0], tuple(batch.arrays[candidates[0]].shape[1:-1])


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
    return backproject(maps, rf, method=_FIELD_RULES[upsample])


def _cam(
    probe: Probe,
    rule: ScoreRule,
    weighting: Weighting,
    relu: bool,
    eigen: bool,
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
    for a, g, field in zip(activations, gradients, fields, strict=True):
        a, g = tf.cast(a, tf.float32), tf.cast(g, tf.float32)
        m = combine(a, weighting(a, g), relu, eigen)
        maps.append(field(m) if field is not None else m)
    return maps


def cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    weighting: Weighting = grad_cam_weights,
    batch_size: int | None = None,
    upsample: str | None = DEFAULT_UPSAMPLE,
    relu: bool = True,
    smooth: str | None = None,
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
        upsample: ``"receptive_field"`` (exact back-projection, the mean over the covering
            fields), ``"effective"`` (the same weighted by path counts: the effective receptive
            fields), ``"centered"`` (the default: bilinear between the field centres),
            ``"bilinear"`` (a resize with half-pixel centres; needs no receptive field) or None.
        relu: rectify the map (standard); False keeps the negative evidence (signed maps).
        smooth: None; ``"eigen"`` for the first principal component of ``weights *
            activations`` in place of their sum (:func:`principal_map`); ``"augment"`` for
            the mean over horizontal flips and intensity factors, each map flipped back
            (:func:`augmented`; needs ``upsample``).
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
    smooth = check_smooth(smooth)
    if not callable(weighting):
        raise ValueError(f"Expected `weighting` to be a function. Received: {weighting!r}.")
    if smooth == "augment":
        return augmented(
            lambda x, t: cam(
                model,
                x,
                t,
                layer,
                weighting=weighting,
                batch_size=batch_size,
                upsample=upsample,
                relu=relu,
                output=output,
            ),
            model,
            inputs,
            targets,
            output=output,
            batch_size=batch_size,
            upsample=upsample,
        )
    paths, many = cam_layers(model, layer)
    batch, probe, target = setup(model, inputs, targets, layers=paths, output=output)
    fields = tuple(projection(model, p, batch, upsample) for p in paths)
    fn = probe.step(_cam, target.rule, weighting, relu, smooth == "eigen", fields)
    maps = run_chunked(fn, batch.arrays, batch_size, extra=[target.indices])
    if upsample == "bilinear":
        maps = [
            resize_linear(m, _linear_target(batch, m.ndim - 1, model, p)[1])
            for m, p in zip(maps, paths, strict=True)
        ]
    result = dict(zip(probe.paths, maps, strict=True)) if many else maps[0]
    return batch.squeeze(result)


def grad_cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    batch_size: int | None = None,
    upsample: str | None = DEFAULT_UPSAMPLE,
    relu: bool = True,
    smooth: str | None = None,
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
        smooth=smooth,
        output=output,
    )


def grad_cam_plus_plus(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    batch_size: int | None = None,
    upsample: str | None = DEFAULT_UPSAMPLE,
    relu: bool = True,
    smooth: str | None = None,
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
        smooth=smooth,
        output=output,
    )


def layer_cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    batch_size: int | None = None,
    upsample: str | None = DEFAULT_UPSAMPLE,
    relu: bool = True,
    smooth: str | None = None,
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
        smooth=smooth,
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
    field: Projection | None,
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
    up = field(low) if field is not None else _resize_tf(low, resize)
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
    upsample: str | None = DEFAULT_UPSAMPLE,
    relu: bool = True,
    smooth: str | None = None,
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
    smooth = check_smooth(smooth)
    if isinstance(layer, list | tuple):
        raise ValueError(f"Expected `layer` to name one layer for Score-CAM. Received: {layer!r}.")
    if smooth == "augment":
        return augmented(
            lambda x, t: score_cam(
                model,
                x,
                t,
                layer,
                batch_size=batch_size,
                max_channels=max_channels,
                upsample=upsample,
                relu=relu,
                output=output,
            ),
            model,
            inputs,
            targets,
            output=output,
            batch_size=batch_size,
            upsample=upsample,
        )
    (path,), _ = cam_layers(model, layer)
    batch, probe, target = setup(model, inputs, targets, layers=[path], output=output)
    fn = probe.step(_score_cam_activations, target.rule)
    activations, indices = run_chunked(fn, batch.arrays, batch_size, extra=[target.indices])
    n, channels = activations.shape[0], activations.shape[-1]
    bilinear = upsample == "bilinear"
    resize, size = [], None
    if bilinear:
        rf = None
        image, size = _linear_target(batch, activations.ndim - 2, model, path)
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
    # upsample=None: the masks take the receptive-field projection (the mean rule)
    field = Projection(rf, _FIELD_RULES.get(upsample, "mean")) if rf is not None else None
    step = plain.step(_score_cam, target.rule, channels, field, image)
    total = n * channels
    rows = rows_per_pass(batch_size, n, total)
    xs = [tf.constant(a) for a in batch.arrays]
    weights = run_rows(step, total, rows, xs, tf.constant(maps), resize, tf.constant(indices))
    weights = tf.reshape(weights, [n, channels])
    result = combine(tf.constant(activations), weights, relu, smooth == "eigen").numpy()
    return batch.squeeze(project_host(result, rf, upsample, size))


# ---------------------------------------------------------------------------------------------
# HiResCAM and XGrad-CAM: gradient weightings


def hires_cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    batch_size: int | None = None,
    upsample: str | None = DEFAULT_UPSAMPLE,
    relu: bool = True,
    smooth: str | None = None,
    output: int | str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """HiResCAM: :func:`cam` with :func:`hires_cam_weights`, ``sum_c gradient * activation``.

    Reference: Draelos and Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations
    of convolutional neural networks" (2020).

    Example:
        >>> heat = kerasviz.hires_cam(model, images, targets=3)  # (n, H, W)
    """
    return cam(
        model,
        inputs,
        targets,
        layer,
        weighting=hires_cam_weights,
        batch_size=batch_size,
        upsample=upsample,
        relu=relu,
        smooth=smooth,
        output=output,
    )


def xgrad_cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    batch_size: int | None = None,
    upsample: str | None = DEFAULT_UPSAMPLE,
    relu: bool = True,
    smooth: str | None = None,
    output: int | str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """XGrad-CAM: :func:`cam` with :func:`xgrad_cam_weights`.

    Reference: Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and
    Explanation of CNNs" (2020).

    Example:
        >>> heat = kerasviz.xgrad_cam(model, images)
    """
    return cam(
        model,
        inputs,
        targets,
        layer,
        weighting=xgrad_cam_weights,
        batch_size=batch_size,
        upsample=upsample,
        relu=relu,
        smooth=smooth,
        output=output,
    )


# ---------------------------------------------------------------------------------------------
# Eigen-CAM


def _eigen_cam(probe: Probe, relu: bool, fields: tuple, inputs):
    activations, _ = probe(inputs)
    maps = []
    for a, field in zip(activations, fields, strict=True):
        m = principal_map(a)
        m = tf.nn.relu(m) if relu else m
        maps.append(field(m) if field is not None else m)
    return maps


def eigen_cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | Sequence[LayerSpec] | None = None,
    *,
    batch_size: int | None = None,
    upsample: str | None = DEFAULT_UPSAMPLE,
    relu: bool = True,
    smooth: str | None = None,
    output: int | str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """Eigen-CAM: the first principal component of the layer's activations.

    Per image, the activations ``(h * w, c)`` are centred over the positions and projected
    onto their first principal axis (:func:`principal_map`, batched SVD on the device), with
    the sign that agrees with the activations (a positive correlation with their channel
    sum). No gradient and no score: the map is the same for every class, and ``targets`` only
    matters with ``smooth="augment"`` (it is checked either way). ``smooth="eigen"`` changes
    nothing here (all weights are 1).

    Args:
        Others: as in :func:`cam`.

    Returns:
        float32 maps ``(n, H, W)`` (``(n, h, w)`` with ``upsample=None``); a dict
        ``{layer_path: maps}`` when ``layer`` is a list.

    Reference: Muhammad and Yeasin, "Eigen-CAM: Class Activation Map using Principal
    Components" (2020).

    Example:
        >>> heat = kerasviz.eigen_cam(model, images, layer="conv4")
    """
    check_upsample(upsample)
    relu = boolean(relu, "relu")
    smooth = check_smooth(smooth)
    if smooth == "augment":
        return augmented(
            lambda x, t: eigen_cam(
                model,
                x,
                t,
                layer,
                batch_size=batch_size,
                upsample=upsample,
                relu=relu,
                output=output,
            ),
            model,
            inputs,
            targets,
            output=output,
            batch_size=batch_size,
            upsample=upsample,
        )
    paths, many = cam_layers(model, layer)
    batch, probe, _ = setup(model, inputs, targets, layers=paths, output=output)
    fields = tuple(projection(model, p, batch, upsample) for p in paths)
    fn = probe.step(_eigen_cam, relu, fields)
    maps = run_chunked(fn, batch.arrays, batch_size)
    if upsample == "bilinear":
        maps = [
            resize_linear(m, _linear_target(batch, m.ndim - 1, model, p)[1])
            for m, p in zip(maps, paths, strict=True)
        ]
    result = dict(zip(probe.paths, maps, strict=True)) if many else maps[0]
    return batch.squeeze(result)


# ---------------------------------------------------------------------------------------------
# Ablation-CAM


def ablation_views(probe: Probe, path: str) -> tuple[keras.Model, keras.Model]:
    """The model cut after layer ``path``: ``(front, tail)`` views for Ablation-CAM.

    ``front(inputs)`` returns the layer's output followed by every other tensor that the part
    of the model after the layer reads (a skip connection around it, say); ``tail([output,
    *others])`` returns the logits (the head's softmax or sigmoid bypassed, as in the probe).
    Both are built with :func:`~kerasviz._graph.run_graph` over the user's own layers, nested
    models included; a layer runs in the tail exactly when it depends on the layer's output.
    Cached per probe (:meth:`~kerasviz._probe.Probe.cached`).

    Raises:
        ValueError: when the explained output does not depend on the layer.
    """
    model = probe.model
    _, cut = resolve_layer(model, path)
    tail_ids: set[int] = set()  # tensors of the tail graph
    crossing: dict[int, tuple[Any, Any]] = {}  # front tensor the tail reads -> (it, tail input)
    cut_pair: list = []  # (the layer's output, the tail input standing for it)

    def run(layer, where, args, kwargs):
        if where == probe.bypassed:
            return pre_activation(layer, args[0])
        return layer(*args, **kwargs)

    def tail_input(value):
        if not isinstance(value, keras.KerasTensor) or id(value) in tail_ids:
            return value
        if id(value) not in crossing:
            crossing[id(value)] = (value, keras.Input(value.shape[1:], dtype=value.dtype))
        return crossing[id(value)][1]

    def call(layer, where, args, kwargs):
        if layer is cut:
            out = layer(*args, **kwargs)
            substitute = keras.Input(out.shape[1:], dtype=out.dtype)
            cut_pair.extend([out, substitute])
            tail_ids.add(id(substitute))
            return substitute
        leaves = keras.tree.flatten((args, kwargs))
        if not any(id(t) in tail_ids for t in leaves):
            return run(layer, where, args, kwargs)
        args, kwargs = keras.tree.map_structure(tail_input, (args, kwargs))
        out = run(layer, where, args, kwargs)
        tail_ids.update(id(t) for t in keras.tree.flatten(out))
        return out

    inputs = model_inputs(model)
    logits = run_graph(model, inputs, call)[probe.output_index]
    if id(logits) not in tail_ids:
        raise ValueError(
            f"Expected the explained output to depend on `layer` for Ablation-CAM. Received: "
            f"layer={path!r}, which the output does not read."
        )
    activation, substitute = cut_pair
    pairs = list(crossing.values())
    front = keras.Model(inputs, [activation, *[t for t, _ in pairs]])
    tail = keras.Model([substitute, *[t for _, t in pairs]], logits)
    return front, tail


def _ablation_front(probe: Probe, path: str, kept: int, inputs):
    front, _ = probe.cached(ablation_views, path)
    fronts = front(list(inputs), training=False)
    fronts = fronts if isinstance(fronts, list | tuple) else [fronts]
    activations = tf.cast(fronts[0], tf.float32)
    rank = activations.shape.rank
    mass = tf.reduce_mean(tf.abs(activations), axis=list(range(1, rank - 1)))  # (n, c)
    # The channels with the largest mean |activation|, ties to the lower index.
    keep = tf.math.top_k(mass, k=kept).indices
    return list(fronts), activations, keep


def _ablation_tail(
    probe: Probe, rule: ScoreRule, path: str, per_image: int, fronts, keep, start, stop
):
    _, tail = probe.cached(ablation_views, path)
    rows, which, _, _ = expanded_rows(start, stop, per_image)
    values = [tf.gather(f, which) for f in fronts]
    # Row 0 of an image is not ablated; row j > 0 zeroes its kept channel j - 1.
    j = rows % per_image
    channel = tf.gather_nd(keep, tf.stack([which, tf.maximum(j - 1, 0)], axis=1))
    depth = values[0].shape[-1]
    off = tf.one_hot(channel, depth) * tf.cast(j > 0, tf.float32)[:, None]
    shape = [-1] + [1] * (values[0].shape.rank - 2) + [depth]
    values[0] = values[0] * tf.cast(tf.reshape(1.0 - off, shape), values[0].dtype)
    logits = tf.cast(tail(values, training=False), tf.float32)
    if rule.fn is not None:
        return rule.scores(logits, tf.zeros_like(rows))
    # Every class's score: an image may be explained for its prediction, read on the host
    # from its unablated row.
    return rule.class_logits(logits)


def ablation_cam(
    model: keras.Model,
    inputs: Any,
    targets: Targets = None,
    layer: LayerSpec | None = None,
    *,
    batch_size: int | None = None,
    max_channels: int | None = None,
    upsample: str | None = DEFAULT_UPSAMPLE,
    relu: bool = True,
    smooth: str | None = None,
    output: int | str | None = None,
) -> np.ndarray:
    """Ablation-CAM: each channel weighted by the drop of the target logit when it is zeroed.

    ``w_k = y - y_k``, with ``y`` the target's logit and ``y_k`` the logit with channel ``k``
    of the layer set to 0. (The paper divides by ``y``; that only rescales an image's raw
    map, and would flip it for a negative logit, so it is left out.) The ablations are
    batched like Score-CAM's masked passes, and cheaper: the model is cut after the layer
    (:func:`ablation_views`); the part before the cut runs once per image, and only the part
    after it runs once per ablation, on the layer's output with one channel zeroed. The
    ``channels + 1`` rows of an image (one not ablated) run in chunks of ``batch_size`` rows
    (None: ``max(n, 32)``), a group of whole images at a time.

    Args:
        max_channels: ablate only this many channels per image, those with the largest mean
            absolute activation (a channel that is almost 0 everywhere changes little when
            zeroed); the others weigh 0. None for all.
        Others: as in :func:`cam`.

    Returns:
        float32 maps ``(n, H, W)``, or ``(n, h, w)`` with ``upsample=None``.

    Reference: Desai and Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional
    Network via Gradient-free Localization" (2020).

    Example:
        >>> heat = kerasviz.ablation_cam(model, images, max_channels=64, batch_size=256)
    """
    check_upsample(upsample)
    relu = boolean(relu, "relu")
    smooth = check_smooth(smooth)
    if isinstance(layer, list | tuple):
        raise ValueError(
            f"Expected `layer` to name one layer for Ablation-CAM. Received: {layer!r}."
        )
    if smooth == "augment":
        return augmented(
            lambda x, t: ablation_cam(
                model,
                x,
                t,
                layer,
                batch_size=batch_size,
                max_channels=max_channels,
                upsample=upsample,
                relu=relu,
                output=output,
            ),
            model,
            inputs,
            targets,
            output=output,
            batch_size=batch_size,
            upsample=upsample,
        )
    (path,), _ = cam_layers(model, layer)
    batch, probe, target = setup(model, inputs, targets, layers=[path], output=output)
    n = batch.n
    channels = int(probe.view.outputs[0].shape[-1])
    kept = channels
    if max_channels is not None:
        kept = integer(max_channels, "max_channels", minimum=1)
        if kept > channels:
            raise ValueError(
                f"Expected `max_channels` in [1, {channels}], at most the channels of layer "
                f"{path!r}. Received: max_channels={max_channels}."
            )
    probe.cached(ablation_views, path)  # builds (and checks) the cut outside compiled code
    per_image = kept + 1
    rows = rows_per_pass(batch_size, n, n * per_image)
    front = probe.step(_ablation_front, path, kept)
    tail = probe.step(_ablation_tail, target.rule, path, per_image)
    group = max(1, rows // per_image)  # whole images per group: each front runs once
    values, activations, keeps = [], [], []
    for first in range(0, n, group):
        images = slice(first, min(first + group, n))
        fronts, a, keep = front([tf.constant(x[images]) for x in batch.arrays])
        total = (images.stop - images.start) * per_image
        values.append(run_rows(tail, total, rows, fronts, keep))
        activations.append(a)
        keeps.append(keep)
    values = tf.concat(values, axis=0).numpy().astype(np.float64)
    keep = tf.concat(keeps, axis=0).numpy()
    if target.rule.fn is None:
        values = values.reshape(n, per_image, -1)
        classes = np.where(target.indices < 0, values[:, 0].argmax(axis=-1), target.indices)
        scores = np.take_along_axis(values, classes[:, None, None], axis=2)[..., 0]
    else:
        scores = values.reshape(n, per_image)
    weights = np.zeros((n, channels), np.float32)
    np.put_along_axis(weights, keep, (scores[:, :1] - scores[:, 1:]).astype(np.float32), axis=1)
    maps = combine(tf.concat(activations, 0), tf.constant(weights), relu, smooth == "eigen")
    result = maps.numpy()
    if upsample == "bilinear":
        size = _linear_target(batch, result.ndim - 1, model, path)[1]
        return batch.squeeze(project_host(result, None, upsample, size))
    rf = _field(model, path, batch) if upsample in _FIELD_RULES else None
    return batch.squeeze(project_host(result, rf, upsample))
