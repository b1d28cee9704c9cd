"""The Python in README.md runs and prints what its comments say.

Whole programs are fenced ```python and run here; fragments are fenced ```py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python block"
    return blocks


def test_readme_tour_runs(capsys: pytest.CaptureFixture[str]) -> None:
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "{'account:1': 100, 'account:2': 5}" in out
    assert "3 attempts" in out


def test_readme_tour_shows_each_expected_crash_as_one_line_as_the_readme_says() -> None:
    # Run as a user would (its own process, stderr a real stream): no traceback, one crash
    # report per crash, and exactly the lines the README's ```text block shows.
    tour = python_blocks()[0]
    result = subprocess.run(
        [sys.executable, "-c", tour], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Traceback" not in result.stderr
    shown = re.findall(r"```text\n(.*?)```", README.read_text(), flags=re.S)[0]
    assert result.stderr.splitlines() == shown.splitlines()
    assert len(result.stderr.splitlines()) == 2  # two crashes of flaky, two restarts
