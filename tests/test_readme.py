"""The README's Python snippets run as written, and print what their comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_snippets():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    (tmp_path / "models").symlink_to(ROOT / "models")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(BLOCKS[index], f"README.md[{index}]", "exec"), {"__name__": "readme"})
    printed = out.getvalue()
    if index == 0:
        assert "(14, 14) (2, 2) (0, 0) (0, 0, 14, 14)" in printed
        assert "'conv4': (4, 58, 58, 32)" in printed
        for name in ("conv4.png", "conv1_filters.png", "cam.png", "patterns.png"):
            assert (tmp_path / "out" / name).stat().st_size > 0
        relative_error = float(printed.strip().splitlines()[2])
        assert relative_error < 0.03
    else:
        assert printed.splitlines()[0] == "mobilenetv2_1.00_96/Conv_1"
