"""The bus on a durable broker and store: bad input refused at dispatch, and a batch
cancelled from one bus stops on another that shares the SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.bus import BatchState, DuplicateJob, Handlers, Job, JobContext, UnknownJobType, open_bus


def handlers(ran: list[str]) -> Handlers:
    found = Handlers()

    async def run(ctx: JobContext) -> None:
        ran.append(str(ctx.payload))

    found.register("t", run)
    return found


async def test_a_payload_too_large_for_the_broker_fails_at_dispatch(tmp_path: Path) -> None:
    broker = f"sqlite:///{tmp_path}/jobs.db?max_payload=2000"
    async with open_bus(
        store=f"sqlite:///{tmp_path}/jobs.db", broker=broker, handlers=handlers([]), workers=False
    ) as bus:
        with pytest.raises(ValueError, match=r"max_payload=2000.*put its key in the payload"):
            await bus.dispatch(Job("t", "x" * 5000))
        with pytest.raises(ValueError, match="max_payload=2000"):
            await bus.batch(Job("t", 1), Job("t", "x" * 5000)).dispatch()
        assert (await bus.queue_stats())["default"].ready == 0  # nothing half-queued


async def test_a_job_callback_of_an_unregistered_type_is_refused_at_dispatch(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path}/jobs.db"
    async with open_bus(store=db, broker=db, handlers=handlers([]), workers=False) as bus:
        with pytest.raises(UnknownJobType, match="'reports:publish'"):
            await bus.batch(Job("t")).then(Job("reports:publish")).dispatch()
        with pytest.raises(UnknownJobType, match="'undo'"):
            await bus.chain(Job("t")).catch(Job("undo")).dispatch()
        assert (await bus.queue_stats())["default"].ready == 0


async def test_cancel_batch_from_one_bus_stops_its_jobs_on_another(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/jobs.db"
    broker = f"{db}?poll_interval=0.01"
    ran: list[str] = []
    async with open_bus(store=db, broker=broker, handlers=handlers(ran), workers=False) as bus:
        batch_id = await bus.batch(*(Job("t", i) for i in range(20))).dispatch()
        state = await bus.cancel_batch(batch_id)
        assert state.cancelled
    # Another "process" on the file: it takes the jobs, sees the cancel in the store, and
    # runs none of them; the batch completes with every job counted as cancelled.
    async with open_bus(store=db, broker=broker, handlers=handlers(ran)) as worker:
        with trio.fail_after(10):
            while True:
                if (await worker.find_batch(batch_id)).completed:
                    break
                await trio.sleep(0.01)
        state = await worker.find_batch(batch_id)
        assert (state.pending, state.processed, state.cancelled) == (0, 0, True)
        assert (await worker.queue_stats())["default"].ready == 0
    assert ran == []


async def test_unique_for_holds_across_buses_sharing_the_store(tmp_path: Path) -> None:
    # The claims live in the store (the SQLite file here; PostgreSQL across hosts), so every
    # process sharing the store sees them, whatever the broker.
    db = f"sqlite:///{tmp_path}/jobs.db"
    found = handlers([])
    async with (
        open_bus(store=db, broker=db, handlers=found, workers=False) as one,
        open_bus(store=db, broker=db, handlers=found, workers=False) as two,
    ):
        await one.dispatch(Job("t", {"report": 7}).unique_for(3600))
        with pytest.raises(DuplicateJob, match="unique_for"):
            await two.dispatch(Job("t", {"report": 7}).unique_for(3600))
        await two.dispatch(Job("t", {"report": 8}).unique_for(3600))  # another payload


async def test_a_progress_job_runs_for_a_batch_built_by_another_bus(tmp_path: Path) -> None:
    """A batch dispatched by a bus that runs no jobs: the worker bus, which knows nothing of
    it but what the store holds, queues its `progress` Job after each job (it never did:
    progress was tracked only for a batch built in the worker's own process)."""
    db = f"sqlite:///{tmp_path}/jobs.db"
    broker = f"{db}?poll_interval=0.01"
    ran: list[str] = []
    found = handlers(ran)
    both = trio.Event()

    async def progress(ctx: JobContext) -> None:
        assert isinstance(ctx.state, BatchState)
        ran.append(f"progress {ctx.state.processed}")
        if sum(entry.startswith("progress") for entry in ran) == 2:
            both.set()

    found.register("progress", progress)
    async with open_bus(store=db, broker=broker, handlers=found, workers=False) as bus:
        batch_id = await bus.batch(Job("t", 1), Job("t", 2)).progress(Job("progress")).dispatch()
    async with open_bus(store=db, broker=broker, handlers=found, queues={"default": 1}) as worker:
        with trio.fail_after(10):
            await both.wait()
        assert (await worker.find_batch(batch_id)).completed
    assert sorted(ran[:2]) == ["1", "2"]
    assert [entry.split()[0] for entry in ran[2:]] == ["progress", "progress"]
