"""`make demo`'s last act: a worker process is killed (SIGKILL) in the middle of a batch, and
the batch still completes on the worker that replaces it. No server: the embedded SQLite
broker and store share one file.

The act dispatches a batch of thumbnail jobs with a ``finally_`` `Job` callback from a bus that
runs no jobs (``workers=False``), starts a worker process (``python -m examples.demo_crash
worker FILE``), kills it once a few jobs are done, and starts another. The jobs the dead worker
held come back when their lease lapses (``visibility_timeout=1`` in the broker URL) and run
again there: at least once, so a handler must be idempotent (``ctx.delivery`` says 2 then).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio
from rich.console import Console
from rich.table import Table

from actors.bus import BatchState, Handlers, Job, JobContext, open_bus

JOBS = 30
HANDLERS = Handlers()
ROOT = Path(__file__).resolve().parents[1]


def urls(db: str) -> tuple[str, str]:
    """The store's and the broker's URLs: one file, a short lease."""
    store = f"sqlite:///{db}"
    return store, f"{store}?visibility_timeout=1&poll_interval=0.05"


@HANDLERS.handler("thumbs:make")
async def make_thumbnail(ctx: JobContext) -> None:
    await trio.sleep(0.06)  # the "work"; idempotent: writing the same thumbnail twice is fine
    folder = Path(ctx.payload["folder"])
    (folder / f"thumb-{ctx.payload['n']}.txt").write_text(f"delivery {ctx.delivery}\n")


@HANDLERS.handler("thumbs:done")
async def all_done(ctx: JobContext) -> None:
    assert isinstance(ctx.state, BatchState)
    (Path(ctx.payload["folder"]) / "finally.txt").write_text(f"{ctx.state.processed}\n")


@attrs.frozen
class CrashReport:
    jobs: int
    processed: int
    killed_after: int
    """Jobs recorded when the first worker was killed."""
    redelivered: int
    """Thumbnails last written by a redelivery (their first run died with the worker)."""
    finally_ran: bool
    seconds: float


async def _start_worker(db: str) -> trio.Process:
    argv = [sys.executable, "-m", "examples.demo_crash", "worker", db]
    return await trio.lowlevel.open_process(argv, cwd=ROOT)


async def _poll(done: Callable[[], Awaitable[bool]]) -> None:
    """Wait for what another process does (no event crosses processes)."""
    while True:
        if await done():
            return
        await trio.sleep(0.02)


async def run_crash(db: str, *, within: float = 60.0) -> CrashReport:
    """The act without printing: dispatch, kill the first worker mid-batch, finish on a second."""
    folder = Path(db).parent
    store, broker = urls(db)
    started = trio.current_time()
    processes: list[trio.Process] = []
    try:
        async with open_bus(store=store, broker=broker, handlers=HANDLERS, workers=False) as bus:
            jobs = [Job("thumbs:make", {"folder": str(folder), "n": n}) for n in range(JOBS)]
            done = Job("thumbs:done", {"folder": str(folder)})
            batch_id = await bus.batch(*jobs).name("thumbnails").finally_(done).dispatch()
            with trio.fail_after(within):  # polling another process: bounded
                processes.append(await _start_worker(db))

                async def some_done() -> bool:
                    return (await bus.find_batch(batch_id)).processed >= JOBS // 4

                async def finished() -> bool:
                    await trio.lowlevel.checkpoint()
                    return (folder / "finally.txt").exists()

                await _poll(some_done)
                killed_after = (await bus.find_batch(batch_id)).processed
                processes[0].send_signal(signal.SIGKILL)
                await processes[0].wait()
                processes.append(await _start_worker(db))
                await _poll(finished)
            state = await bus.find_batch(batch_id)
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
    redelivered = sum(
        1 for f in folder.glob("thumb-*.txt") if f.read_text().strip() != "delivery 1"
    )
    return CrashReport(
        jobs=JOBS,
        processed=state.processed,
        killed_after=killed_after,
        redelivered=redelivered,
        finally_ran=(folder / "finally.txt").exists(),
        seconds=trio.current_time() - started,
    )


def show(console: Console, report: CrashReport) -> None:
    table = Table(title="A worker process SIGKILLed mid-batch (SQLite broker and store)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("jobs in the batch", str(report.jobs))
    table.add_row("recorded when the first worker was killed", str(report.killed_after))
    table.add_row("recorded in the end (on its replacement)", str(report.processed))
    table.add_row("runs redelivered after the kill (ctx.delivery 2)", str(report.redelivered))
    table.add_row("the batch's finally_ Job callback ran", "yes" if report.finally_ran else "NO")
    table.add_row("seconds, lease (1 s) included", f"{report.seconds:.1f}")
    console.print(table)


async def run(console: Console, db: str) -> None:
    report = await run_crash(db)
    show(console, report)
    if report.processed != report.jobs or not report.finally_ran:
        raise SystemExit("the killed worker's batch did not complete: this is a bug")


async def worker(db: str) -> None:
    """A worker process: runs the bus until SIGTERM (a graceful stop) or SIGKILL."""
    store, broker = urls(db)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def serve(task_status: trio.TaskStatus[None]) -> None:
                async with open_bus(
                    store=store, broker=broker, handlers=HANDLERS, queues={"default": 2}
                ):
                    task_status.started()
                    await trio.sleep_forever()

            await nursery.start(serve)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if sys.argv[1:2] != ["worker"] or len(sys.argv) != 3:
        raise SystemExit(f"usage: python -m examples.demo_crash worker FILE (pid {os.getpid()})")
    trio.run(worker, sys.argv[2])
