"""Runs the demo and copies a few representative figures into ``docs/`` for the README.

Also saves a screenshot of the top of the report (``docs/report_screenshot.png``) when headless
Chromium is installed.

    python examples/make_docs_images.py [--demo-out demo_output] [--docs docs] [--reuse] [--fast]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from kerasviz.cli import main as kerasviz_main

ROOT = Path(__file__).resolve().parent.parent
FIGURES = {
    "grad_cam_shapes_cnn.png": "demo_grad_cam.png",
    "signed_cam.png": "demo_signed_cam.png",
    "filter_patterns.png": "demo_filter_patterns.png",
    "inversion.png": "demo_inversion.png",
    "feature_maps_3_conv4.png": "demo_feature_maps.png",
    "gradients.png": "demo_gradients.png",
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def screenshot(html: Path, png: Path, height: int = 2200) -> bool:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium not found: no screenshot")
        return False
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={png}",
                f"--window-size=1280,{height}",
                html.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    return png.exists()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-out", default=str(ROOT / "demo_output"), help="demo folder")
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where the pictures go")
    parser.add_argument("--reuse", action="store_true", help="use an existing demo report")
    parser.add_argument("--fast", action="store_true", help="run the demo with --fast")
    args = parser.parse_args(argv)
    demo, docs = Path(args.demo_out), Path(args.docs)
    if not (args.reuse and (demo / "report.html").exists()):
        command = ["demo", "--out", str(demo), "--force"] + (["--fast"] if args.fast else [])
        if kerasviz_main(command) != 0:
            raise SystemExit(1)
    docs.mkdir(parents=True, exist_ok=True)
    for source, target in FIGURES.items():
        shutil.copyfile(demo / source, docs / target)
        print(f"wrote {docs / target}")
    if screenshot(demo / "report.html", docs / "report_screenshot.png"):
        print(f"wrote {docs / 'report_screenshot.png'}")


if __name__ == "__main__":
    main()
