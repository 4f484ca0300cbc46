"""The synthetic shapes dataset and the committed demo models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest
from skimage.draw import polygon2mask
from skimage.measure import label

import kerasviz
from kerasviz import datasets
from kerasviz._layers import output_shape

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
# Training used seeds 1, 2 and 3 (examples/train_demo_models.py); this one is fresh.
FRESH_SEED = 20240611


@pytest.fixture(scope="module")
def small():
    return datasets.shapes(48, size=64, seed=7)


def test_public_access_and_class_names():
    assert kerasviz.datasets.shapes is datasets.shapes
    assert datasets.CLASS_NAMES == ("circle", "square", "triangle", "star")


def test_shapes_dtypes_and_ranges(small):
    images, labels, masks = small
    assert images.shape == (48, 64, 64, 3) and images.dtype == np.float32
    assert labels.shape == (48,) and np.issubdtype(labels.dtype, np.integer)
    assert masks.shape == (48, 64, 64) and masks.dtype == bool
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    # Textured: no image is close to flat.
    assert images.reshape(48, -1).std(axis=1).min() > 0.05


def test_deterministic_for_a_seed_and_different_across_seeds(small):
    again = datasets.shapes(48, size=64, seed=7)
    for a, b in zip(small, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = datasets.shapes(48, size=64, seed=8)
    assert np.abs(other[0] - small[0]).mean() > 0.1
    assert not np.array_equal(other[1], small[1])
    assert np.mean(other[2] != small[2]) > 0.01


def test_classes_are_balanced():
    for n, expected in ((10, [3, 3, 2, 2]), (40, [10, 10, 10, 10]), (1, [1, 0, 0, 0])):
        _, labels, _ = datasets.shapes(n, size=32, seed=3)
        np.testing.assert_array_equal(np.bincount(labels, minlength=4), expected)


def test_masks_nonempty_and_strictly_inside(small):
    _, _, masks = small
    area = masks.sum(axis=(1, 2))
    assert area.min() > 30
    border = masks[:, 0, :] | masks[:, -1, :] | masks[:, :, 0] | masks[:, :, -1]
    assert not border.any()
    # One object: a single 8-connected blob per image (thin tips may touch only diagonally).
    assert all(label(m, connectivity=2).max() == 1 for m in masks)


def _ring(masks, width=2):
    """Pixels within ``width`` of the mask but outside it (square dilation)."""
    grown = masks.copy()
    for _ in range(width):
        g = grown.copy()
        g[:, 1:] |= grown[:, :-1]
        g[:, :-1] |= grown[:, 1:]
        g[:, :, 1:] |= grown[:, :, :-1]
        g[:, :, :-1] |= grown[:, :, 1:]
        grown = g
    return grown & ~masks


def test_masks_are_exactly_the_flat_coloured_object(small):
    images, _, masks = small
    ring = _ring(masks)
    for img, m, r in zip(images, masks, ring, strict=True):
        inside = img[m]
        # The object is one colour plus uniform noise of width 0.07.
        assert np.ptp(inside, axis=0).max() <= 0.0701
        colour = (inside.max(axis=0) + inside.min(axis=0)) / 2.0
        # Right outside, the background differs from the object's colour.
        outside = np.linalg.norm(img[r] - colour, axis=-1)
        assert np.mean(outside > 0.1) > 0.7


def test_mask_area_matches_each_class_geometry():
    _, labels, masks = datasets.shapes(80, size=128, seed=11)
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    for lab, m in zip(labels, masks, strict=True):
        area = m.sum()
        cy, cx = ys[m].mean(), xs[m].mean()
        # Circumradius from the farthest pixel centre, plus half a pixel diagonal.
        r = np.sqrt(((ys[m] - cy) ** 2 + (xs[m] - cx) ** 2).max()) + 0.5
        expected = {
            0: np.pi * r**2,  # disc
            1: 2.0 * r**2,  # square of side r * sqrt(2): side**2
            2: 3.0 * np.sqrt(3.0) / 4.0 * r**2,  # equilateral triangle
            3: 5.0 * 0.45 * np.sin(np.pi / 5.0) * r**2,  # 5-point star, inner radius 0.45 r
        }[int(lab)]
        assert abs(area / expected - 1.0) < 0.12, (lab, area, expected)


def test_polygon_rasterizer_agrees_with_scikit_image():
    rng = np.random.default_rng(0)
    labels = np.array([1, 2, 3, 3, 2, 1, 3, 2])
    params = datasets._sample_params(labels, 96, rng)
    xs = np.arange(96, dtype=np.float32) + 0.5
    ours = datasets._object_masks(params, labels, xs)
    for i, lab in enumerate(labels):
        verts = params["verts"][i]
        # scikit-image puts pixel centres at integer (row, col).
        poly = np.stack([params["cy"][i] + verts[:, 1], params["cx"][i] + verts[:, 0]], -1) - 0.5
        ref = polygon2mask((96, 96), poly[: {1: 4, 2: 3, 3: 10}[int(lab)]])
        iou = (ours[i] & ref).sum() / (ours[i] | ref).sum()
        assert iou > 0.95, (lab, iou)


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"n": 2.5}, {"n": True}, {"n": 4, "size": 31}, {"n": 4, "seed": "a"}],
)
def test_invalid_arguments(kwargs):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match="Expected"):
        datasets.shapes(n, **kwargs)


# --- committed demo models -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh():
    images, labels, _ = datasets.shapes(200, size=128, seed=FRESH_SEED)
    return images, labels


@pytest.fixture(scope="module")
def cnn():
    return keras.models.load_model(MODELS / "shapes_cnn.keras", safe_mode=True)


@pytest.fixture(scope="module")
def nested():
    return keras.models.load_model(MODELS / "shapes_nested.keras", safe_mode=True)


def _accuracy(model, images, labels):
    probs = model.predict(images, batch_size=100, verbose=0)
    return np.mean(np.argmax(probs, -1) == labels)


def test_cnn_is_the_classic_architecture(cnn):
    assert isinstance(cnn, keras.Sequential)
    kinds = [type(layer).__name__ for layer in cnn.layers]
    assert kinds == [
        "Conv2D", "Conv2D", "MaxPooling2D", "Conv2D", "Conv2D", "MaxPooling2D",
        "Flatten", "Dropout", "Dense", "Dense", "Dense",
    ]  # fmt: skip
    assert [layer.get_config().get("units") for layer in cnn.layers[-3:]] == [10, 10, 4]
    assert cnn.layers[-1].get_config()["activation"] == "softmax"
    assert output_shape(cnn.get_layer("conv4")) == (None, 58, 58, 32)
    # Receptive field and stride of conv4 by the usual recursion, from the layer configs.
    rf, jump = 1, 1
    for layer in cnn.layers[:5]:
        cfg = layer.get_config()
        k = cfg.get("kernel_size", cfg.get("pool_size"))[0]
        s = cfg["strides"][0]
        assert cfg["padding"] == "valid"
        rf, jump = rf + (k - 1) * jump, jump * s
    assert (rf, jump) == (14, 2)


def test_nested_model_structure(nested):
    assert isinstance(nested, keras.Sequential)
    backbone = nested.layers[0]
    assert isinstance(backbone, keras.Model) and backbone.name == "backbone"
    kinds = {type(layer).__name__ for layer in backbone.layers}
    assert {"BatchNormalization", "Add", "Conv2D", "ReLU"} <= kinds
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(c.get_config()["padding"] == "same" for c in convs)
    assert output_shape(backbone)[1:3] == (16, 16)
    assert [type(layer).__name__ for layer in nested.layers[1:]] == [
        "GlobalAveragePooling2D",
        "Dense",
    ]


def test_committed_models_are_accurate_on_fresh_images(cnn, nested, fresh):
    images, labels = fresh
    assert _accuracy(cnn, images, labels) >= 0.95
    assert _accuracy(nested, images, labels) >= 0.95
    for path in MODELS.glob("shapes_*.keras"):
        assert path.stat().st_size < 2_000_000


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location(
        "train_demo_models", ROOT / "examples" / "train_demo_models.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_twin_converts_exactly_into_the_classic_cnn(script):
    twin = script.build_cnn_twin(32)
    rng = np.random.default_rng(0)
    for layer in twin.layers:  # trained-looking BatchNorm statistics, not the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2.0, c), rng.normal(0, 0.5, c), rng.normal(0, 0.5, c),
                 rng.uniform(0.2, 3.0, c)]
            )  # fmt: skip
    cnn = script.cnn_from_twin(twin, 32)
    assert [layer.name for layer in cnn.layers] == [
        layer.name for layer in script.build_cnn(32).layers
    ]
    # Brightness varies a lot between images, so the pooled features do too.
    x = rng.uniform(0, 1, (8, 32, 32, 3)) * rng.uniform(0, 4, (8, 1, 1, 1))
    x = x.astype("float32")
    twin_view = keras.Model(twin.inputs, [twin.get_layer("dense2_relu").output, twin.output])
    cnn_view = keras.Model(cnn.inputs, [cnn.get_layer("dense2").output, cnn.layers[-1].output])
    want, got = twin_view.predict(x, verbose=0), cnn_view.predict(x, verbose=0)
    assert want[0].std(axis=0).max() > 0.1  # the comparison is not between constants
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)


def test_training_script_fast_mode(script, tmp_path):
    results = script.main(["--fast", "--out", str(tmp_path)])
    assert set(results) == {"shapes_cnn", "shapes_nested"}
    for name in results:
        model = keras.models.load_model(tmp_path / f"{name}.keras", safe_mode=True)
        assert model.output_shape == (None, 4)
        assert 0.0 <= results[name]["verify_acc"] <= 1.0
