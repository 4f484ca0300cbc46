"""The report's sections for LRP, DeepLIFT, GradientSHAP, the newer CAMs and the black-box
methods: the maps they draw are the library's own (compared number for number), the captions
say what was done, and the time budget plans them.
"""

from __future__ import annotations

import re
from dataclasses import replace

import keras
import numpy as np
import pytest

import kerasviz
from kerasviz.datasets import shapes
from kerasviz.report import Budget, Costs, InputSpace, Report, Settings, Subject
from kerasviz.report.budget import Work
from kerasviz.report.schedule import analyze, select_sections
from kerasviz.report.sections import (
    _grid_segments,
    _sec_blackbox,
    _sec_gradients,
    _sec_more_cams,
    _segments,
    _superpixel_count,
    blackbox_maps,
    more_cam_maps,
    relevance_maps,
)
from kerasviz.report.subject import prepare

SIZE = 32


def linear_head_model() -> keras.Model:
    """Conv-ReLU layers, a pool and a linear Dense head: the outputs are the logits."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(10, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs, name="linear_head")


@pytest.fixture(scope="module")
def subject():
    images, labels, masks = shapes(4, size=SIZE, seed=5)
    s = Subject(
        name="tiny",
        model=linear_head_model(),
        inputs=images,
        display=images,
        names=[f"#{i}" for i in range(len(images))],
        space=InputSpace.identity(3),
        labels=labels,
        masks=masks,
    )
    return prepare(s)


@pytest.fixture(scope="module")
def fast():
    return Settings.fast()  # show=2, 2 LRP composites, DeepLIFT, 3 GradientSHAP draws


def sections_html(report: Report) -> dict[str, str]:
    html = report.write().read_text()
    return dict(
        zip(
            re.findall(r'<section id="([^"]+)"', html),
            re.split(r'<section id="', html)[1:],
            strict=True,
        )
    )


# ----------------------------------------------------------------------------- gradients


def test_channel_range_is_the_preprocessings_per_channel_bounds():
    # VGG16: BGR minus the ImageNet means, from 0..255 pixels.
    vgg = InputSpace.from_preprocess(keras.applications.vgg16.preprocess_input, 3)
    low, high = vgg.channel_range
    means = np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(low, -means, atol=1e-3)
    np.testing.assert_allclose(high, 255.0 - means, atol=1e-3)
    low, high = InputSpace.identity(3).channel_range
    np.testing.assert_array_equal(low, 0.0)
    np.testing.assert_array_equal(high, 1.0)


def test_relevance_maps_are_the_methods_own(subject, fast):
    s, n = subject, fast.show
    x, t = s.inputs[:n], s.targets[:n]
    maps, notes = relevance_maps(s, fast)
    assert notes == []
    assert list(maps) == ["LRP EpsilonPlus", "LRP EpsilonGammaBox", "DeepLIFT", "GradientSHAP"]
    for name, m in maps.items():
        assert m.shape == (n, SIZE, SIZE) and np.isfinite(m).all(), name
        assert np.abs(m).max() > 0, name
    plus = kerasviz.lrp(s.model, x, t, composite="epsilon_plus").sum(-1)
    box = kerasviz.lrp(
        s.model, x, t, composite="epsilon_gamma_box", value_range=(np.zeros(3), np.ones(3))
    ).sum(-1)
    np.testing.assert_allclose(maps["LRP EpsilonPlus"], plus, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps["LRP EpsilonGammaBox"], box, rtol=1e-5, atol=1e-7)
    # DeepLIFT from black: the map sums to the target logit's change (summation to delta).
    logits = np.asarray(s.model(x)), np.asarray(s.model(np.zeros_like(x)))
    rows = np.arange(n)
    delta = logits[0][rows, t] - logits[1][rows, t]
    np.testing.assert_allclose(maps["DeepLIFT"].sum(axis=(1, 2)), delta, rtol=1e-3, atol=1e-4)
    # GradientSHAP: 3 draws from a black and a white baseline, seeded.
    shap = kerasviz.gradient_shap(
        s.model, x, t, baselines=np.stack([np.zeros_like(x[0]), np.ones_like(x[0])]), samples=3
    ).sum(-1)
    np.testing.assert_allclose(maps["GradientSHAP"], shap, rtol=1e-5, atol=1e-7)


def test_relevance_methods_are_left_out_one_by_one_and_named(subject, fast, tmp_path):
    st = replace(fast, lrp_composites=1, deeplift=0, shap_samples=0, budgeted=True)
    maps, _ = relevance_maps(subject, st)
    assert list(maps) == ["LRP EpsilonPlus"]
    report = Report(tmp_path, "gradients")
    _sec_gradients([subject], st, report.section("gradients", "Gradients"))
    block = sections_html(report)["gradients"]
    caption = re.findall(r"<figcaption>([^<]+)</figcaption>", block)[1]
    assert caption.startswith("Relevance and contributions to the logit")
    assert "LRP EpsilonPlus (epsilon on dense layers, z+ on convolutions)" in caption
    assert "LRP EpsilonGammaBox, DeepLIFT, GradientSHAP left out, within the time budget" in caption
    none = replace(st, lrp_composites=0)
    report = Report(tmp_path / "none", "gradients")
    _sec_gradients([subject], none, report.section("gradients", "Gradients"))
    block = sections_html(report)["gradients"]
    assert "relevance.png" not in block
    assert "LRP EpsilonPlus, LRP EpsilonGammaBox, DeepLIFT, GradientSHAP left out" in block


def test_gradients_section_shows_relevance_with_its_captions(subject, fast, tmp_path):
    report = Report(tmp_path, "gradients")
    _sec_gradients([subject], fast, report.section("gradients", "Gradients"))
    assert {"gradients.png", "relevance.png"} <= set(report.files)
    block = sections_html(report)["gradients"]
    caption = re.findall(r"<figcaption>([^<]+)</figcaption>", block)[1]
    for said in (
        "clipped at the 99.5th percentile",
        "z^B on the first layer, bounded by the input&#39;s range per channel, [0, 1]",
        "DeepLIFT (rescale rule) from a black image",
        "GradientSHAP (3 draws from a black and a white baseline)",
    ):
        assert said in caption, said
    assert "left out" not in caption and "within the time budget" not in caption


# ----------------------------------------------------------------------------- the newer CAMs


def test_more_cam_maps_are_the_functions_maps(subject, fast):
    s, n = subject, fast.show
    x, t = s.inputs[:n], s.targets[:n]
    maps = more_cam_maps(s, fast)
    assert list(maps) == ["HiResCAM", "Eigen-CAM", "XGrad-CAM", "Ablation-CAM"]
    expected = {
        "HiResCAM": kerasviz.hires_cam(s.model, x, t, s.cam_layer),
        "Eigen-CAM": kerasviz.eigen_cam(s.model, x, t, s.cam_layer),
        "XGrad-CAM": kerasviz.xgrad_cam(s.model, x, t, s.cam_layer),
        # Settings.fast ablates 8 of c2's 10 channels.
        "Ablation-CAM": kerasviz.ablation_cam(s.model, x, t, s.cam_layer, max_channels=8),
    }
    for name, m in maps.items():
        assert m.shape == (n, SIZE, SIZE) and np.isfinite(m).all() and m.min() >= 0, name
        np.testing.assert_allclose(m, expected[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert list(more_cam_maps(s, replace(fast, more_cams=2))) == ["HiResCAM", "Eigen-CAM"]


def test_more_cams_section_captions(subject, fast, tmp_path):
    report = Report(tmp_path, "cams")
    _sec_more_cams([subject], fast, report.section("more-cams", "More CAMs"))
    assert "more_cams_tiny.png" in report.files
    caption = re.search(r"<figcaption>([^<]+)</figcaption>", sections_html(report)["more-cams"])[1]
    assert caption.startswith(f"tiny, layer {subject.cam_layer}: HiResCAM")
    assert "the 8 most active of 10 channels; the others weigh 0" in caption
    assert "left out" not in caption
    report = Report(tmp_path / "cut", "cams")
    st = replace(fast, more_cams=3, budgeted=True)
    _sec_more_cams([subject], st, report.section("more-cams", "More CAMs"))
    caption = re.search(r"<figcaption>([^<]+)</figcaption>", sections_html(report)["more-cams"])[1]
    assert "Ablation-CAM left out, within the time budget" in caption


# ----------------------------------------------------------------------------- black-box


def test_grid_segments_by_hand():
    np.testing.assert_array_equal(
        _grid_segments(4, 6, 4),
        [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3], [2, 2, 2, 3, 3, 3]],
    )
    # Few LIME samples: fewer superpixels (at least 4 samples each), never under 8.
    assert _superpixel_count(Settings(segments=40, lime_samples=500)) == 40
    assert _superpixel_count(Settings(segments=40, lime_samples=100)) == 25
    assert _superpixel_count(Settings(segments=40, lime_samples=24)) == 8


def test_segments_fall_back_to_square_cells(subject):
    # SLIC finds one segment in uniform noise: LIME and KernelSHAP get a 3x3 grid instead,
    # bands of 11, 11 and 10 px (row * 3 // 32).
    noise = np.random.default_rng(0).random((1, SIZE, SIZE, 3)).astype(np.float32)
    labels, how = _segments(replace(subject, display=noise), 1, 9)
    assert how == "9 square cells (SLIC found one segment)"
    np.testing.assert_array_equal(labels[0], _grid_segments(SIZE, SIZE, 9))
    assert np.bincount(labels[0].ravel()).tolist() == [121, 121, 110, 121, 121, 110, 110, 110, 100]
    labels, how = _segments(subject, 2, 9)
    assert how.startswith("SLIC superpixels (") and labels.shape == (2, SIZE, SIZE)


def test_blackbox_maps_are_the_methods_own(subject, fast):
    s, n = subject, fast.show
    x, t = s.inputs[:n], s.targets[:n]
    found = blackbox_maps(s, fast)
    labels, how = found["segments"]
    assert labels.shape == (n, SIZE, SIZE)
    assert how.startswith(("SLIC superpixels", "9 square cells"))
    lime = kerasviz.lime(s.model, x, t, segments=labels, samples=fast.lime_samples, seed=0)
    np.testing.assert_allclose(found["LIME"].weights, lime.weights, rtol=1e-5, atol=1e-6)
    shap = found["KernelSHAP"]
    assert np.isfinite(shap.maps).all() and shap.maps.shape == (n, SIZE, SIZE)
    # Efficiency: the weights share out f(x) - f(every superpixel removed).
    np.testing.assert_allclose(shap.weights.sum(-1), shap.score - shap.intercept, atol=1e-5)
    mean = x.mean(axis=(1, 2), keepdims=True)
    rise = kerasviz.rise(s.model, x, t, masks=fast.rise_masks, baseline=mean, seed=0)
    np.testing.assert_allclose(found["RISE"], rise, rtol=1e-5, atol=1e-7)
    assert found["RISE"].shape == (n, SIZE, SIZE) and found["RISE"].min() >= 0


def test_blackbox_section_figure_and_efficiency_table(subject, fast, tmp_path):
    report = Report(tmp_path, "blackbox")
    _sec_blackbox([subject], fast, report.section("blackbox", "Black-box"))
    assert "blackbox.png" in report.files
    block = sections_html(report)["blackbox"]
    caption = re.search(r"<figcaption>([^<]+)</figcaption>", block)[1]
    assert "LIME (24 samples" in caption and "KernelSHAP (24 coalitions" in caption
    assert "RISE (48 random 7x7-cell masks" in caption
    rows = re.findall(r"<tr><td>(#\d)</td><td>[^<]+</td>((?:<td class=\"num\">[^<]+</td>)+)", block)
    assert [r[0] for r in rows] == ["#0", "#1"]
    for _, cells in rows:
        count, p, removed, total = map(float, re.findall(r">([^<]+)<", cells))
        assert count >= 2 and 0 <= p <= 1 and 0 <= removed <= 1
        assert total == pytest.approx(p - removed, abs=2e-3)  # 4 significant digits shown
    st = replace(fast, kernel_shap_samples=0, budgeted=True)
    report = Report(tmp_path / "cut", "blackbox")
    _sec_blackbox([subject], st, report.section("blackbox", "Black-box"))
    block = sections_html(report)["blackbox"]
    assert "<table>" not in block
    assert "KernelSHAP left out, within the time budget" in block


# ----------------------------------------------------------------------------- the budget


def planned(tmp_path, subject, seconds, backward, forward):
    """The three sections planned against made-up costs and a frozen clock (a deterministic
    plan), at the full settings."""
    costs = Costs.from_model(subject.model, forward=forward, backward=backward, trace=0.0)
    report = Report(tmp_path, "planned")
    analyze(
        report,
        [subject],
        Settings(),
        budget=Budget(seconds, clock=lambda: 0.0),
        costs={id(subject.model): costs},
        sections=select_sections(["more_cams", "gradients", "blackbox"]),
    )
    return sections_html(report)


def note_of(block: str) -> str:
    return re.search(r'<p class="note">([^<]+)</p>', block)[1]


def test_the_budget_lowers_the_new_sections_and_captions_say_so(tmp_path, subject):
    # 0.2 s per forward+backward row, 0.1 s per batched forward row, 19 s to spend.
    blocks = planned(tmp_path, subject, seconds=20, backward=0.2, forward=0.1)
    assert list(blocks) == ["more-cams", "gradients", "blackbox"]
    for sid, block in blocks.items():
        assert note_of(block).startswith("Within the time budget: "), sid
        assert "<img " in block and "Skipped" not in block, sid
        assert "within the time budget" in block.replace("Within the time", ""), sid
    cams = note_of(blocks["more-cams"])
    shown = int(re.search(r"budget: (\d) of 4 images", cams)[1])
    assert shown < 3 and "Ablation-CAM of 10 of 10 channels" in cams
    grads = note_of(blocks["gradients"])
    assert grads.startswith("Within the time budget: 1 image, ")
    assert "LRP EpsilonPlus and LRP EpsilonGammaBox, DeepLIFT" in grads.split("(asked")[0]
    draws = int(re.search(r"(\d+) GradientSHAP samples \(asked", grads)[1])
    assert 4 <= draws < 20 and f"GradientSHAP ({draws} draws" in blocks["gradients"]
    black = note_of(blocks["blackbox"])
    lime = int(re.search(r"(\d+) LIME samples", black)[1])
    rise = int(re.search(r"(\d+) RISE masks", black)[1])
    # The rows fit the 19 s: (lime + rise) forward rows at 0.1 s.
    assert 16 <= lime < 500 and 32 <= rise < 2000 and (lime + rise) * 0.1 <= 19
    assert f"LIME ({lime} samples" in blocks["blackbox"]
    assert f"RISE ({rise} random" in blocks["blackbox"]
    assert ("no KernelSHAP" in black) == ("KernelSHAP left out" in blocks["blackbox"])


def test_a_tight_budget_keeps_the_minimums_and_names_what_does_not_fit(tmp_path, subject):
    # 1 s per forward+backward row, 0.5 s per forward row. With 30 s, the gradients keep LRP
    # EpsilonPlus the longest of the methods beyond saliency.
    blocks = planned(tmp_path, subject, seconds=30, backward=1.0, forward=0.5)
    grads = note_of(blocks["gradients"])
    assert "1 image, no SmoothGrad, no integrated gradients, LRP EpsilonPlus, no DeepLIFT" in grads
    assert "relevance.png" in blocks["gradients"]
    # With 12 s, one method on one image each; the black-box section starts on less than its
    # minimum (24 s), as its RISE masks stop at the deadline.
    blocks = planned(tmp_path / "12", subject, seconds=12, backward=1.0, forward=0.5)
    cams = blocks["more-cams"]
    assert "Within the time budget: 1 of 4 images, HiResCAM (asked" in note_of(cams)
    assert "Eigen-CAM, XGrad-CAM, Ablation-CAM left out, within the time budget" in cams
    grads = note_of(blocks["gradients"])
    assert "1 image, no SmoothGrad, no integrated gradients, no LRP, no DeepLIFT, no " in grads
    assert "saliency" in blocks["gradients"] and "relevance.png" not in blocks["gradients"]
    black = note_of(blocks["blackbox"])
    assert "1 of 4 images, 16 LIME samples, no KernelSHAP, 32 RISE masks (asked" in black
    # With 8 s, not even 40% of that minimum: named with the --budget that would include it.
    blocks = planned(tmp_path / "8", subject, seconds=8, backward=1.0, forward=0.5)
    skipped = note_of(blocks["blackbox"])
    assert skipped.startswith("Skipped to stay within the 8 s budget: at its smallest (1 of 4 ")
    assert "16 LIME samples, no KernelSHAP, 32 RISE masks) this section needs about 24 s" in skipped
    assert int(re.search(r"--budget (\d+) would include it", skipped)[1]) > 8
    assert "<img " not in blocks["blackbox"]


def test_rise_masks_stop_at_the_deadline_in_chunks(subject, fast, tmp_path):
    s, n = subject, fast.show
    x, t = s.inputs[:n], s.targets[:n]
    mean = x.mean(axis=(1, 2), keepdims=True)
    # 48 masks in 3 chunks of 16, seeded 0, 1, 2: their mean is RISE over the 48 masks drawn.
    clock = [0.0]
    work = Work(deadline=100.0, clock=lambda: clock[0])
    found = blackbox_maps(s, replace(fast, kernel_shap_samples=0, work=work))
    parts = [kerasviz.rise(s.model, x, t, masks=16, baseline=mean, seed=k) for k in range(3)]
    assert found["RISE masks"] == 48
    np.testing.assert_allclose(found["RISE"], np.mean(parts, axis=0), rtol=1e-5, atol=1e-7)
    # Past the deadline after the first chunk: 16 masks, the first chunk's map.
    work = Work(deadline=-1.0, clock=lambda: clock[0])
    st = replace(fast, kernel_shap_samples=0, work=work)
    found = blackbox_maps(s, st)
    assert found["RISE masks"] == 16
    np.testing.assert_allclose(found["RISE"], parts[0], rtol=1e-5, atol=1e-7)
    report = Report(tmp_path, "rise")
    _sec_blackbox([s], st, report.section("blackbox", "Black-box"))
    assert (
        "RISE (16 of 48 planned (stopped at the deadline) 7x7-cell masks"
        in (sections_html(report)["blackbox"])
    )


def test_work_progress_counts_the_new_sections_units(subject, fast, tmp_path):
    expected, advanced = [], []
    work = Work(advance=advanced.append, expect=expected.append)
    st = replace(fast, work=work)
    report = Report(tmp_path, "units")
    _sec_blackbox([subject], st, report.section("blackbox", "Black-box"))
    assert expected == [24 + 24 + 48] and sum(advanced) == 24 + 24 + 48
