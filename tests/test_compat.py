"""The compatibility matrix: the public functions on every ``keras.applications`` family.

Sixteen families (:data:`FAMILIES`) are built with ``weights=None`` at their smallest input
size (32 px; 71 for Xception; 75 for InceptionV3 and InceptionResNetV2), in two forms:

- ``flat``: the application itself, ``classes=3``, softmax top;
- ``nested``: ``base(include_top=False)`` in a head ``GlobalAveragePooling2D -> Dense(3)``,
  a ``Sequential`` head for families 0, 1, 4, 5, 8, 9, 12, 13 (their index in
  :data:`FAMILIES`) and a functional one for the others.

Every case checks that the result is finite, not all zero (images from optimizers and attacks
must differ from where they started), of the documented shape, and that the model's state
(weights, layer configs, trainable flags, activations: :func:`model_state`) is what it was right
after the model was built. Cases are ordered by (family, form) and only the current model is
kept alive. Settings are small: two images, two optimization steps, two samples, two path
steps, Score-CAM over two channels, occlusion with half-image patches.

Every check runs on both forms of every family: 16 x 2 x (one case per public function). The
checks run eagerly (``tf.config.run_functions_eagerly``): the same Python code, op by op, without
tracing a graph per function and model, which would cost 45 minutes on 2 CPU cores. The same
functions run compiled on keras.applications families in test_lrp.py, test_probe.py and
test_receptive_field.py, and on small models everywhere else. Each family is a test class, so ``pytest-xdist`` (``--dist
loadscope``, as ``make test`` runs it) gives each family to one worker, which builds its two
models once.

The dashboard, the VisualizationCallback and explain_dataset compose the functions
checked here; they are not in the matrix (test_readonly.py and their own modules check them).
"""

from __future__ import annotations

import gc
import inspect
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_readonly import model_state

import kerasviz
from kerasviz._graph import is_graph_model, iter_layers, run_graph

#: family -> smallest input side Keras accepts for it
FAMILIES = {
    "VGG16": 32,
    "VGG19": 32,
    "ResNet50": 32,
    "ResNet50V2": 32,
    "InceptionV3": 75,
    "InceptionResNetV2": 75,
    "Xception": 71,
    "MobileNet": 32,
    "MobileNetV2": 32,
    "MobileNetV3Small": 32,
    "MobileNetV3Large": 32,
    "DenseNet121": 32,
    "EfficientNetB0": 32,
    "EfficientNetV2B0": 32,
    "ConvNeXtTiny": 32,
    "NASNetMobile": 32,
}
CLASSES = 3
N = 2
QUICK = {"steps": 2, "transforms": (), "regularizers": ()}


@dataclass
class Subject:
    """One built model and what the checks need to know about it."""

    family: str
    form: str
    model: keras.Model
    size: int
    images: np.ndarray
    layer: str  # the default CAM layer's path
    layer_shape: tuple  # its output (h, w, c)
    maps: np.ndarray  # its output on the images, from a plain Keras sub-model
    channels: tuple  # its two channels with the largest mean activation on the images
    state: str  # model_state right after building


