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

from kerasviz import plot
from kerasviz.cli import main
from kerasviz.report import SECTIONS, InputSpace, Report, png_size

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
    assert main(["demo", "--out", str(out), "--fast"]) == 0
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
    # Localization scores of both demo models: every method, both projections of the CAMs.
    local = blocks[-1]
    assert local.count("<table>") == 2
    rows = re.findall(
        r"<tr><td>([^<]+)</td><td>([^<]+)</td>((?:<td class=\"num\">[^<]+</td>)+)</tr>", local
    )
    keys = [(method, projection) for method, projection, _ in rows]
    expected = [
        ("Grad-CAM", "exact RF"),
        ("Grad-CAM", "bilinear resize"),
        ("Grad-CAM++", "exact RF"),
        ("Grad-CAM++", "bilinear resize"),
        ("saliency", "-"),
        ("SmoothGrad", "-"),
        ("integrated gradients", "-"),
    ]
    assert keys == expected * 2
    for _, _, cells in rows:
        pointing, energy, seconds = map(float, re.findall(r">([^<]+)<", cells))
        assert 0.0 <= pointing <= 1.0 and 0.0 <= energy <= 1.0 and seconds >= 0.0


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
