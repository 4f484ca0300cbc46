"""backproject(..., method="centered") and upsample="centered": bilinear interpolation anchored
at the units' receptive-field centres."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasviz
from kerasviz.receptive_field import ReceptiveField, backproject, backproject_tf


def test_one_axis_tents_equal_the_hand_computed_weights():
    # size 3, stride 2, start -1: centres 0, 2, 4, 6 on 8 pixels
    rf = ReceptiveField((3,), (2,), (-1,), (8,), (4,))
    eye = np.eye(4)
    got = backproject(eye, rf, method="centered")
    hand = np.array(
        [
            [1.0, 0.5, 0, 0, 0, 0, 0, 0],
            [0, 0.5, 1.0, 0.5, 0, 0, 0, 0],
            [0, 0, 0, 0.5, 1.0, 0.5, 0, 0],
            [0, 0, 0, 0, 0, 0.5, 1.0, 0.5],
        ]
    )
    np.testing.assert_allclose(got, hand, atol=1e-7)
    # between the outermost centres the weights sum to 1; pixel 7 lies half a stride beyond
    np.testing.assert_allclose(got.sum(axis=0), [1, 1, 1, 1, 1, 1, 1, 0.5], atol=1e-7)


def test_two_axes_are_separable_and_fade_to_fill_one_stride_beyond():
    # 4x4 fields, stride 4, start 3: centres 4.5, 8.5, ... ; on 16 pixels the first 0.5 px
    # are within a stride of centre 4.5, rows 0 is 4.5 px away: weight 1 - 4.5 / 4 < 0 -> 0
    rf = ReceptiveField((4, 4), (4, 4), (3, 3), (16, 16), (3, 3))
    values = np.zeros((3, 3))
    values[1, 2] = 2.0
    got = backproject(values, rf, method="centered", fill=-1.0)
    centers = np.array([4.5, 8.5, 12.5])
    tent = np.maximum(0.0, 1 - np.abs(np.arange(16)[:, None] - centers) / 4)
    expected = 2.0 * np.outer(tent[:, 1], tent[:, 2])
    reached = np.outer(tent.sum(1) > 0, tent.sum(1) > 0)
    np.testing.assert_allclose(got, np.where(reached, expected, -1.0), atol=1e-7)
    assert not reached[0].any() and reached[1, 1]  # row 0: 4.5 px from the first centre


def test_half_pixel_geometry_equals_a_bilinear_resize_between_the_centres():
    # fields of 2 px at stride 2 from 0: centres (i + 0.5) * 2 - 0.5, a resize's own centres
    rf = ReceptiveField((2, 2), (2, 2), (0, 0), (8, 8), (4, 4))
    maps = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    got = backproject(maps, rf, method="centered")
    resized = kerasviz.resize_bilinear(maps, (8, 8))
    inner = (slice(None), slice(1, 7), slice(1, 7))  # from the first centre to the last
    np.testing.assert_allclose(got[inner], resized[inner], atol=1e-6)


def _strided_model() -> keras.Model:
    # valid and same padding, stride 8: field centres sit off the resize's half-pixel ones
    inputs = keras.Input((64, 64, 1))
    x = keras.layers.Conv2D(2, 5, strides=2, padding="valid", name="a")(inputs)
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="b")(x)
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="c")(x)
    return keras.Model(inputs, x)


def test_evidence_of_one_unit_peaks_at_its_field_centre():
    model = _strided_model()
    rf = kerasviz.receptive_field(model, "c")
    h, w = rf.map_size
    for i, j in [(0, 0), (2, 3), (h - 1, w - 1), (h // 2, 1)]:
        values = np.zeros((h, w))
        values[i, j] = 1.0
        got = backproject(values, rf, method="centered")
        cy, cx = rf.center(i, j)
        peak = np.unravel_index(np.argmax(got), got.shape)
        assert abs(peak[0] - cy) <= 0.5 and abs(peak[1] - cx) <= 0.5, (i, j, peak, (cy, cx))
        resized = kerasviz.resize_bilinear(values, rf.input_size)
        off = np.unravel_index(np.argmax(resized), resized.shape)
        if (i, j) == (0, 0):  # the resize puts unit 0 at its half-pixel centre, far off
            assert max(abs(off[0] - cy), abs(off[1] - cx)) >= 3


def test_tensorflow_channels_and_global_fields_agree():
    model = _strided_model()
    rf = kerasviz.receptive_field(model, "c")
    maps = np.random.default_rng(1).random((2, *rf.map_size, 3)).astype(np.float32)
    both = backproject(maps, rf, method="centered")
    np.testing.assert_allclose(both[..., 1], backproject(maps[..., 1], rf, method="centered"))
    np.testing.assert_allclose(backproject_tf(maps, rf, method="centered"), both, atol=1e-6)
    pooled = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.GlobalMaxPooling2D()]
    )
    g = kerasviz.receptive_field(pooled, pooled.layers[-1].name)
    np.testing.assert_allclose(backproject(np.array([[[3.0]]]), g, method="centered"), 3.0)


def test_cams_callback_and_explain_dataset_take_centered(nested_model, tmp_path):
    images = np.random.default_rng(5).random((4, 32, 32, 3)).astype(np.float32)
    layer = "backbone/b_conv3"
    rf = kerasviz.receptive_field(nested_model, layer)
    for fn in (kerasviz.grad_cam, kerasviz.hires_cam, kerasviz.eigen_cam):
        low = fn(nested_model, images, [0, 2, 1, 0], layer, upsample=None)
        got = fn(nested_model, images, [0, 2, 1, 0], layer, upsample="centered")
        expected = backproject(low, rf, method="centered")
        np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())
    guided = kerasviz.guided_grad_cam(
        nested_model, images, [0, 2, 1, 0], layer, upsample="centered"
    )
    backprop = kerasviz.guided_backprop(nested_model, images, [0, 2, 1, 0])
    cam = kerasviz.grad_cam(nested_model, images, [0, 2, 1, 0], layer, upsample="centered")
    np.testing.assert_allclose(guided, backprop * cam[..., None], rtol=1e-5, atol=1e-12)
    # the store's compiled kernel projects the same way as the public function
    data = tf.data.Dataset.from_tensor_slices(images)
    kwargs = {"layer": layer, "upsample": "centered"}
    kerasviz.explain_dataset(nested_model, data, {"g": ("grad_cam", kwargs)}, tmp_path / "s")
    stored = kerasviz.open_explanations(tmp_path / "s")
    predicted = np.asarray(nested_model(images)).argmax(-1)
    public = kerasviz.grad_cam(nested_model, images, predicted, **kwargs)
    np.testing.assert_allclose(
        np.asarray(stored.maps["g"], np.float32), public, atol=2e-3 * np.abs(public).max()
    )
    callback = kerasviz.callbacks.VisualizationCallback(
        images[:2], out_dir=tmp_path / "cb", upsample="centered"
    )
    assert callback is not None
    with pytest.raises(ValueError, match="`upsample`"):
        kerasviz.callbacks.VisualizationCallback(images[:2], out_dir=tmp_path, upsample="nearest")