def _build(family: str, form: str) -> keras.Model:
    index = list(FAMILIES).index(family)
    size = FAMILIES[family]
    constructor = getattr(keras.applications, family)
    keras.utils.set_random_seed(index)
    if form == "flat":
        return constructor(weights=None, input_shape=(size, size, 3), classes=CLASSES)
    base = constructor(weights=None, include_top=False, input_shape=(size, size, 3))
    gap = keras.layers.GlobalAveragePooling2D(name="head_gap")
    dense = keras.layers.Dense(CLASSES, name="head_dense")
    name = f"{family.lower()}_head"
    if (index // 2) % 2 == 0:
        return keras.Sequential([keras.Input((size, size, 3)), base, gap, dense], name=name)
    inputs = keras.Input((size, size, 3), name="image")
    return keras.Model(inputs, dense(gap(base(inputs))), name=name)


def _graph_of(model: keras.Model, layer: Any) -> keras.Model:
    """The (possibly nested) graph model whose own layers include ``layer``."""
    graphs = [model] + [g for _, g in iter_layers(model) if is_graph_model(g)]
    return next(g for g in graphs if any(inner is layer for inner in g.layers))


def _calibrate(model: keras.Model, images: np.ndarray) -> None:
    """Scales each BatchNormalization to unit root-mean-square output on ``images``.

    Random weights make activations shrink layer after layer in some families (MobileNet's
    logits are about 1e-20), so gradients fall below the optimizers' epsilon and relevance
    below LRP's stabilizer. One pass over the graph, in order: each BatchNormalization gets
    ``moving_mean = 0`` and ``moving_variance`` = the mean square of its input there, as
    training would give it an O(1) output. Not the centred variance: across two images it can
    be tiny, and dividing by it would amplify float32 rounding (compiled and eager results
    then differ in the third digit).
    """

    def call(layer, path, args, kwargs):
        if isinstance(layer, keras.layers.BatchNormalization):
            x = np.asarray(args[0], np.float64)
            mean_square = (x**2).mean(axis=tuple(range(x.ndim - 1)))
            layer.moving_mean.assign(np.zeros_like(mean_square, np.float32))
            layer.moving_variance.assign(mean_square.astype(np.float32))
        return layer(*args, **kwargs)

    run_graph(model, [tf.constant(images)], call=call)


class Zoo:
    """Builds each (family, form) on first use and keeps only the current one alive."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.subject: Subject | None = None

    def get(self, family: str, form: str) -> Subject:
        if self.key != (family, form):
            self.clear()
            model = _build(family, form)
            size = FAMILIES[family]
            images = np.random.default_rng(5).random((N, size, size, 3), dtype=np.float32)
            _calibrate(model, images)
            layer, obj = kerasviz.default_cam_layer(model)
            shape = tuple(obj.output.shape[1:])
            view = keras.Model(_graph_of(model, obj).inputs, obj.output)
            maps = np.asarray(view([images], training=False))
            # the two channels with the largest mean activation: a dead ReLU channel has no
            # gradient to follow
            live = tuple(int(c) for c in np.argsort(-maps.mean((0, 1, 2)))[:2])
            self.subject = Subject(
                family, form, model, size, images, layer, shape, maps, live, model_state(model)
            )
            self.key = (family, form)
        return self.subject

    def clear(self) -> None:
        self.key = self.subject = None
        gc.collect()


@pytest.fixture(scope="class")
def zoo():
    tf.config.run_functions_eagerly(True)
    zoo = Zoo()
    yield zoo
    zoo.clear()
    tf.config.run_functions_eagerly(False)


# ---- checks: one per public function -------------------------------------------------------


def _ok(value: Any, shape: tuple, what: str = "result") -> np.ndarray:
    """Finite, not all zero, of ``shape``."""
    array = np.asarray(value)
    assert array.shape == shape, f"{what}: shape {array.shape}, expected {shape}"
    assert np.isfinite(array).all(), f"{what}: not finite"
    assert np.any(array != 0), f"{what}: all zero"
    return array


def _changed(value: Any, start: Any, shape: tuple, what: str = "images") -> np.ndarray:
    """Finite, of ``shape``, in [0, 1], and different from ``start`` somewhere."""
    array = np.asarray(value)
    assert array.shape == shape, f"{what}: shape {array.shape}, expected {shape}"
    assert np.isfinite(array).all(), f"{what}: not finite"
    assert array.min() >= 0 and array.max() <= 1, f"{what}: outside [0, 1]"
    assert np.any(array != np.asarray(start)), f"{what}: unchanged"
    return array


def _maps(s: Subject) -> tuple:
    return (N, s.size, s.size)


def _like_inputs(s: Subject) -> tuple:
    return (N, s.size, s.size, 3)


def _assert_logits(s: Subject, logits: Any) -> None:
    """``logits`` are the model's pre-softmax scores: checked against a plain call."""
    logits = np.asarray(_ok(logits, (N, CLASSES), "logits"), np.float64)
    outputs = np.asarray(s.model(s.images, training=False), np.float64)
    if s.form == "flat":  # softmax top
        logits = np.exp(logits - logits.max(1, keepdims=True))
        logits /= logits.sum(1, keepdims=True)
    np.testing.assert_allclose(logits, outputs, rtol=1e-4, atol=1e-6 * np.abs(outputs).max())


def check_feature_maps(s: Subject) -> None:
    maps = kerasviz.feature_maps(s.model, s.images, [s.layer])
    assert list(maps) == [s.layer]
    _ok(maps[s.layer], (N, *s.layer_shape))
    np.testing.assert_allclose(maps[s.layer], s.maps, rtol=1e-4, atol=1e-5 * np.abs(s.maps).max())


def check_receptive_field(s: Subject) -> None:
    rf = kerasviz.receptive_field(s.model, s.layer)
    assert tuple(rf.map_size) == s.layer_shape[:2]
    assert tuple(rf.input_size) == (s.size, s.size)
    assert min(rf.size) >= 1 and min(rf.stride) >= 1
    maps = s.maps
    # |.| + 1: the back-projection of a positive map is positive on the pixels some unit sees
    # (NASNet's adjust layers crop one row and column away) and `fill` (0) elsewhere
    projected = kerasviz.backproject(np.abs(maps[..., 0]) + 1, rf)
    assert projected.shape == _maps(s) and np.isfinite(projected).all()
    seen = [np.zeros(s.size, bool) for _ in range(2)]
    for axis, (lows, highs) in enumerate(rf.bounds):
        for low, high in zip(lows, highs, strict=True):
            seen[axis][low:high] = True
    covered = np.outer(*seen)
    assert covered.any() and (projected[:, covered] > 0).all()
    assert (projected[:, ~covered] == 0).all()
    checked = 0
    for path, layer in iter_layers(s.model):
        if is_graph_model(layer) or len(layer.output.shape) != 4:
            continue
        field = kerasviz.receptive_field(s.model, path)
        assert field.map_size == tuple(layer.output.shape[1:3]), path
        assert field.input_size == (s.size, s.size), path
        assert all(hi > lo for lo, hi in field.extent), f"{path}: sees no pixel"
        checked += 1
    assert checked > 10


def check_grad_cam(s: Subject) -> None:
    _ok(kerasviz.grad_cam(s.model, s.images, relu=False), _maps(s))


def check_saliency(s: Subject) -> None:
    _ok(kerasviz.saliency(s.model, s.images), _maps(s))


def check_resolve_layer(s: Subject) -> None:
    assert kerasviz.default_cam_layer(s.model)[0] == s.layer
    path, layer = kerasviz.resolve_layer(s.model, s.layer)
    assert path == s.layer and tuple(layer.output.shape[1:]) == s.layer_shape


def check_probe(s: Subject) -> None:
    probe = kerasviz.get_probe(s.model, [s.layer])
    assert isinstance(probe, kerasviz.Probe)
    (features,), logits = probe([s.images])
    features = _ok(features, (N, *s.layer_shape), "features")
    np.testing.assert_allclose(features, s.maps, rtol=1e-4, atol=1e-5 * np.abs(s.maps).max())
    _assert_logits(s, logits)


def check_filter_weights(s: Subject) -> None:
    weights = kerasviz.filter_weights(s.model, s.layer)
    _, layer = kerasviz.resolve_layer(s.model, s.layer)
    kernels = {k: v for k, v in weights.items() if k != "bias"}
    assert kernels, f"no kernel among {sorted(weights)}"
    for name, kernel in kernels.items():
        np.testing.assert_array_equal(
            _ok(kernel, tuple(getattr(layer, name).shape), name), np.asarray(getattr(layer, name))
        )


def check_top_channels(s: Subject) -> None:
    top = kerasviz.top_channels(s.model, s.images, s.layer, 2)
    indices = np.asarray(top.indices)
    assert indices.shape == (N, 2)
    assert ((indices >= 0) & (indices < s.layer_shape[-1])).all()
    scores = np.asarray(top.scores)
    assert scores.shape == (N, 2) and np.isfinite(scores).all()
    assert (scores[:, 0] >= scores[:, 1]).all()


def check_layer_statistics(s: Subject) -> None:
    values = kerasviz.layer_statistics(s.model, s.images, [s.layer])[s.layer]
    assert set(values) == {"mean", "std", "max", "zero_fraction"}
    assert all(np.isfinite(v) for v in values.values())
    assert values["std"] > 0 and 0 <= values["zero_fraction"] < 1


def check_model_fingerprint(s: Subject) -> None:
    fingerprint = kerasviz.dataset_scale.model_fingerprint(s.model)
    assert len(fingerprint) == 64 and int(fingerprint, 16) > 0


def check_cam(s: Subject) -> None:
    result = kerasviz.cam(
        s.model,
        s.images,
        1,
        s.layer,
        weighting=kerasviz.layer_cam_weights,
        upsample="bilinear",
        relu=False,
    )
    _ok(result, _maps(s))


def check_grad_cam_plus_plus(s: Subject) -> None:
    _ok(kerasviz.grad_cam_plus_plus(s.model, s.images, relu=False), _maps(s))


def check_layer_cam(s: Subject) -> None:
    _ok(kerasviz.layer_cam(s.model, s.images, relu=False), _maps(s))


def check_score_cam(s: Subject) -> None:
    # Score-CAM weighs each channel by the target's probability on the masked image. Masking
    # swings these untrained networks' logits by ~100 (InceptionV3: the predicted class falls
    # to p = exp(-171), 0 in float32, for every mask), so the target here is a callable, the
    # class-1 score, whose value weighs the channels as it is.
    score = kerasviz.score_cam(s.model, s.images, lambda out: out[:, 1], max_channels=2, relu=False)
    _ok(score, _maps(s))


def check_hires_cam(s: Subject) -> None:
    _ok(kerasviz.hires_cam(s.model, s.images, relu=False), _maps(s))


def check_xgrad_cam(s: Subject) -> None:
    _ok(kerasviz.xgrad_cam(s.model, s.images, relu=False), _maps(s))


def check_eigen_cam(s: Subject) -> None:
    # the layer's maps: projections of centred activations sum to 0 over positions, so where
    # every unit sees every pixel (a 2x2 map at 32 px) their mean back-projection is 0
    maps = _ok(
        kerasviz.eigen_cam(s.model, s.images, relu=False, upsample=None), (N, *s.layer_shape[:2])
    )
    projected = kerasviz.eigen_cam(s.model, s.images, relu=False, upsample="receptive_field")
    rf = kerasviz.receptive_field(s.model, s.layer)
    np.testing.assert_allclose(
        projected, kerasviz.backproject(maps, rf), rtol=1e-5, atol=1e-6 * np.abs(maps).max()
    )


def check_ablation_cam(s: Subject) -> None:
    # every channel: the few with the largest mean |activation| can all be negative ones that
    # a later ReLU zeroes either way (DenseNet121), which weighs them exactly 0
    # one pass for all the rows (eager mode pays per pass, not per row)
    _ok(kerasviz.ablation_cam(s.model, s.images, relu=False, batch_size=4096), _maps(s))


def check_smoothgrad(s: Subject) -> None:
    _ok(kerasviz.smoothgrad(s.model, s.images, samples=2), _maps(s))


def check_integrated_gradients(s: Subject) -> None:
    _ok(kerasviz.integrated_gradients(s.model, s.images, steps=2), _like_inputs(s))


def check_guided_backprop(s: Subject) -> None:
    _ok(kerasviz.guided_backprop(s.model, s.images), _like_inputs(s))
    # the guided view computes the model's own logits on the way forward
    _assert_logits(s, kerasviz.attribution.guided_model(s.model)(s.images))


def check_guided_grad_cam(s: Subject) -> None:
    result = np.asarray(kerasviz.guided_grad_cam(s.model, s.images))
    if result.shape == _like_inputs(s) and not result.any():
        # zero only where the Grad-CAM it multiplies is (random weights can make every
        # class-weighted sum negative: MobileNet's activations vanish to 1e-20)
        assert not np.asarray(kerasviz.grad_cam(s.model, s.images)).any(), "all zero"
        assert np.isfinite(result).all()
        return
    _ok(result, _like_inputs(s))


def check_occlusion(s: Subject) -> None:
    half = s.size // 2
    _ok(kerasviz.occlusion(s.model, s.images, patch=half, stride=half), _maps(s))


def check_lrp(s: Subject) -> None:
    _ok(kerasviz.lrp(s.model, s.images), _like_inputs(s))


def check_input_x_gradient(s: Subject) -> None:
    _ok(kerasviz.input_x_gradient(s.model, s.images), _like_inputs(s))


def check_deeplift(s: Subject) -> None:
    _ok(kerasviz.deeplift(s.model, s.images), _like_inputs(s))


def check_gradient_shap(s: Subject) -> None:
    _ok(kerasviz.gradient_shap(s.model, s.images, samples=2), _like_inputs(s))


def check_rise(s: Subject) -> None:
    _ok(kerasviz.rise(s.model, s.images, masks=8, probabilities=False, seed=0), _maps(s))


def _quadrants(s: Subject) -> np.ndarray:
    """Four superpixels: SLIC finds a single segment in uniform noise."""
    half = s.size // 2
    return np.add.outer(np.arange(s.size) >= half, 2 * (np.arange(s.size) >= half)).astype(int)


def check_lime(s: Subject) -> None:
    result = kerasviz.lime(
        s.model, s.images, segments=_quadrants(s), samples=8, probabilities=False, seed=0
    )
    _ok(result.maps, _maps(s))
    assert np.isfinite(np.asarray(result.weights)).all()


def check_kernel_shap(s: Subject) -> None:
    result = kerasviz.kernel_shap(
        s.model, s.images, segments=_quadrants(s), samples=8, probabilities=False, seed=0
    )
    _ok(result.maps, _maps(s))
    # efficiency: the superpixel weights add up to f(x) - f(baseline)
    weights = np.asarray(result.weights, np.float64)
    gap = np.asarray(result.score, np.float64) - np.asarray(result.intercept, np.float64)
    np.testing.assert_allclose(weights.sum(-1), gap, rtol=1e-3, atol=1e-6 * np.abs(gap).max())


def check_maximize(s: Subject) -> None:
    objectives = [kerasviz.channel(s.layer, s.channels[0]), kerasviz.logit(1)]
    result = kerasviz.maximize(s.model, objectives, **QUICK)
    _changed(result.images, 0.5, (2, s.size, s.size, 3))
    history = np.asarray(result.history)
    assert history.shape == (2, 2) and np.isfinite(history).all()


def check_filter_patterns(s: Subject) -> None:
    patterns = kerasviz.filter_patterns(s.model, s.layer, list(s.channels), **QUICK)
    _changed(patterns, 0.5, (2, s.size, s.size, 3))


def check_deep_dream(s: Subject) -> None:
    dream = kerasviz.deep_dream(s.model, s.images[0], s.layer, octaves=1, steps_per_octave=2)
    _changed(dream, s.images[0], (s.size, s.size, 3))


def check_invert(s: Subject) -> None:
    result = kerasviz.invert(s.model, s.images[:1], s.layer, steps=2)
    images = np.asarray(result.images)
    assert images.shape == (1, s.size, s.size, 3) and np.isfinite(images).all()
    assert images.std() > 0, "constant reconstruction"
    _ok(result.history, (1, 2), "history")


def check_score_objectives(s: Subject) -> None:
    channel = s.channels[0]
    scores = kerasviz.score_objectives(s.model, kerasviz.channel(s.layer, channel), s.images)
    # a channel objective is the channel's mean activation
    expected = s.maps[..., channel].mean((1, 2))
    atol = 1e-6 * np.abs(s.maps).max()
    np.testing.assert_allclose(_ok(scores, (N,)), expected, rtol=1e-4, atol=atol)


def check_fgsm(s: Subject) -> None:
    adversarial = kerasviz.fgsm(s.model, s.images, epsilon=0.01)
    _changed(adversarial, s.images, _like_inputs(s))
    assert np.abs(adversarial - s.images).max() <= 0.01 + 1e-6


def check_pgd(s: Subject) -> None:
    adversarial = kerasviz.pgd(s.model, s.images, epsilon=0.01, steps=2)
    _changed(adversarial, s.images, _like_inputs(s))
    assert np.abs(adversarial - s.images).max() <= 0.01 + 1e-6


def check_deletion_auc(s: Subject) -> None:
    _ok(kerasviz.metrics.deletion_auc(s.model, s.images, s.images[..., 0], steps=3), (N,))


def check_insertion_auc(s: Subject) -> None:
    _ok(kerasviz.metrics.insertion_auc(s.model, s.images, s.images[..., 0], steps=3), (N,))


def _in_unit_interval(value: Any, what: str) -> np.ndarray:
    array = np.asarray(value)
    assert array.shape == (N,) and np.isfinite(array).all(), f"{what}: {array!r}"
    assert ((array >= 0) & (array <= 1)).all(), f"{what}: outside [0, 1]: {array}"
    return array


def check_road(s: Subject) -> None:
    scores = kerasviz.metrics.road(s.model, s.images, s.images[..., 0], fractions=(0.25, 0.5))
    _in_unit_interval(scores, "ROAD")  # the mean probability of the target over the fractions


def check_average_drop(s: Subject) -> None:
    drops = np.asarray(kerasviz.metrics.average_drop(s.model, s.images, s.images[..., 0]))
    assert drops.shape == (N,) and np.isfinite(drops).all() and (drops >= 0).all()


def check_increase_in_confidence(s: Subject) -> None:
    increases = kerasviz.metrics.increase_in_confidence(s.model, s.images, s.images[..., 0])
    assert set(np.unique(_in_unit_interval(increases, "increase"))) <= {0.0, 1.0}


def check_infidelity(s: Subject) -> None:
    scores = kerasviz.metrics.infidelity(s.model, s.images, s.images[..., 0], samples=2)
    _ok(scores, (N,), "infidelity")
    assert (np.asarray(scores) >= 0).all()


def check_max_sensitivity(s: Subject) -> None:
    scores = kerasviz.metrics.max_sensitivity(kerasviz.saliency, s.model, s.images, samples=2)
    _ok(scores, (N,), "max-sensitivity")
    assert (np.asarray(scores) >= 0).all()


def check_randomization_check(s: Subject) -> None:
    # the top two layers with weights (a cascade through every layer costs one explanation
    # each: 130 on DenseNet121); the first randomized is the logits layer
    result = kerasviz.metrics.randomization_check(
        kerasviz.saliency, s.model, s.images, max_layers=2
    )
    weighted = [p for p, layer in iter_layers(s.model) if layer.trainable_weights]
    assert len(result.layers) == 2 and result.layers[0] == weighted[-1]
    correlations = np.asarray(result.correlations)
    assert correlations.shape == (2, N) and np.isfinite(correlations).all()


CHECKS = {name[6:]: fn for name, fn in dict(globals()).items() if name.startswith("check_")}
#: What each check covers besides the public function it is named after.
ALSO_COVERS = {
    "resolve_layer": ("default_cam_layer",),
    "probe": ("get_probe", "Probe"),
    "guided_backprop": ("attribution.guided_model",),
    "receptive_field": ("backproject",),
}
#: Public functions taking a model that the matrix leaves to their own tests (see docstring).
NOT_IN_MATRIX = (
    "dashboard",
    "dashboard.dashboard",
    "callbacks.VisualizationCallback",
    "explain_dataset",
    "dataset_scale.explain_dataset",
)


#: ``(form, check)``: every check on both forms.
CASES = [(form, name) for form in ("flat", "nested") for name in CHECKS]


def _matrix_class(family: str) -> type:
    """``Test<family>``: every case on one family. A class, so that ``pytest-xdist``
    (``--dist loadscope``) sends each family to one worker and builds its models there once."""

    @pytest.mark.parametrize(("form", "name"), CASES, ids=[f"{f}-{n}" for f, n in CASES])
    def test_compat(self, zoo, form, name):
        subject = zoo.get(family, form)
        CHECKS[name](subject)
        if model_state(subject.model) != subject.state:
            zoo.clear()  # the next case gets a fresh model, so this failure stays here
            pytest.fail(f"{name} changed the model (weights, configs or activations)")

    return type(f"Test{family}", (), {"test_compat": test_compat, "family": family})


for _family in FAMILIES:
    globals()[f"Test{_family}"] = _matrix_class(_family)


def _public_functions_taking_a_model() -> set[str]:
    names = set()
    for name in kerasviz.__all__:
        value = getattr(kerasviz, name)
        members = (
            {f"{name}.{sub}": getattr(value, sub) for sub in getattr(value, "__all__", ())}
            if inspect.ismodule(value)
            else {name: value}
        )
        for qualified, fn in members.items():
            if isinstance(fn, type) and issubclass(fn, keras.callbacks.Callback):
                names.add(qualified)
                continue
            try:
                takes = "model" in inspect.signature(fn).parameters
            except (TypeError, ValueError):
                takes = False
            if callable(fn) and takes:
                names.add(qualified)
    return names


def test_matrix_covers_every_public_function():
    """Every public function taking a model has a check (or is named in NOT_IN_MATRIX)."""
    covered = set()
    for name in CHECKS:
        covered |= {name, *ALSO_COVERS.get(name, ())}
    short = {name.rsplit(".", 1)[-1] for name in covered} | covered
    missing = {
        name
        for name in _public_functions_taking_a_model()
        if name not in NOT_IN_MATRIX and name not in short and name.rsplit(".", 1)[-1] not in short
    }
    assert not missing, f"public functions missing from the compatibility matrix: {missing}"
    assert len(CASES) == 2 * len(CHECKS)
