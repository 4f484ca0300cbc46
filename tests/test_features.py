"""Feature maps, filter weights, top channels, and the input checks every method shares."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasviz

# ---------------------------------------------------------------- feature maps


def test_feature_maps_match_direct_submodels(tiny_cnn, images16):
    maps = kerasviz.feature_maps(tiny_cnn, images16)
    assert list(maps) == ["conv1", "conv2", "pool"]
    for name, value in maps.items():
        sub = keras.Model(tiny_cnn.inputs, tiny_cnn.get_layer(name).output)
        np.testing.assert_allclose(value, sub(images16).numpy(), rtol=1e-5, atol=1e-6)
    conv1 = tiny_cnn.get_layer("conv1")
    by_hand = tf.nn.relu(
        tf.nn.conv2d(images16, conv1.kernel.numpy(), 1, "VALID") + conv1.bias.numpy()
    ).numpy()
    np.testing.assert_allclose(maps["conv1"], by_hand, rtol=1e-5, atol=1e-6)


def test_feature_maps_input_kinds_and_batch_size(tiny_cnn, images16):
    reference = kerasviz.feature_maps(tiny_cnn, images16, ["conv2"])["conv2"]
    for inputs in (
        tf.constant(images16),
        tf.data.Dataset.from_tensor_slices(images16).batch(3),
        tf.data.Dataset.from_tensor_slices((images16, np.zeros(4))).batch(2),
    ):
        got = kerasviz.feature_maps(tiny_cnn, inputs, ["conv2"])["conv2"]
        np.testing.assert_allclose(got, reference, atol=1e-6)
    for batch_size in (1, 3):
        got = kerasviz.feature_maps(tiny_cnn, images16, "conv2", batch_size=batch_size)["conv2"]
        np.testing.assert_allclose(got, reference, atol=1e-6)
    single = kerasviz.feature_maps(tiny_cnn, images16[1], ["conv2"])["conv2"]
    assert single.shape == reference.shape[1:]
    np.testing.assert_allclose(single, reference[1], atol=1e-6)


def test_feature_maps_of_nested_model(nested_model, images32):
    maps = kerasviz.feature_maps(nested_model, images32)
    assert list(maps)[:2] == ["backbone/b_conv1", "backbone/b_bn1"]
    assert "head_gap" not in maps
    backbone = nested_model.layers[0]
    sub = keras.Model(backbone.inputs, backbone.get_layer("b_add").output)
    np.testing.assert_allclose(maps["backbone/b_add"], sub(images32).numpy(), atol=1e-5)


# ---------------------------------------------------------------- filters


def test_filter_weights_of_each_conv_kind():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw", use_bias=False),
            keras.layers.SeparableConv2D(5, 3, name="sep"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(2),
        ]
    )
    conv = kerasviz.filter_weights(model, "conv")
    assert conv["kernel"].shape == (3, 3, 3, 4) and conv["bias"].shape == (4,)
    np.testing.assert_array_equal(conv["kernel"], model.get_layer("conv").kernel.numpy())
    dw = kerasviz.filter_weights(model, "dw")
    assert set(dw) == {"depthwise_kernel"} and dw["depthwise_kernel"].shape == (3, 3, 4, 2)
    sep = kerasviz.filter_weights(model, "sep")
    assert sep["depthwise_kernel"].shape == (3, 3, 8, 1)
    assert sep["pointwise_kernel"].shape == (1, 1, 8, 5) and sep["bias"].shape == (5,)
    with pytest.raises(ValueError, match="convolution with a spatial kernel.*flatten"):
        kerasviz.filter_weights(model, "flatten")


# ---------------------------------------------------------------- top channels


def test_top_channels_by_hand():
    # A 1x1 conv with an identity kernel passes the input channels through unchanged.
    inputs = keras.Input((4, 4, 4))
    conv = keras.layers.Conv2D(4, 1, use_bias=False, name="id")
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(conv(inputs))))
    conv.kernel.assign(np.eye(4, dtype=np.float32)[None, None])
    means = np.array([[1.0, 5.0, 3.0, 2.0], [4.0, 5.0, 0.5, 1.0], [9.0, 0.0, 3.0, 8.0]])
    x = np.broadcast_to(means[:, None, None, :], (3, 4, 4, 4)).astype(np.float32)
    top = kerasviz.top_channels(model, x, "id", k=2)
    np.testing.assert_array_equal(top.indices, [[1, 2], [1, 0], [0, 3]])
    np.testing.assert_allclose(top.scores, [[5, 3], [5, 4], [9, 8]], atol=1e-6)
    assert top.shared == []
    assert top.only_in == [[2], [], [3]]
    top2 = kerasviz.top_channels(model, x[:2], "id", k=2)
    assert top2.shared == [1] and top2.only_in == [[2], [0]]
    with pytest.raises(ValueError, match=r"`k` to be an int in \[1, 4\].*5"):
        kerasviz.top_channels(model, x, "id", k=5)


def test_layer_statistics(tiny_cnn, images16):
    stats = kerasviz.layer_statistics(tiny_cnn, images16, ["conv1"])
    value = kerasviz.feature_maps(tiny_cnn, images16, ["conv1"])["conv1"]
    assert stats["conv1"]["mean"] == pytest.approx(value.mean(), rel=1e-5)
    assert stats["conv1"]["zero_fraction"] == pytest.approx((value == 0).mean())


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            np.zeros((2, 16, 16), np.float32),
            r"rank 4 \(a batch\), or rank 3 for one image of shape \(16, 16, 3\).*Received: shape \(2, 16, 16\)",
        ),
        (np.zeros((2, 16, 16, 1), np.float32), r"3 channels.*Received: shape \(2, 16, 16, 1\)"),
        (np.zeros((2, 20, 16, 3), np.float32), r"spatial size \(16, 16\).*\(2, 20, 16, 3\)"),
        (np.full((2, 16, 16, 3), "a"), r"numeric.*dtype <U1"),
        (np.full((1, 16, 16, 3), np.nan, np.float32), r"finite.*NaN or Inf"),
        (np.full((1, 16, 16, 3), np.inf, np.float32), r"finite.*NaN or Inf"),
        (np.zeros((0, 16, 16, 3), np.float32), r"at least one image.*empty batch"),
    ],
)
def test_bad_inputs_are_named(tiny_cnn, inputs, message):
    with pytest.raises(ValueError, match=message):
        kerasviz.feature_maps(tiny_cnn, inputs)


def test_non_spatial_layer_is_refused(tiny_cnn, images16):
    with pytest.raises(
        ValueError, match=r"spatial output.*'flatten' with output shape \(None, 216\)"
    ):
        kerasviz.feature_maps(tiny_cnn, images16, ["flatten"])
    with pytest.raises(ValueError, match="batch_size"):
        kerasviz.feature_maps(tiny_cnn, images16, batch_size=0)
