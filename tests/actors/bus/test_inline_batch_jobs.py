"""The memory worker runs a batch job whose success it may count itself inline (no
`Delivery`, no `Worker._run`; `_memory_worker`). DESIGN rule 6: the same workload on a
`MemoryQueue` subclass (every job through `Worker._run` and the coordinator) ends the same
way: what handlers saw, context variables, retries, releases, failures, a cancel from a
handler, batch states, callbacks, stats and Trio time."""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import pytest
import trio

from actors.bus import Job, JobContext, MemoryBroker, MemoryStore, Middleware, Release, open_bus
from actors.bus._worker import Worker

from .test_worker_drain import SlowBroker

request: ContextVar[str] = ContextVar("request", default="none")


async def _passing(ctx: JobContext, call_next: Any) -> None:
    await call_next(ctx)


async def _workload(
    broker: MemoryBroker, runs: list[int], middleware: Sequence[Middleware] = ()
) -> tuple[Any, ...]:
    seen: list[tuple[Any, int, str]] = []
    ends: list[Any] = []
    released: set[str] = set()

    async def work(ctx: JobContext) -> None:
        name, index = ctx.payload
        seen.append((ctx.payload, ctx.attempt, request.get()))
        request.set(f"job {name} {index}")  # seen by no other job
        if name == "retried" and index == 2 and ctx.attempt == 1:
            raise KeyError("once")
        if name == "released" and index == 1 and ctx.job_id not in released:
            released.add(ctx.job_id)
            raise Release(delay=0.5)
        if name == "failing" and index == 3:
            raise ValueError("for good")
        if name == "sleepy":
            await trio.sleep(0.25 * (index + 1))
            assert request.get() == f"job sleepy {index}"
        if name == "cancelling" and index == 1:
            assert ctx.batch_id is not None
            await bus.cancel_batch(ctx.batch_id)

    def end(kind: str) -> Any:
        def callback(state: Any, *error: BaseException) -> None:
            ends.append((kind, state.processed, state.failed, state.cancelled, request.get()))

        return callback

    request.set("outer")
    async with open_bus(
        store=MemoryStore(), broker=broker, queues={"default": 2}, middleware=middleware
    ) as bus:
        bus.register("w", work)
        ids = []
        for name in ["quiet", "retried", "released", "failing", "sleepy", "cancelling"]:
            builder = bus.batch(*(Job("w", (name, i)).retry(1).backoff(0.5) for i in range(6)))
            builder = builder.then(end(f"{name} then")).finally_(end(f"{name} finally"))
            if name == "failing":
                builder = builder.catch(end("failing catch")).allow_failures()
            ids.append(await builder.dispatch())
        await bus.wait_idle()
        states = [await bus.find_batch(batch_id) for batch_id in ids]
        stats = bus.stats()
        failed = sorted((f.error, f.attempts) for f in await bus.failed_jobs())
        inline = bus._batches.handled_inline
    assert request.get() == "outer"
    return (
        sorted(seen, key=str),
        sorted(ends),
        [(s.processed, s.failed, s.pending, s.cancelled, s.completed) for s in states],
        (stats.outstanding, stats.unrecorded),
        failed,
        trio.current_time(),
        runs[0],
        inline,
    )


async def test_inline_batch_jobs_end_as_jobs_run_through_the_worker(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [0]
    run = Worker._run

    async def counting(self: Worker, *args: Any, **kwargs: Any) -> bool:
        runs[0] += 1
        return await run(self, *args, **kwargs)

    monkeypatch.setattr(Worker, "_run", counting)
    fast = await _workload(MemoryBroker(), runs)
    start = trio.current_time()
    runs[0] = 0
    slow = await _workload(SlowBroker(), runs)
    assert slow[:5] == fast[:5]
    assert slow[7] == 0 < fast[7]
    assert slow[5] - start == pytest.approx(fast[5], abs=1e-9)
    # Every job saw the bus's context, never another job's write.
    assert {value for _, _, value in fast[0]} == {"outer"}
    # The inline path ran most jobs (the last of each batch goes to its coordinator).
    assert slow[6] == len(slow[0])
    assert fast[6] < len(fast[0]) // 2
    assert fast[2][1] == (6, 0, 0, False, True)  # retried: every job succeeded
    assert fast[2][3] == (6, 1, 0, False, True)  # failing, failures allowed
    assert fast[4] == [("ValueError: for good", 2)]
    assert fast[2][5][3]  # cancelled from its own handler


async def test_batch_successes_counted_by_a_worker_with_middleware_end_as_the_coordinators(
    autojump_clock: Any,
) -> None:
    """With middleware the job goes through `Worker._run`, and `Batches.settle_now` counts
    its success: the same workload ends as on the slow path."""
    fast = await _workload(MemoryBroker(), [0], [_passing])
    start = trio.current_time()
    slow = await _workload(SlowBroker(), [0], [_passing])
    assert slow[:5] == fast[:5]
    assert slow[5] - start == pytest.approx(fast[5], abs=1e-9)
    assert slow[7] == 0 < fast[7]
