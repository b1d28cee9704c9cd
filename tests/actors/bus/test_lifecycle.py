"""A bus's lifecycle at its edges: leaving the block, cancelled callers, unique claims,
timeouts inside middleware, how a batch ends, payload keys, event order and fields, and
cancelling a batch from its own callback."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.bus import (
    BatchState,
    BusClosed,
    Delivery,
    DispatchResult,
    DuplicateJob,
    EventKind,
    FailOnError,
    Job,
    JobContext,
    MemoryBroker,
    MemoryQueue,
    MemoryStore,
    NotFound,
    open_bus,
)

from .helpers import Recorder, noop

# ------------------------------------------------------------------ 1: leaving the block


async def test_a_dispatch_under_way_when_the_bus_goes_idle_still_runs(autojump_clock: Any) -> None:
    """A dispatch that started before the bus went idle is waited for, and its job runs."""
    ran: list[tuple[Any, float]] = []
    results: list[DispatchResult] = []

    class SlowStore(MemoryStore):
        async def claim_unique(self, key: str, now: Any, expires_at: Any) -> bool:
            await trio.sleep(1)
            return await super().claim_unique(key, now, expires_at)

    async def handler(ctx: JobContext) -> None:
        ran.append((ctx.payload, trio.current_time()))

    async def late(bus: Any) -> None:
        results.append(await bus.dispatch(Job("a", "late").unique_for(60)))

    async with trio.open_nursery() as nursery:
        async with open_bus(store=SlowStore()) as bus:
            bus.register("a", handler)
            nursery.start_soon(late, bus)
            await trio.sleep(0.5)  # the dispatch is under way (claiming) till 1.0
        left_at = trio.current_time()
    assert len(results) == 1
    assert ran == [("late", 1.0)]
    assert left_at == 1.0


async def _race_the_close() -> tuple[list[int], list[int], bool]:
    """One trial: (jobs accepted from outside, jobs run, whether the dispatch was refused)."""
    ran: list[int] = []
    accepted: list[int] = []
    refused: list[bool] = []

    async def handler(ctx: JobContext) -> None:
        await trio.sleep(1)
        ran.append(ctx.payload)

    async def producer(bus: Any) -> None:
        await bus.wait_idle()
        try:
            await bus.dispatch(Job("a", 99))
        except BusClosed:
            refused.append(True)
        else:
            accepted.append(99)

    async with trio.open_nursery() as nursery:
        async with open_bus() as bus:
            bus.register("a", handler)
            await bus.dispatch(Job("a", 1))
            await trio.sleep(0.1)
            nursery.start_soon(producer, bus)
            await trio.sleep(0.1)
    return accepted, ran, bool(refused)


async def test_a_dispatch_racing_the_close_is_refused_or_run_never_lost(
    autojump_clock: Any,
) -> None:
    """wait_idle() in a producer wakes with the block's own wait_idle(): the producer's
    dispatch either gets BusClosed or its job runs before the bus closes."""
    for _ in range(20):
        accepted, ran, refused = await _race_the_close()
        assert refused != bool(accepted)
        assert set(accepted) <= set(ran), "an accepted job was dropped when the bus closed"


# ------------------------------------------------------------------ 2: cancelled callers


async def test_a_caller_cancelled_after_the_store_write_leaves_nothing_behind(
    autojump_clock: Any,
) -> None:
    """Once stored or accepted, a dispatch completes (queues, reports, returns) even if its
    caller is cancelled meanwhile; nothing is left stored but never queued."""

    class SlowQueue(MemoryQueue):
        async def put(self, jobs: Any, *, delay: float = 0.0) -> None:
            await trio.sleep(1)  # a broker round trip, after the store write
            await super().put(jobs, delay=delay)

    class SlowBroker(MemoryBroker):
        def queue(self, name: str) -> MemoryQueue:
            return self.__dict__.setdefault(name, SlowQueue(name))  # type: ignore[no-any-return]

    ran: list[str] = []

    async def handler(ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    async with open_bus(broker=SlowBroker()) as bus:
        bus.register("a", handler)
        chain_ids: list[str] = []
        with trio.move_on_after(0.5):
            chain_ids.append(await bus.chain(Job("a"), Job("a")).dispatch())
        assert trio.current_time() == 1.0  # the put ran to the end, shielded
        batch_ids: list[str] = []
        with trio.move_on_after(0.5):
            batch_ids.append(await bus.batch(Job("a"), Job("a")).dispatch())
        results: list[DispatchResult] = []
        with trio.move_on_after(0.5):
            results.append(await bus.dispatch(Job("a")))
        assert len(chain_ids) == len(batch_ids) == len(results) == 1
        with trio.fail_after(60):
            await bus.wait_idle()
        chain = await bus.find_chain(chain_ids[0])
        batch = await bus.find_batch(batch_ids[0])
        assert (chain.completed, chain.next_index) == (True, 2)
        assert (batch.completed, batch.processed) == (True, 2)
        assert results[0].job_id in ran
        assert len(ran) == 5


# ------------------------------------------------------------------ 3: unique_for claims


async def test_a_dispatch_cancelled_while_waiting_for_room_claims_nothing(
    autojump_clock: Any,
) -> None:
    async def slow(ctx: JobContext) -> None:
        await trio.sleep(10)

    async with open_bus(queues={"default": 1}, max_pending=1) as bus:
        bus.register("a", slow)
        await bus.dispatch(Job("a", 0))
        with trio.move_on_after(1) as scope:
            await bus.dispatch(Job("a", 1).unique_for(60))
        assert scope.cancelled_caught
        await bus.wait_idle()
        assert trio.current_time() == 10.0
        await bus.dispatch(Job("a", 1).unique_for(60))  # not a duplicate: never accepted
        with pytest.raises(DuplicateJob):
            await bus.dispatch(Job("a", 1).unique_for(60))
        await bus.wait_idle()


# ------------------------------------------------------------------ 4: timeouts


async def test_middleware_sees_a_timeout_as_timeout_error(autojump_clock: Any) -> None:
    attempts: list[tuple[int, float]] = []
    seen: list[str] = []

    async def watch(ctx: JobContext, call_next: Any) -> None:
        try:
            await call_next(ctx)
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    async def slow(ctx: JobContext) -> None:
        attempts.append((ctx.attempt, trio.current_time()))
        await trio.sleep(10)

    recorder = Recorder()
    stop_on_timeout = FailOnError(lambda e: isinstance(e, TimeoutError))
    async with open_bus(middleware=[stop_on_timeout, watch], observers=[recorder]) as bus:
        bus.register("a", slow)
        await bus.dispatch(Job("a").timeout(1).retry(3))
        await bus.wait_idle()
    assert attempts == [(1, 0.0)]  # FailOnError matched the TimeoutError: no retries
    assert seen == ["TimeoutError"]
    (failed,) = recorder.of(EventKind.JOB_FAILED)
    assert isinstance(failed.error, TimeoutError)
    assert failed.duration == 1.0


async def test_a_handler_that_swallows_its_timeout_still_times_out(autojump_clock: Any) -> None:
    swallowed: list[float] = []

    async def stubborn(ctx: JobContext) -> None:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            swallowed.append(trio.current_time())

    recorder = Recorder()
    async with open_bus(observers=[recorder]) as bus:
        bus.register("a", stubborn)
        await bus.dispatch(Job("a").timeout(1))
        await bus.wait_idle()
    assert swallowed == [1.0]
    assert not recorder.of(EventKind.JOB_SUCCEEDED)
    (failed,) = recorder.of(EventKind.JOB_FAILED)
    assert isinstance(failed.error, TimeoutError)


# ------------------------------------------------------------------ 5: batch ends


async def test_a_cancel_after_every_job_started_still_completes_the_batch(
    autojump_clock: Any,
) -> None:
    calls: list[tuple[str, float]] = []

    async def work(ctx: JobContext) -> None:
        await trio.sleep(1)

    def then(state: BatchState) -> None:
        calls.append(("then", trio.current_time()))

    def finally_(state: BatchState) -> None:
        calls.append(("finally", trio.current_time()))

    recorder = Recorder()
    async with open_bus(queues={"default": 2}, observers=[recorder]) as bus:
        bus.register("a", work)
        batch_id = await bus.batch(Job("a"), Job("a")).then(then).finally_(finally_).dispatch()
        await trio.sleep(0.5)
        await bus.cancel_batch(batch_id)
        await bus.wait_idle()
        state = await bus.find_batch(batch_id)
    assert (state.processed, state.failed, state.total, state.completed) == (2, 0, 2, True)
    assert calls == [("then", 1.0), ("finally", 1.0)]
    assert len(recorder.of(EventKind.BATCH_COMPLETED)) == 1
    assert not recorder.of(EventKind.BATCH_CANCELLED)


# ------------------------------------------------------------------ 6: payload keys


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({1: "a"}, r"1 \(int\) in payload;"),
        ({1: "a", "b": 2}, r"1 \(int\) in payload;"),
        ({"a": [0, {"b": {None: 1}}]}, r"None \(NoneType\) in payload\['a'\]\[1\]\['b'\];"),
        ([{1.5: 1}], r"1\.5 \(float\) in payload\[0\];"),
    ],
)
async def test_non_str_dict_keys_are_refused_at_dispatch(
    autojump_clock: Any, payload: Any, where: str
) -> None:
    async with open_bus() as bus:
        bus.register("a", noop)
        with pytest.raises(TypeError, match="dict key that is not a str: " + where):
            await bus.dispatch(Job("a", payload))
        with pytest.raises(TypeError, match="not a str"):
            await bus.batch(Job("a", payload)).dispatch()
        assert bus.stats().outstanding == 0


# ------------------------------------------------------------------ 7, 8: events


def _index(recorder: Recorder, kind: EventKind) -> int:
    return recorder.kinds().index(kind)


async def test_a_dispatch_is_reported_before_its_jobs_start(autojump_clock: Any) -> None:
    for dispatch, started in [
        ("plain", EventKind.DISPATCH_STARTED),
        ("chain", EventKind.CHAIN_STARTED),
        ("batch", EventKind.BATCH_STARTED),
    ]:
        recorder = Recorder()
        async with open_bus(observers=[recorder]) as bus:
            bus.register("a", noop)
            if dispatch == "plain":
                await bus.dispatch(Job("a"))
            elif dispatch == "chain":
                await bus.chain(Job("a"), Job("a")).dispatch()
            else:
                await bus.batch(Job("a"), Job("a")).dispatch()
        first_job = _index(recorder, EventKind.JOB_STARTED)
        assert _index(recorder, started) < first_job, dispatch
        assert _index(recorder, EventKind.DISPATCH_SUCCEEDED) < first_job, dispatch


async def test_dispatch_started_names_the_queue_and_progress_names_the_job(
    autojump_clock: Any,
) -> None:
    async def work(ctx: JobContext) -> None:
        if ctx.payload == "fail":
            raise ValueError("no")

    recorder = Recorder()
    async with open_bus(queues={"main": 1, "other": 1}, observers=[recorder]) as bus:
        bus.register("a", work)
        await bus.dispatch(Job("a"))
        await bus.dispatch(Job("a").on_queue("other"))
        await bus.chain(Job("a")).dispatch()
        await bus.batch(Job("a", "ok"), Job("a", "fail")).allow_failures().dispatch()
        await bus.wait_idle()
    assert [e.queue for e in recorder.of(EventKind.DISPATCH_STARTED)] == [
        "main",
        "other",
        "main",
        "main",
    ]
    progressed = recorder.of(EventKind.BATCH_PROGRESSED)
    started = {e.job_id: e for e in recorder.of(EventKind.JOB_STARTED)}
    assert len(progressed) == 2
    for event in progressed:
        assert event.job_id in started
        assert event.job_type == "a"
        assert event.attempt == 1
    errors = sorted(repr(e.error) for e in progressed)
    assert errors == ["None", "ValueError('no')"]


# ------------------------------------------------------------------ 9, 10: cancel, find


async def test_a_batch_callback_may_cancel_its_own_batch(autojump_clock: Any) -> None:
    results: list[tuple[bool, float]] = []
    finals: list[tuple[int, bool, float]] = []

    async def work(ctx: JobContext) -> None:
        await trio.sleep(1)

    async with open_bus(queues={"default": 1}) as bus:
        bus.register("a", work)

        async def progress(state: BatchState) -> None:
            if state.processed == 1:
                cancelled = await bus.cancel_batch(state.batch_id)
                results.append((cancelled.cancelled, trio.current_time()))

        def finally_(state: BatchState) -> None:
            finals.append((state.processed, state.cancelled, trio.current_time()))

        batch_id = await (
            bus.batch(Job("a"), Job("a"), Job("a")).progress(progress).finally_(finally_)
        ).dispatch()
        with trio.fail_after(60):
            await bus.wait_idle()
        state = await bus.find_batch(batch_id)
    assert results == [(True, 1.0)]
    # The second job had started when the first finished (one worker); the third never ran.
    assert finals == [(2, True, 2.0)]
    assert (state.processed, state.pending, state.completed) == (2, 0, True)


async def test_an_empty_id_is_not_found(autojump_clock: Any) -> None:
    async with open_bus() as bus:
        with pytest.raises(NotFound):
            await bus.find_batch("")
        with pytest.raises(LookupError):
            await bus.find_chain("")
        with pytest.raises(NotFound):
            await bus.cancel_batch("")
        with pytest.raises(TypeError):
            await bus.find_batch(3)  # type: ignore[arg-type]


async def test_a_worker_stopped_as_its_delivery_arrives_gives_it_back_unstarted(
    autojump_clock: Any,
) -> None:
    # A durable queue's claim is shielded (its reply may carry leased jobs), so a worker can
    # get a delivery after its bus was cancelled: it must give it back, not start a job the
    # cancel would cut off half-recorded (a handler failing before any checkpoint used to
    # run and leave its job leased until the lease lapsed).
    released: list[tuple[str, bool]] = []

    class ShieldedGet(MemoryQueue):
        async def get(self) -> Delivery:
            with trio.CancelScope(shield=True):
                await trio.sleep(1)
                delivery = await super().get()
            return delivery

        async def release(self, deliveries: Any, *, started: bool = True) -> None:
            released.extend((d.job.job_type, started) for d in deliveries)
            await super().release(deliveries, started=started)

    class Broker(MemoryBroker):
        def queue(self, name: str) -> MemoryQueue:
            return self.__dict__.setdefault(name, ShieldedGet(name))  # type: ignore[no-any-return]

    ran: list[str] = []
    with trio.move_on_after(0.5):
        async with open_bus(broker=Broker(), queues={"default": 1}) as bus:

            @bus.handler("boom")
            async def boom(ctx: JobContext) -> None:
                ran.append(ctx.job_id)
                raise ValueError("fails before any checkpoint")

            await bus.dispatch(Job("boom"))
            await trio.sleep_forever()
    assert ran == []
    assert released == [("boom", False)]
    assert trio.current_time() == 1
