"""`make demo`, the bus part: a nightly-report batch and an order chain on SQLite.

Twenty-four report jobs run as one batch on the "reports" queue (four workers) with
`allow_failures`: a few fail once and succeed on their retry, one fails for good. Meanwhile
an order goes through a chain on the "orders" queue. rich shows the batch's progress live
(fed by its `progress` callback) and the chain's steps (fed by an observer); at the end a
summary, read back from the SQLite file by a second bus, shows the state survived.

Run: python -m examples.demo_bus
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import trio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from actors.bus import (
    BatchState,
    ChainState,
    Event,
    EventKind,
    Job,
    JobContext,
    SQLiteStore,
    open_bus,
)

REPORTS = 24
ORDER_STEPS = ("orders:reserve", "orders:charge", "orders:pack", "orders:ship", "orders:notify")


async def run(console: Console, db_path: str) -> None:
    """Run the demo, drawing on ``console``; the bus's state goes to the SQLite ``db_path``."""
    events: Counter[EventKind] = Counter()
    results: dict[str, BatchState | ChainState] = {}
    progress = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
    )
    reports = progress.add_task("nightly reports", total=REPORTS, note="")
    order = progress.add_task("order #1042", total=len(ORDER_STEPS), note="")

    def observe(event: Event) -> None:
        events[event.kind] += 1
        if event.chain_id is not None and event.kind in (
            EventKind.CHAIN_ADVANCED,
            EventKind.CHAIN_COMPLETED,
        ):
            progress.update(order, advance=1, note=f"{event.job_type} done")

    def on_progress(state: BatchState) -> None:
        note = f"[red]{state.failed} failed" if state.failed else ""
        progress.update(reports, completed=state.processed, note=note)

    started = trio.current_time()
    with progress:
        async with open_bus(
            store=SQLiteStore(db_path),
            queues={"reports": 4, "orders": 2},
            observers=[observe],
        ) as bus:

            @bus.handler("reports:build")
            async def build_report(ctx: JobContext) -> None:
                n = ctx.payload["region"]
                await trio.sleep(0.05 + (n * 37 % 10) / 100)  # 50-140 ms of "work"
                if n == 17:
                    raise ValueError(f"region {n}: source data is corrupt")
                if n % 7 == 3 and ctx.attempt == 1:
                    raise ConnectionError(f"region {n}: warehouse busy")

            async def step(ctx: JobContext) -> None:
                await trio.sleep(0.15)

            for name in ORDER_STEPS:
                bus.register(name, step)

            batch_id = await (
                bus.batch(
                    *(
                        Job("reports:build", {"region": n}).retry(2).backoff(0.05)
                        for n in range(REPORTS)
                    )
                )
                .name("nightly-reports")
                .on_queue("reports")
                .allow_failures()
                .progress(on_progress)
                .finally_(lambda state: results.__setitem__("batch", state))
                .dispatch()
            )
            chain_id = await (
                bus.chain(*(Job(name, {"order": 1042}) for name in ORDER_STEPS))
                .on_queue("orders")
                .finally_(lambda state: results.__setitem__("chain", state))
                .dispatch()
            )
            await bus.wait_idle()
    elapsed = trio.current_time() - started

    # A second bus on the same file finds what the first one recorded.
    async with open_bus(store=SQLiteStore(db_path)) as reopened:
        batch = await reopened.find_batch(batch_id)
        chain = await reopened.find_chain(chain_id)

    table = Table(title=f"bus demo: {elapsed:.2f}s, state in {Path(db_path).name}")
    table.add_column("what")
    table.add_column("state read back from SQLite")
    table.add_row(
        f"batch {batch.name}",
        f"{batch.processed}/{batch.total} processed, {batch.failed} failed, "
        f"completed={batch.completed}",
    )
    table.add_row(
        "order #1042 chain",
        f"{chain.next_index}/{len(chain.nodes)} steps, completed={chain.completed}",
    )
    table.add_row(
        "retries", f"{events[EventKind.JOB_FAILED] - batch.failed} failed attempts retried"
    )
    table.add_row("events", ", ".join(f"{k.value}={v}" for k, v in sorted(events.items())))
    table.add_row(
        "callbacks",
        f"finally ran for the batch: {results.get('batch') == batch}, "
        f"for the chain: {results.get('chain') == chain}",
    )
    console.print(table)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(run, Console(), str(Path(tmp) / "bus.db"))
