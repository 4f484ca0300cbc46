"""The HTML report: the builder, the input-space bookkeeping, and the fast demo in headless Chromium.

The Chromium checks fail (they never skip) when the browser is missing: `make test` installs
Debian's `chromium` package first.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kerasviz
from kerasviz import plot
from kerasviz.cli import main
from kerasviz.report import SECTIONS, Budget, Costs, InputSpace, Progress, Report, png_size
from kerasviz.report.budget import (
    OutOfTime,
    Work,
    fit,
    multiply_adds,
    run_optimization,
    suggest_budget,
)
from kerasviz.report.schedule import analyze, select_sections
from kerasviz.report.sections import (
    _sec_grad_cam,
    _sec_signed_cam,
    _signed_pair,
    standard_tolerance,
)
from kerasviz.report.subject import Settings, Subject, prepare
from kerasviz.report.views import neuron_canvas, paste

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed; `make test` installs Debian's chromium package")
    return path


def render(html: Path, work: Path) -> tuple[dict[str, str], list[str], Path]:
    """Loads ``html`` in headless Chromium: the render-check attributes, section ids, screenshot."""
    browser = chromium()
    url = html.resolve().as_uri()
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={work / 'profile-dom'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    shot = work / "screenshot.png"
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={work / 'profile-shot'}",
            f"--screenshot={shot}",
            "--window-size=1280,4000",
            url,
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )
    footer = re.search(r'<footer id="render-check"([^>]*)>', dom)
    assert footer is not None, "the page has no render-check footer"
    attributes = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', footer.group(1)))
    sections = re.findall(r'<section id="([^"]+)"', dom)
    return attributes, sections, shot


def assert_not_blank(png: Path) -> None:
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.shape == (4000, 1280, 3)
    assert pixels.std() > 20.0  # a white or single-colour page is ~0
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 200


def embedded_images(html: str) -> list[tuple[bytes, str, str]]:
    """(png bytes, alt, file) of every <img> in a report page."""
    found = re.findall(
        r'<img src="data:image/png;base64,([^"]+)" alt="([^"]*)" data-file="([^"]+)"', html
    )
    return [(base64.b64decode(data), alt, file) for data, alt, file in found]


# ----------------------------------------------------------------------------- builder


def small_report(out: Path) -> Path:
    rng = np.random.default_rng(0)
    report = Report(out, "A <title> & more", "subtitle")
    first = report.section("first", "First <section>", "An intro with <b>markup</b>.")
    first.image(rng.random((12, 20, 3)), "array", alt="a random array", caption="caption <i>")
    first.image(plot.curve([1, 2, 3], [1.0, 4.0, 9.0]), "curve", alt="a curve")
    first.table(["name", "value"], [["a<b", 1.23456], ["c", 7]], caption="values")
    second = report.section("second-one", "Second")
    second.text("a note", note=True)
    return report.write()


def test_report_embeds_every_png_and_writes_it_beside(tmp_path):
    path = small_report(tmp_path)
    html = path.read_text()
    images = embedded_images(html)
    assert [file for _, _, file in images] == ["array.png", "curve.png"]
    for data, _, file in images:
        assert data == (tmp_path / file).read_bytes()
    assert png_size(images[0][0]) == (20, 12)
    assert [alt for _, alt, _ in images] == ["a random array", "a curve"]
    assert re.findall(r'<section id="([^"]+)"', html) == ["first", "second-one"]
    # Text is escaped; numbers are formatted; nothing is loaded from elsewhere.
    assert "<title>A &lt;title&gt; &amp; more</title>" in html
    assert "<figcaption>caption &lt;i&gt;</figcaption>" in html
    assert "<td>a&lt;b</td>" in html and '<td class="num">1.235</td>' in html
    assert '<td class="num">7</td>' in html
    assert re.findall(r'(?:src|href)="(?!data:|#)', html) == []
    assert "http" not in html.replace("http-equiv", "")


def test_report_rejects_bad_blocks(tmp_path):
    report = Report(tmp_path, "t")
    sec = report.section("a", "A")
    with pytest.raises(ValueError, match="`id`"):
        report.section("a", "again")
    with pytest.raises(ValueError, match="`id`"):
        report.section("Bad Id", "x")
    sec.image(np.zeros((4, 4)), "img", alt="zeros")
    with pytest.raises(ValueError, match="unique"):
        sec.image(np.zeros((4, 4)), "img", alt="zeros")
    with pytest.raises(ValueError, match="`alt`"):
        sec.image(np.zeros((4, 4)), "other", alt="")
    with pytest.raises(ValueError, match="3 cells"):
        sec.table(["a", "b", "c"], [[1, 2]])


def test_input_space_matches_keras_preprocessing():
    import keras

    rng = np.random.default_rng(0)
    pixels = rng.random((2, 5, 6, 3), dtype=np.float32)
    for name, scale in (("vgg16", 255.0), ("mobilenet_v2", 2.0), ("resnet_v2", 2.0)):
        fn = getattr(keras.applications, name).preprocess_input
        space = InputSpace.from_preprocess(fn, 3)
        expected = np.asarray(fn(pixels * 255.0), np.float32)
        np.testing.assert_allclose(space.to_model(pixels), expected, atol=1e-3)
        np.testing.assert_allclose(space.to_display(expected), pixels, atol=1e-5)
        assert space.scale == pytest.approx(scale)
    # VGG16 flips RGB to BGR: red in display space lands in the last channel.
    vgg = InputSpace.from_preprocess(keras.applications.vgg16.preprocess_input, 3)
    np.testing.assert_allclose(vgg.matrix, 255.0 * np.eye(3)[::-1], atol=1e-4)
    with pytest.raises(ValueError, match="affine"):
        InputSpace.from_preprocess(lambda x: x**2, 3)


def test_chromium_renders_the_page_and_catches_a_broken_image(tmp_path):
    path = small_report(tmp_path / "good")
    attributes, sections, shot = render(path, tmp_path / "good")
    assert attributes == {"data-broken": "0", "data-images": "2", "data-sections": "2"}
    assert sections == ["first", "second-one"]
    assert shot.stat().st_size > 0
    # The same page with one corrupt PNG must be caught by the check.
    html = path.read_text()
    data = re.search(r"data:image/png;base64,([^\"]+)", html).group(1)
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace(data, data[:40], 1))
    attributes, _, _ = render(broken, tmp_path)
    assert attributes["data-broken"] == "1"


# ----------------------------------------------------------------------------- the demo


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    # --budget 0: the full (here fast) settings, whatever the machine's load.
    assert main(["demo", "--out", str(out), "--fast", "--budget", "0", "--quiet"]) == 0
    return out


def test_fast_demo_writes_every_section(fast_demo):
    html = (fast_demo / "report.html").read_text()
    ids = [s.id for s in SECTIONS]
    assert re.findall(r'<section id="([^"]+)"', html) == ids
    blocks = re.split(r'<section id="', html)[1:]
    for sid, block in zip(ids, blocks, strict=True):
        assert "<img " in block or "<table>" in block, f"section {sid} is empty"
    images = embedded_images(html)
    files = sorted(p.name for p in fast_demo.glob("*.png"))
    assert sorted(file for _, _, file in images) == files
    assert len(files) >= 15
    for data, alt, file in images:
        assert alt
        assert data == (fast_demo / file).read_bytes()
        width, height = png_size(data)
        assert width > 20 and height > 20
    # Localization scores of both demo models: every method, three projections of the CAMs.
    local = blocks[-1]
    assert local.count("<table>") == 2
    rows = re.findall(
        r"<tr><td>([^<]+)</td><td>([^<]+)</td>((?:<td class=\"num\">[^<]+</td>)+)</tr>", local
    )
    keys = [(method, projection) for method, projection, _ in rows]
    expected = [
        ("Grad-CAM", "exact RF"),
        ("Grad-CAM", "centered"),
        ("Grad-CAM", "bilinear resize"),
        ("Grad-CAM++", "exact RF"),
        ("Grad-CAM++", "centered"),
        ("Grad-CAM++", "bilinear resize"),
        ("saliency", "-"),
        ("SmoothGrad", "-"),
        ("integrated gradients", "-"),
    ]
    assert keys == expected * 2
    for _, _, cells in rows:
        strict, standard, energy, seconds = map(float, re.findall(r">([^<]+)<", cells))
        assert 0.0 <= strict <= standard <= 1.0  # a tolerance only adds hits
        assert 0.0 <= energy <= 1.0 and seconds >= 0.0
    # Both tolerances are stated: strict (0 px) and the standard 15 px at 224 px, here 9 px.
    assert "pointing game (strict, 0 px)" in local and "pointing game (standard, 9 px)" in local
    assert "15 px at 224 px" in local


def test_fast_demo_renders_in_chromium(fast_demo, tmp_path):
    attributes, sections, shot = render(fast_demo / "report.html", tmp_path)
    assert sections == [s.id for s in SECTIONS]
    assert attributes["data-broken"] == "0"
    assert int(attributes["data-images"]) == len(list(fast_demo.glob("*.png")))
    assert attributes["data-sections"] == str(len(SECTIONS))
    assert_not_blank(shot)


def test_docs_images_come_from_the_demo(fast_demo, tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "examples" / "make_docs_images.py"
    spec = importlib.util.spec_from_file_location("make_docs_images", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--demo-out", str(fast_demo), "--docs", str(tmp_path), "--reuse"])
    for source, target in module.FIGURES.items():
        assert (tmp_path / target).read_bytes() == (fast_demo / source).read_bytes()
    with Image.open(tmp_path / "report_screenshot.png") as image:
        assert image.size == (1280, 2200)


# ----------------------------------------------------------------------------- the time budget


def test_fit_lowers_knobs_stage_by_stage():
    def cost(k):
        return k["steps"] * k["channels"]

    start = {"steps": 96, "channels": 32}
    stages = [("steps", 32), ("channels", 8)]
    assert fit(cost, start, stages, 5000) == (start, True)  # 3072 fits as asked
    # Steps to their floor (32 * 32 = 1024 > 512), then the most channels that fit: 16.
    assert fit(cost, start, stages, 512) == ({"steps": 32, "channels": 16}, True)
    assert fit(cost, start, stages, 1000) == ({"steps": 32, "channels": 31}, True)
    # Steps alone suffice: the largest count with 32 channels under 2000 s is 62.
    assert fit(cost, start, stages, 2000) == ({"steps": 62, "channels": 32}, True)
    # Even the minimum (32 * 8 = 256) is too much: the minimum, and False.
    assert fit(cost, start, stages, 100) == ({"steps": 32, "channels": 8}, False)
    # A floor above what was asked never raises a knob.
    assert fit(cost, {"steps": 4, "channels": 32}, stages, 64) == (
        {"steps": 4, "channels": 16},
        True,
    )


def test_budget_clock_and_correction():
    now = [0.0]
    budget = Budget(100, clock=lambda: now[0], start=0.0)
    assert not budget.full and Budget(0).full and Budget(None).full
    now[0] = 10.0
    assert budget.elapsed() == 10.0
    assert budget.left() == pytest.approx(100 * 0.95 - 10)  # 5% kept for writing the page
    assert budget.estimate(10.0) == 10.0
    budget.observe(10.0, 20.0)  # twice as slow as estimated: the correction moves to 2**0.6
    assert budget.correction == pytest.approx(2**0.6)
    assert budget.estimate(10.0) == pytest.approx(10 * 2**0.6)
    budget.observe(0.5, 100.0)  # estimates under 1 s are too noisy to learn from
    assert budget.correction == pytest.approx(2**0.6)
    assert (suggest_budget(5), suggest_budget(121), suggest_budget(700)) == (10, 140, 780)


def test_multiply_adds_by_hand():
    model = keras_model_for_costs()
    rows = {path: (macs, elements) for path, macs, elements in multiply_adds(model)}
    # conv: 6x6 positions, a 3x3x3x4 kernel; dense: 144 inputs x 2 outputs.
    assert rows["conv"] == (36 * 3 * 3 * 3 * 4, 6 * 6 * 4)
    assert rows["flat"] == (0.0, 144)
    assert rows["dense"] == (144 * 2, 2)
    costs = Costs.from_model(model, forward=0.1, backward=0.3, trace=2.0)
    total = 3888 + 8 * 144 + 8 * 144 + 288 + 8 * 2
    assert costs.work["conv"] == pytest.approx((3888 + 8 * 144) / total)
    assert costs.work["dense"] == pytest.approx(1.0)
    assert costs.layers["conv"] == pytest.approx(1 / 3)
    # n rows through the conv on a quarter of the input; a trace through it (an optimization: x2).
    assert costs.rows(10, "conv", 0.25) == pytest.approx(10 * 0.3 * costs.work["conv"] * 0.25)
    assert costs.compile("conv", 2.0) == pytest.approx(2.0 * 2.0 / 3)


def keras_model_for_costs():
    import keras

    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(2, name="dense"),
        ]
    )


def test_standard_pointing_tolerance():
    assert standard_tolerance((224, 224)) == 15
    assert standard_tolerance((128, 128)) == 9  # 15 * 128 / 224 = 8.6
    assert standard_tolerance((32, 32)) == 2
    assert standard_tolerance((448, 224)) == 22  # the mean side, 336 px: 22.5 rounds to even


def test_select_sections():
    assert [s.id for s in select_sections(["grad_cam", "feature-maps"])] == [
        "feature-maps",
        "grad-cam",
    ]
    assert select_sections(None) == list(SECTIONS)
    with pytest.raises(ValueError, match="bogus.*Valid: predictions, layers, feature_maps"):
        select_sections(["grad_cam", "bogus"])


@pytest.fixture(scope="module")
def strided_model():
    """same-padding convs, a strided conv and a pool, nested: fields with negative starts."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((40, 40, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="c3")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    return keras.Sequential(
        [
            keras.Input((40, 40, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, name="head"),
        ]
    )


