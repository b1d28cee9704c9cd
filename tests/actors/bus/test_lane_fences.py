"""Every store checks a lane job's fence when it records the job's outcome: once a newer
holder of the lane has recorded, a holder whose lease lapsed (paused past it, then resumed)
records nothing, so nothing of a stale holder is applied to the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from actors.bus import (
    BatchRecord,
    ChainRecord,
    FailedJob,
    Job,
    JobContext,
    JobOutcome,
    JobRecord,
    LaneFence,
    LeaseLost,
    MemoryStore,
    QueuedJob,
    SQLiteBroker,
    open_bus,
)

from .stores import T0, StoreFactory, pg_schema, stores
from .test_store_contract import opened

__all__ = ["pg_schema", "stores"]  # the fixtures, imported for pytest


def fence(n: int, lane: str = "a") -> LaneFence:
    return LaneFence("default", lane, n)


def _jobs(n: int) -> tuple[JobRecord, ...]:
    return tuple(JobRecord(f"j{i}", "t", "null", "default", lane="a") for i in range(n))


def _failed(job_id: str) -> FailedJob:
    job = QueuedJob(job_id, "d1", "t", "null", "default", lane="a")
    return FailedJob(job_id, "t", "null", "default", "E: x", "Traceback ...", 1, T0, job)


async def test_a_stale_chain_step_is_refused_and_records_nothing(stores: StoreFactory) -> None:
    async with opened(stores()) as store:
        await store.create_chain(ChainRecord("c1", "d1", "default", _jobs(3), T0))
        assert await store.record_chain_step("c1", 0, None, T0, fence(5)) is not None
        # The holder of fence 4 (its lease lapsed; fence 5 took over) resumes and records.
        with pytest.raises(LeaseLost, match="lane 'a'"):
            await store.record_chain_step("c1", 1, "E: late", T0, fence(4))
        state = await store.get_chain("c1")
        assert (state.next_index, state.failed) == (1, False)  # nothing of it applied
        assert await store.record_chain_step("c1", 1, None, T0, fence(5)) is not None
        assert await store.record_chain_step("c1", 2, None, T0, fence(1, "b")) is not None
        assert (await store.get_chain("c1")).completed  # other lanes keep their own fences


async def test_a_stale_batch_outcome_is_left_out(stores: StoreFactory) -> None:
    async with opened(stores()) as store:
        await store.create_batch(BatchRecord("b1", "d1", None, "default", True, _jobs(3), T0))
        await store.record_batch("b1", [JobOutcome("j0", "succeeded", fence(7))], T0)
        update = await store.record_batch(
            "b1",
            [JobOutcome("j1", "failed", fence(6)), JobOutcome("j2", "succeeded", fence(8))],
            T0,
        )
        assert (update.state.processed, update.state.failed) == (2, 0)
        # j1's outcome was left out: its new holder's counts.
        late = await store.record_batch("b1", [JobOutcome("j1", "succeeded", fence(9))], T0)
        assert (late.state.processed, late.state.failed, late.state.completed) == (3, 0, True)


async def test_a_stale_failed_job_record_is_refused(stores: StoreFactory) -> None:
    async with opened(stores()) as store:
        await store.record_failed(_failed("x"), fence(3))
        with pytest.raises(LeaseLost):
            await store.record_failed(_failed("y"), fence(2))
        assert [f.id for f in await store.failed_jobs()] == ["x"]
        await store.record_failed(_failed("y"))  # a plain job's record takes no fence
        assert [f.id for f in await store.failed_jobs()] == ["x", "y"]


class NewerHolderRecorded(MemoryStore):
    """A store where a newer holder of every lane has recorded: each fenced write refused."""

    def record_chain_step_now(self, *args: Any) -> Any:
        if len(args) > 4 and args[4] is not None:
            raise LeaseLost("a newer holder recorded")
        return super().record_chain_step_now(*args)

    async def record_failed(self, job: FailedJob, fence: LaneFence | None = None) -> None:
        if fence is not None:
            raise LeaseLost("a newer holder recorded")
        await super().record_failed(job, fence)


async def test_the_bus_lets_a_refused_outcome_go(tmp_path: Path) -> None:
    """A refusal is not a store failure to retry: the bus logs it and lets the job go (the
    newer holder records it), without recording anything of it."""

    async def fails(ctx: JobContext) -> None:
        raise ValueError("late")

    store = NewerHolderRecorded()
    broker = SQLiteBroker(tmp_path / "jobs.db", poll_interval=0.02)
    async with open_bus(store=store, broker=broker, queues={"default": 2}) as bus:
        bus.register("t", fails)
        await bus.dispatch(Job("t").lane("a"))
        chain_id = await bus.chain(Job("t").lane("b"), Job("t")).dispatch()
        with trio.fail_after(10):
            await bus.wait_idle()
        assert await bus.failed_jobs() == []
        chain = await bus.find_chain(chain_id)
        assert (chain.next_index, chain.failed) == (0, False)
        assert bus.stats().store_errors == 0
