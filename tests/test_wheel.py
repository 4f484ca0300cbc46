"""kerasviz installed as users install it: the wheel holds the demo models, and its demo runs.

The wheel is built from a copy of the sources (nothing is written into the working tree), with
the build tools already installed (``--no-build-isolation``: no download).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODELS = ("shapes_cnn.keras", "shapes_nested.keras")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "kerasviz", src / "kerasviz", ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["--no-cache-dir", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=src,
    )
    (built,) = dist.glob("kerasviz-*.whl")
    return built


def test_wheel_holds_the_package_its_data_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for model in DEMO_MODELS:
            data = archive.read(f"kerasviz/demo_models/{model}")
            assert data == (ROOT / "kerasviz" / "demo_models" / model).read_bytes()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "kerasviz = kerasviz.cli:console" in archive.read(entry_points).decode()
    for name in (
        "kerasviz/__init__.py",
        "kerasviz/_api.py",
        "kerasviz/cli.py",
        "kerasviz/report/schedule.py",
        "kerasviz/report/templates/report.html.j2",
    ):
        assert name in names
    sources = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "kerasviz").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert sources <= names  # every module of the package
    assert not any(n.startswith(("tests/", "models/", "examples/", "benchmarks/")) for n in names)


def test_demo_runs_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q"]
        + ["--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import kerasviz.cli as c; print(c.__file__); print(c.demo_models_dir())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    module, models = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(models) == site / "kerasviz" / "demo_models"
    out = tmp_path / "demo"
    script = site / "bin" / "kerasviz"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kerasviz.cli"]
    result = subprocess.run(
        [*command, "demo", "--out", str(out), "--fast", "--budget", "0", "--quiet"]
        + ["--sections", "predictions,layers"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    html = (out / "report.html").read_text()
    assert "shapes_cnn and shapes_nested" in html and "<td>conv4</td>" in html
