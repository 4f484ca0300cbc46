"""`kerasviz report` under its time budget, on real-sized models: each run's time per section.

Setup (issue 12): VGG16, ResNet50 and EfficientNetB0 (``weights=None``, 224x224), each nested
in a small head (``Sequential([base, GlobalAveragePooling2D, Dense(10, softmax)])``), on three
photos from ``skimage.data`` (astronaut, chelsea, coffee) resized to 224x224; then the two demo
models (128x128) on the same photos, and ``kerasviz demo`` itself. Each run is the installed
``kerasviz`` command in a fresh process, timed from start to exit (Python start, TensorFlow
import and the process's exit included), with the default budget (120 s on a CPU) unless
``--budget`` says otherwise. Bound: every run ends within 1.15x its budget, with every section
present (none skipped).

Each run prints its wall time against the budget, the seconds of every section in page order
(parsed from the command's progress lines), and what the planner lowered. The machine's load
average is printed too: on a shared machine, a loaded run gets smaller sizes.

Usage: ``python benchmarks/bench_report.py [--budget 120] [--only vgg16,demo] [--work DIR]``.
The three keras.applications models are built once and cached in ``--work`` (about 170 MB).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPLICATIONS = {  # name -> (keras.applications class, --preprocess)
    "vgg16": ("VGG16", "vgg16"),
    "resnet50": ("ResNet50", "resnet50"),
    "efficientnetb0": ("EfficientNetB0", "none"),  # rescales inside; takes 0..255 pixels
}
DEMO = ("shapes_cnn", "shapes_nested")
PHOTOS = ("astronaut", "chelsea", "coffee")
BOUND = 1.15
LINE = re.compile(r"^\[kerasviz\] \[\s*\d+/\d+\] (.+?): (?:([\d.]+) s|(skipped))$")


def prepare(work: Path, names: list[str]) -> Path:
    """Writes the photos and the missing application models into ``work``; returns the photos."""
    photos = work / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    if not all((photos / f"{p}.png").exists() for p in PHOTOS):
        import skimage.data
        from PIL import Image

        for name in PHOTOS:
            image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
            image.resize((224, 224), Image.Resampling.BILINEAR).save(photos / f"{name}.png")
    missing = [n for n in names if n in APPLICATIONS and not (work / f"{n}.keras").exists()]
    if missing:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras

        for name in missing:
            keras.utils.set_random_seed(0)
            base = getattr(keras.applications, APPLICATIONS[name][0])(
                weights=None, include_top=False, input_shape=(224, 224, 3)
            )
            model = keras.Sequential(
                [
                    keras.Input((224, 224, 3)),
                    base,
                    keras.layers.GlobalAveragePooling2D(name="gap"),
                    keras.layers.Dense(10, activation="softmax", name="predictions"),
                ],
                name=f"{name}_head",
            )
            model.save(work / f"{name}.keras")
    return photos


def command() -> list[str]:
    script = Path(sys.executable).with_name("kerasviz")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kerasviz.cli"]


def run(label: str, argv: list[str], budget: float, out: Path) -> bool:
    """Runs one report, prints its table; True when on time with every section present."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = subprocess.run(
        [*command(), *argv, "--out", str(out), "--force", "--budget", f"{budget:g}"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(f"\n{label}: FAILED (status {result.returncode})\n{result.stderr[-2000:]}")
        return False
    sections = []
    for line in result.stderr.splitlines():
        match = LINE.match(line)
        if match:
            sections.append((match[1], "skipped" if match[3] else float(match[2])))
    html = (out / "report.html").read_text()
    order = re.findall(r'<section id="[^"]+">\n<h2>([^<]+)</h2>', html)
    skipped = [title for title, seconds in sections if seconds == "skipped"]
    ok = wall <= BOUND * budget and not skipped
    print(
        f"\n{label}: {wall:.1f} s of a {budget:g} s budget = {wall / budget:.2f}x "
        f"(bound {BOUND}x) {'OK' if ok else 'NOT MET'}; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    measured = [line[11:] for line in result.stderr.splitlines() if "forward+backward" in line]
    for line in measured:
        print(f"  {line}")
    times = dict(sections)
    for title in order:  # page order
        seconds = times.get(title, "-")
        shown = f"{seconds:6.1f} s" if isinstance(seconds, float) else f"{seconds:>8}"
        print(f"  {title:48s} {shown}")
    accounted = sum(s for s in times.values() if isinstance(s, float))
    inside = re.search(r"wrote \S+ in ([\d.]+) s", result.stderr)
    inside = float(inside[1]) if inside else wall
    print(f"  {'(loading, measuring, writing the page)':48s} {inside - accounted:6.1f} s")
    print(f"  {'(Python start, imports and exit, outside main)':48s} {wall - inside:6.1f} s")
    for note in re.findall(r'<p class="note">(Within the time budget: [^<]+)</p>', html):
        print(f"  - {note}")
    for note in re.findall(r'<p class="note">(Skipped[^<]+)</p>', html):
        print(f"  - {note}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0, help="seconds (default 120)")
    parser.add_argument(
        "--only",
        default=",".join([*APPLICATIONS, *DEMO, "demo"]),
        help="comma-separated runs: vgg16, resnet50, efficientnetb0, shapes_cnn, "
        "shapes_nested, demo (default: all)",
    )
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/kerasviz_bench_report"), help="cache and output"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    photos = prepare(args.work, names)
    print(
        f"kerasviz report, budget {args.budget:g} s, three {PHOTOS} photos at 224x224; "
        f"{os.cpu_count()} CPUs"
    )
    results = {}
    for name in names:
        out = args.work / f"report_{name}"
        if name in APPLICATIONS:
            model = args.work / f"{name}.keras"
            argv = ["report", str(model), str(photos), "--preprocess", APPLICATIONS[name][1]]
        elif name in DEMO:
            model = ROOT / "kerasviz" / "demo_models" / f"{name}.keras"
            argv = ["report", str(model), str(photos), "--preprocess", "scale01"]
        elif name == "demo":
            argv = ["demo"]
        else:
            parser.error(f"unknown run {name!r}")
        results[name] = run(name, argv, args.budget, out)
    met = sum(results.values())
    print(f"\n{met} of {len(results)} runs within {BOUND}x their budget with every section")
    return 0 if met == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
