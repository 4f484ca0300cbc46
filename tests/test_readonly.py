"""House rule 1: every public function leaves the model exactly as it was.

Each public function that takes a model runs once on a nested model with BatchNorm, ReLU
layers, ``activation="relu"`` convolutions, Dropout and a softmax head. Hashes of the weights,
the layer configs, the trainable flags and the activation functions must not change. A second
test makes sure no public function escapes this list.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import tempfile
import zlib

import keras
import numpy as np
import pytest

import kerasviz
from kerasviz._graph import iter_layers

SIZE = 16


def _model() -> keras.Model:
    keras.utils.set_random_seed(7)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="b_conv1")(inputs)
    x = keras.layers.BatchNormalization(name="b_bn")(x)
    x = keras.layers.ReLU(name="b_relu")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="b_conv2")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    backbone.get_layer("b_conv1").trainable = False
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            backbone,
            keras.layers.Dropout(0.5, name="drop"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ]
    )


def model_state(model: keras.Model) -> str:
    """A hash of everything a visualization must not change (a CRC-32 per weight: the
    compatibility matrix takes it after every case, on weights of up to 220 MB)."""
    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(variable.path.encode())
        digest.update(zlib.crc32(np.ascontiguousarray(variable.numpy())).to_bytes(4, "little"))
    layers = []
    for path, layer in iter_layers(model):
        activation = getattr(layer, "activation", None)
        layers.append(
            {
                "path": path,
                "config": layer.get_config(),
                "trainable": layer.trainable,
                "activation": f"{getattr(activation, '__name__', None)}:{id(activation)}",
                "call": id(type(layer).call),
                "instance_call": "call" in vars(layer),
            }
        )
    digest.update(json.dumps(layers, sort_keys=True, default=str).encode())
    digest.update(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


X = np.random.default_rng(3).random((2, SIZE, SIZE, 3), dtype=np.float32)
GRID = np.arange(SIZE)[:, None] // 8 * 2 + np.arange(SIZE)[None] // 8
MASKS = np.zeros((2, SIZE, SIZE), bool)
MASKS[:, 4:10, 4:10] = True
QUICK = {"steps": 2, "transforms": (), "regularizers": ()}

CALLS = {
    "Probe": lambda m: kerasviz.Probe(m, ["b_conv2"]),
    "get_probe": lambda m: kerasviz.get_probe(m, ["b_conv2"])([X]),
    "resolve_layer": lambda m: kerasviz.resolve_layer(m, "b_conv2"),
    "default_cam_layer": lambda m: kerasviz.default_cam_layer(m),
    "feature_maps": lambda m: kerasviz.feature_maps(m, X),
    "filter_weights": lambda m: kerasviz.filter_weights(m, "b_conv1"),
    "top_channels": lambda m: kerasviz.top_channels(m, X, "b_conv2", 2),
    "layer_statistics": lambda m: kerasviz.layer_statistics(m, X),
    "receptive_field": lambda m: kerasviz.receptive_field(m, "b_conv2"),
    "cam": lambda m: kerasviz.cam(m, X, 1, ["b_conv1", "b_conv2"]),
    "grad_cam": lambda m: kerasviz.grad_cam(m, X),
    "grad_cam_plus_plus": lambda m: kerasviz.grad_cam_plus_plus(m, X, upsample="bilinear"),
    "layer_cam": lambda m: kerasviz.layer_cam(m, X, relu=False),
    "score_cam": lambda m: kerasviz.score_cam(m, X, max_channels=3),
    "saliency": lambda m: kerasviz.saliency(m, X),
    "smoothgrad": lambda m: kerasviz.smoothgrad(m, X, samples=3),
    "integrated_gradients": lambda m: kerasviz.integrated_gradients(m, X, steps=4),
    "lrp": lambda m: kerasviz.lrp(m, X, composite="epsilon_gamma_box", value_range=(0, 1)),
    "input_x_gradient": lambda m: kerasviz.input_x_gradient(m, X),
    "deeplift": lambda m: kerasviz.deeplift(m, X, baseline="blur"),
    "gradient_shap": lambda m: kerasviz.gradient_shap(m, X, samples=3, noise=0.1),
    "guided_backprop": lambda m: kerasviz.guided_backprop(m, X),
    "attribution.guided_model": lambda m: kerasviz.attribution.guided_model(m)(X),
    "guided_grad_cam": lambda m: kerasviz.guided_grad_cam(m, X),
    "occlusion": lambda m: kerasviz.occlusion(m, X, patch=8, stride=8),
    "hires_cam": lambda m: kerasviz.hires_cam(m, X, smooth="augment"),
    "xgrad_cam": lambda m: kerasviz.xgrad_cam(m, X, smooth="eigen"),
    "eigen_cam": lambda m: kerasviz.eigen_cam(m, X, layer=["b_conv1", "b_conv2"]),
    "ablation_cam": lambda m: kerasviz.ablation_cam(m, X, layer="backbone/b_relu", max_channels=2),
    "lime": lambda m: kerasviz.lime(m, X, segments=GRID, samples=8, seed=0),
    "kernel_shap": lambda m: kerasviz.kernel_shap(m, X, segments=GRID, samples=8, seed=0),
    "rise": lambda m: kerasviz.rise(m, X, masks=8, seed=0),
    "maximize": lambda m: kerasviz.maximize(
        m, [kerasviz.channel("b_conv2", 0), kerasviz.logit(1)], **QUICK
    ),
    "filter_patterns": lambda m: kerasviz.filter_patterns(m, "b_conv2", [0, 1], **QUICK),
    "deep_dream": lambda m: kerasviz.deep_dream(m, X[0], "b_conv2", octaves=1, steps_per_octave=2),
    "invert": lambda m: kerasviz.invert(m, X[:1], "b_conv2", steps=2),
    "score_objectives": lambda m: kerasviz.score_objectives(m, kerasviz.channel("b_conv2", 1), X),
    "fgsm": lambda m: kerasviz.fgsm(m, X, epsilon=0.01),
    "pgd": lambda m: kerasviz.pgd(m, X, epsilon=0.01, steps=2),
    "metrics.deletion_auc": lambda m: kerasviz.metrics.deletion_auc(m, X, X[..., 0], steps=3),
    "metrics.insertion_auc": lambda m: kerasviz.metrics.insertion_auc(m, X, X[..., 0], steps=3),
    "metrics.road": lambda m: kerasviz.metrics.road(m, X, X[..., 0]),
    "metrics.average_drop": lambda m: kerasviz.metrics.average_drop(m, X, X[..., 0]),
    "metrics.increase_in_confidence": lambda m: kerasviz.metrics.increase_in_confidence(
        m, X, X[..., 0]
    ),
    "metrics.infidelity": lambda m: kerasviz.metrics.infidelity(m, X, X[..., 0], samples=4),
    "metrics.max_sensitivity": lambda m: kerasviz.metrics.max_sensitivity(
        kerasviz.grad_cam, m, X, samples=2, upsample=None
    ),
    "metrics.randomization_check": lambda m: kerasviz.metrics.randomization_check(
        kerasviz.grad_cam, m, X
    ),
    "dashboard": lambda m: _dashboard_requests(m),
    "explain_dataset": lambda m: _explain_dataset(m),
    "dataset_scale.model_fingerprint": lambda m: kerasviz.dataset_scale.model_fingerprint(m),
    "callbacks.VisualizationCallback": lambda m: _callback_epoch(m),
}


def _explain_dataset(model: keras.Model) -> dict:
    """A dataset-scale run with a kernel method, a host method and every metric; its table."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder:
        store = kerasviz.explain_dataset(
            model,
            tf.data.Dataset.from_tensor_slices(X),
            {"grad_cam": {}, "occlusion": {"patch": 8, "stride": 8}},
            f"{folder}/store",
            masks=MASKS,
            batch_size=2,
            metrics={"pointing_game": {}, "deletion_auc": {"steps": 2}},
        )
        return store.table()


