"""`make demo` runs: the bank adds up and the supervisor restarts the faulty teller."""

from __future__ import annotations

import pytest

from examples import demo, demo_bank


async def test_bank_conserves_money_and_survives_the_injected_fault() -> None:
    report = await demo_bank.run_bank(accounts=300, tellers=20, jobs_per_teller=50)
    assert report.conserved
    assert report.restarts == 1
    # every teller finished its quota: a deposit is one lane job, a transfer holds two lanes
    assert report.jobs >= 20 * 50


async def test_demo_main_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    await demo.main(quick=True)
    out = capsys.readouterr().out
    assert "conserved" in out
    assert "NOT conserved" not in out
