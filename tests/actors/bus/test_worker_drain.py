"""A memory worker runs ready jobs back to back (up to `_memory_worker.DRAIN`) without yielding
between them, as an actor drains its mailbox (DESIGN rule 6: no one can tell it from one
scheduling point per job). Each job still sees a fresh copy of the bus's context, other
tasks run at least every `DRAIN` jobs, and the same workload on a `MemoryQueue` subclass
(the slow path: a get per job) ends the same way."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import pytest
import trio

from actors.bus import Job, JobContext, MemoryBroker, MemoryQueue, _memory_worker, open_bus

request: ContextVar[str] = ContextVar("request", default="none")


class SlowQueue(MemoryQueue):
    """A subclass: its workers take every job through `get`, a scheduling point each."""


class SlowBroker(MemoryBroker):
    def queue(self, name: str) -> MemoryQueue:
        return self.__dict__.setdefault(name, SlowQueue(name))  # type: ignore[no-any-return]


async def _workload(broker: MemoryBroker) -> tuple[Any, ...]:
    """Plain jobs, a batch and a chain, all ready at once for one worker."""
    seen: list[tuple[object, str]] = []

    async def work(ctx: JobContext) -> None:
        seen.append((ctx.payload, request.get()))
        request.set(f"job {ctx.payload}")  # seen by no other job
        if ctx.payload == "bad":
            raise KeyError("bad")
        if ctx.payload == "sleepy":
            await trio.sleep(1)
            assert request.get() == "job sleepy"

    request.set("outer")
    async with open_bus(broker=broker, queues={"default": 1}) as bus:
        bus.register("w", work)
        plain = [Job("w", n) for n in range(20)] + [Job("w", "bad"), Job("w", "sleepy")]
        await bus.dispatch_many(plain)
        await bus.batch(*[Job("w", f"b{n}") for n in range(20)]).dispatch()
        await bus.chain(*[Job("w", f"c{n}") for n in range(5)]).dispatch()
        await bus.dispatch_many([Job("w", n) for n in range(20, 40)])
        await bus.wait_idle()
        stats = bus.stats()
        failed = [(f.error, f.attempts) for f in await bus.failed_jobs()]
    assert request.get() == "outer"
    return sorted(seen, key=str), (stats.outstanding, stats.unrecorded), failed


async def test_jobs_run_back_to_back_end_as_jobs_taken_one_get_each(autojump_clock: Any) -> None:
    fast = await _workload(MemoryBroker())
    start = trio.current_time()
    slow = await _workload(SlowBroker())
    assert slow[0] == fast[0]
    assert slow[1:] == fast[1:]
    assert trio.current_time() - start == pytest.approx(start, abs=1e-9)
    # Every job saw the bus's context, never another job's write.
    assert {value for _, value in fast[0]} == {"outer"}
    assert len(fast[0]) == 67


async def test_a_worker_yields_at_least_every_drain_jobs(autojump_clock: Any) -> None:
    """Handlers that never await: another task still runs between every `DRAIN` of them.

    (Trio may run the tasks of one scheduler pass in either order, so two runs of the
    worker can fall between two of the watcher's: at most ``2 * DRAIN`` jobs.)"""
    ran = [0]
    gaps: list[int] = []

    async def work(ctx: JobContext) -> None:
        ran[0] += 1

    async with open_bus(queues={"default": 1}) as bus:
        bus.register("w", work)
        await bus.dispatch_many([Job("w", n) for n in range(100)])
        first = last = ran[0]
        while ran[0] < 100:
            await trio.lowlevel.checkpoint()
            gaps.append(ran[0] - last)
            last = ran[0]
        await bus.wait_idle()
    assert first + sum(gaps) == 100
    assert max(gaps) <= 2 * _memory_worker.DRAIN