def _callback_epoch(model: keras.Model) -> dict:
    """One written epoch of the callback, driven through Keras' callback protocol; its logs."""
    with tempfile.TemporaryDirectory() as folder:
        callback = kerasviz.callbacks.VisualizationCallback(
            X, out_dir=folder, masks=MASKS, methods=("grad_cam", "saliency"), layers=["b_conv2"]
        )
        callback.set_model(model)
        callback.on_train_begin()
        logs: dict = {}
        callback.on_epoch_end(0, logs)
        callback.on_train_end()
        assert "kerasviz_pointing_game" in logs
    return {key: value for key, value in logs.items() if key.startswith("kerasviz")}


def _dashboard_requests(model: keras.Model) -> None:
    """Every kind of dashboard request and job, on a served model (no browser)."""
    with kerasviz.dashboard(model, X, port=0, warm_up=False, display=False) as board:
        ex, image, layer = board.explorer, "i0", "b_conv2"
        ex.predict("m0", image)
        ex.features("m0", image, layer, k=2)
        ex.cams("m0", image, layer)
        ex.saliency("m0", image)
        jobs = [ex.jobs.get(ex.unit("m0", image, layer, 0, 1, 1, steps=2)["job"])]
        jobs.append(ex.start_inversion("m0", image, layer, steps=2, every=1))
        jobs.append(ex.start_gradients("m0", image, samples=2, steps=2))
        assert all(job.join(120) and job.state == "done" for job in jobs)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_public_function_leaves_model_unchanged(name):
    model = _model()
    before = model_state(model)
    predictions = model.predict(X, verbose=0)
    CALLS[name](model)
    assert model_state(model) == before
    np.testing.assert_array_equal(model.predict(X, verbose=0), predictions)


def _takes_model(fn) -> bool:
    """A `model` parameter, or a Keras callback (it gets the model through `set_model`)."""
    if isinstance(fn, type) and issubclass(fn, keras.callbacks.Callback):
        return True
    try:
        return "model" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def test_every_public_function_taking_a_model_is_checked():
    """Any public callable with a `model` parameter, top level or in a submodule, is in CALLS."""
    missing = []
    for name in kerasviz.__all__:
        value = getattr(kerasviz, name)
        if inspect.ismodule(value):
            members = {
                f"{name}.{sub}": getattr(value, sub) for sub in getattr(value, "__all__", ())
            }
        else:
            members = {name: value}
        for qualified, fn in members.items():
            short = qualified.rsplit(".", 1)[-1]
            if callable(fn) and _takes_model(fn) and qualified not in CALLS and short not in CALLS:
                missing.append(qualified)
    assert not missing, f"public functions without a read-only check: {sorted(missing)}"
