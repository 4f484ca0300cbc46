"""Smaller inputs for input-space optimization: the model's layers up to one layer, on a canvas.

Optimizing an input costs one forward and backward pass per step, in proportion to its pixels.
The report's patterns only need the model up to the layer they look at, and a fully
convolutional stack runs on any input size. :func:`truncated_view` builds that stack on a
smaller input from the user's own layers (the same variables; nothing is copied or changed), so
a neuron pattern is optimized on its receptive field's crop and a filter pattern on a smaller
canvas. :func:`neuron_canvas` picks a crop whose unit sees exactly the pixels, and computes
exactly the function, of a unit of the full model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

import kerasviz
from kerasviz._graph import model_inputs, run_graph

# The probe's own test for a layer ending in a ReLU (no public function offers it).
from kerasviz._probe import _before_relu


class _Reached(Exception):
    """Raised by the walk once the wanted layer has been called: nothing after it is built."""

    def __init__(self, outputs: Any):
        super().__init__()
        self.outputs = outputs


#: The name of the view's last layer, the one objectives and receptive fields refer to.
TARGET = "kerasviz_target"


def truncated_view(
    model: Any, layer: str, size: tuple[int, int], *, pre_relu: bool = False
) -> tuple[Any, str] | None:
    """The model's layers from a new ``(*size, c)`` input up to ``layer``, or None if impossible.

    The view ends in a fresh ``Identity`` layer: objectives read its output shape, which the
    user's layer (first called at the full size) cannot give. With ``pre_relu``, a layer that
    ends in a ReLU gives its value before the ReLU, as :func:`kerasviz.maximize` ascends it.

    Args:
        model: a Sequential or functional model with one image input (nested models included).
        layer: the path of a layer of ``model`` (``"outer/inner"`` for nested models).
        size: ``(height, width)`` of the new input.
        pre_relu: output the layer's value before a final ReLU.

    Returns:
        ``(view, path)``: a functional ``keras.Model`` calling the user's own layers (shared
        variables, nothing changed) and the path of its last layer; None when a layer on the
        way cannot run at that size (a Flatten feeding a Dense, a fixed reshape).
    """
    (tensor,) = model_inputs(model)
    inputs = keras.Input((*size, tensor.shape[-1]), dtype=tensor.dtype)

    def call(obj: Any, path: str, args: tuple, kwargs: dict) -> Any:
        if path == layer:
            before = _before_relu(obj, args[0]) if pre_relu and len(args) == 1 else None
            raise _Reached(obj(*args, **kwargs) if before is None else before)
        return obj(*args, **kwargs)

    try:
        run_graph(model, [inputs], call)
    except _Reached as reached:
        outputs = reached.outputs
    except Exception:  # noqa: BLE001 - any layer that cannot take the size: keep the full input
        return None
    else:
        return None
    try:
        outputs = keras.layers.Identity(name=TARGET)(outputs)
        view = keras.Model(inputs, outputs, name=f"kerasviz_view_{model.name}")
    except Exception:  # noqa: BLE001 - e.g. a layer with several outputs
        return None
    return view, TARGET


@dataclass(frozen=True)
class NeuronCanvas:
    """Where a unit's pattern is optimized: a small view and the unit in it.

    Attributes:
        view: the model up to the layer (its value before a final ReLU) on a ``size`` input;
            None when no smaller input works.
        path: the layer's path in ``view`` (in the model when ``view`` is None).
        size: ``(height, width)`` of the optimized input.
        unit: the unit's position in ``view``'s layer output.
        box: the unit's receptive field in ``view``'s input ``(top, left, bottom, right)``.
        full_unit: the unit of the full model computing the same function (same weights, same
            pixel phase) whose field is ``full_box`` in the full input.
        full_box: that field in the full input.
    """

    view: Any
    path: str
    size: tuple[int, int]
    unit: tuple[int, int]
    box: tuple[int, int, int, int]
    full_unit: tuple[int, int]
    full_box: tuple[int, int, int, int]


def _inside(rf: Any, axis: int, size: int) -> list[int]:
    """Units along ``axis`` whose whole nominal field lies inside ``[0, size)``."""
    first = math.ceil(-rf.start[axis] / rf.stride[axis])  # the first field starting at >= 0
    return [
        i
        for i in range(max(first, 0), rf.map_size[axis])
        if rf.start[axis] + i * rf.stride[axis] + rf.size[axis] <= size
    ]


def canvas_size(rf: Any) -> tuple[int, int] | None:
    """The smallest input ``(h, w)`` on which a unit sees its whole field as in the full model.

    Each side ``s`` is at least the field's size and keeps ``s = H (mod stride)``, so that
    every intermediate map has the same size modulo its stride as in the full model (padding
    splits and pooling grids line up). None when no side would be smaller than the input, or
    the field is global.
    """
    if rf.is_global or len(rf.map_size) != 2:
        return None
    sides = []
    for axis in range(2):
        big, stride = rf.input_size[axis], rf.stride[axis]
        side = rf.size[axis] + (big - rf.size[axis]) % stride
        while side < big and not _inside(rf, axis, side):
            side += stride
        sides.append(min(side, big))
    return None if tuple(sides) == tuple(rf.input_size) else (sides[0], sides[1])


def neuron_canvas(model: Any, layer: str) -> NeuronCanvas:
    """The smallest input on which a unit of ``layer`` sees its whole field, as in the full model.

    The canvas comes from :func:`canvas_size`. A unit whose nominal field lies inside it never
    sees padding and computes exactly what the full model's units compute on the same pixels
    (shifting a unit by whole strides shifts its whole computation by whole strides of every
    layer below it). The most central such unit is used. When no smaller canvas works (a
    global field, a layer that needs the full size), the full model and its centre unit are
    returned, with ``view`` None.

    Raises:
        ValueError: ``layer`` is not a spatial layer of ``model``.
    """
    full = kerasviz.receptive_field(model, layer)
    centre = tuple(m // 2 for m in full.map_size)
    fallback = NeuronCanvas(
        None, layer, tuple(full.input_size), centre, full.box(*centre), centre, full.box(*centre)
    )
    size = canvas_size(full)
    inside = [_inside(full, axis, full.input_size[axis]) for axis in range(2)] if size else []
    if size is None or not inside[0] or not inside[1]:
        return fallback
    plain = truncated_view(model, layer, size)
    built = truncated_view(model, layer, size, pre_relu=True)
    if plain is None or built is None:
        return fallback
    view, path = built
    try:
        rf = kerasviz.receptive_field(*plain)
    except ValueError:
        return fallback
    units = [_inside(rf, axis, size[axis]) for axis in range(2)]
    same = rf.stride == full.stride and rf.size == full.size and rf.start == full.start
    if not units[0] or not units[1] or not same:
        return fallback
    unit = tuple(u[(len(u) - 1) // 2] for u in units)
    full_unit = tuple(min(inside[a], key=lambda j, a=a: abs(j - centre[a])) for a in range(2))
    return NeuronCanvas(view, path, size, unit, rf.box(*unit), full_unit, full.box(*full_unit))


def paste(canvas: np.ndarray, patch: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``canvas`` (h, w, c) with ``patch`` written into ``box`` (top, left, bottom, right)."""
    out = np.array(canvas, copy=True)
    top, left, bottom, right = box
    out[top:bottom, left:right] = patch
    return out
