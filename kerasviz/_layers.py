"""Resolving a layer given by name, index, object or ``outer/inner`` path; the default CAM layer."""

from __future__ import annotations

import collections
import difflib
from typing import Any

import keras

from kerasviz._graph import call_counts, check_graph_model, is_graph_model, iter_layers

LayerSpec = str | int | keras.layers.Layer

#: The one list of Keras convolution types (subclasses included by ``isinstance``).
SEPARABLE_TYPES = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
DEPTHWISE_TYPES = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
TRANSPOSE_TYPES = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
CONV_TYPES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    *SEPARABLE_TYPES,
    *DEPTHWISE_TYPES,
    *TRANSPOSE_TYPES,
)


def resolve_layer(model: keras.Model, layer: LayerSpec, argname: str = "layer") -> tuple[str, Any]:
    """Returns ``(path, layer_object)`` for a layer named in any of the four accepted ways.

    Args:
        model: the model that holds the layer, possibly inside a nested model.
        layer: a name (``"block5_conv3"``), a path through nested models
            (``"vgg16/block5_conv3"``), an index into ``model.layers`` (negative allowed) or
            the ``keras.layers.Layer`` object itself.
        argname: the argument name used in error messages.
    """
    check_graph_model(model)
    entries = list(iter_layers(model))
    if isinstance(layer, bool):
        raise ValueError(f"Expected `{argname}` to be a name, index or Layer. Received: {layer!r}.")
    if isinstance(layer, int):
        top = [entry for entry in entries if "/" not in entry[0]]
        if not -len(top) <= layer < len(top):
            raise ValueError(
                f"Expected `{argname}` to be an index in [{-len(top)}, {len(top) - 1}] of "
                f"model.layers. Received: {argname}={layer}."
            )
        return top[layer]
    if isinstance(layer, keras.layers.Layer):
        for path, candidate in entries:
            if candidate is layer:
                return path, candidate
        raise ValueError(
            f"Expected `{argname}` to be a layer of model {model.name!r}. Received: a layer "
            f"named {layer.name!r} that is not part of it."
        )
    if not isinstance(layer, str):
        raise ValueError(
            f"Expected `{argname}` to be a name, index or keras Layer. Received: {layer!r} "
            f"of type {type(layer).__name__}."
        )
    for path, candidate in entries:
        if path == layer:
            return path, candidate
    matches = [(p, c) for p, c in entries if p.rsplit("/", 1)[-1] == layer]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(
            f"Expected `{argname}` to name one layer. Received: {argname}={layer!r}, which is "
            f"ambiguous between {[p for p, _ in matches]}. Use the 'outer/inner' path form."
        )
    close = _closest(layer, entries)
    hint = f" Closest valid names: {close}." if close else ""
    raise ValueError(
        f"Expected `{argname}` to be a layer of model {model.name!r}. Received: "
        f"{argname}={layer!r}, which is not a layer name or path.{hint}"
    )


def _closest(query: str, entries: list[tuple[str, Any]], n: int = 5) -> list[str]:
    """The layers closest to ``query``, each named once, by the shortest name that resolves
    to it: its own name when unique in the model, else its ``outer/inner`` path."""
    leaves = [path.rsplit("/", 1)[-1] for path, _ in entries]
    repeats = collections.Counter(leaves)
    spellings: dict[str, list[str]] = {}  # a spelling -> the names suggested for it
    for (path, _), leaf in zip(entries, leaves, strict=True):
        shown = leaf if repeats[leaf] == 1 else path
        spellings.setdefault(path, []).append(shown)
        if leaf != path:
            spellings.setdefault(leaf, []).append(shown)
    matches = difflib.get_close_matches(query, list(spellings), n=len(spellings), cutoff=0.4)
    return list(dict.fromkeys(name for m in matches for name in spellings[m]))[:n]


def output_shape(layer: Any) -> tuple:
    """The layer's output shape (first call), batch axis included."""
    out = layer.output
    if isinstance(out, list | tuple):
        out = out[0]
    return tuple(out.shape)


def has_spatial_output(layer: Any) -> bool:
    """True when the layer's output is (batch, *spatial, channels) with at least one spatial axis."""
    try:
        shape = output_shape(layer)
    except (AttributeError, ValueError):
        return False
    return len(shape) >= 3


def require_spatial(path: str, layer: Any, argname: str = "layer", rank: int | None = None):
    """Raises a ValueError naming the layer when its output has no spatial axes."""
    shape = output_shape(layer)
    ok = len(shape) == rank if rank is not None else len(shape) >= 3
    if not ok:
        what = f"a {rank}D output" if rank else "a spatial output"
        raise ValueError(
            f"Expected `{argname}` to have {what} (batch, height, width, channels). "
            f"Received: {argname}={path!r} with output shape {shape}."
        )


def spatial_layers(model: keras.Model) -> list[tuple[str, Any]]:
    """Every leaf layer whose output has spatial axes, in graph order.

    Shared layers (called more than once by the model) are left out: they have no single
    output to show.
    """
    check_graph_model(model)
    counts = call_counts(model)
    return [
        (path, layer)
        for path, layer in iter_layers(model)
        if not is_graph_model(layer) and counts.get(id(layer), 1) == 1 and has_spatial_output(layer)
    ]


def is_conv(layer: Any) -> bool:
    """Any convolution: Keras' own and their subclasses, or a custom layer with a kernel.

    A custom layer counts when it holds a weight named ``kernel`` (or an attribute ``kernel``)
    of rank 3 or more, as convolution kernels have; its output must still be spatial to be
    used as a CAM layer.
    """
    if isinstance(layer, CONV_TYPES):
        return True
    if isinstance(layer, keras.layers.Dense) or is_graph_model(layer):
        return False
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        kernels = [w for w in layer.weights if w.path.rsplit("/", 1)[-1].startswith("kernel")]
        kernel = kernels[0] if kernels else None
    return kernel is not None and len(kernel.shape) >= 3


def default_cam_layer(model: keras.Model) -> tuple[str, Any]:
    """The last convolution whose spatial output is larger than 1, nested models included.

    Works for 1D, 2D and 3D convolutions, and for custom layers with a kernel
    (:func:`is_conv`). A 1x1 convolution producing logits on a 1x1 map (MobileNetV3's head) is
    never chosen, nor a shared convolution (called on several inputs: it has no one map).

    Raises:
        ValueError: when the model has no such layer; the message says to pass ``layer=``.
    """
    check_graph_model(model)
    best = None
    for path, layer in spatial_layers(model):
        if not is_conv(layer):
            continue
        spatial = output_shape(layer)[1:-1]
        if any(s is None or s > 1 for s in spatial):
            best = (path, layer)
    if best is None:
        raise ValueError(
            f"Expected `model` to contain a convolution with a spatial output larger than 1 "
            f"for a class activation map. Received: model={model.name!r} without one. "
            "Pass `layer=` explicitly."
        )
    return best
