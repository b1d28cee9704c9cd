"""`make demo` runs: the bank adds up and the supervisor restarts the faulty teller."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from examples import demo, demo_bank, demo_crash, demo_lanes, demo_logging, demo_workers


async def test_bank_conserves_money_and_survives_the_injected_fault() -> None:
    report = await demo_bank.run_bank(accounts=300, tellers=20, jobs_per_teller=50)
    assert report.conserved
    assert report.restarts == 1
    # every teller finished its quota: a deposit is one lane job, a transfer holds two lanes
    assert report.jobs >= 20 * 50


async def test_the_injected_fault_shows_as_one_crash_report_line() -> None:
    stream = io.StringIO()
    handler = demo_logging.configure(stream)
    try:
        report = await demo_bank.run_bank(accounts=100, tellers=5, jobs_per_teller=20)
    finally:
        demo_logging.unconfigure(handler)
    assert report.restarts == 1
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines  # no traceback: the crash report alone
    assert lines[0].startswith("ERROR supervisors: supervisor ")
    assert "crashed with InjectedFault('teller " in lines[0]
    assert lines[0].endswith("; restarting it")


async def test_demo_main_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    await demo.main(quick=True)
    out = capsys.readouterr().out
    assert "conserved" in out
    assert "NOT conserved" not in out


async def test_nightly_import_adds_up_batches_and_reports_progress(autojump_clock: Any) -> None:
    report = await demo_workers.run_workers(lines=400)
    assert report.imported + report.failed == 400
    assert report.total_in_db == report.total_expected
    assert report.batcher_ops == report.imported
    assert report.api_calls > report.lines  # some fetches failed and were retried
    assert report.db_calls < report.batcher_ops  # fewer than one load+save per update
    assert report.ticks  # the scheduler reported while the import ran
    assert report.ticks[-1].endswith("/400 lines")


async def test_a_worker_killed_mid_batch_and_the_batch_completes(tmp_path: Path) -> None:
    report = await demo_crash.run_crash(str(tmp_path / "jobs.sqlite3"), within=60)
    assert report.processed == report.jobs == 30
    assert 0 < report.killed_after < report.jobs  # killed mid-batch
    assert report.finally_ran


async def test_lane_jobs_keep_money_and_order_across_a_killed_worker(tmp_path: Path) -> None:
    out = io.StringIO()
    report = await demo_lanes.run(Console(file=out, width=100), str(tmp_path))
    assert report.conserved
    assert report.in_order
    assert report.applied == report.operations + report.transfers  # once each
    assert 0 < report.at_kill < report.applied  # killed mid-way
    assert "money conserved, each account's operations in order" in out.getvalue()
