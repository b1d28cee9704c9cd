"""DESIGN rule 6 for the plain job's fast path on the memory broker: its worker runs the
handler right in the worker task's context (a fresh copy of the bus's, given to the task
before the scheduling point that precedes the job), not stepped in a context of its own, and
a dispatch is admitted without a coroutine of its own. The same workload on a `MemoryQueue`
subclass (the slow path) ends the same way: what handlers see, what the bus logs and in which
context, counts, failed jobs and Trio time."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from contextvars import ContextVar
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors._contexts import in_context
from actors.bus import Job, JobContext, MemoryBroker, MemoryQueue, QueuedJob, _worker, open_bus
from actors.bus._broker import QueueStats
from actors.bus._parts import INSIDE

request: ContextVar[str] = ContextVar("request", default="none")


class SlowQueue(MemoryQueue):
    """A subclass: the bus awaits its put and ack, and steps every job in its own context."""


class SlowBroker(MemoryBroker):
    def queue(self, name: str) -> MemoryQueue:
        return self.__dict__.setdefault(name, SlowQueue(name))  # type: ignore[no-any-return]


class _SeesRequest(logging.Filter):
    """Keeps each bus log line with the ``request`` its emitter's context held."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.lines.append((str(record.msg), request.get()))
        return True


async def _workload(broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    seen: list[tuple[Any, int, str, bool]] = []
    stepped = [0]

    def counting(context: Any, awaitable: Awaitable[Any]) -> Awaitable[Any]:
        stepped[0] += 1
        return in_context(context, awaitable)

    monkeypatch.setattr(_worker, "in_context", counting)

    async def work(ctx: JobContext) -> None:
        seen.append((ctx.payload, ctx.attempt, request.get(), INSIDE.get()))
        request.set(f"job {ctx.payload}")  # seen by no other job, and by no bus log line
        if ctx.payload != "at once":
            await trio.sleep(0.1)
        assert request.get() == f"job {ctx.payload}"
        if ctx.payload == "flaky" and ctx.attempt == 1:
            raise ValueError("once")
        if ctx.payload in ("bad", "at once"):
            raise KeyError(ctx.payload)
        if ctx.payload == "slow":
            await trio.sleep(5)

    sees = _SeesRequest()
    logger = logging.getLogger("actors.bus")
    logger.addFilter(sees)
    request.set("outer")
    try:
        async with open_bus(broker=broker, queues={"default": 2}) as bus:
            bus.register("w", work)
            for payload in ("plain", "flaky", "bad", "at once", 1, 2, 3, "slow"):
                job = Job("w", payload)
                job = job.retry(1).backoff(1) if payload == "flaky" else job
                job = job.timeout(1) if payload == "slow" else job
                await bus.dispatch(job)
            await bus.wait_idle()
            stats = bus.stats()
            # Each failed job's record, its ids aside (a fast path's is built from a `Plain`).
            failed = sorted(
                (f.error, f.attempts, repr(attrs.evolve(f.job, job_id="-", dispatch_id="-")))
                for f in await bus.failed_jobs()
            )
    finally:
        logger.removeFilter(sees)
    assert request.get() == "outer"
    return (
        sorted(seen, key=str),
        sorted(sees.lines),
        (stats.outstanding, stats.unrecorded),
        failed,
        trio.current_time(),
        stepped[0],
    )


async def test_a_plain_job_run_in_the_workers_context_ends_as_one_stepped_in_its_own(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = await _workload(MemoryBroker(), monkeypatch)
    start = trio.current_time()
    slow = await _workload(SlowBroker(), monkeypatch)
    assert slow[:-2] == fast[:-2]
    assert slow[-2] - start == pytest.approx(fast[-2], abs=1e-9)
    # Every job saw the bus's context, never another job's write.
    assert {(value, inside) for _, _, value, inside in fast[0]} == {("outer", True)}
    # Each bus log line (a retry, three final failures) was written outside the job's
    # context, on both paths.
    assert {value for _, value in fast[1]} == {"outer"}
    assert [line.split(" (")[0] for line, _ in fast[1]] == ["bus job %s %s failed"] + [
        "bus job %s %s failed for good"
    ] * 3
    # Stepped in a context of their own: on the slow path every attempt (9); on the fast
    # path what follows a failed attempt (4 failures and a retry), and the 3 jobs a worker
    # took while more were ready (it runs those back to back: `test_worker_drain.py`).
    assert (slow[-1], fast[-1]) == (9, 7)


async def test_a_get_woken_then_cancelled_takes_no_job_and_wakes_the_next_worker(
    autojump_clock: Any,
) -> None:
    """A worker parked in `MemoryQueue.get` is woken by a put and cancelled before it runs:
    it takes no job (the fast path's worker runs what get returns at once, with no check of
    its own) and the job goes to the next waiting worker."""
    queue = MemoryQueue("q")
    got: list[tuple[str, str]] = []

    async def worker(name: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            got.append((name, (await queue.get()).job.job_id))

    with trio.fail_after(5):  # (else "second" waits forever)
        async with trio.open_nursery() as nursery:
            first = await nursery.start(worker, "first")
            await nursery.start(worker, "second")
            await trio.testing.wait_all_tasks_blocked()
            queue.put_now([QueuedJob("j1", "d1", "w", "null", "q")])  # wakes "first"
            first.cancel()
    assert got == [("second", "j1")]
    assert queue.stats_now() == QueueStats(ready=0, delayed=0, running=1)


async def test_a_plain_dispatch_queues_the_job_that_the_slow_path_queues(
    autojump_clock: Any,
) -> None:
    """On the memory broker a plain dispatch due now, on no lane, queues a `Plain` (its
    result, job and payload text); `get` hands out the same `QueuedJob` as the slow path's.
    A delayed or lane job is queued as a `QueuedJob` at once."""
    jobs = [
        Job("w"),
        Job("w", {"a": [1, "b"]}).timeout(2).retry(3).backoff(0.5),
        Job("w", 7).on_queue("other"),
        Job("w").lane("L"),
        Job("w").delay(1),
    ]

    async def queued_by(broker: MemoryBroker) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        async with open_bus(broker=broker, queues={"default": 1, "other": 1}, workers=False) as bus:
            bus.register("w", work)
            for job in jobs:
                result = await bus.dispatch(job)
                queue = broker.queue(result.queue)
                plain = bool(queue._ready) and isinstance(queue._ready[-1], tuple)
                if job.options.delay:
                    await trio.sleep(1.5)  # (after the queue moves it to ready)
                delivery = queue.get_now()
                assert delivery is not None
                got = delivery.job
                assert (got.job_id, got.dispatch_id, got.queue) == (
                    result.job_id,
                    result.dispatch_id,
                    result.queue,
                )
                out.append((plain, delivery.delivery, attrs.evolve(got, job_id="", dispatch_id="")))
        return out

    async def work(ctx: JobContext) -> None:
        pass

    fast = await queued_by(MemoryBroker())
    slow = await queued_by(SlowBroker())
    assert [plain for plain, *_ in fast] == [True, True, True, False, False]
    assert [plain for plain, *_ in slow] == [False] * 5
    assert [rest for _, *rest in fast] == [rest for _, *rest in slow]
