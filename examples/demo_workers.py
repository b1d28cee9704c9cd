"""The Batcher, the Scheduler and the Pool together, as `make demo` shows them.

A nightly import: a Pool fetches statement lines from a flaky bank API (a few calls fail and
are retried with exponential backoff); each line is applied to its account through the
Batcher, which loads an account once per batch window, applies every line that arrived, and
saves once; meanwhile a Scheduler ticks every 100 ms and reports progress. A line whose
fetch fails five times in a row is reported as failed, never lost silently.
"""

from __future__ import annotations

import random
from datetime import datetime

import attrs
import trio
from rich.console import Console
from rich.table import Table

import actors
from actors import RetryPolicy


class FlakyApi:
    """A bank API that fails 15 % of its calls (seeded, so runs look alike)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.calls = 0

    async def fetch(self, line: int) -> tuple[str, int]:
        self.calls += 1
        await trio.sleep(0.002)
        if self.rng.random() < 0.15:
            raise ConnectionError(f"api hiccup on line {line}")
        return f"account:{line % 8}", (line % 7) + 1


@attrs.define
class SlowDb:
    """Account balances behind a 3 ms round trip."""

    rows: dict[str, int] = attrs.field(factory=dict)
    calls: int = 0

    async def load(self, key: str) -> int:
        self.calls += 1
        await trio.sleep(0.003)
        return self.rows.get(key, 0)

    async def save(self, key: str, balance: int) -> None:
        self.calls += 1
        await trio.sleep(0.003)
        self.rows[key] = balance


@attrs.define
class Progress:
    """A scheduled job: due on every tick, reports how far the import is."""

    imported: int = 0
    total: int = 0
    id: str = "progress"

    def is_due(self, now: datetime) -> bool:
        return True

    async def run(self) -> str:
        return f"{self.imported}/{self.total} lines"


@attrs.frozen
class WorkersReport:
    lines: int
    imported: int
    failed: int
    errors: list[str]
    api_calls: int
    batcher_ops: int
    db_calls: int
    ticks: list[str]
    total_in_db: int
    total_expected: int


async def run_workers(
    console: Console | None = None, *, lines: int = 400, seed: int = 7
) -> WorkersReport:
    api = FlakyApi(seed)
    db = SlowDb()
    progress = Progress(total=lines)
    ticks: list[str] = []
    expected = 0

    async def import_line(batcher: actors.Batcher[int], line: int) -> None:
        nonlocal expected
        account, cents = await api.fetch(line)
        await batcher.run(account, lambda balance: balance + cents)
        expected += cents
        progress.imported += 1

    async def report_ticks(sched: actors.Scheduler) -> None:
        async for tick in sched.results():
            result = tick[progress.id]
            if result.ok:
                ticks.append(str(result.value))
                if console is not None:
                    at = tick.time.strftime("%H:%M:%S.%f")[:-3]
                    console.print(f"  [dim]tick {at}[/dim]  {result.value}")

    retry = RetryPolicy.exponential(max_attempts=5, initial_delay=0.005, max_delay=0.05)
    async with trio.open_nursery() as nursery:
        async with actors.open_scheduler(interval=0.1, limit=2) as sched:
            sched.add(progress)
            nursery.start_soon(report_ticks, sched)
            async with actors.open_batcher(
                db.load, db.save, min_duration=0.02, max_duration=1.0
            ) as batcher:
                async with actors.open_pool(limit=64) as pool:
                    for line in range(lines):
                        await pool.submit(import_line, batcher, line, retry=retry)
                batcher_ops = batcher.stats().ops_total
    return WorkersReport(
        lines=lines,
        imported=progress.imported,
        failed=len(pool.errors),
        errors=sorted({type(e).__name__ for e in pool.errors}),
        api_calls=api.calls,
        batcher_ops=batcher_ops,
        db_calls=db.calls,
        ticks=ticks,
        total_in_db=sum(db.rows.values()),
        total_expected=expected,
    )


def show(console: Console, report: WorkersReport) -> None:
    table = Table(title="Nightly import: Pool (retries) -> Batcher (per account) + Scheduler")
    table.add_column("what")
    table.add_column("figure", justify="right")
    failed = f"{report.failed}" + (f" ({', '.join(report.errors)})" if report.errors else "")
    table.add_row("statement lines imported / failed", f"{report.imported} / {failed}")
    table.add_row("api calls (retries included)", f"{report.api_calls}")
    table.add_row("balance updates through the Batcher", f"{report.batcher_ops}")
    table.add_row("database loads + saves", f"{report.db_calls}")
    table.add_row(
        "database calls saved by batching",
        f"{2 * report.batcher_ops / max(report.db_calls, 1):.1f}x",
    )
    table.add_row("scheduler progress reports", f"{len(report.ticks)}")
    ok = report.total_in_db == report.total_expected
    table.add_row("balances add up", "[green]yes[/green]" if ok else "[red]NO[/red]")
    console.print(table)
