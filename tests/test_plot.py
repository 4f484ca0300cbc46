"""kerasviz.plot: normalizations by hand-computed numbers, exact image stitching and saving,
overlays at their limits, and every figure function drawing the expected panels into a PNG."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from kerasviz import plot

RNG = np.random.default_rng(0)


def _png(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def _shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


# --------------------------------------------------------------------------- normalizations


def test_standardize_matches_hand_computed_values():
    # mean 1.5, std sqrt(1.25): (x - 1.5) / 1.118034 * 64 + 128 = 42.13, 99.38, 156.62, 213.87
    out = plot.normalize(np.array([0.0, 1.0, 2.0, 3.0]), "standardize")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [42, 99, 156, 213])
    # One outlier: mean 1, std sqrt(99); zeros give 121.57 and the outlier 764.8, clipped.
    out = plot.normalize(np.r_[np.zeros(99), 100.0], "standardize")
    np.testing.assert_array_equal(out[:99], 121)
    assert out[99] == 255


def test_standardize_is_per_channel_and_constant_channels_give_128():
    maps = np.zeros((2, 2, 3))
    maps[..., 0] = [[0.0, 1.0], [2.0, 3.0]]
    maps[..., 1] = 0.1  # a float mean of 0.1s is not exactly 0.1: must still be 128
    maps[..., 2] = [[30.0, 31.0], [32.0, 33.0]]  # same shape as channel 0, shifted
    out = plot.normalize(maps, "standardize", axis=(0, 1))
    np.testing.assert_array_equal(out[..., 0], [[42, 99], [156, 213]])
    np.testing.assert_array_equal(out[..., 1], 128)
    np.testing.assert_array_equal(out[..., 2], out[..., 0])


def test_minmax_per_map_and_constant_maps_give_zeros():
    stack = np.array([[[2.0, 4.0], [6.0, 10.0]], [[7.0, 7.0], [7.0, 7.0]]])
    out = plot.normalize(stack, "minmax", axis=(1, 2))
    np.testing.assert_allclose(out[0], [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_array_equal(out[1], 0.0)
    assert out.dtype == np.float32 and not np.isnan(out).any()
    np.testing.assert_allclose(plot.normalize(stack[0]), [[0.0, 0.25], [0.5, 1.0]])


def test_global_then_max_and_its_factors():
    # Global rescale (x + 2) / 8, then each map over its own max.
    stack = np.array([[-2.0, 2.0, 6.0], [-2.0, -1.0, 0.0], [-2.0, -2.0, -2.0]])
    out = plot.normalize(stack, "global_then_max", axis=1)
    np.testing.assert_allclose(out[0], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(out[1], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(out[2], 0.0)
    factors = plot.global_then_max_factors(stack, axis=1)
    np.testing.assert_allclose(factors, [1.0, 4.0, np.inf])
    # A constant stack: zeros and no NaN anywhere.
    assert not np.isnan(plot.normalize(np.ones((2, 3)), "global_then_max", axis=1)).any()
    assert plot.global_then_max_factors(np.ones((2, 3)), axis=1).tolist() == [np.inf, np.inf]


def test_shared_uses_one_scale():
    stack = np.array([[0.0, 5.0], [10.0, 20.0]])
    expected = [[0.0, 0.25], [0.5, 1.0]]
    np.testing.assert_allclose(plot.normalize(stack, "shared"), expected)
    np.testing.assert_allclose(plot.normalize(stack, "shared", axis=1), expected)
    np.testing.assert_array_equal(plot.normalize(np.full((3, 3), 4.0), "shared"), 0.0)


def test_signed_is_centred_at_half_with_one_absolute_scale():
    out = plot.normalize(np.array([-4.0, 0.0, 2.0, 4.0]), "signed")
    np.testing.assert_allclose(out, [0.0, 0.5, 0.75, 1.0])
    # The scale is shared even when maps are named: the weak map stays near 0.5.
    out = plot.normalize(np.array([[-1.0, 1.0], [-4.0, 4.0]]), "signed", axis=1)
    np.testing.assert_allclose(out, [[0.375, 0.625], [0.0, 1.0]])
    np.testing.assert_array_equal(plot.normalize(np.zeros((2, 2)), "signed"), 0.5)


def test_normalize_rejects_bad_input():
    with pytest.raises(ValueError, match="`x` to be finite"):
        plot.normalize(np.array([0.0, np.nan]), "minmax")
    with pytest.raises(ValueError, match="`method`.*'zscore'"):
        plot.normalize(np.ones(3), "zscore")
    with pytest.raises(ValueError, match="`axis`"):
        plot.normalize(np.ones((2, 2)), "minmax", axis=2)
    with pytest.raises(ValueError, match="non-empty"):
        plot.normalize(np.ones((0, 2)), "minmax")


def test_reduce_channels():
    a = np.array([[[1.0, -3.0, -2.0]]])
    assert plot.reduce_channels(a).tolist() == [[3.0]]
    assert plot.reduce_channels(a, signed=True).tolist() == [[-3.0]]
    assert plot.reduce_channels(a, "sum").tolist() == [[4.0]]
    assert plot.reduce_channels(a, "sum", signed=True).tolist() == [[-4.0]]
    np.testing.assert_allclose(plot.reduce_channels(a, "l2"), [[np.sqrt(14.0)]])
    with pytest.raises(ValueError, match="signed=True"):
        plot.reduce_channels(a, "l2", signed=True)


def test_to_uint8_rules():
    np.testing.assert_array_equal(plot.to_uint8(np.array([0.0, 0.5, 1.0])), [0, 128, 255])
    np.testing.assert_array_equal(plot.to_uint8(np.array([0, 7, 255])), [0, 7, 255])
    # Outside [0, 1]: min-max per image along the given axes.
    out = plot.to_uint8(np.array([[-1.0, 1.0], [10.0, 30.0]]), axis=1)
    np.testing.assert_array_equal(out, [[0, 255], [0, 255]])


# --------------------------------------------------------------------------- arrays and files


def test_image_grid_places_every_image_and_fills_margins():
    n, h, w, margin, cols = 5, 3, 4, 2, 3
    images = RNG.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    grid = plot.image_grid(images, cols, margin, background=255)
    assert grid.shape == (2 * h + margin, 3 * w + 2 * margin, 3) and grid.dtype == np.uint8
    covered = np.zeros(grid.shape[:2], bool)
    for k in range(n):
        top, left = (k // cols) * (h + margin), (k % cols) * (w + margin)
        np.testing.assert_array_equal(grid[top : top + h, left : left + w], images[k])
        covered[top : top + h, left : left + w] = True
    # Margins and the empty sixth cell hold the background value.
    np.testing.assert_array_equal(grid[~covered], 255)


def test_image_grid_shapes_and_float_scaling():
    grid = plot.image_grid(np.zeros((64, 10, 12, 3), np.uint8), cols=8, margin=5)
    assert grid.shape == (8 * 10 + 7 * 5, 8 * 12 + 7 * 5, 3)
    np.testing.assert_array_equal(grid, 0)  # black margins by default
    gray = plot.image_grid(np.full((4, 2, 2), 0.5), cols=2, margin=1)
    assert gray.shape == (5, 5)
    np.testing.assert_array_equal(gray[:2, :2], 128)
    np.testing.assert_array_equal(gray[2, :], 0)
    # Outside [0, 1]: min-max per image, so each image spans 0..255.
    ramps = np.stack([np.arange(4.0).reshape(2, 2), 100 * np.arange(4.0).reshape(2, 2)])
    out = plot.image_grid(ramps, cols=2, margin=0)
    np.testing.assert_array_equal(out[:, :2], out[:, 2:])
    np.testing.assert_array_equal(out[:, :2], [[0, 85], [170, 255]])
    std = plot.image_grid(ramps, cols=2, margin=0, normalize="standardize")
    np.testing.assert_array_equal(std[:, :2], [[42, 99], [156, 213]])
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        plot.image_grid(np.zeros((2, 4, 4, 2)))
    with pytest.raises(ValueError, match="`cols`"):
        plot.image_grid(np.zeros((2, 4, 4)), cols=0)


def test_save_round_trips_arrays_exactly(tmp_path):
    for shape in [(7, 9, 3), (7, 9), (7, 9, 4)]:
        array = RNG.integers(0, 256, size=shape, dtype=np.uint8)
        path = plot.save(array, tmp_path / "a" / "b" / f"{len(shape)}_{shape[-1]}.png")
        np.testing.assert_array_equal(np.asarray(Image.open(path)), array)
    single = RNG.integers(0, 256, size=(5, 6, 1), dtype=np.uint8)
    np.testing.assert_array_equal(
        np.asarray(Image.open(plot.save(single, tmp_path / "s.png"))), single[..., 0]
    )
    floats = RNG.integers(0, 256, size=(5, 6, 3)) / 255.0
    loaded = np.asarray(Image.open(plot.save(floats, tmp_path / "f.png")))
    np.testing.assert_array_equal(loaded, np.rint(floats * 255))
    buffer = plot.save(plot.curve([0, 1], [1.0, 2.0]), io.BytesIO())
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- overlays


def test_overlay_limits_and_blend():
    image = RNG.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    heat = RNG.normal(size=(6, 5))
    np.testing.assert_array_equal(plot.overlay(image, heat, alpha=0.0), image)
    np.testing.assert_array_equal(plot.overlay(image / 255.0, heat, alpha=0.0), image)
    colored = matplotlib.colormaps["jet"](plot.normalize(heat, "minmax").astype(float))[..., :3]
    np.testing.assert_array_equal(plot.overlay(image, heat, alpha=1.0), np.rint(colored * 255))
    half = plot.overlay(image, heat, alpha=0.5)
    np.testing.assert_array_equal(half, np.rint((image / 255.0 + colored) / 2 * 255))
    signed = plot.overlay(image, heat, alpha=1.0, cmap="bwr", normalize="signed")
    expected = matplotlib.colormaps["bwr"](0.5 + heat / (2 * np.abs(heat).max()))[..., :3]
    np.testing.assert_array_equal(signed, np.rint(expected * 255))
    gray = plot.overlay(image[..., 0], heat, alpha=0.0)
    np.testing.assert_array_equal(gray, np.repeat(image[..., :1], 3, axis=-1))
    with pytest.raises(ValueError, match="back-project"):
        plot.overlay(image, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="`alpha`"):
        plot.overlay(image, heat, alpha=1.5)


# --------------------------------------------------------------------------- figures


def test_feature_map_grid(tmp_path):
    maps = RNG.normal(size=(6, 6, 5))
    fig = plot.feature_map_grid(maps, path=tmp_path / "grid.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    _png(tmp_path / "grid.png")
    np.testing.assert_array_equal(
        _shown(fig.axes[3]), plot.normalize(maps, "standardize", axis=(0, 1))[..., 3]
    )
    fig = plot.feature_map_grid(maps[None], channels=[4, 0], normalize="shared")
    assert [ax.get_title() for ax in fig.axes] == ["4", "0"]
    np.testing.assert_allclose(_shown(fig.axes[0]), plot.normalize(maps, "shared")[..., 4])
    # Channel 1 is half of channel 0 and channel 2 is at the global minimum everywhere.
    maps = np.zeros((4, 4, 3))
    maps[..., 0] = RNG.uniform(size=(4, 4))
    maps[..., 0] /= maps[..., 0].max()
    maps[..., 1] = maps[..., 0] / 2
    titles = [
        ax.get_title() for ax in plot.feature_map_grid(maps, normalize="global_then_max").axes
    ]
    assert titles == ["0 x1.0", "1 x2.0", "2 (zero)"]
    assert len(plot.feature_map_grid(maps, channels=2).axes) == 2
    with pytest.raises(ValueError, match="`maps`.*index a batch"):
        plot.feature_map_grid(np.zeros((2, 4, 4, 3)))


def test_channel_and_layer_progression(tmp_path):
    maps = RNG.normal(size=(6, 6, 5))
    fig = plot.channel(maps, 2, path=tmp_path / "c.png")
    assert len(fig.axes) == 2  # the panel and its colorbar
    np.testing.assert_array_equal(_shown(fig.axes[0]), maps[..., 2])
    _png(tmp_path / "c.png")
    host = Figure()
    ax = host.add_subplot(1, 2, 2)
    assert plot.channel(maps, 0, ax=ax, colorbar=False) is host and len(host.axes) == 1

    fmaps = {"conv1": RNG.normal(size=(2, 6, 6, 5)), "block/conv2": RNG.normal(size=(2, 3, 3, 4))}
    fig = plot.layer_progression(fmaps, image=1, path=tmp_path / "p.png")
    assert len(fig.axes) == 2
    assert fig.axes[1].get_title() == "block/conv2\n3 x 3 x 4"
    expected = plot.normalize(fmaps["conv1"][1].mean(axis=-1), "minmax")
    np.testing.assert_allclose(_shown(fig.axes[0]), expected)
    _png(tmp_path / "p.png")
    with pytest.raises(ValueError, match="`image`"):
        plot.layer_progression(fmaps, image=2)


def test_filter_figures(tmp_path):
    kernel = RNG.normal(size=(3, 3, 3, 6))
    tiles = plot.filter_tiles({"kernel": kernel, "bias": np.zeros(6)})
    assert tiles.shape == (6, 3, 4 * 3 + 3, 3)
    f = 4
    scaled = (kernel[..., f] - kernel[..., f].min()) / np.ptp(kernel[..., f])
    np.testing.assert_allclose(tiles[f, :, :3], scaled, rtol=1e-6)
    np.testing.assert_array_equal(tiles[f, :, 3], 1.0)  # white separator
    for c in range(3):  # each grey section repeats one channel of the RGB tile
        section = tiles[f, :, 4 + 4 * c : 7 + 4 * c]
        np.testing.assert_allclose(section, np.repeat(scaled[..., c : c + 1], 3, -1), rtol=1e-6)
    fig = plot.filter_rgb(kernel, max_filters=4, path=tmp_path / "rgb.png")
    assert len(fig.axes) == 4
    _png(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="3 input channels"):
        plot.filter_rgb(RNG.normal(size=(3, 3, 4, 2)))

    deep = RNG.normal(size=(3, 3, 5, 6))
    fig = plot.filter_depth_sections(deep, max_filters=4, max_inputs=3, path=tmp_path / "d.png")
    assert len(fig.axes) == 12
    row, col = 2, 1  # filter 2, input channel 1; one signed scale per filter
    expected = 0.5 + deep[..., col, row] / (2 * np.abs(deep[..., row]).max())
    np.testing.assert_allclose(_shown(fig.axes[row * 3 + col]), expected, rtol=1e-6)
    _png(tmp_path / "d.png")

    fig = plot.filter_channel_average(deep, path=tmp_path / "a.png")
    assert len(fig.axes) == 6
    mean = deep.mean(axis=2)
    np.testing.assert_allclose(
        _shown(fig.axes[5]), 0.5 + mean[..., 5] / (2 * np.abs(mean).max()), rtol=1e-6
    )
    _png(tmp_path / "a.png")


def test_gallery_and_heatmaps(tmp_path):
    images = RNG.uniform(size=(3, 8, 8, 3))
    fig = plot.gallery(list(images) + [np.zeros((4, 5))], ["a", "b", "c", "crop"], cols=2)
    assert len(fig.axes) == 4 and fig.axes[3].get_title() == "crop"

    image = RNG.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    cam = RNG.uniform(size=(8, 8))
    grads = RNG.normal(size=(8, 8, 3))
    fig = plot.heatmaps(image, {"grad_cam": cam, "saliency": grads}, path=tmp_path / "h.png")
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["image", "grad_cam", "saliency"]
    np.testing.assert_array_equal(_shown(fig.axes[1]), plot.overlay(image, cam))
    reduced = plot.reduce_channels(grads, "abs_max")
    np.testing.assert_array_equal(_shown(fig.axes[2]), plot.overlay(image, reduced))
    _png(tmp_path / "h.png")
    batch = np.stack([image, image[::-1]])
    fig = plot.heatmaps(batch, {"a": np.stack([cam, cam]), "b": np.stack([cam, cam.T])})
    assert len(fig.axes) == 6
    np.testing.assert_array_equal(_shown(fig.axes[5]), plot.overlay(batch[1], cam.T))
    with pytest.raises(ValueError, match="one map per image"):
        plot.heatmaps(batch, {"a": cam})


def test_signed_map_and_attribution(tmp_path):
    image = RNG.uniform(size=(8, 8, 3))
    cat, dog = RNG.uniform(size=(8, 8)), RNG.uniform(size=(8, 8))
    fig = plot.signed_map(image, cat, dog, labels=("cat", "dog"), path=tmp_path / "s.png")
    assert len(fig.axes) == 2  # the map and its colorbar
    ticks = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert ticks == ["dog", "0", "cat"]
    expected = plot.overlay(image, cat - dog, alpha=0.6, cmap="RdBu_r", normalize="signed")
    np.testing.assert_array_equal(_shown(fig.axes[0]), expected)
    _png(tmp_path / "s.png")
    single = plot.signed_map(image, cat - dog)
    np.testing.assert_array_equal(_shown(single.axes[0]), expected)

    grads = RNG.normal(size=(8, 8, 3))
    fig = plot.attribution(image, grads, signed=True, path=tmp_path / "a.png")
    assert len(fig.axes) == 2
    signed = plot.reduce_channels(grads, signed=True)
    np.testing.assert_array_equal(
        _shown(fig.axes[0]),
        plot.overlay(image, signed, alpha=0.6, cmap="RdBu_r", normalize="signed"),
    )
    _png(tmp_path / "a.png")
    fig = plot.attribution(None, grads, reduce="l2", colorbar=False)
    assert len(fig.axes) == 1
    np.testing.assert_allclose(
        _shown(fig.axes[0]), plot.normalize(np.sqrt((grads**2).sum(-1)), "minmax")
    )


def test_receptive_field_boxes_follow_pixel_edges(tmp_path):
    image = RNG.uniform(size=(32, 32, 3))
    boxes = [(0, 0, 14, 14), (10, 12, 24, 30)]
    fig = plot.receptive_field_boxes(image, boxes, labels=["a", "b"], path=tmp_path / "r.png")
    assert len(fig.axes) == 1
    rects = fig.axes[0].patches
    assert len(rects) == 2
    assert rects[1].get_xy() == (11.5, 9.5)
    assert (rects[1].get_width(), rects[1].get_height()) == (18, 14)
    _png(tmp_path / "r.png")
    with pytest.raises(ValueError, match="bottom > top"):
        plot.receptive_field_boxes(image, [(5, 5, 5, 9)])


def test_curves(tmp_path):
    fig = plot.curve(["c1", "c2", "c3"], {"SSIM": [0.9, 0.5, 0.2], "PSNR/40": [0.8, 0.6, 0.5]})
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c1", "c2", "c3"]
    fig = plot.deletion_curves(
        {"grad_cam": np.linspace(1, 0, 11), "saliency": np.ones(11)},
        path=tmp_path / "del.png",
    )
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["grad_cam (AUC 0.500)", "saliency (AUC 1.000)"]
    assert fig.axes[0].get_xlabel() == "fraction of pixels deleted"
    _png(tmp_path / "del.png")
    fig = plot.deletion_curves({"a": [1.0, 0.0]}, kind="insertion", aucs={"a": 0.25})
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "a (AUC 0.250)"
    with pytest.raises(ValueError, match="len\\(xs\\)"):
        plot.curve([0, 1, 2], [1.0, 2.0])


def test_subfigures_and_no_pyplot_state():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    host = Figure()
    left, right = host.subfigures(1, 2)
    maps = RNG.normal(size=(4, 4, 3))
    assert plot.feature_map_grid(maps, fig=left) is host
    assert plot.filter_channel_average(RNG.normal(size=(3, 3, 2, 4)), fig=right) is host
    assert len(host.axes) == 3 + 4
    assert plt.get_fignums() == before  # nothing registered with pyplot


def test_import_kerasviz_does_not_need_matplotlib():
    # Keras itself imports matplotlib when it is installed, so matplotlib is blocked here:
    # `import kerasviz` and the numpy helpers of `kerasviz.plot` must work without it.
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import numpy as np, kerasviz\n"
        "assert 'kerasviz.plot' not in sys.modules\n"
        "assert kerasviz.plot.image_grid(np.zeros((4, 2, 2)), 2, 1).shape == (5, 5)\n"
        "assert kerasviz.plot.normalize(np.zeros(3), 'signed').tolist() == [0.5] * 3\n"
        "assert sys.modules['matplotlib'] is None\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
