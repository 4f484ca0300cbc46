"""The dashboard in a real browser: headless Chromium (Debian's package, driven by Playwright).

One test loads the page, selects layers, uploads an image, runs the CAMs and an inversion,
clicks a unit, compares two images, and sends bad input; it checks that the images that come
back are real pictures and change with the selection. It fails (never skips) when Chromium is
missing: `make test` installs it. Playwright downloads no browser here: it is pointed at the
system executable.

`python tests/test_dashboard_browser.py --shots docs` serves the demo models and writes the
README's screenshots (docs/dashboard_*.png).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from dashboard_support import CLASSES, SIZE, decode_url, encode, images, tiny_model

import kerasviz

TIMEOUT_MS = 60_000
ALL_CAMS_SHOWN = """() => {
    const cells = [...document.querySelectorAll('#cams tbody img')];
    return cells.length === 10 && cells.every((img) => img.src.startsWith('data:'));
}"""
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed; `make test` installs Debian's chromium package")
    return path


def picture(page, selector: str) -> np.ndarray:
    """The image an <img> shows, decoded; it must be loaded and not blank."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.src && i.complete; }",
        arg=selector,
    )
    src, width = page.eval_on_selector(selector, "img => [img.src, img.naturalWidth]")
    array = decode_url(src)
    assert width == array.shape[1] > 0, f"{selector} did not load"
    assert array.std() > 1.0, f"{selector} is blank"
    return array


def wait_changed(page, selector: str, old: str) -> str:
    page.wait_for_function(
        "([s, old]) => { const n = document.querySelector(s); return n && n.src && n.src !== old; }",
        arg=[selector, old],
    )
    return page.get_attribute(selector, "src")


@pytest.fixture(scope="module")
def board():
    with kerasviz.dashboard(
        tiny_model(), images(), class_names=CLASSES, port=0, warm_up=False, display=False
    ) as running:
        yield running


def test_dashboard_in_headless_chromium(board, tmp_path):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(board.url)
            page.wait_for_selector("body[data-ready='1']")

            # the layer list: shapes and receptive fields; non-spatial layers are greyed out
            rows = page.locator("#layers tbody tr")
            assert rows.count() == 5
            assert rows.nth(2).inner_text().split() == [
                "c2",
                "Conv2D",
                "15x15x6",
                "8x8",
                "/",
                "2x2",
            ]
            assert page.get_attribute("#layers tr[data-path='gap']", "class") == "flat"

            # select a layer: its feature maps replace the others
            page.wait_for_selector("#maps img")
            before = page.get_attribute("#maps img", "src")
            page.click("#layers tr[data-path='c1']")
            page.wait_for_function(
                "document.getElementById('maps-note').textContent.startsWith('c1:')"
            )
            assert page.locator("#maps img").count() == 4
            maps_c1 = picture(page, "#maps img")
            assert maps_c1.shape == (30, 30, 3)
            assert page.get_attribute("#maps img", "src") != before
            assert "Layer c1" in page.inner_text("#layer-title")

            # upload an image: it becomes the selected one, fitted to 32x32
            subject = page.get_attribute("#subject", "src")
            upload = images(1, seed=9)[0]
            page.set_input_files(
                "#upload",
                files=[{"name": "mine.png", "mimeType": "image/png", "buffer": encode(upload)}],
            )
            page.wait_for_selector("#images button.active[title='mine.png']")
            assert page.locator("#images button").count() == 4
            subject = wait_changed(page, "#subject", subject)
            assert picture(page, "#subject").shape == (SIZE, SIZE, 3)

            # click a unit: its receptive field, activation and pattern
            page.click("#maps img", position={"x": 10, "y": 10})
            page.wait_for_selector("#unit-body:not([hidden])")
            assert "Receptive field rows" in page.inner_text("#unit-text")
            assert page.is_visible("#subject-box")
            page.wait_for_function(
                "document.getElementById('unit-pattern').src.startsWith('data:')"
            )
            assert picture(page, "#unit-framed").shape == (SIZE, SIZE, 3)

            # CAMs: every method, both projections; they change with the layer
            page.click(".tabs button[data-tab='attribution']")
            page.wait_for_function(ALL_CAMS_SHOWN)
            first = "#cams tbody tr[data-method='Grad-CAM'] td:nth-child(2) img"
            cam_c1 = page.get_attribute(first, "src")
            assert picture(page, first).shape == (SIZE, SIZE, 3)
            for cell in page.locator("#cams tbody img").all():
                assert decode_url(cell.get_attribute("src")).std() > 1.0
            page.click("#layers tr[data-path='c2']")
            wait_changed(page, first, cam_c1)
            assert "c2" in page.inner_text("#cams tbody tr[data-method='Grad-CAM'] td:first-child")
            page.wait_for_function("document.getElementById('ig').src.startsWith('data:')")
            picture(page, "#saliency")
            picture(page, "#smoothgrad")
            picture(page, "#ig")

            # inversion: snapshots stream in with SSIM and PSNR
            page.click(".tabs button[data-tab='inversion']")
            page.fill("#inv-steps", "6")
            page.fill("#inv-every", "2")
            page.click("#inv-start")
            page.wait_for_function(
                "document.getElementById('inv-caption').textContent.startsWith('step 6 of 6 ·')"
            )
            assert page.locator("#inv-strip figure").count() == 3
            assert page.inner_text("#inv-metrics").startswith("SSIM ")
            assert picture(page, "#inv-current").shape == (SIZE, SIZE, 3)

            # compare two images side by side
            page.click(".tabs button[data-tab='compare']")
            page.wait_for_selector("#cmp-b .cmp-cam")
            left = picture(page, "#cmp-a .cmp-cam")
            right = picture(page, "#cmp-b .cmp-cam")
            assert not np.array_equal(left, right)
            # ... or two layers of one image
            page.check("input[name='cmp'][value='layers']")
            page.wait_for_function(
                "document.querySelector('#cmp-b h3') && "
                "document.querySelector('#cmp-b h3').textContent === 'layer c1'"
            )
            assert page.inner_text("#cmp-a h3") == "layer c2"
            assert picture(page, "#cmp-a .tiles img").shape == (15, 15, 3)
            assert picture(page, "#cmp-b .tiles img").shape == (30, 30, 3)

            # bad input: a message in the page, and the page keeps working
            page.set_input_files(
                "#upload",
                files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"just text"}],
            )
            page.wait_for_selector("#message:not([hidden])")
            assert "PNG or JPEG" in page.inner_text("#message-text")
            page.click("#message-close")
            page.fill("#layer-input", "no_such_layer")
            page.press("#layer-input", "Enter")
            page.wait_for_selector("#message:not([hidden])")
            assert "which is not a layer name" in page.inner_text("#message-text")
            assert page.input_value("#layer-input") == "c2"  # back to the last good layer
            page.click(".tabs button[data-tab='features']")
            old = page.get_attribute("#subject", "src")
            page.click("#images button[data-key='i0']")
            wait_changed(page, "#subject", old)
            page.wait_for_function(
                "document.getElementById('maps-note').textContent.startsWith('c2:')"
            )
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []


