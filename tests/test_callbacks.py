"""VisualizationCallback: PNGs, TensorBoard images, pointing game in the logs, no effect on fit."""

from __future__ import annotations

import glob
import importlib.util
import io
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

import kerasviz
from kerasviz.callbacks import VisualizationCallback

SIZE = 16


class Jitter(keras.layers.GaussianNoise):
    """Training-time noise from Keras' global seed generator (an unseeded keras.random call).

    A GaussianNoise subclass, so receptive fields know it acts position-wise.
    """

    def __init__(self, **kwargs):
        super().__init__(0.05, **kwargs)

    def call(self, x, training=False):
        if training:
            return x + 0.05 * keras.random.normal(keras.ops.shape(x))
        return x


def make_model(seed: int = 0, jitter: bool = False) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            *([Jitter(name="jitter")] if jitter else []),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Dropout(0.3, name="drop"),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="probs"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.random((48, SIZE, SIZE, 3), dtype=np.float32)
    y = np.arange(48) % 3
    masks = np.zeros((3, SIZE, SIZE), dtype=bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 8:14, 3:9] = True
    masks[2, 1:4, 10:15] = True
    return x, y, masks


def fit(model, x, y, callbacks=(), epochs=2):
    keras.utils.set_random_seed(1)
    return model.fit(
        x, y, epochs=epochs, batch_size=16, shuffle=True, verbose=0, callbacks=list(callbacks)
    )


class Recorder:
    """Model-independent maps with a known pointing game, recording how it is called."""

    def __init__(self, masks, invert=False):
        self.masks = masks
        self.invert = invert
        self.calls = []
        self.__name__ = "complement" if invert else "mask_map"

    def __call__(self, model, images, targets=None):
        self.calls.append(np.shape(images))
        # Draw from every global random source, as a careless method might.
        keras.random.normal((2,))
        np.random.normal(size=2)
        tf.random.uniform((2,))
        m = self.masks.astype(np.float32)
        return 1.0 - m if self.invert else m


def test_pngs_summaries_and_pointing_game(tmp_path, data):
    x, y, masks = data
    images = x[:3]
    hit, miss = Recorder(masks), Recorder(masks, invert=True)
    callback = VisualizationCallback(
        images,
        out_dir=tmp_path / "viz",
        every=2,
        log_dir=tmp_path / "logs",
        masks=masks,
        methods=(hit, miss, "grad_cam"),
        layers=["conv2"],
        max_channels=4,
    )
    model = make_model()
    history = fit(model, x, y, [callback], epochs=4)
    written = sorted(p.name for p in (tmp_path / "viz").iterdir())
    assert written == ["epoch_002", "epoch_004"]
    for folder in written:
        files = sorted(p.name for p in (tmp_path / "viz" / folder).iterdir())
        assert files == [
            "complement.png",
            "features_conv2_0.png",
            "features_conv2_1.png",
            "features_conv2_2.png",
            "grad_cam.png",
            "mask_map.png",
        ]
    # Three 16 px overlays side by side with 2 px margins; 4 channels in a 2x2 grid, 1 px margin.
    assert Image.open(tmp_path / "viz/epoch_004/mask_map.png").size == (3 * 16 + 2 * 2, 16)
    assert Image.open(tmp_path / "viz/epoch_002/features_conv2_1.png").size == (33, 33)
    # One batched call per method and written epoch, with all the images.
    assert hit.calls == [(3, SIZE, SIZE, 3)] * 2 and miss.calls == hit.calls
    assert history.history["kerasviz_pointing_game"] == [1.0, 1.0]
    assert history.history["kerasviz_pointing_game_mask_map"] == [1.0, 1.0]
    assert history.history["kerasviz_pointing_game_complement"] == [0.0, 0.0]
    assert len(history.history["loss"]) == 4
    # The Grad-CAM score is the pointing game of Grad-CAM with the final weights.
    cams = kerasviz.grad_cam(model, images)
    expected = kerasviz.metrics.pointing_game(cams, masks).mean()
    assert history.history["kerasviz_pointing_game_grad_cam"][-1] == pytest.approx(expected)
    np.testing.assert_allclose(callback.compute_maps()["grad_cam"], cams, atol=1e-6)

    events = glob.glob(os.path.join(tmp_path, "logs", "events.out.tfevents.*"))
    assert len(events) == 1
    seen = {}
    for event in tf.compat.v1.train.summary_iterator(events[0]):
        for value in event.summary.value:
            assert value.metadata.plugin_data.plugin_name == "images"
            seen.setdefault(value.tag, []).append((event.step, tf.make_ndarray(value.tensor)))
    assert set(seen) == {
        "kerasviz/mask_map",
        "kerasviz/complement",
        "kerasviz/grad_cam",
        "kerasviz/features/conv2",
    }
    # Image summaries hold [width, height, png, png, png]; steps are the 0-based epochs.
    assert [step for step, _ in seen["kerasviz/mask_map"]] == [1, 3]
    record = seen["kerasviz/mask_map"][1][1]
    assert record[:2].tolist() == [b"16", b"16"] and len(record) == 5
    png = Image.open(io.BytesIO(record[4]))
    grid = np.asarray(Image.open(tmp_path / "viz/epoch_004/mask_map.png"))
    np.testing.assert_array_equal(np.asarray(png), grid[:, 36:52])  # the third overlay
    features = seen["kerasviz/features/conv2"][0][1]
    assert features[:2].tolist() == [b"33", b"33"] and len(features) == 5

    # TensorBoard's own reader sees two steps of three images per tag, with the pictures' shapes.
    reader = EventAccumulator(str(tmp_path / "logs"), size_guidance={"tensors": 0})
    reader.Reload()
    shapes = {"kerasviz/features/conv2": (33, 33, 1)}
    assert set(reader.Tags()["tensors"]) == set(seen)
    for tag in seen:
        records = reader.Tensors(tag)
        assert [r.step for r in records] == [1, 3]
        for record in records:
            images = tf.make_ndarray(record.tensor_proto)[2:]
            assert len(images) == 3
            for png in images:
                assert tf.io.decode_png(png).shape == shapes.get(tag, (16, 16, 3))


