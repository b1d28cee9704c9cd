"""What a bus on a durable broker counts as its own: the jobs it dispatched (not the ones other
processes dispatched that its workers run), and a job given back before it started is not
counted as delivered again."""

from __future__ import annotations

from pathlib import Path

import trio

from actors.bus import Handlers, Job, JobContext, SQLiteStore, open_bus

PATIENCE = 10.0


async def test_a_job_another_process_dispatched_does_not_count_against_this_bus(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path}/jobs.db"
    broker = f"{db}?poll_interval=0.01"
    foreign_ran, release = trio.Event(), trio.Event()
    handlers = Handlers()

    @handlers.handler("own")
    async def own(ctx: JobContext) -> None:
        await release.wait()

    @handlers.handler("foreign")
    async def foreign(ctx: JobContext) -> None:
        foreign_ran.set()

    async with open_bus(store=db, broker=broker, handlers=handlers, workers=False) as other:
        await other.dispatch(Job("foreign"))
        await other.dispatch(Job("foreign"))
    async with open_bus(store=db, broker=broker, handlers=handlers, queues={"default": 3}) as bus:
        await bus.dispatch(Job("own"))
        assert bus.stats().outstanding == 1
        with trio.fail_after(PATIENCE):
            await foreign_ran.wait()
            while (await bus.queue_stats())["default"].running > 1:  # noqa: ASYNC110 - the foreign acks: a count no event signals
                await trio.sleep(0.01)
        # Its own job still runs: the two it finished for the other process change nothing.
        assert bus.stats().outstanding == 1
        release.set()
        with trio.fail_after(PATIENCE):
            await bus.wait_idle()
        assert bus.stats().outstanding == 0


class StuckStore(SQLiteStore):
    """Its cancel check never answers: a worker is stopped before the job starts."""

    asked = trio.Event()

    async def batch_cancelled(self, batch_id: str) -> bool:
        self.asked.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_job_released_before_it_started_is_not_counted_as_redelivered(
    tmp_path: Path,
) -> None:
    # On SQLite: the brokers' own contract test covers release(started=False) on Redis too.
    db = f"sqlite:///{tmp_path}/jobs.db"
    broker = f"{db}?poll_interval=0.01"
    deliveries: list[int] = []
    ran = trio.Event()
    handlers = Handlers()

    @handlers.handler("t")
    async def run(ctx: JobContext) -> None:
        deliveries.append(ctx.delivery)
        ran.set()

    stuck = StuckStore(tmp_path / "jobs.db")
    StuckStore.asked = trio.Event()
    with trio.fail_after(PATIENCE):
        async with open_bus(store=db, broker=broker, handlers=handlers, workers=False) as bus:
            await bus.batch(Job("t")).dispatch()
        with trio.CancelScope() as scope:
            async with open_bus(store=stuck, broker=broker, handlers=handlers):
                await StuckStore.asked.wait()
                scope.cancel()  # the worker gives the job back before it starts
        async with open_bus(store=db, broker=broker, handlers=handlers):
            await ran.wait()
    assert deliveries == [1]


async def test_leaving_a_worker_bus_on_a_durable_broker_waits_for_what_it_holds_only(
    tmp_path: Path,
) -> None:
    # Its own jobs still in the broker are safe there (any worker of any process runs them;
    # other processes may be running some already): leaving waits for the jobs in its hands.
    db = f"sqlite:///{tmp_path}/jobs.db"
    broker = f"{db}?poll_interval=0.01"
    started, finished = trio.Event(), []
    handlers = Handlers()

    @handlers.handler("slow")
    async def slow(ctx: JobContext) -> None:
        started.set()
        await trio.sleep(0.05)
        finished.append(ctx.job_id)

    with trio.fail_after(PATIENCE):
        async with open_bus(store=db, broker=broker, handlers=handlers) as bus:
            running = await bus.dispatch(Job("slow"))
            await bus.dispatch(Job("slow").delay(3600))
            await started.wait()
        assert finished == [running.job_id]  # the job in hand ran to its end
        async with open_bus(store=db, broker=broker, handlers=handlers, workers=False) as other:
            stats = (await other.queue_stats())["default"]
    assert (stats.ready, stats.delayed, stats.running) == (0, 1, 0)
