"""Every program in examples/ runs to the end, so the teaching series never rots."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"
MODULES = sorted(
    path.stem
    for path in EXAMPLES.glob("*.py")
    if path.stem != "__init__" and not path.stem.startswith("demo")
)


def test_there_are_examples() -> None:
    assert "counter_actor" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_example_runs(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_module(f"examples.{module}", run_name="__main__")
    assert capsys.readouterr().out.strip(), f"examples/{module}.py printed nothing"
