"""Inspection: feature maps from one forward pass, filter weights, and the most active channels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasviz._checks import integer
from kerasviz._inputs import as_batch, run_chunked
from kerasviz._layers import LayerSpec, require_spatial, resolve_layer, spatial_layers
from kerasviz._probe import Probe, get_probe


def _feature_maps(probe: Probe, inputs):
    outputs, _ = probe(inputs)
    return outputs


def feature_maps(
    model: keras.Model,
    inputs: Any,
    layers: Sequence[LayerSpec] | LayerSpec | None = None,
    *,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """The outputs of several layers, computed in one forward pass.

    Args:
        model: a Sequential or functional Keras model (nested models included).
        inputs: images ``(n, h, w, c)``, one image ``(h, w, c)``, a tf.Tensor or a tf.data.Dataset.
        layers: layer names, paths, indices or objects; None for every layer with a spatial output.
        batch_size: rows per forward pass; None for the whole batch at once.

    Returns:
        ``{layer_path: array (n, h', w', c')}`` in the order of ``layers``.

    Example:
        >>> maps = kerasviz.feature_maps(model, images, ["conv2d", "conv2d_1"])
        >>> maps["conv2d"].shape
        (8, 126, 126, 16)
    """
    if layers is None:
        specs = [layer for _, layer in spatial_layers(model)]
    elif isinstance(layers, str | int | keras.layers.Layer):
        specs = [layers]
    else:
        specs = list(layers)
    for spec in specs:
        path, layer = resolve_layer(model, spec, "layers")
        require_spatial(path, layer, "layers")
    batch = as_batch(model, inputs)
    probe = get_probe(model, specs, logits=False)
    fn = probe.step(_feature_maps)
    outputs = run_chunked(fn, batch.arrays, batch_size)
    return batch.squeeze(dict(zip(probe.paths, outputs, strict=True)))


def filter_weights(model: keras.Model, layer: LayerSpec) -> dict[str, np.ndarray]:
    """The learned filters of a convolution, as numpy arrays with self-describing keys.

    Returns:
        For ``Conv*``: ``{"kernel": (kh, kw, in, out), "bias": (out,)}``.
        For ``DepthwiseConv2D``: ``{"depthwise_kernel": (kh, kw, in, multiplier), "bias"}``.
        For ``SeparableConv2D``: ``{"depthwise_kernel": (kh, kw, in, multiplier),
        "pointwise_kernel": (1, 1, in * multiplier, out), "bias"}``.
        ``"bias"`` is absent when the layer has none.

    Example:
        >>> w = kerasviz.filter_weights(model, "conv2d")["kernel"]  # (3, 3, 3, 16)
    """
    path, obj = resolve_layer(model, layer)
    if isinstance(obj, keras.layers.SeparableConv2D):
        sources = {"depthwise_kernel": "depthwise_kernel", "pointwise_kernel": "pointwise_kernel"}
    elif isinstance(obj, keras.layers.DepthwiseConv2D):
        sources = {"depthwise_kernel": "kernel"}
    elif getattr(obj, "kernel", None) is not None and len(obj.kernel.shape) >= 3:
        sources = {"kernel": "kernel"}
    else:
        raise ValueError(
            f"Expected `layer` to be a convolution with a spatial kernel. Received: "
            f"layer={path!r} of type {type(obj).__name__}."
        )
    result = {key: keras.ops.convert_to_numpy(getattr(obj, attr)) for key, attr in sources.items()}
    if getattr(obj, "use_bias", False) and getattr(obj, "bias", None) is not None:
        result["bias"] = keras.ops.convert_to_numpy(obj.bias)
    return result


@dataclass
class TopChannels:
    """The ``k`` most active channels of a layer, per image.

    Attributes:
        indices: ``(n, k)`` channel indices, most active first.
        scores: ``(n, k)`` their mean activation over the spatial axes.
        shared: channels in the top k of every image.
        only_in: for each image, the channels in its top k and in no other image's.
    """

    indices: np.ndarray
    scores: np.ndarray
    shared: list[int]
    only_in: list[list[int]]


def top_channels(
    model: keras.Model,
    inputs: Any,
    layer: LayerSpec,
    k: int = 8,
    *,
    batch_size: int | None = None,
) -> TopChannels:
    """The ``k`` channels with the highest mean activation in ``layer``, for each image.

    Example:
        >>> top = kerasviz.top_channels(model, images, "conv2d_3", k=5)
        >>> top.indices[0], top.shared
    """
    path, obj = resolve_layer(model, layer)
    require_spatial(path, obj)
    channels = obj.output.shape[-1]
    k = integer(k, "k", minimum=1, maximum=channels)
    maps = feature_maps(model, inputs, [path], batch_size=batch_size)[path]
    maps = maps[None] if maps.ndim == len(obj.output.shape) - 1 else maps
    means = maps.reshape(maps.shape[0], -1, channels).mean(axis=1)
    order = np.argsort(-means, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(means, order, axis=1)
    sets = [set(row.tolist()) for row in order]
    shared = sorted(set.intersection(*sets))
    only_in = []
    for i, own in enumerate(sets):
        others = set().union(*(s for j, s in enumerate(sets) if j != i))
        only_in.append(sorted(own - others))
    return TopChannels(order, scores, shared, only_in)


def layer_statistics(
    model: keras.Model,
    inputs: Any,
    layers: Sequence[LayerSpec] | None = None,
    *,
    batch_size: int | None = None,
) -> dict[str, dict[str, float]]:
    """Mean, std, max and the share of zero activations (dead units) of each layer's output.

    Args:
        layers: as in :func:`feature_maps`; None for every layer with a spatial output.
        batch_size: rows per forward pass; None for the whole batch at once.

    Returns:
        ``{layer_path: {"mean", "std", "max", "zero_fraction"}}`` of Python floats.
    """
    maps = feature_maps(model, inputs, layers, batch_size=batch_size)
    stats = {}
    for path, value in maps.items():
        value = tf.convert_to_tensor(value)
        stats[path] = {
            "mean": float(tf.reduce_mean(value)),
            "std": float(tf.math.reduce_std(value)),
            "max": float(tf.reduce_max(value)),
            "zero_fraction": float(tf.reduce_mean(tf.cast(value == 0, tf.float32))),
        }
    return stats