# ------------------------------------------------------------------------------ screenshots


def screenshots(out: Path) -> list[Path]:  # pragma: no cover - run by hand for the docs
    """Serves the demo models and writes one screenshot per tab into ``out``."""
    from playwright.sync_api import sync_playwright

    from kerasviz.cli import DEMO_MODELS, demo_models_dir, load_model
    from kerasviz.datasets import CLASS_NAMES, shapes
    from kerasviz.report.demo import DEMO_SEED

    models = {Path(n).stem: load_model(demo_models_dir() / n) for n in DEMO_MODELS}
    pixels, labels, _ = shapes(8, size=128, seed=DEMO_SEED)
    names = [f"#{i} {CLASS_NAMES[c]}" for i, c in enumerate(labels)]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with (
        kerasviz.dashboard(
            models, pixels, names=names, class_names=CLASS_NAMES, port=0, display=False
        ) as running,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=chromium(), args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(180_000)
        page.goto(running.url + "#model=m0&image=i2&layer=conv4&tab=features")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_selector("#maps img")
        page.click("#maps img >> nth=0", position={"x": 55, "y": 40})
        page.wait_for_function(
            "document.getElementById('unit-pattern-caption').textContent.includes('objective')"
        )
        steps = [
            ("features", None, None),
            ("attribution", None, f"({ALL_CAMS_SHOWN})() && document.getElementById('ig').src"),
            (
                "inversion",
                "#inv-start",
                "document.getElementById('inv-caption').textContent.includes(' s')",
            ),
            ("compare", None, "document.querySelector('#cmp-b .cmp-cam')"),
        ]
        for tab, selector, ready in steps:
            if tab != "features":
                page.click(f".tabs button[data-tab='{tab}']")
            if tab == "inversion":
                page.click(selector)
            elif selector:
                page.wait_for_selector(selector)
            if ready:
                page.wait_for_function(ready)
            page.wait_for_timeout(500)
            path = out / f"dashboard_{tab}.png"
            page.screenshot(path=str(path), full_page=True)
            paths.append(path)
        browser.close()
    return paths


if __name__ == "__main__":  # pragma: no cover
    target = (
        Path(sys.argv[sys.argv.index("--shots") + 1]) if "--shots" in sys.argv else Path("docs")
    )
    for written in screenshots(target):
        print(written)
