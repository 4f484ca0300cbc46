"""The model view: layer resolution, nested models, logits, following the weights, caching."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_gap_model, make_nested_model, make_tiny_cnn

import kerasviz
from kerasviz._layers import default_cam_layer, resolve_layer
from kerasviz._probe import TRACES, Probe, get_probe


def _run(probe: Probe, x: np.ndarray):
    outputs, logits = probe([tf.constant(x)])
    return [o.numpy() for o in outputs], None if logits is None else logits.numpy()


# ---------------------------------------------------------------- layer resolution


def test_layer_by_name_index_object_and_path(nested_model):
    backbone = nested_model.layers[0]
    conv = backbone.get_layer("b_conv2")
    assert resolve_layer(nested_model, "b_conv2") == ("backbone/b_conv2", conv)
    assert resolve_layer(nested_model, "backbone/b_conv2") == ("backbone/b_conv2", conv)
    assert resolve_layer(nested_model, conv) == ("backbone/b_conv2", conv)
    assert resolve_layer(nested_model, 0) == ("backbone", backbone)
    assert resolve_layer(nested_model, -1)[0] == "head_dense"
    assert resolve_layer(nested_model, -3)[0] == "backbone"


def test_unknown_layer_lists_closest_names(nested_model):
    with pytest.raises(ValueError, match=r"b_conv9.*Closest valid names.*b_conv"):
        resolve_layer(nested_model, "b_conv9")
    with pytest.raises(ValueError, match=r"index in \[-3, 2\].*layer=3"):
        resolve_layer(nested_model, 3)
    with pytest.raises(ValueError, match="not part of it"):
        resolve_layer(nested_model, keras.layers.Dense(2, name="stranger"))


def test_ambiguous_inner_name_is_an_error():
    def block(name):
        inputs = keras.Input((8, 8, 3))
        return keras.Model(
            inputs, keras.layers.Conv2D(3, 3, padding="same", name="conv")(inputs), name=name
        )

    model = keras.Sequential([keras.Input((8, 8, 3)), block("a"), block("b")])
    with pytest.raises(ValueError, match=r"ambiguous between \['a/conv', 'b/conv'\]"):
        resolve_layer(model, "conv")
    assert resolve_layer(model, "b/conv")[1] is model.layers[1].get_layer("conv")


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="Sequential or functional.*subclassed model of type Net"):
        kerasviz.feature_maps(net, np.zeros((1, 8, 8, 3), np.float32))


# ---------------------------------------------------------------- nested applications


def _inner_reference(backbone, layer_name, x):
    sub = keras.Model(backbone.inputs, backbone.get_layer(layer_name).output)
    return sub(x, training=False).numpy()


@pytest.mark.parametrize(
    ("factory", "layer_name"),
    [
        (keras.applications.VGG16, "block4_conv2"),
        (keras.applications.ResNet50, "conv3_block2_out"),
        (keras.applications.MobileNetV2, "block_6_expand_relu"),
    ],
)
def test_applications_backbone_nested_in_sequential_and_functional(factory, layer_name):
    keras.utils.set_random_seed(0)
    backbone = factory(weights=None, include_top=False, input_shape=(32, 32, 3))
    head = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    functional = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    expected = _inner_reference(backbone, layer_name, x)
    for model in (head, functional):
        probe = get_probe(model, [layer_name])
        (maps,), logits = _run(probe, x)
        np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-4)
        assert probe.paths == [f"{backbone.name}/{layer_name}"]
        assert logits.shape == (2, model.outputs[0].shape[-1])
    # The softmax head is bypassed: logits are the Dense pre-activation.
    dense = head.layers[-1]
    pooled_x = np.asarray(backbone(x, training=False)).mean(axis=(1, 2))
    _, logits = _run(get_probe(head), x)
    expected_logits = pooled_x @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- logits


def test_dense_softmax_is_bypassed_by_hand(tiny_cnn, images16):
    (flat,), logits = _run(get_probe(tiny_cnn, ["flatten"]), images16)
    dense = tiny_cnn.get_layer("probs")
    np.testing.assert_allclose(logits, flat @ dense.kernel.numpy() + dense.bias.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        tf.nn.softmax(logits).numpy(), tiny_cnn(images16).numpy(), rtol=1e-5, atol=1e-6
    )
    assert get_probe(tiny_cnn).bypassed == "probs"


def test_separate_softmax_layer_is_bypassed(gap_model, images16):
    (pre,), logits = _run(get_probe(gap_model, ["logits"]), images16)
    np.testing.assert_allclose(logits, pre, atol=0)


@pytest.mark.parametrize("kind", ["conv_sigmoid", "activation_sigmoid"])
def test_conv_and_activation_sigmoid_heads(kind):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    if kind == "conv_sigmoid":
        outputs = keras.layers.Conv2D(2, 3, activation="sigmoid", name="head")(inputs)
    else:
        pre = keras.layers.Conv2D(2, 3, name="pre")(inputs)
        outputs = keras.layers.Activation("sigmoid", name="head")(pre)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    conv = model.layers[1]
    expected = tf.nn.conv2d(x, conv.kernel.numpy(), 1, "VALID").numpy() + conv.bias.numpy()
    _, logits = _run(get_probe(model), x)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tf.sigmoid(logits).numpy(), model(x).numpy(), atol=1e-6)


def test_view_follows_training():
    model = make_tiny_cnn(seed=3)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(2).random((4, 16, 16, 3), dtype=np.float32)
    probe = get_probe(model, ["conv1"])
    fn = probe.step(_logits)
    before = fn([tf.constant(x)]).numpy()
    model.train_on_batch(x, np.array([0, 1, 2, 0]))
    after = fn([tf.constant(x)]).numpy()
    assert np.abs(after - before).max() > 1e-4
    (flat,), _ = _run(get_probe(model, ["flatten"]), x)
    dense = model.get_layer("probs")
    np.testing.assert_allclose(after, flat @ dense.kernel.numpy() + dense.bias.numpy(), atol=1e-5)


# ---------------------------------------------------------------- several inputs / outputs


def test_several_inputs_and_outputs():
    keras.utils.set_random_seed(0)
    a = keras.Input((8, 8, 3), name="rgb")
    b = keras.Input((8, 8, 1), name="depth")
    fa = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(a)
    fb = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(b)
    merged = keras.layers.Concatenate(name="merge")([fa, fb])
    pooled = keras.layers.GlobalAveragePooling2D()(merged)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(pooled)
    reg = keras.layers.Dense(1, name="reg")(pooled)
    model = keras.Model([a, b], [cls, reg])
    xa = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    xb = np.random.default_rng(1).random((2, 8, 8, 1), dtype=np.float32)
    with pytest.raises(ValueError, match=r"`output` to select one of the model's 2 outputs"):
        get_probe(model)
    probe = get_probe(model, ["merge"], output="cls")
    (merged_x,), logits = (
        [o.numpy() for o in probe([tf.constant(xa), tf.constant(xb)])[0]],
        probe([tf.constant(xa), tf.constant(xb)])[1].numpy(),
    )
    dense = model.get_layer("cls")
    expected = merged_x.mean(axis=(1, 2)) @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    _, reg_logits = get_probe(model, output=1)([tf.constant(xa), tf.constant(xb)])
    np.testing.assert_allclose(reg_logits.numpy(), model([xa, xb])[1].numpy(), atol=1e-6)
    maps = kerasviz.feature_maps(model, [xa, xb], ["conv_a", "conv_b"])
    assert maps["conv_a"].shape == (2, 8, 8, 4) and maps["conv_b"].shape == (2, 8, 8, 4)
    maps = kerasviz.feature_maps(model, {"rgb": xa, "depth": xb}, ["merge"])
    np.testing.assert_allclose(maps["merge"], merged_x, atol=1e-6)


# ---------------------------------------------------------------- caching


def test_probes_and_functions_are_cached_and_not_retraced(tiny_cnn, images16):
    assert get_probe(tiny_cnn, ["conv1"]) is get_probe(tiny_cnn, ["conv1"])
    assert get_probe(tiny_cnn, ["conv1"]) is get_probe(tiny_cnn, [tiny_cnn.layers[0]])
    start = TRACES["feature_maps"]
    for _ in range(3):
        kerasviz.feature_maps(tiny_cnn, images16, ["conv1", "conv2"])
    assert TRACES["feature_maps"] - start == 1


def test_default_cam_layer_skips_one_by_one_logit_conv():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = keras.layers.Conv2D(5, 1, name="logits_conv")(x)
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    assert default_cam_layer(model)[0] == "features"
    assert default_cam_layer(make_nested_model())[0] == "backbone/b_conv3"
    assert default_cam_layer(make_gap_model())[0] == "conv2"


def test_pre_relu_view_gives_values_before_the_relu(nested_model, images32):
    probe = get_probe(nested_model, ["b_conv2", "b_relu1"], pre_relu=True)
    (conv2, relu1), logits = _run(probe, images32)
    backbone = nested_model.layers[0]
    relu_out = keras.Model(backbone.inputs, backbone.get_layer("b_relu1").output)(images32)
    conv = backbone.get_layer("b_conv2")
    expected = tf.nn.conv2d(relu_out, conv.kernel, 1, "SAME").numpy() + conv.bias.numpy()
    np.testing.assert_allclose(conv2, expected, rtol=1e-4, atol=1e-4)
    assert (conv2 < 0).mean() > 0.1  # the ReLU was not applied
    bn_out = keras.Model(backbone.inputs, backbone.get_layer("b_bn1").output)(images32)
    np.testing.assert_allclose(relu1, bn_out.numpy(), rtol=1e-5, atol=1e-5)
    # The rest of the view is unchanged: same logits as without pre_relu.
    np.testing.assert_allclose(logits, _run(get_probe(nested_model), images32)[1], atol=1e-5)


def _logits(probe, inputs):
    return probe(inputs)[1]
