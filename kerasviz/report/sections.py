"""The report's analyses: each section calls kerasviz's compute functions and draws with plot.

Every section is a function ``(subjects, settings, sec)`` listed once in :data:`SECTIONS`. It
reads prepared subjects (:func:`~kerasviz.report.subject.prepare`), makes one batched call per
method for all the images it shows, and adds figures and tables to ``sec``. A section whose
cost grows with its sizes also has a cost function ``(subjects, settings, costs) -> Knobs``:
the time budget (:mod:`~kerasviz.report.schedule`) lowers those sizes to fit, and the captions
say what was done.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

import kerasviz
from kerasviz import metrics, plot

# No public function lists a model's leaf layers yet; these are the library's own walkers.
from kerasviz._graph import is_graph_model, iter_layers
from kerasviz._layers import is_conv, output_shape, spatial_layers
from kerasviz.attribution.cams import project_host
from kerasviz.report.budget import Costs, Knobs, run_optimization
from kerasviz.report.page import Section
from kerasviz.report.subject import Settings, Subject, forward
from kerasviz.report.views import canvas_size, neuron_canvas, paste, truncated_view

#: Costs of a subject's model: ``costs(subject) -> Costs``.
CostsOf = Callable[[Subject], Costs]

#: The pointing game's standard tolerance: 15 px at 224 px (Zhang et al., 2016; TorchRay).
STANDARD_TOLERANCE = (15, 224)


def _within(st: Settings) -> str:
    return ", within the time budget" if st.budgeted else ""


def _advance(st: Settings, units: float = 1.0) -> None:
    if st.work is not None:
        st.work.advance(units)


def _expect(st: Settings, units: float) -> None:
    if st.work is not None:
        st.work.expect(units)


def _input_hw(s: Subject) -> tuple[int, int]:
    return int(s.inputs.shape[1]), int(s.inputs.shape[2])


def _plots(figures: float, panels: float = 0.0) -> float:
    """Seconds to draw and save ``figures`` figures of ``panels`` panels in all (matplotlib:
    each panel is an axes to build and draw)."""
    return 0.25 * figures + 0.035 * panels


def _spatial(shape: tuple) -> str:
    return "x".join(str(s) for s in shape)


def layer_table(model: Any) -> tuple[list[str], list[list[Any]]]:
    """Every leaf layer with its type, output shape and receptive field (size, stride, start).

    Layers whose field is not defined (e.g. after an upsampling) show "-".
    """
    header = ["layer", "type", "output shape", "RF size", "RF stride", "RF start"]
    rows = []
    for path, layer in iter_layers(model):
        if is_graph_model(layer):
            continue
        try:
            shape = str(tuple(output_shape(layer))[1:])
        except (AttributeError, ValueError):
            shape = "-"
        try:
            rf = kerasviz.receptive_field(model, path)
            if rf.is_global:
                size, stride, start = f"global ({_spatial(rf.size)})", "-", "-"
            else:
                size, stride = _spatial(rf.size), _spatial(rf.stride)
                start = ", ".join(str(s) for s in rf.start)
        except ValueError:
            size = stride = start = "-"
        rows.append([path, type(layer).__name__, shape, size, stride, start])
    return header, rows


def _conv_layers(model: Any) -> list[str]:
    return [
        p for p, layer in spatial_layers(model) if is_conv(layer) and len(output_shape(layer)) == 4
    ]


def _spread(items: list, k: int) -> list:
    """At most ``k`` items, evenly spaced, first and last included."""
    if len(items) <= k:
        return list(items)
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in picks]


def _rgb(images: np.ndarray) -> np.ndarray:
    """Display images with one channel are repeated to grey RGB (every plot accepts RGB)."""
    images = np.asarray(images)
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def _sec_predictions(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """What the model predicts for each image."""
    for s in subjects:
        predicted = s.scores.argmax(axis=1)
        k = min(st.show, len(s.inputs))
        rows, titles = [], []
        for i in range(len(s.inputs)):
            top = np.argsort(-s.scores[i])[:3]
            guesses = ", ".join(f"{s.class_name(c)} {s.scores[i, c]:.2f}" for c in top)
            truth = s.class_name(s.labels[i]) if s.labels is not None else "-"
            rows.append([s.names[i], truth, s.class_name(predicted[i]), guesses])
            if i < k:
                titles.append(
                    f"{s.names[i]}\npred: {s.class_name(predicted[i])} "
                    f"{s.scores[i, predicted[i]]:.2f}"
                )
        if s is subjects[0]:
            fig = plot.gallery(_rgb(s.display[:k]), titles, cols=k)
            sec.image(fig, "predictions", alt=f"The {k} first images with predicted classes")
        if s.labels is not None:
            accuracy = float(np.mean(predicted == s.labels))
            sec.text(f"{s.name}: {accuracy:.1%} of {len(predicted)} images classified correctly.")
        sec.table(
            ["image", "true class", "predicted", "top scores"],
            rows[: max(k, 8)],
            caption=f"{s.name}: model output for each image (the first {min(len(rows), max(k, 8))}).",
        )


def _sec_layers(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """Every layer with its output shape and the exact receptive field of its units in input
    pixels.
    """
    for s in subjects:
        header, rows = layer_table(s.model)
        sec.table(
            header,
            rows,
            caption=f"{s.name}: receptive fields in input pixels; unit (i, j) sees rows "
            "start + i*stride ... + size - 1. The CAM layer is " + str(s.cam_layer) + ".",
        )


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")


def _feature_maps_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    c = costs(subjects[0])
    layers = len(_conv_layers(subjects[0].model))

    def cost(k: dict) -> float:
        grids = min(k["max_feature_layers"], layers)
        return c.compile() * 0.5 + c.forward + _plots(2 + grids, 21 + grids * k["feature_channels"])

    return Knobs(
        {"max_feature_layers": st.max_feature_layers, "feature_channels": st.feature_channels},
        [("max_feature_layers", 6), ("feature_channels", 16), ("max_feature_layers", 3)],
        cost,
        lambda k: (
            f"{min(k['max_feature_layers'], layers)} of {layers} conv layers, "
            f"{k['feature_channels']} channels each"
        ),
        weight=0.25,
        backward=False,
    )


def _sec_feature_maps(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """The activations of the conv layers for one image."""
    s = subjects[0]
    convs = _conv_layers(s.model)
    shown = _spread(convs, st.max_feature_layers)
    if len(shown) < len(convs):
        sec.text(
            f"{len(shown)} of the {len(convs)} conv layers, evenly spaced{_within(st)}.",
            note=True,
        )
    progression = _spread([p for p, _ in spatial_layers(s.model)], 20)
    _expect(st, len(shown) + 3)
    maps = kerasviz.feature_maps(s.model, s.inputs[:1], list(dict.fromkeys(progression + shown)))
    _advance(st)
    sec.image(
        plot.layer_progression({p: maps[p] for p in progression}, image=0),
        "layer_progression",
        alt="The mean activation of each spatial layer for the first image",
        caption=f"{s.names[0]}: the channel mean of each spatial layer, from input to output.",
    )
    last = maps[shown[-1]][0]
    busiest = int(np.argmax(last.mean(axis=(0, 1))))
    sec.image(
        plot.channel(last, busiest, title=f"{shown[-1]}, channel {busiest}"),
        "feature_map_channel",
        alt=f"Channel {busiest} of {shown[-1]}",
        caption=f"The most active channel of {shown[-1]} in its own units.",
    )
    for k, path in enumerate(shown):
        count = min(st.feature_channels, maps[path].shape[-1])
        sec.image(
            plot.feature_map_grid(
                maps[path][0],
                normalize="standardize",
                channels=count,
                title=f"{path}  {_spatial(maps[path].shape[1:])}",
            ),
            f"feature_maps_{k}_{_slug(path)}",
            alt=f"Feature maps of {path}",
            caption=f"{path}: the first {count} of {maps[path].shape[-1]} channels, each "
            f"standardized to mean 128 and std 64{_within(st)}.",
        )
        _advance(st)


def _kernels(model: Any, convs: list[str]) -> list[tuple[str, np.ndarray]]:
    """``(path, kernel)`` of each convolution with a 4D ``kernel`` weight."""
    kernels = [(path, kerasviz.filter_weights(model, path).get("kernel")) for path in convs]
    return [(path, k) for path, k in kernels if k is not None and k.ndim == 4]


def _depthwise_filters(s: Subject, st: Settings, sec: Section) -> None:
    """Models whose deeper spatial filters are all depthwise (MobileNet): one kernel per channel."""
    for path in _conv_layers(s.model):
        kernel = kerasviz.filter_weights(s.model, path).get("depthwise_kernel")
        if kernel is not None and kernel.shape[0] * kernel.shape[1] > 1:
            kh, kw, cin, mult = kernel.shape
            per_channel = kernel.reshape(kh, kw, 1, cin * mult)
            sec.image(
                plot.filter_channel_average(per_channel, max_filters=st.filters, title=path),
                "filters_depthwise",
                alt=f"Depthwise filters of {path}",
                caption=f"{path} {kernel.shape}: the deeper spatial filters are depthwise, one "
                f"per input channel (the first {min(st.filters, cin * mult)}, grey is zero"
                f"{_within(st)}).",
            )
            return
    sec.text("No deeper convolution has a spatial kernel to show.", note=True)


def _filters_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    return Knobs(
        {"filters": st.filters, "depth_sections": st.depth_sections},
        [("filters", 16), ("depth_sections", 4), ("filters", 8)],
        lambda k: 0.5 + _plots(3, 2 * k["filters"] + k["depth_sections"] ** 2),
        lambda k: (
            f"{k['filters']} filters per figure, {k['depth_sections']}x"
            f"{k['depth_sections']} depth sections"
        ),
        weight=0.15,
        backward=False,
    )


def _predictions_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    shown = min(st.show, len(subjects[0].inputs))
    return Knobs({}, cost=lambda k: _plots(1, shown) + 0.1 * len(subjects), backward=False)


def _layers_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    count = sum(len(list(iter_layers(s.model))) for s in subjects)
    return Knobs({}, cost=lambda k: 0.2 + 0.005 * count, backward=False)


def _sec_filters(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """The learned weights of the first layer and of deeper layers."""
    s = subjects[0]
    kernels = _kernels(s.model, _conv_layers(s.model))
    if not kernels:
        sec.text("The model has no Conv2D layer with a kernel to show.", note=True)
        return
    path, kernel = kernels[0]
    if kernel.shape[2] == 3:
        fig = plot.filter_rgb(kernel, max_filters=st.filters, title=f"{path} {kernel.shape}")
        caption = (
            f"{path}: the first {min(st.filters, kernel.shape[3])} of {kernel.shape[3]} filters, "
            "each as an RGB tile followed by its R, G and B weights in grey (one min-max scale "
            f"per filter){_within(st)}."
        )
    else:
        fig = plot.filter_channel_average(
            kernel, max_filters=st.filters, title=f"{path} {kernel.shape}"
        )
        caption = (
            f"{path}: the first {min(st.filters, kernel.shape[3])} of {kernel.shape[3]} filters, "
            f"each averaged over its input channels{_within(st)}."
        )
    sec.image(fig, "filters_first", alt=f"First-layer filters of {path}", caption=caption)
    deeper = [(p, k) for p, k in kernels[1:] if k.shape[0] * k.shape[1] > 1]
    if not deeper:
        _depthwise_filters(s, st, sec)
    else:
        path, kernel = deeper[0]
        sec.image(
            plot.filter_depth_sections(
                kernel, max_filters=st.depth_sections, max_inputs=st.depth_sections, title=path
            ),
            "filters_depth_sections",
            alt=f"Depth sections of the filters of {path}",
            caption=f"{path} {kernel.shape}: one filter per row, one input channel per column "
            f"(the first {st.depth_sections} of each); grey is zero, each row on one scale"
            f"{_within(st)}.",
        )
        path, kernel = deeper[-1]
        sec.image(
            plot.filter_channel_average(kernel, max_filters=st.filters, title=path),
            "filters_channel_average",
            alt=f"Channel averages of the filters of {path}",
            caption=f"{path} {kernel.shape}: the first {min(st.filters, kernel.shape[3])} "
            "filters, each averaged over its input channels, on one signed scale (grey is zero)"
            f"{_within(st)}.",
        )


def _pattern_canvas(s: Subject, path: str, scale: int) -> tuple[int, int]:
    """The filter-pattern canvas at ``scale`` percent of the input side, kept congruent to the
    input modulo the layer's stride (the maps line up as in the full model)."""
    rf = kerasviz.receptive_field(s.model, path)
    sides = []
    for axis, big in enumerate(_input_hw(s)):
        stride = max(rf.stride[axis], 1) if not rf.is_global else 1
        cut = int((big - big * scale / 100.0) // stride) * stride
        side = big - cut
        sides.append(side if side >= max(2 * stride, 16) else big)
    return sides[0], sides[1]


def _step_size(steps: int) -> float:
    """Adam's step for a pattern of ``steps`` steps: 0.05 (the library's) at 96 steps, larger
    for fewer (up to 0.2), so that a pattern cut short by the budget still moves as far."""
    return float(min(0.2, 0.05 * max(1.0, (96 / max(steps, 1)) ** 0.5)))


def _pattern_channels(s: Subject, path: str) -> int:
    return int(kerasviz.resolve_layer(s.model, path)[1].output.shape[-1])


def _filter_patterns_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    s, c = subjects[0], costs(subjects[0])
    path = s.cam_layer
    total = _pattern_channels(s, path)
    h, w = _input_hw(s)

    def cost(k: dict) -> float:
        ch, cw = _pattern_canvas(s, path, k["pattern_scale"])
        rows = min(k["pattern_channels"], total) * k["pattern_steps"]
        return c.compile(path, 2.5) + 1.15 * c.rows(rows, path, ch * cw / (h * w)) + _plots(0.5)

    def describe(k: dict) -> str:
        ch, cw = _pattern_canvas(s, path, k["pattern_scale"])
        canvas = f", a {ch}x{cw} canvas" if (ch, cw) != (h, w) else ""
        count = min(k["pattern_channels"], total)
        return f"{count} of {total} channels, {k['pattern_steps']} steps{canvas}"

    return Knobs(
        {
            "pattern_channels": st.pattern_channels,
            "pattern_steps": st.pattern_steps,
            "pattern_scale": st.pattern_scale,
        },
        [
            ("pattern_steps", 48),
            ("pattern_scale", 75),
            ("pattern_channels", 16),
            ("pattern_steps", 32),
            ("pattern_scale", 50),
            ("pattern_channels", 8),
            ("pattern_steps", 16),
            ("pattern_channels", 4),
            ("pattern_steps", 8),
        ],
        cost,
        describe,
        weight=1.4,
        elastic=True,
    )


def _sec_filter_patterns(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """What each channel of one layer responds to most, found by gradient ascent on the input."""
    s = subjects[0]
    path = s.cam_layer
    total = _pattern_channels(s, path)
    count = min(st.pattern_channels, total)
    size = _pattern_canvas(s, path, st.pattern_scale)
    model, view_path = s.model, path
    if size != _input_hw(s):
        built = truncated_view(s.model, path, size, pre_relu=True)
        if built is None:
            size = _input_hw(s)
        else:
            model, view_path = built
    _expect(st, st.pattern_steps)
    patterns, steps = run_optimization(
        st.work,
        st.pattern_steps,
        lambda **kw: kerasviz.filter_patterns(
            model,
            view_path,
            channels=range(count),
            steps=st.pattern_steps,
            start="noise",
            parametrization="fourier",
            learning_rate=_step_size(st.pattern_steps),
            value_range=s.space.value_range,
            **kw,
        ),
    )
    grid = plot.image_grid(
        s.space.to_display(patterns, clip=False), cols=min(8, count), margin=5, normalize="minmax"
    )
    done = (
        f"{steps} steps"
        if steps == st.pattern_steps
        else f"{steps} of {st.pattern_steps} planned steps (stopped at the deadline)"
    )
    canvas = (
        f" on a {size[0]}x{size[1]} canvas (the layers up to {path} run on any size; the input "
        f"is {_input_hw(s)[0]}x{_input_hw(s)[1]})"
        if size != _input_hw(s)
        else ""
    )
    sec.image(
        grid,
        "filter_patterns",
        alt=f"Input patterns that maximize the first {count} channels of {path}",
        caption=f"{path}: the input that maximizes the mean of each of the first {count} of "
        f"{total} channels, {done}{canvas}{_within(st)}; gradient ascent (Adam, step "
        f"{_step_size(st.pattern_steps):.2g}) from seeded low-frequency noise in a decorrelated "
        "Fourier basis, all channels in one batch; each "
        "tile min-max scaled, 8 per row, 5 px margins.",
    )


def _neuron_layer(s: Subject) -> tuple[str, Any]:
    """The deepest conv whose units see at most half of the input (else the first conv)."""
    convs = _conv_layers(s.model)
    best = convs[0]
    for path in convs:
        try:
            rf = kerasviz.receptive_field(s.model, path)
        except ValueError:
            continue
        if not rf.is_global and all(
            2 * a <= b for a, b in zip(rf.size, rf.input_size, strict=True)
        ):
            best = path
    return best, kerasviz.receptive_field(s.model, best)


def _neuron_patterns_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    s, c = subjects[0], costs(subjects[0])
    path, rf = _neuron_layer(s)
    total = _pattern_channels(s, path)
    size = canvas_size(rf) or tuple(rf.input_size)
    area = size[0] * size[1] / float(np.prod(rf.input_size))

    def cost(k: dict) -> float:
        rows = min(k["neurons"], total) * k["neuron_steps"]
        return c.compile(path, 2.5) + c.rows(rows, path, area) + _plots(2, k["neurons"] + 1)

    return Knobs(
        {"neurons": st.neurons, "neuron_steps": st.neuron_steps},
        [
            ("neuron_steps", 48),
            ("neurons", 4),
            ("neuron_steps", 24),
            ("neurons", 2),
            ("neuron_steps", 8),
        ],
        cost,
        lambda k: f"{min(k['neurons'], total)} of {total} channels, {k['neuron_steps']} steps",
        weight=0.6,
        elastic=True,
    )


def _sec_neuron_patterns(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """What single units respond to, shown only inside their receptive field."""
    s = subjects[0]
    path, rf = _neuron_layer(s)
    total = _pattern_channels(s, path)
    channels = list(range(min(st.neurons, total)))
    canvas = neuron_canvas(s.model, path)
    model = s.model if canvas.view is None else canvas.view
    objectives = [kerasviz.neuron(canvas.path, c, canvas.unit) for c in channels]
    _expect(st, st.neuron_steps)
    images, steps = run_optimization(
        st.work,
        st.neuron_steps,
        lambda **kw: kerasviz.maximize(
            model,
            objectives,
            steps=st.neuron_steps,
            start="noise",
            parametrization="fourier",
            regularizers=(),
            transforms=(),
            learning_rate=_step_size(st.neuron_steps),
            value_range=s.space.value_range,
            **kw,
        ),
    )
    t, left, b, r = canvas.box
    crops = s.space.to_display(images[:, t:b, left:r], clip=False)
    fig = plot.gallery(
        [_rgb(plot.normalize(c, "minmax")) for c in crops],
        [f"channel {c}" for c in channels],
        cols=min(8, len(channels)),
        panel_size=1.4,
    )
    box = canvas.full_box
    done = (
        f"{steps} steps"
        if steps == st.neuron_steps
        else f"{steps} of {st.neuron_steps} planned steps (stopped at the deadline)"
    )
    where = (
        f" The input optimized is {canvas.size[0]}x{canvas.size[1]} px, not "
        f"{rf.input_size[0]}x{rf.input_size[1]}: it holds the whole field, and the unit computes "
        "the same function of those pixels there."
        if canvas.view is not None
        else ""
    )
    sec.image(
        fig,
        "neuron_patterns",
        alt=f"Neuron patterns of {path} cropped to the receptive field",
        caption=f"{path}: unit {canvas.full_unit} of {len(channels)} of {total} channels, "
        f"maximized from low-frequency noise in a decorrelated Fourier basis ({done}"
        f"{_within(st)}), cut to its exact receptive field {box} ({_spatial(rf.size)} px); no "
        f"pixel outside it reaches the unit.{where}",
    )
    whole = paste(np.full((*rf.input_size, crops.shape[-1]), 0.5, np.float32), crops[0], box)
    sec.image(
        plot.receptive_field_boxes(
            _rgb(plot.normalize(whole, "minmax")), [box], labels=[f"RF {_spatial(rf.size)}"]
        ),
        "neuron_pattern_full",
        alt=f"The pattern of channel 0 of {path} in place in the input, with its field's box",
        caption=f"The pattern of channel {channels[0]} in place: the unit's receptive field in "
        "the whole input.",
    )


_CAMS = (("Grad-CAM", kerasviz.grad_cam), ("Grad-CAM++", kerasviz.grad_cam_plus_plus))


#: The projections the report sets side by side: label -> ``upsample``.
_PROJECTIONS = {
    "exact RF": "receptive_field",
    "centered": "centered",
    "bilinear resize": "bilinear",
}


def _projected(cam: np.ndarray, rf: Any) -> dict[str, np.ndarray]:
    """A layer-resolution CAM ``(n, h, w)`` under each of :data:`_PROJECTIONS`."""
    return {k: project_host(cam, rf, up, rf.input_size) for k, up in _PROJECTIONS.items()}


def _signed_pair(s: Subject) -> tuple | None:
    """``(input (1, h, w, c), display, (a, b), what)`` for the signed CAM; None for one class."""
    if s.scores.shape[1] < 2:
        return None
    if s.pair is not None:
        x, display, (a, b) = s.pair
        return x[None], display, (int(a), int(b)), "an image holding two objects"
    a, b = (int(c) for c in np.argsort(-s.scores[0])[:2])
    return s.inputs[:1], s.display[0], (a, b), f"{s.names[0]} and its two most likely classes"


def _shared(st: Settings) -> dict:
    """Results one section computes for another (shared batches); empty without ``work``."""
    return st.work.shared if st.work is not None else {}


def _sec_grad_cam(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """Where the evidence for the class lies, projected exactly through the receptive fields,
    beside the default centered interpolation and the usual bilinear resize.
    """
    for s in subjects:
        n = min(st.show, len(s.inputs))
        x, t = s.inputs[:n], s.targets[:n]
        rf = kerasviz.receptive_field(s.model, s.cam_layer)
        # The signed CAM's two rows ride in Grad-CAM's batch: one compiled step, not two. The
        # maps come without ReLU and at the layer's resolution; both are applied here.
        pair = _signed_pair(s) if s is subjects[0] else None
        rows, targets = x, t
        if pair is not None:
            rows = np.concatenate([x, pair[0], pair[0]])
            targets = np.concatenate([t, pair[2]])
        maps = {}
        for name, method in _CAMS[: max(st.cam_methods, 1)]:
            use = (rows, targets) if name == "Grad-CAM" else (x, t)
            raw = method(s.model, *use, s.cam_layer, upsample=None, relu=False)
            if name == "Grad-CAM" and pair is not None:
                _shared(st)[("signed", id(s.model))] = raw[n:]
            cam = np.maximum(raw[:n], 0.0)
            for label, projected in _projected(cam, rf).items():
                maps[f"{name}\n{label}"] = projected
        names = " and ".join(name for name, _ in _CAMS[: max(st.cam_methods, 1)])
        left_out = ", ".join(name for name, _ in _CAMS[max(st.cam_methods, 1) :])
        sec.image(
            plot.heatmaps(_rgb(s.display[:n]), maps),
            f"grad_cam_{_slug(s.name)}",
            alt=f"{names} of {s.name}, back-projected, centered and resized",
            caption=f"{s.name}, layer {s.cam_layer} ({_spatial(rf.map_size)} map, RF "
            f"{_spatial(rf.size)}, stride {_spatial(rf.stride)}, start {rf.start}): each map "
            f"back-projected through the exact receptive fields, interpolated between the field "
            f"centres (the default projection) and resized bilinearly"
            f"{_within(st)}{f' ({left_out} left out)' if left_out else ''}. Targets: "
            + ", ".join(s.class_name(c) for c in t)
            + ".",
        )
        if s is subjects[0]:
            last = tuple(m - 1 for m in rf.map_size)
            centre = tuple(m // 2 for m in rf.map_size)
            zero = (0,) * len(rf.map_size)
            sec.image(
                plot.receptive_field_boxes(
                    _rgb(s.display[0]),
                    [rf.box(*zero), rf.box(*centre), rf.box(*last)],
                    labels=[f"unit {zero}", f"unit {centre}", f"unit {last}"],
                ),
                "cam_receptive_fields",
                alt=f"Receptive fields of three units of {s.cam_layer}",
                caption=f"Where three units of {s.cam_layer} look: unit {zero} sees "
                f"{rf.box(*zero)} (top, left, bottom, right), not the corner pixel a resize "
                "assigns it to.",
            )


def _sec_signed_cam(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """Evidence for one class against another, on one scale."""
    s = subjects[0]
    pair = _signed_pair(s)
    if pair is None:
        sec.text("A signed map compares two classes; this model has one output.", note=True)
        return
    x, display, (a, b), what = pair
    raw = _shared(st).get(("signed", id(s.model)))
    if raw is not None:  # computed in Grad-CAM's batch
        cams = kerasviz.backproject(raw, kerasviz.receptive_field(s.model, s.cam_layer))
    else:
        cams = kerasviz.grad_cam(s.model, np.concatenate([x, x]), [a, b], s.cam_layer, relu=False)
    name_a, name_b = s.class_name(a), s.class_name(b)
    sec.image(
        plot.signed_map(_rgb(display), cams[0], cams[1], labels=(name_a, name_b)),
        "signed_cam",
        alt=f"Signed class activation map, {name_a} against {name_b}",
        caption=f"{what}: the CAM of {name_a} minus the CAM of {name_b}, without ReLU, on one "
        f"scale centred at 0 (red: evidence for {name_a}, blue: for {name_b}).",
    )
    sec.image(
        plot.heatmaps(
            _rgb(display), {name_a: cams[0], name_b: cams[1]}, normalize="signed", cmap="RdBu_r"
        ),
        "signed_cam_each",
        alt=f"The signed CAMs of {name_a} and of {name_b}",
        caption="Each class's signed CAM on the same 0-centred scale.",
    )


def _images(k: dict, s: Subject) -> str:
    n = min(k["show"], len(s.inputs))
    return f"{n} of {len(s.inputs)} image{'s' * (len(s.inputs) > 1)}"


def _grad_cam_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    def cost(k: dict) -> float:
        total = 0.0
        for s in subjects:
            c, n, m = costs(s), min(k["show"], len(s.inputs)), k["cam_methods"]
            extra = 2 if s is subjects[0] else 0  # the signed CAM's rows
            total += m * (c.compile(s.cam_layer) + c.rows(n)) + c.rows(extra)
            total += _plots(2, (1 + 2 * m) * n + 1)
        return total

    def describe(k: dict) -> str:
        methods = " and ".join(name for name, _ in _CAMS[: k["cam_methods"]])
        return f"{_images(k, subjects[0])}, {methods}"

    return Knobs(
        {"show": st.show, "cam_methods": min(st.cam_methods, len(_CAMS))},
        [("show", 1), ("cam_methods", 1)],
        cost,
        describe,
        weight=0.4,
    )


def _signed_cam_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    c = costs(subjects[0])
    # Its two rows run in Grad-CAM's batch when that section runs too (shared batches).
    return Knobs({}, cost=lambda k: 0.1 * c.compile(subjects[0].cam_layer) + _plots(2, 6))


#: The CAMs of the "more-cams" section, in the order the time budget leaves them out (last
#: first): Ablation-CAM's ablations cost the most.
_MORE_CAMS = (
    ("HiResCAM", kerasviz.hires_cam),
    ("Eigen-CAM", kerasviz.eigen_cam),
    ("XGrad-CAM", kerasviz.xgrad_cam),
    ("Ablation-CAM", kerasviz.ablation_cam),
)

_MORE_CAMS_SAY = {
    "HiResCAM": "HiResCAM (gradient x activation summed over channels at each position)",
    "Eigen-CAM": "Eigen-CAM (the activations' first principal component; no gradient, the "
    "same for every class)",
    "XGrad-CAM": "XGrad-CAM (gradients averaged with the activations as weights)",
    "Ablation-CAM": "Ablation-CAM (each channel weighted by the logit's drop when it is zeroed",
}


def _ablated(s: Subject, asked: int) -> tuple[int, int]:
    """``(channels Ablation-CAM zeroes, channels of the CAM layer)`` for ``asked`` channels."""
    total = _pattern_channels(s, s.cam_layer)
    return min(asked, total), total


def more_cam_maps(s: Subject, st: Settings) -> dict[str, np.ndarray]:
    """The CAMs of :data:`_MORE_CAMS` (the first ``st.more_cams``) of ``s``'s first ``st.show``
    images at ``s.cam_layer``, back-projected through the exact receptive fields ``(n, h, w)``.
    """
    n = min(st.show, len(s.inputs))
    x, t = s.inputs[:n], s.targets[:n]
    maps = {}
    for name, method in _MORE_CAMS[: max(st.more_cams, 1)]:
        extra = (
            {"max_channels": _ablated(s, st.ablation_channels)[0]} if name == "Ablation-CAM" else {}
        )
        maps[name] = method(s.model, x, t, s.cam_layer, **extra)
        _advance(st)
    return maps


def _more_cams_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    def cost(k: dict) -> float:
        total = 0.0
        for s in subjects:
            c, n, path = costs(s), min(k["show"], len(s.inputs)), s.cam_layer
            share = c.work.get(path, 1.0)
            for name, _ in _MORE_CAMS[: k["more_cams"]]:
                if name == "Eigen-CAM":  # a forward pass up to the layer
                    total += c.compile(path, 0.5) + c.forward_rows(n, share)
                elif name == "Ablation-CAM":  # the front once, the tail once per channel
                    channels = _ablated(s, k["ablation_channels"])[0]
                    total += (
                        c.compile(path)
                        + c.forward_rows(n)
                        + c.forward_rows(n * channels, 1.0 - share)
                    )
                else:
                    total += c.compile(path) + c.rows(n)
            total += _plots(1, (1 + k["more_cams"]) * n)
        return total

    def describe(k: dict) -> str:
        names = [name for name, _ in _MORE_CAMS[: k["more_cams"]]]
        if "Ablation-CAM" in names:
            counts = {_ablated(s, k["ablation_channels"]) for s in subjects}
            shown = ", ".join(f"{a} of {b}" for a, b in sorted(counts))
            names[-1] = f"Ablation-CAM of {shown} channels"
        return f"{_images(k, subjects[0])}, {', '.join(names)}"

    return Knobs(
        {
            "show": st.show,
            "more_cams": min(max(st.more_cams, 1), len(_MORE_CAMS)),
            "ablation_channels": st.ablation_channels,
        },
        [("ablation_channels", 64), ("show", 1), ("ablation_channels", 16), ("more_cams", 1)],
        cost,
        describe,
        weight=0.3,
    )


def _sec_more_cams(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """More class activation maps of the same layer: other weightings of its channels, each
    projected exactly through the receptive fields.
    """
    methods = [name for name, _ in _MORE_CAMS[: max(st.more_cams, 1)]]
    _expect(st, len(subjects) * len(methods))
    for s in subjects:
        n = min(st.show, len(s.inputs))
        maps = more_cam_maps(s, st)
        ablated, total = _ablated(s, st.ablation_channels)
        said = [_MORE_CAMS_SAY[name] for name in maps]
        if "Ablation-CAM" in maps:
            which = (
                "every channel"
                if ablated == total
                else (f"the {ablated} most active of {total} channels; the others weigh 0")
            )
            said[-1] += f": {which})"
        left_out = [name for name, _ in _MORE_CAMS[len(maps) :]]
        gone = f"; {', '.join(left_out)} left out" if left_out else ""
        sec.image(
            plot.heatmaps(_rgb(s.display[:n]), maps),
            f"more_cams_{_slug(s.name)}",
            alt=f"{', '.join(maps)} of {s.name}",
            caption=f"{s.name}, layer {s.cam_layer}: " + "; ".join(said) + ". Each with ReLU, "
            f"back-projected through the exact receptive fields{gone}{_within(st)}. Targets: "
            + ", ".join(s.class_name(c) for c in s.targets[:n])
            + ".",
        )


def _baseline(s: Subject, n: int) -> np.ndarray:
    """``n`` black images in the model's input space."""
    return s.space.to_model(np.zeros((n, *s.inputs.shape[1:]), np.float32))


#: LRP composites of the gradients section, in the order the time budget leaves them out (last
#: first), with the work of one row in forward+backward rows (the gamma and z^B rules run more
#: convolutions per layer than EpsilonPlus's z+).
_LRP = (
    ("LRP EpsilonPlus", "epsilon_plus", 1.5),
    ("LRP EpsilonGammaBox", "epsilon_gamma_box", 3.0),
)


def _gradients_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    s, c = subjects[0], costs(subjects[0])

    def cost(k: dict) -> float:
        n = min(k["show"], len(s.inputs))
        samples, steps, shap = k["smooth_samples"], k["ig_steps"], k["shap_samples"]
        composites = _LRP[: k["lrp_composites"]]
        rows = n * (1 + samples + steps * (1 + k["ig_blur"]) + shap)
        # DeepLIFT runs the input and its baseline (two rows) through rescaled gradients.
        modified = n * (sum(work for _, _, work in composites) + 3.0 * k["deeplift"])
        # One compiled step per method; one image's saliency reuses the measurement's step.
        # The relevance steps carry a custom gradient per layer: they trace longer.
        traced = (n > 1) + (samples > 0) + (steps > 0) + (shap > 0)
        traced += 1.5 * (len(composites) + k["deeplift"])
        relevance = len(composites) + k["deeplift"] + (shap > 0)
        plots = _plots(1, (2 + (steps > 0)) * n) + (
            _plots(1, (1 + relevance) * n) if relevance else 0
        )
        return traced * c.compile() + c.rows(rows + modified) + plots

    def describe(k: dict) -> str:
        n = min(k["show"], len(s.inputs))
        parts = [f"{n} image{'s' * (n > 1)}"]
        parts.append(
            f"{k['smooth_samples']} SmoothGrad samples" if k["smooth_samples"] else "no SmoothGrad"
        )
        if k["ig_steps"]:
            blur = "" if k["ig_blur"] else ", no blurred baseline"
            parts.append(f"{k['ig_steps']} integrated-gradient steps{blur}")
        else:
            parts.append("no integrated gradients")
        lrp = [name for name, _, _ in _LRP[: k["lrp_composites"]]]
        parts.append(" and ".join(lrp) if lrp else "no LRP")
        parts.append("DeepLIFT" if k["deeplift"] else "no DeepLIFT")
        parts.append(
            f"{k['shap_samples']} GradientSHAP samples" if k["shap_samples"] else "no GradientSHAP"
        )
        return ", ".join(parts)

    return Knobs(
        {
            "show": st.show,
            "smooth_samples": st.smooth_samples,
            "ig_steps": st.ig_steps,
            "ig_blur": int(st.ig_blur),
            "lrp_composites": min(st.lrp_composites, len(_LRP)),
            "deeplift": int(bool(st.deeplift)),
            "shap_samples": st.shap_samples,
        },
        [
            ("smooth_samples", 10),
            ("ig_steps", 16),
            ("shap_samples", 10),
            ("show", 1),
            ("smooth_samples", 4),
            ("ig_steps", 8),
            ("shap_samples", 4),
            ("ig_blur", 0),
            ("lrp_composites", 1),
            ("smooth_samples", 2),
            ("ig_steps", 3),
            # Last, whole methods (each is one more compiled step); LRP EpsilonPlus is the last
            # one left out, and saliency always stays.
            ("shap_samples", 0),
            ("deeplift", 0),
            ("smooth_samples", 0),
            ("ig_steps", 0),
            ("lrp_composites", 0),
        ],
        cost,
        describe,
        weight=1.2,
    )


def _extremes(s: Subject) -> np.ndarray:
    """A black and a white image in the model's input space ``(2, h, w, c)``: GradientSHAP's
    baseline distribution."""
    return s.space.to_model(
        np.stack(
            [np.zeros(s.inputs.shape[1:], np.float32), np.ones(s.inputs.shape[1:], np.float32)]
        )
    )


def relevance_maps(s: Subject, st: Settings) -> tuple[dict[str, np.ndarray], list[str]]:
    """LRP, DeepLIFT and GradientSHAP of ``s``'s first ``st.show`` images, as ``st`` asks.

    Returns:
        ``(maps, notes)``: ``{name: (n, h, w)}`` signed attributions summed over the channels
        (logit units), and a note per method the model has no rule for (raised by the method
        before any work, with the layer's name).
    """
    n = min(st.show, len(s.inputs))
    x, t = s.inputs[:n], s.targets[:n]
    maps: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for name, composite, _ in _LRP[: st.lrp_composites]:
        # z^B needs the range of the first layer's inputs: the model's values of black and
        # white display pixels, per channel.
        bounds = {"value_range": s.space.channel_range} if composite == "epsilon_gamma_box" else {}
        try:
            relevance = kerasviz.lrp(s.model, x, t, composite=composite, **bounds)
        except ValueError as error:
            notes.append(f"{name}: {error}")
            continue
        maps[name] = np.asarray(relevance).sum(axis=-1)
        _advance(st)
    if st.deeplift:
        try:
            maps["DeepLIFT"] = kerasviz.deeplift(s.model, x, t, baseline=_baseline(s, n)).sum(-1)
        except ValueError as error:
            notes.append(f"DeepLIFT: {error}")
        _advance(st)
    if st.shap_samples:
        maps["GradientSHAP"] = kerasviz.gradient_shap(
            s.model, x, t, baselines=_extremes(s), samples=st.shap_samples, seed=0
        ).sum(-1)
        _advance(st, st.shap_samples)
    return maps, notes


def _sec_gradients(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """Pixel-level attributions: input gradients (saliency, SmoothGrad, integrated gradients),
    relevance propagated layer by layer (LRP), and contributions against a reference
    (DeepLIFT, GradientSHAP).
    """
    s = subjects[0]
    n = min(st.show, len(s.inputs))
    x, t = s.inputs[:n], s.targets[:n]
    blur = bool(st.ig_blur) and st.ig_steps > 0
    composites = _LRP[: st.lrp_composites]
    _expect(
        st,
        1
        + st.smooth_samples
        + st.ig_steps * (1 + blur)
        + len(composites)
        + bool(st.deeplift)
        + st.shap_samples,
    )
    maps = {"saliency": kerasviz.saliency(s.model, x, t)}
    _advance(st)
    parts = ["Max |gradient| over colour channels"]
    if st.smooth_samples:
        maps["SmoothGrad"] = kerasviz.smoothgrad(
            s.model, x, t, samples=st.smooth_samples, noise=0.1
        )
        _advance(st, st.smooth_samples)
        parts.append(f"SmoothGrad averages {st.smooth_samples} noisy copies")
    if st.ig_steps:
        maps["IG, black"] = kerasviz.integrated_gradients(
            s.model, x, t, baseline=_baseline(s, n), steps=st.ig_steps
        )
        _advance(st, st.ig_steps)
        if blur:
            maps["IG, blur"] = kerasviz.integrated_gradients(
                s.model, x, t, baseline="blur", steps=st.ig_steps
            )
            _advance(st, st.ig_steps)
        baselines = "a black and from a blurred baseline" if blur else "a black baseline"
        parts.append(f"integrated gradients ({st.ig_steps} steps) from {baselines}")
    left_out = [
        name
        for name, kept in (("SmoothGrad", st.smooth_samples), ("integrated gradients", st.ig_steps))
        if not kept
    ]
    if left_out:
        parts.append(f"{' and '.join(left_out)} left out")
    sec.image(
        plot.heatmaps(_rgb(s.display[:n]), maps, cmap="inferno", alpha=0.7),
        "gradients",
        alt=", ".join(maps),
        caption="; ".join(parts) + f"{_within(st)}.",
    )
    relevance, notes = relevance_maps(s, st)
    for note in notes:
        sec.text(f"Not shown for this model: {note}", note=True)
    left_out = [name for name, _, _ in _LRP[st.lrp_composites :]]
    left_out += [] if st.deeplift else ["DeepLIFT"]
    left_out += [] if st.shap_samples else ["GradientSHAP"]
    if not relevance:
        sec.text(
            f"Relevance and reference attributions: {', '.join(left_out)} left out{_within(st)}.",
            note=True,
        )
        return
    low, high = s.space.channel_range
    described = {
        "LRP EpsilonPlus": "LRP EpsilonPlus (epsilon on dense layers, z+ on convolutions)",
        "LRP EpsilonGammaBox": "LRP EpsilonGammaBox (z^B on the first layer, bounded by the "
        f"input's range per channel, {_span(low, high)}; gamma 0.25 on the other "
        "convolutions, epsilon on dense layers)",
        "DeepLIFT": "DeepLIFT (rescale rule) from a black image",
        "GradientSHAP": f"GradientSHAP ({st.shap_samples} draws from a black and a white baseline)",
    }
    gone = f"; {', '.join(left_out)} left out" if left_out else ""
    sec.image(
        plot.heatmaps(
            _rgb(s.display[:n]),
            {name: _clipped(m) for name, m in relevance.items()},
            normalize="signed",
            cmap="RdBu_r",
            alpha=0.8,
        ),
        "relevance",
        alt=", ".join(relevance),
        caption="Relevance and contributions to the logit, summed over colour channels, each "
        f"map on its own scale centred at 0 and clipped at the {CLIP:g}th percentile of its "
        "magnitude (red: for the class, blue: against): "
        + "; ".join(described[name] for name in relevance)
        + f"{gone}{_within(st)}.",
    )


#: Signed attributions are shown clipped at this percentile of their magnitude per map: a few
#: extreme pixels would otherwise wash out the rest.
CLIP = 99.5


def _clipped(maps: np.ndarray) -> np.ndarray:
    """Each map of ``maps`` ``(n, h, w)`` clipped to +-its :data:`CLIP` percentile of ``|value|``."""
    bound = np.percentile(np.abs(maps), CLIP, axis=(1, 2), keepdims=True)
    return np.clip(maps, -bound, bound)


def _span(low: np.ndarray, high: np.ndarray) -> str:
    """``[0, 1]``, or ``[-124, 152] over the channels`` when they differ."""
    if np.allclose(low, low[0]) and np.allclose(high, high[0]):
        return f"[{low[0]:.3g}, {high[0]:.3g}]"
    return f"[{low.min():.3g}, {high.max():.3g}] over the channels"


# ----------------------------------------------------------------------------- black-box methods


def _grid_segments(height: int, width: int, count: int) -> np.ndarray:
    """Square-ish cells, about ``count`` of them, as integer labels ``(height, width)``."""
    side = max(2, int(round(np.sqrt(count))))
    rows = np.arange(height) * side // height
    cols = np.arange(width) * side // width
    return (rows[:, None] * side + cols[None, :]).astype(np.int32)


def _segments(s: Subject, n: int, count: int) -> tuple[np.ndarray, str]:
    """Superpixel labels ``(n, h, w)`` of the display images and how they were made.

    SLIC on the display pixels (the model's input space may be BGR or mean-subtracted); a grid
    of square cells when scikit-image (the ``blackbox`` extra) is missing or SLIC finds one
    segment.
    """
    from kerasviz.attribution.blackbox import superpixels

    h, w = _input_hw(s)
    try:
        labels, counts = superpixels(s.display[:n].astype(np.float32), count)
        return labels, f"SLIC superpixels ({', '.join(str(int(k)) for k in counts)})"
    except ValueError as error:
        why = (
            "scikit-image is not installed"
            if "scikit-image" in str(error)
            else "SLIC found one segment"
        )
        grid = np.broadcast_to(_grid_segments(h, w, count), (n, h, w))
        cells = int(grid[0].max()) + 1
        return np.ascontiguousarray(grid), f"{cells} square cells ({why})"


def _superpixel_count(st: Settings) -> int:
    """Superpixels for LIME and KernelSHAP: ``st.segments``, fewer when LIME has few samples
    (a fit needs several samples per superpixel)."""
    return int(max(8, min(st.segments, st.lime_samples // 4)))


def blackbox_maps(s: Subject, st: Settings) -> dict[str, Any]:
    """LIME, KernelSHAP and RISE of ``s``'s first ``st.show`` images, as ``st`` asks.

    With a deadline (``st.work``), RISE runs in chunks of masks, each seeded anew, until the
    masks asked for are done or the next chunk would end past the deadline: a mean over fewer
    random masks is still RISE's estimate, from fewer samples.

    Returns:
        ``{"segments": (labels (n, h, w), description), "LIME": result, "KernelSHAP": result
        (when asked), "RISE": maps (n, h, w), "RISE masks": masks used}``, the results as the
        methods return them.
    """
    n = min(st.show, len(s.inputs))
    x, t = s.inputs[:n], s.targets[:n]
    labels, how = _segments(s, n, _superpixel_count(st))
    found: dict[str, Any] = {"segments": (labels, how)}
    found["LIME"] = kerasviz.lime(s.model, x, t, segments=labels, samples=st.lime_samples, seed=0)
    _advance(st, st.lime_samples)
    if st.kernel_shap_samples:
        found["KernelSHAP"] = kerasviz.kernel_shap(
            s.model, x, t, segments=labels, samples=st.kernel_shap_samples, seed=0
        )
        _advance(st, st.kernel_shap_samples)
    # Masked pixels take the image's mean colour, as LIME's removed superpixels take theirs
    # (black, RISE's default, hides dark objects from it).
    mean = x.mean(axis=(1, 2), keepdims=True)
    deadline = None if st.work is None else st.work.deadline
    if deadline is None:
        found["RISE"] = kerasviz.rise(s.model, x, t, masks=st.rise_masks, baseline=mean, seed=0)
        found["RISE masks"] = st.rise_masks
        _advance(st, st.rise_masks)
        return found
    # Chunks of one size: one compiled step serves them all.
    chunks = min(8, math.ceil(st.rise_masks / 16))
    chunk = math.ceil(st.rise_masks / chunks)
    clock, total, done = st.work.clock, 0.0, 0
    for k in range(chunks):
        start = clock()
        total = total + chunk * kerasviz.rise(
            s.model, x, t, masks=chunk, baseline=mean, seed=k
        ).astype(np.float64)
        _advance(st, max(min(chunk, st.rise_masks - done), 0))
        done += chunk
        now = clock()
        if now + (now - start) > deadline:
            break
    found["RISE"] = (total / done).astype(np.float32)
    found["RISE masks"] = done
    return found


def _boundaries(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``image`` (h, w, 3) with the superpixels' borders in yellow."""
    edge = np.zeros(labels.shape, bool)
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    out = np.array(image, np.float32, copy=True)
    out[edge] = (1.0, 0.9, 0.0)
    return out


def _blackbox_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    s, c = subjects[0], costs(subjects[0])
    h, w = _input_hw(s)

    def cost(k: dict) -> float:
        n = min(k["show"], len(s.inputs))
        shap = k["kernel_shap_samples"]
        rows = n * (k["lime_samples"] + (shap + 2 if shap else 0) + k["rise_masks"])
        traced = 2 + (shap > 0)
        slic = 4e-6 * n * h * w  # about 0.2 s per 224x224 image
        return traced * c.compile(None, 0.5) + c.forward_rows(rows) + slic + _plots(1, 4 * n)

    def describe(k: dict) -> str:
        shap = k["kernel_shap_samples"]
        return (
            f"{_images(k, s)}, {k['lime_samples']} LIME samples, "
            + (f"{shap} KernelSHAP coalitions" if shap else "no KernelSHAP")
            + f", {k['rise_masks']} RISE masks"
        )

    return Knobs(
        {
            "show": st.show,
            "lime_samples": st.lime_samples,
            "kernel_shap_samples": st.kernel_shap_samples,
            "rise_masks": st.rise_masks,
        },
        [
            ("rise_masks", 1000),
            ("lime_samples", 250),
            ("kernel_shap_samples", 250),
            ("show", 1),
            ("rise_masks", 400),
            ("lime_samples", 100),
            ("kernel_shap_samples", 100),
            ("rise_masks", 200),
            ("lime_samples", 50),
            ("kernel_shap_samples", 0),
            ("rise_masks", 64),
            ("lime_samples", 24),
            ("rise_masks", 32),
            ("lime_samples", 16),
        ],
        cost,
        describe,
        weight=0.4,
        # Forward passes only, but thousands of them: skipped like the gradient sections when
        # one forward+backward pass already exceeds the budget.
        backward=True,
        # RISE's masks stop at the deadline (blackbox_maps).
        elastic=True,
    )


def _sec_blackbox(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """Black-box explanations from the model's outputs alone, on perturbed copies of the image:
    LIME and KernelSHAP switch superpixels off, RISE multiplies by random smooth masks.
    """
    s = subjects[0]
    n = min(st.show, len(s.inputs))
    _expect(st, st.lime_samples + st.kernel_shap_samples + st.rise_masks)
    found = blackbox_maps(s, st)
    labels, how = found["segments"]
    methods = [m for m in ("LIME", "KernelSHAP", "RISE") if m in found]
    pictures, titles = [], []
    for i in range(n):
        image = _rgb(s.display[i])
        pictures.append(_boundaries(image, labels[i]))
        titles.append(f"{s.names[i]}\n{s.class_name(s.targets[i])}")
        for name in methods:
            heat = found[name] if name == "RISE" else found[name].maps
            signed = name != "RISE"
            pictures.append(
                plot.overlay(
                    image,
                    heat[i],
                    alpha=0.7 if signed else 0.55,
                    cmap="RdBu_r" if signed else "jet",
                    normalize="signed" if signed else "minmax",
                )
            )
            titles.append(name if i == 0 else "")
    masks = found["RISE masks"]
    rise = (
        f"{masks} random"
        if masks >= st.rise_masks
        else f"{masks} of {st.rise_masks} planned (stopped at the deadline)"
    )
    shap = (
        f"KernelSHAP ({st.kernel_shap_samples} coalitions, Shapley kernel, the weights sum to "
        "f(x) - f(all removed)); "
        if "KernelSHAP" in found
        else ""
    )
    left_out = "" if "KernelSHAP" in found else "; KernelSHAP left out"
    sec.image(
        plot.gallery(pictures, titles, cols=1 + len(methods), panel_size=2.2),
        "blackbox",
        alt=f"{', '.join(methods)} of {n} image{'s' * (n > 1)}",
        caption=f"{how} outlined in yellow; LIME ({st.lime_samples} samples, a weighted ridge "
        f"fit of the class probability on the superpixels kept); {shap}removed superpixels take "
        "their mean colour; LIME and KernelSHAP in red for the class, blue against, centred at "
        f"0. RISE ({rise} 7x7-cell masks, each kept with probability 0.5, "
        f"weighted by the masked image's probability; masked pixels take the image's mean colour; "
        f"min-max scaled){left_out}{_within(st)}.",
    )
    if "KernelSHAP" in found:
        result = found["KernelSHAP"]
        rows = [
            [
                s.names[i],
                s.class_name(s.targets[i]),
                int(result.num_segments[i]),
                float(result.score[i]),
                float(result.intercept[i]),
                float(result.weights[i].sum()),
            ]
            for i in range(n)
        ]
        sec.table(
            [
                "image",
                "class",
                "superpixels",
                "p(class)",
                "p(class), all removed",
                "sum of KernelSHAP weights",
            ],
            rows,
            caption="KernelSHAP's efficiency: the weights share out exactly the probability's "
            "drop when every superpixel is removed.",
        )


def _inversion_layers(s: Subject, count: int) -> list[str]:
    """``count`` of the three depths inverted (shallow first: deeper ones cost more)."""
    return _spread(_conv_layers(s.model), 3)[: max(count, 1)]


def _inversion_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    s, c = subjects[0], costs(subjects[0])
    depths = _spread(_conv_layers(s.model), 3)

    def cost(k: dict) -> float:
        layers = _inversion_layers(s, k["inversion_layers"])
        steps = k["inversion_steps"]
        total = sum(c.compile(p, 2.5) + 1.1 * c.rows(steps, p) for p in layers)
        return total + _plots(1, len(layers) + 1)

    return Knobs(
        {"inversion_layers": st.inversion_layers, "inversion_steps": st.inversion_steps},
        [
            ("inversion_steps", 60),
            ("inversion_steps", 24),
            ("inversion_layers", 2),
            ("inversion_steps", 12),
            ("inversion_layers", 1),
            ("inversion_steps", 6),
        ],
        cost,
        lambda k: (
            f"{min(k['inversion_layers'], len(depths))} of {len(depths)} depths, "
            f"{k['inversion_steps']} steps"
        ),
        weight=0.8,
        elastic=True,
    )


def _sec_inversion(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """Images reconstructed from the features of three depths."""
    s = subjects[0]
    depths = _inversion_layers(s, st.inversion_layers)
    all_depths = _spread(_conv_layers(s.model), 3)
    original = s.display[0]
    pictures, titles, rows, done = [_rgb(original)], ["original"], [], []
    _expect(st, st.inversion_steps * len(depths))
    for path in depths:
        steps, value_range = st.inversion_steps, s.space.value_range
        images, steps = run_optimization(
            st.work,
            steps,
            lambda path=path, steps=steps, value_range=value_range, **kw: kerasviz.invert(
                s.model, s.inputs[0], path, steps=steps, value_range=value_range, **kw
            ),
        )
        done.append(steps)
        shown = s.space.to_display(images)
        shown = shown[0] if shown.ndim == 4 else shown
        ssim = float(metrics.ssim(shown, original))
        psnr = float(metrics.psnr(shown, original))
        pictures.append(_rgb(shown))
        titles.append(f"{path}\nSSIM {ssim:.2f}")
        rf = kerasviz.receptive_field(s.model, path)
        rows.append([path, _spatial(rf.size), ssim, psnr])
    steps = (
        f"{st.inversion_steps} steps"
        if all(d == st.inversion_steps for d in done)
        else f"{', '.join(map(str, done))} of {st.inversion_steps} planned steps (stopped at "
        "the deadline)"
    )
    skipped = (
        f"; {len(all_depths) - len(depths)} deeper of the {len(all_depths)} depths left out"
        if len(depths) < len(all_depths)
        else ""
    )
    sec.image(
        plot.gallery(pictures, titles, cols=len(pictures)),
        "inversion",
        alt=f"The image reconstructed from the features of {len(depths)} layers",
        caption=f"Reconstructions from {', '.join(depths)} ({steps}{skipped}{_within(st)}), "
        "with their SSIM to the original.",
    )
    sec.table(
        ["layer", "RF size", "SSIM", "PSNR (dB)"],
        rows,
        caption="Deeper features keep less of the image.",
    )


def _adversarial_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    s, c = subjects[0], costs(subjects[0])

    def cost(k: dict) -> float:
        n = min(k["show"], len(s.inputs))
        return c.compile() + c.rows(n) + n * c.forward + _plots(1, 3 * n)

    return Knobs({"show": st.show}, [("show", 1)], cost, lambda k: _images(k, s), weight=0.25)


def _sec_adversarial(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """A small perturbation along the gradient's sign."""
    s = subjects[0]
    n = min(st.show, len(s.inputs))
    x, t = s.inputs[:n], s.targets[:n]
    epsilon = st.epsilon * s.space.scale
    adversarial = kerasviz.fgsm(s.model, x, t, epsilon=epsilon, value_range=s.space.value_range)
    after = forward(s.model, np.asarray(adversarial))
    shown = s.space.to_display(adversarial)
    pictures, titles, rows = [], [], []
    for i in range(n):
        before_c, after_c = int(s.scores[i].argmax()), int(after[i].argmax())
        delta = shown[i] - s.display[i]
        pictures += [_rgb(s.display[i]), _rgb(plot.normalize(delta, "signed")), _rgb(shown[i])]
        titles += [
            f"{s.class_name(before_c)} {s.scores[i, before_c]:.2f}",
            f"perturbation (eps {st.epsilon:g})",
            f"{s.class_name(after_c)} {after[i, after_c]:.2f}",
        ]
        rows.append(
            [
                s.names[i],
                f"{s.class_name(before_c)} ({s.scores[i, before_c]:.2f})",
                f"{s.class_name(after_c)} ({after[i, after_c]:.2f})",
                f"{s.class_name(t[i])}: {s.scores[i, t[i]]:.2f} -> {after[i, t[i]]:.2f}",
            ]
        )
    sec.image(
        plot.gallery(pictures, titles, cols=3),
        "fgsm",
        alt="Original images, FGSM perturbations and adversarial images",
        caption=f"FGSM: one signed-gradient step of {st.epsilon:g} of the pixel range away from "
        f"each image's class (perturbation shown amplified){_within(st)}.",
    )
    sec.table(["image", "before", "after", "score of the attacked class"], rows)


def standard_tolerance(input_size: tuple[int, int]) -> int:
    """The pointing game's standard tolerance in pixels: 15 px at 224 px, scaled to the input.

    The scale is the mean of the input's height and width over 224 (Zhang et al., 2016).
    """
    px, at = STANDARD_TOLERANCE
    return int(round(px * (input_size[0] + input_size[1]) / 2 / at))


def localization_scores(s: Subject, settings: Settings) -> list[list[Any]]:
    """Pointing game and energy pointing game of each method on ``s.masks`` (true classes).

    Returns one row per method and projection: name, projection, the strict pointing game
    (the map's maximum on the object), the pointing game at the standard tolerance
    (:func:`standard_tolerance`), the energy pointing game (shares in [0, 1]) and seconds per
    image. ``s`` is prepared (:func:`~kerasviz.report.subject.prepare`) and has ``masks``.
    """
    m, steps = min(settings.localization, len(s.inputs)), settings.localization_steps
    x, masks = s.inputs[:m], s.masks[:m]
    t = s.labels[:m] if s.labels is not None else s.targets[:m]
    rf = kerasviz.receptive_field(s.model, s.cam_layer)
    tolerance = standard_tolerance(_input_hw(s))

    def cams(method: Callable) -> dict[str, np.ndarray]:
        return _projected(method(s.model, x, t, s.cam_layer, upsample=None), rf)

    methods: dict[str, Callable[[], dict[str, np.ndarray]]] = {
        name: functools.partial(cams, method) for name, method in _CAMS
    } | {
        "saliency": lambda: {"-": kerasviz.saliency(s.model, x, t)},
        "SmoothGrad": lambda: {"-": kerasviz.smoothgrad(s.model, x, t, samples=steps, noise=0.1)},
        "integrated gradients": lambda: {
            "-": kerasviz.integrated_gradients(s.model, x, t, baseline=_baseline(s, m), steps=steps)
        },
    }
    rows = []
    for name, compute in methods.items():
        start = time.perf_counter()
        results = compute()
        seconds = (time.perf_counter() - start) / m / len(results)
        _advance(settings)
        for projection, maps in results.items():
            maps = plot.reduce_channels(maps, "abs_max") if np.ndim(maps) == 4 else maps
            strict = float(np.mean(metrics.pointing_game(maps, masks)))
            standard = float(np.mean(metrics.pointing_game(maps, masks, tolerance=tolerance)))
            energy = float(np.mean(metrics.energy_pointing_game(maps, masks)))
            rows.append([name, projection, strict, standard, energy, seconds])
    return rows


def _localization_cost(subjects: list[Subject], st: Settings, costs: CostsOf) -> Knobs:
    scored = [s for s in subjects if s.masks is not None]

    def cost(k: dict) -> float:
        total = 0.0
        for s in scored:
            c, m = costs(s), min(k["localization"], len(s.inputs))
            rows = m * (len(_CAMS) + 1 + 2 * k["localization_steps"])
            total += 5 * c.compile() + c.rows(rows) + 0.01 * m
        return total

    return Knobs(
        {"localization": st.localization, "localization_steps": st.localization_steps},
        [
            ("localization_steps", 8),
            ("localization", 12),
            ("localization_steps", 4),
            ("localization", 6),
        ],
        cost,
        lambda k: (
            f"{k['localization']} images, {k['localization_steps']} SmoothGrad samples "
            "and integrated-gradient steps"
        ),
        weight=1.0 if scored else 0.0,
        backward=bool(scored),
    )


def _sec_localization(subjects: list[Subject], st: Settings, sec: Section) -> None:
    """How well each method's map points at the object."""
    scored = [s for s in subjects if s.masks is not None]
    if not scored:
        sec.text(
            "No ground-truth masks were given, so nothing can be scored here; `kerasviz demo` "
            "scores every method on the exact masks of its synthetic images.",
            note=True,
        )
        return
    _expect(st, len(scored) * (len(_CAMS) + 3))
    px, at = STANDARD_TOLERANCE
    for s in scored:
        m = min(st.localization, len(s.inputs))
        h, w = _input_hw(s)
        tolerance = standard_tolerance((h, w))
        rows = localization_scores(s, st)
        sec.table(
            [
                "method",
                "projection",
                "pointing game (strict, 0 px)",
                f"pointing game (standard, {tolerance} px)",
                "energy pointing game",
                "s / image",
            ],
            rows,
            caption=f"{s.name}: {m} held-out images, maps of the true class"
            f"{_within(st)}. Pointing game: share of maps whose maximum lies on the object; "
            f"strict counts only hits on the mask (tolerance 0 px), standard allows {tolerance} "
            f"px around it ({px} px at {at} px, the usual tolerance, scaled to this {h}x{w} "
            "input); energy: share of positive map mass on the object.",
        )


class SectionSpec(NamedTuple):
    """One section of the report: its HTML id, its title, the function that fills it, and
    optionally its cost.

    ``cost(subjects, settings, costs) -> Knobs`` estimates the section's seconds from the
    model's measured :class:`~kerasviz.report.budget.Costs`, with the sizes the time budget may
    lower; None is a section whose cost is small and fixed (no backward pass).
    """

    id: str
    title: str
    build: Callable[[list[Subject], Settings, Section], None]
    cost: Callable[[list[Subject], Settings, CostsOf], Knobs] | None = None

    @property
    def intro(self) -> str:
        """The line under the title: the docstring of ``build``."""
        return " ".join((self.build.__doc__ or "").split())

    @property
    def name(self) -> str:
        """The name ``--sections`` takes: the id with underscores."""
        return self.id.replace("-", "_")


# The report's sections, in page order. A new section is a function (its docstring is the
# section's intro) plus one line here; a section whose cost grows with its sizes adds a cost
# function, so that the time budget can plan it.
SECTIONS = (
    SectionSpec("predictions", "Predictions", _sec_predictions, _predictions_cost),
    SectionSpec("layers", "Layers and receptive fields", _sec_layers, _layers_cost),
    SectionSpec("feature-maps", "Feature maps", _sec_feature_maps, _feature_maps_cost),
    SectionSpec("filters", "Filter weights", _sec_filters, _filters_cost),
    SectionSpec("filter-patterns", "Filter patterns", _sec_filter_patterns, _filter_patterns_cost),
    SectionSpec("neuron-patterns", "Neuron patterns", _sec_neuron_patterns, _neuron_patterns_cost),
    SectionSpec("grad-cam", "Grad-CAM and Grad-CAM++", _sec_grad_cam, _grad_cam_cost),
    SectionSpec("signed-cam", "Signed CAMs of two classes", _sec_signed_cam, _signed_cam_cost),
    SectionSpec(
        "more-cams",
        "HiResCAM, Eigen-CAM, XGrad-CAM and Ablation-CAM",
        _sec_more_cams,
        _more_cams_cost,
    ),
    SectionSpec(
        "gradients",
        "Gradients, relevance (LRP) and reference attributions",
        _sec_gradients,
        _gradients_cost,
    ),
    SectionSpec(
        "blackbox",
        "Black-box explanations: LIME, KernelSHAP and RISE",
        _sec_blackbox,
        _blackbox_cost,
    ),
    SectionSpec("inversion", "Feature inversion", _sec_inversion, _inversion_cost),
    SectionSpec("adversarial", "Adversarial example (FGSM)", _sec_adversarial, _adversarial_cost),
    SectionSpec(
        "localization",
        "Localization on ground-truth masks",
        _sec_localization,
        _localization_cost,
    ),
)