def test_training_is_unchanged_by_the_callback(tmp_path, data):
    x, y, masks = data
    reference = make_model(jitter=True)
    fit(reference, x, y, epochs=3)
    watched = make_model(jitter=True)
    callback = VisualizationCallback(
        x[:3],
        out_dir=tmp_path,
        masks=masks,
        methods=(Recorder(masks), "grad_cam", "smoothgrad"),
        layers=["conv1"],
    )
    fit(watched, x, y, [callback], epochs=3)
    assert len(os.listdir(tmp_path)) == 3
    for a, b in zip(reference.get_weights(), watched.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_kerasviz_functions_get_the_callback_options(tmp_path, data, monkeypatch):
    x, _, masks = data
    model = make_model()
    callback = VisualizationCallback(
        x[:3],
        out_dir=tmp_path,
        methods=(kerasviz.grad_cam, "saliency"),
        cam_layer="conv1",
        upsample="bilinear",
        batch_size=2,
    )
    callback.set_model(model)
    maps = callback.compute_maps()
    assert list(maps) == ["grad_cam", "saliency"]
    expected = kerasviz.grad_cam(model, x[:3], layer="conv1", upsample="bilinear")
    np.testing.assert_allclose(maps["grad_cam"], expected, atol=1e-6)
    assert not np.allclose(maps["grad_cam"], kerasviz.grad_cam(model, x[:3]), atol=1e-3)
    np.testing.assert_allclose(maps["saliency"], kerasviz.saliency(model, x[:3]), atol=1e-6)
    # Summaries need TensorBoard; without it the error says how to install it.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a),
    )
    with pytest.raises(ImportError, match=r"kerasviz\[callbacks\]"):
        VisualizationCallback(x[:3], out_dir=tmp_path, log_dir=tmp_path / "logs")


def test_bad_input(tmp_path, data):
    x, y, masks = data
    model = make_model()
    wrong_size = VisualizationCallback(
        x[:2, :12, :12], out_dir=tmp_path, methods=(Recorder(masks),)
    )
    with pytest.raises(ValueError, match=r"`images` to have spatial size \(16, 16\)"):
        fit(model, x, y, [wrong_size], epochs=1)
    wrong_channels = VisualizationCallback(x[:2, ..., :1], out_dir=tmp_path)
    with pytest.raises(ValueError, match="`images` to have 3 channels"):
        wrong_channels.set_model(model)
    with pytest.raises(ValueError, match="`masks` to have shape"):
        VisualizationCallback(x[:3], out_dir=tmp_path, masks=masks[:2])
    empty = masks.copy()
    empty[0] = False
    with pytest.raises(ValueError, match=r"at least one pixel.*\[0\]"):
        VisualizationCallback(x[:3], out_dir=tmp_path, masks=empty)
    with pytest.raises(ValueError, match="grad_cam"):
        VisualizationCallback(x[:3], out_dir=tmp_path, methods=("gradcam",))
    with pytest.raises(ValueError, match="every"):
        VisualizationCallback(x[:3], out_dir=tmp_path, every=0)
    with pytest.raises(ValueError, match="layers"):
        VisualizationCallback(x[:3], out_dir=tmp_path, layers=["gap"]).set_model(model)
    assert not os.listdir(tmp_path)
    assert kerasviz.callbacks.VisualizationCallback is VisualizationCallback