def test_neuron_canvas_unit_computes_the_full_models_unit(strided_model):
    model, layer = strided_model, "backbone/c3"
    canvas = neuron_canvas(model, layer)
    rf = kerasviz.receptive_field(model, layer)
    assert canvas.view is not None
    assert canvas.size[0] < 40 and canvas.size[0] >= rf.size[0]
    assert (40 - canvas.size[0]) % rf.stride[0] == 0
    top, left, bottom, right = canvas.box
    assert (bottom - top, right - left) == rf.size  # the whole field, no padding seen
    assert canvas.full_box == rf.box(*canvas.full_unit)
    # Any pixels in the field give the same value, whatever lies outside it.
    rng = np.random.default_rng(0)
    crops = rng.uniform(-1, 1, (3, *canvas.size, 3)).astype(np.float32)
    full = rng.uniform(-1, 1, (3, 40, 40, 3)).astype(np.float32)
    t, lf, b, r = canvas.full_box
    full[:, t:b, lf:r] = crops[:, top:bottom, left:right]
    expected = kerasviz.feature_maps(model, full, [layer])[layer][(slice(None), *canvas.full_unit)]
    got = np.asarray(canvas.view(crops))[(slice(None), *canvas.unit)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_neuron_pattern_on_the_canvas_equals_the_full_optimization(strided_model):
    """Plain pixel ascent moves only the field's pixels: the small input gives the same crop."""
    model, layer = strided_model, "backbone/c3"
    canvas = neuron_canvas(model, layer)
    rng = np.random.default_rng(1)
    full_start = rng.uniform(0.4, 0.6, (40, 40, 3)).astype(np.float32)
    t, lf, b, r = canvas.full_box
    small_start = paste(
        np.full((*canvas.size, 3), 0.5, np.float32), full_start[t:b, lf:r], canvas.box
    )
    kw = dict(steps=6, parametrization="pixel", regularizers=(), transforms=(), learning_rate=0.01)
    full = kerasviz.maximize(
        model,
        [kerasviz.neuron(layer, c, canvas.full_unit) for c in range(3)],
        start=full_start,
        **kw,
    ).images
    small = kerasviz.maximize(
        canvas.view,
        [kerasviz.neuron(canvas.path, c, canvas.unit) for c in range(3)],
        start=small_start,
        **kw,
    ).images
    top, left, bottom, right = canvas.box
    np.testing.assert_allclose(small[:, top:bottom, left:right], full[:, t:b, lf:r], atol=1e-5)
    assert np.abs(full[:, t:b, lf:r] - full_start[t:b, lf:r]).max() > 1e-3  # it moved
    outside = np.ones((40, 40), bool)
    outside[t:b, lf:r] = False
    np.testing.assert_array_equal(
        full[:, outside], np.broadcast_to(full_start[outside], (3, *full_start[outside].shape))
    )


def test_optimization_stops_at_its_deadline_with_the_images_so_far(strided_model):
    clock = [5.0]
    work = Work(deadline=1.0, clock=lambda: clock[0])
    objectives = [kerasviz.channel("backbone/c3", c) for c in range(2)]
    kw = dict(parametrization="pixel", regularizers=(), transforms=(), start="gray")

    def run(**extra):
        return kerasviz.maximize(strided_model, objectives, steps=16, **kw, **extra)

    def run32(**extra):
        return kerasviz.maximize(strided_model, objectives, steps=32, **kw, **extra)

    images, steps = run_optimization(work, 32, run32)
    assert steps == 2  # checked every sixteenth of the steps: stopped at the first check
    expected = kerasviz.maximize(strided_model, objectives, steps=2, **kw).images
    np.testing.assert_allclose(images, expected, atol=1e-6)
    images, steps = run_optimization(Work(deadline=None), 16, run)  # no deadline: all steps
    assert steps == 16 and images.shape == (2, 40, 40, 3)


def test_progress_lines_and_bar(capsys):
    lines = []
    progress = Progress(lines.append)
    progress.start("[1/2] First", 3)
    progress.advance(2)
    progress.finish("[1/2] First: 0.1 s")
    progress.message("a plan")
    assert lines == ["[1/2] First: 0.1 s", "a plan"]
    bar = Progress(lines.append, bar=True)
    bar.start("[2/2] Second", 4)
    bar.expect(5)
    bar.advance(5)
    bar.finish("not echoed: the bar shows it")
    out = capsys.readouterr().out
    assert "[kerasviz] [2/2] Second" in out and "5/5" in out
    assert lines == ["[1/2] First: 0.1 s", "a plan"]


# ----------------------------------------------------------------------------- planned reports


@pytest.fixture(scope="module")
def tiny_subject():
    from conftest import make_nested_model

    model = make_nested_model(size=32, classes=3)
    rng = np.random.default_rng(0)
    display = rng.random((3, 32, 32, 3)).astype(np.float32)
    return Subject(
        name="tiny",
        model=model,
        inputs=display,
        display=display,
        names=["a", "b", "c"],
        space=InputSpace.identity(3),
    )


def planned_report(tmp_path, subject, seconds, backward, trace=0.0):
    """A report planned against made-up costs and a frozen clock: the plan is deterministic."""
    costs = Costs.from_model(subject.model, forward=0.01, backward=backward, trace=trace)
    budget = Budget(seconds, clock=lambda: 0.0)
    report = Report(tmp_path, "planned")
    analyze(report, [subject], Settings(), budget=budget, costs={id(subject.model): costs})
    html = report.write().read_text()
    blocks = dict(
        zip(
            re.findall(r'<section id="([^"]+)"', html),
            re.split(r'<section id="', html)[1:],
            strict=True,
        )
    )
    return html, blocks


def test_budget_lowers_heavy_sections_and_captions_say_so(tmp_path, tiny_subject):
    html, blocks = planned_report(tmp_path, tiny_subject, seconds=60, backward=0.05)
    assert list(blocks) == [s.id for s in SECTIONS]
    assert "Planned for a 60 s time budget" in html
    # 16 channels x 96 steps through b_conv3 alone are estimated at 1.15 * 1536 * 0.05 s > 60 s:
    # the steps are lowered, the note says so next to what was asked, and so does the caption.
    patterns = blocks["filter-patterns"]
    steps = int(re.search(r"Within the time budget: 16 of 16 channels, (\d+) steps", patterns)[1])
    assert 8 <= steps < 96
    assert "asked for: 16 of 16 channels, 96 steps" in patterns
    assert f"16 channels, {steps} steps, within the time budget" in patterns
    for sid, block in blocks.items():
        assert "<img " in block or "<table>" in block or "No ground-truth" in block, sid
        assert "Skipped" not in block
        # A section is lowered exactly when it says so, in its note and in a caption.
        lowered = "Within the time budget:" in block
        assert lowered == ("within the time budget" in block.replace("Within the time", "")), sid


def test_backward_pass_over_budget_keeps_the_cheap_sections(tmp_path, tiny_subject):
    html, blocks = planned_report(tmp_path, tiny_subject, seconds=10, backward=30.0)
    cheap = ("predictions", "layers", "feature-maps", "filters")
    for sid in cheap:
        assert "<img " in blocks[sid] or "<table>" in blocks[sid]
        assert "Skipped" not in blocks[sid]
    for sid in set(blocks) - set(cheap) - {"localization"}:
        note = re.search(r'<p class="note">(Skipped[^<]+)</p>', blocks[sid]).group(1)
        assert "one forward+backward pass takes 30 s per image" in note
        budget = int(re.search(r"--budget (\d+) would include", note).group(1))
        assert budget > 10 and budget % 10 == 0
        assert "<img " not in blocks[sid]


def test_sections_that_do_not_fit_are_named_never_dropped(tmp_path, tiny_subject):
    # At their smallest, filter patterns need 4 channels x 8 steps of forward+backward passes
    # of 4 s on a quarter of the input: far more than the 11.4 s a 12 s budget leaves, though one
    # pass (4 s) would fit. The gradients keep saliency at least (one pass).
    html, blocks = planned_report(tmp_path, tiny_subject, seconds=12, backward=4.0, trace=1.0)
    skipped = [sid for sid, block in blocks.items() if "Skipped to stay within" in block]
    assert "filter-patterns" in skipped and "gradients" not in skipped
    assert "saliency" in blocks["gradients"]
    for sid, block in blocks.items():
        if sid in skipped:
            budget = int(re.search(r"--budget (\d+) would include it", block).group(1))
            assert budget > 12
        else:
            assert "<img " in block or "<table>" in block or "No ground-truth" in block, sid


def test_signed_cam_rides_in_grad_cams_batch(tmp_path, tiny_subject):
    """Shared batches: the signed CAM's two rows come from Grad-CAM's call, no new step."""
    from dataclasses import replace

    from kerasviz._probe import TRACES

    s = prepare(tiny_subject)
    report = Report(tmp_path, "shared")
    work = Work()
    st = replace(Settings.fast(), work=work)
    _sec_grad_cam([s], st, report.section("grad-cam", "Grad-CAM"))
    raw = work.shared[("signed", id(s.model))]
    x, _, (a, b), _ = _signed_pair(s)
    assert a == int(np.argmax(s.scores[0])) and a != b
    direct = kerasviz.grad_cam(
        s.model, np.concatenate([x, x]), [a, b], s.cam_layer, relu=False, upsample=None
    )
    np.testing.assert_allclose(raw, direct, rtol=1e-4, atol=1e-6)
    assert (raw < 0).any()  # without ReLU: evidence against shows
    traces = sum(TRACES.values())
    _sec_signed_cam([s], st, report.section("signed-cam", "Signed"))
    assert sum(TRACES.values()) == traces
    assert "signed_cam.png" in report.files and "signed_cam_each.png" in report.files


def test_an_optimization_stops_before_a_stretch_that_would_pass_its_deadline():
    """Each check projects the last stretch's duration: stop if the next one would end late."""
    clock = [0.0]
    work = Work(deadline=10.0, clock=lambda: clock[0])
    options = work.optimization(16)
    assert options["snapshot_every"] == 1 and options["progress"] is False
    callback = options["callback"]
    images = np.zeros((1, 4, 4, 3), np.float32)
    for step, now in ((1, 3.0), (2, 6.0)):  # 3 s stretches: 6 + 3 = 9 s, still before 10 s
        clock[0] = now
        callback(step, images, slice(0, 1))
    clock[0] = 7.5  # a 1.5 s stretch: the next ends at 9 s, in time
    callback(3, images, slice(0, 1))
    clock[0] = 9.0  # the next 1.5 s stretch would end at 10.5 s, past the deadline
    with pytest.raises(OutOfTime) as stop:
        callback(4, images, slice(0, 1))
    assert stop.value.steps == 4 and stop.value.images is images
    clock[0] = 50.0
    callback(16, images, slice(0, 1))  # the last step never stops: the result is complete
