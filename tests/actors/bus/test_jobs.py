"""Plain jobs: dispatch, delay, timeout, retries with backoff, unique_for, bad input."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import actors
from actors.bus import (
    BusClosed,
    Delivery,
    DispatchResult,
    DuplicateJob,
    EventKind,
    Job,
    JobContext,
    JobOptions,
    MemoryBroker,
    MemoryQueue,
    Queue,
    QueuedJob,
    UnknownJobType,
    open_bus,
)

from .helpers import Recorder, noop


@attrs.frozen
class Address:
    city: str


@attrs.frozen
class Email:
    to: str
    tags: list[str]
    address: Address


async def test_dispatch_runs_the_handler_with_a_full_context(autojump_clock: Any) -> None:
    seen: list[JobContext] = []
    async with open_bus() as bus:

        @bus.handler("emails:send")
        async def send(ctx: JobContext) -> None:
            seen.append(ctx)

        result = await bus.dispatch(Job("emails:send", {"to": "a@b"}))
        await bus.wait_idle()
    assert isinstance(result, DispatchResult)
    [ctx] = seen
    assert ctx.payload == {"to": "a@b"}
    assert ctx.attempt == 1
    assert ctx.job_type == "emails:send"
    assert (ctx.dispatch_id, ctx.job_id, ctx.queue) == (
        result.dispatch_id,
        result.job_id,
        "default",
    )
    assert ctx.chain_id is None
    assert ctx.batch_id is None
    assert trio.current_time() == 0


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST", default="unset")


@pytest.mark.parametrize("workers", [1, 3])
async def test_every_job_sees_the_buss_context_not_the_last_jobs(
    autojump_clock: Any, workers: int
) -> None:
    # Rule 6: whichever worker takes a job, and whatever ran on it before, the job sees the
    # context the bus was opened in; its own writes go nowhere else (they used to leak into
    # the next job of the same worker).
    REQUEST.set("opener")
    seen: list[tuple[int, str]] = []
    async with open_bus(queues={"default": workers}) as bus:

        @bus.handler("t")
        async def t(ctx: JobContext) -> None:
            seen.append((ctx.payload["i"], REQUEST.get()))
            REQUEST.set(f"job {ctx.payload['i']}")
            await trio.sleep(1)
            assert REQUEST.get() == f"job {ctx.payload['i']}"

        for i in range(6):
            await bus.dispatch(Job("t", {"i": i}))
        await bus.wait_idle()
    assert sorted(seen) == [(i, "opener") for i in range(6)]
    assert REQUEST.get() == "opener"


async def test_attrs_payloads_travel_as_json_and_bind_back(autojump_clock: Any) -> None:
    got: list[Email] = []
    raw: list[Any] = []
    async with open_bus() as bus:

        @bus.handler("emails:send")
        async def send(ctx: JobContext) -> None:
            raw.append(ctx.payload)
            got.append(ctx.bind(Email))

        email = Email("a@b", ["x"], Address("Oslo"))
        await bus.dispatch(Job("emails:send", email))
        await bus.wait_idle()
    assert raw == [{"to": "a@b", "tags": ["x"], "address": {"city": "Oslo"}}]
    assert got == [email]


async def test_bind_rejects_what_does_not_fit(autojump_clock: Any) -> None:
    errors: list[BaseException] = []
    async with open_bus() as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            for cls, in_ in ((Address, ctx), (dict, ctx)):
                try:
                    in_.bind(cls)
                except TypeError as exc:
                    errors.append(exc)

        await bus.dispatch(Job("a", {"city": "Oslo", "zip": "0150"}))
        await bus.wait_idle()
    assert "zip" in str(errors[0])
    assert "attrs class" in str(errors[1])


async def test_delay_runs_the_job_exactly_then(autojump_clock: Any) -> None:
    ran_at: list[float] = []
    async with open_bus() as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            ran_at.append(trio.current_time())

        await bus.dispatch(Job("a").delay(2.5))
        await bus.dispatch(Job("a").delay(1))
        await bus.dispatch(Job("a"))
        await bus.wait_idle()
    assert ran_at == [0.0, 1.0, 2.5]


async def test_retries_follow_the_backoff_exactly(autojump_clock: Any) -> None:
    attempts: list[tuple[int, float]] = []
    events = Recorder()
    async with open_bus(observers=[events]) as bus:

        @bus.handler("flaky")
        async def flaky(ctx: JobContext) -> None:
            attempts.append((ctx.attempt, trio.current_time()))
            raise ValueError(f"attempt {ctx.attempt}")

        await bus.dispatch(Job("flaky").delay(1).retry(3).backoff(0.5))
        await bus.wait_idle()
    assert attempts == [(1, 1.0), (2, 1.5), (3, 2.0), (4, 2.5)]
    failed = events.of(EventKind.JOB_FAILED)
    assert [e.attempt for e in failed] == [1, 2, 3, 4]
    assert [str(e.error) for e in failed] == [f"attempt {n}" for n in (1, 2, 3, 4)]


async def test_a_retry_that_succeeds_stops_retrying(autojump_clock: Any) -> None:
    attempts: list[int] = []
    async with open_bus() as bus:

        @bus.handler("flaky")
        async def flaky(ctx: JobContext) -> None:
            attempts.append(ctx.attempt)
            if ctx.attempt < 2:
                raise ValueError("once")

        await bus.dispatch(Job("flaky").retry(5))
        await bus.wait_idle()
    assert attempts == [1, 2]
    assert trio.current_time() == 0


async def test_timeout_cancels_the_attempt_with_timeout_error(autojump_clock: Any) -> None:
    events = Recorder()
    cancelled_at: list[float] = []
    async with open_bus(observers=[events]) as bus:

        @bus.handler("slow")
        async def slow(ctx: JobContext) -> None:
            try:
                await trio.sleep(10)
            except trio.Cancelled:
                cancelled_at.append(trio.current_time())
                raise

        await bus.dispatch(Job("slow").timeout(1.5).retry(1).backoff(1))
        await bus.wait_idle()
    assert cancelled_at == [1.5, 4.0]
    failed = events.of(EventKind.JOB_FAILED)
    assert [type(e.error) for e in failed] == [TimeoutError, TimeoutError]
    assert [e.duration for e in failed] == [1.5, 1.5]
    assert "timed out after 1.5s" in str(failed[0].error)


async def test_unique_for_refuses_a_repeat_within_the_window(autojump_clock: Any) -> None:
    runs: list[Any] = []
    events = Recorder()
    async with open_bus(observers=[events]) as bus:

        @bus.handler("report")
        async def report(ctx: JobContext) -> None:
            runs.append(ctx.payload)

        await bus.dispatch(Job("report", {"day": 1}).unique_for(30))
        await trio.sleep(29.5)
        with pytest.raises(DuplicateJob, match="30s"):
            await bus.dispatch(Job("report", {"day": 1}).unique_for(30))
        # Another payload (key order does not matter) is another job.
        await bus.dispatch(Job("report", {"day": 2}).unique_for(30))
        await trio.sleep(0.5)
        await bus.dispatch(Job("report", {"day": 1}).unique_for(30))
        await bus.wait_idle()
    assert runs == [{"day": 1}, {"day": 2}, {"day": 1}]
    [failed] = events.of(EventKind.DISPATCH_FAILED)
    assert isinstance(failed.error, DuplicateJob)


async def test_jobs_run_on_their_queue_with_its_number_of_workers(autojump_clock: Any) -> None:
    running = {"fast": 0, "slow": 0}
    peak = {"fast": 0, "slow": 0}
    async with open_bus(queues={"fast": 3, "slow": 1}) as bus:

        @bus.handler("work")
        async def work(ctx: JobContext) -> None:
            running[ctx.queue] += 1
            peak[ctx.queue] = max(peak[ctx.queue], running[ctx.queue])
            await trio.sleep(1)
            running[ctx.queue] -= 1

        for _ in range(6):
            await bus.dispatch(Job("work"))  # no queue: the first one, "fast"
            await bus.dispatch(Job("work").on_queue("slow"))
        await bus.wait_idle()
    assert peak == {"fast": 3, "slow": 1}
    assert trio.current_time() == 6.0  # the slow queue ran its six one at a time


async def test_dispatch_waits_while_max_pending_jobs_are_outstanding(autojump_clock: Any) -> None:
    dispatched_at: list[float] = []
    async with open_bus(queues={"default": 1}, max_pending=4) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            await trio.sleep(1)

        for _ in range(8):
            await bus.dispatch(Job("a"))
            dispatched_at.append(trio.current_time())
        await bus.wait_idle()
    # Four are accepted at once; more only once the backlog has halved.
    assert dispatched_at == [0, 0, 0, 0, 2, 2, 4, 4]


async def test_dispatches_waiting_for_room_are_woken_once_and_a_cancelled_one_counts_out(
    autojump_clock: Any,
) -> None:
    """Each waiter for room is counted while parked, and counted out by whoever wakes it
    (or by itself, cancelled): every later waiter is still woken, and none is left counted."""
    got_in: list[tuple[str, float]] = []
    async with open_bus(queues={"default": 1}, max_pending=2) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            await trio.sleep(1)

        async def send(name: str, scope: trio.CancelScope | None = None) -> None:
            with scope or trio.CancelScope():
                await bus.dispatch(Job("a"))
                got_in.append((name, trio.current_time()))

        await bus.dispatch(Job("a"))
        await bus.dispatch(Job("a"))
        async with trio.open_nursery() as nursery:
            for name in "xyz":
                nursery.start_soon(send, name)
            scope = trio.CancelScope()
            nursery.start_soon(send, "cancelled", scope)
            await trio.sleep(0.5)
            assert bus._parts._room_waiting == 4
            scope.cancel()
            await trio.sleep(0.1)  # (no job ends in it)
            assert bus._parts._room_waiting == 3
        await send("late")  # room must be waited for again, and it is woken
        await bus.wait_idle()
        assert bus._parts._room_waiting == 0
    assert sorted(name for name, _ in got_in[:3]) == ["x", "y", "z"]  # (woken in any order)
    assert got_in[3][0] == "late"
    assert got_in[-1][1] > got_in[-2][1]


async def test_jobs_dispatched_from_handlers_never_wait_for_room(autojump_clock: Any) -> None:
    count = 0
    async with open_bus(queues={"default": 1}, max_pending=1) as bus:

        @bus.handler("fan")
        async def fan(ctx: JobContext) -> None:
            nonlocal count
            count += 1
            if ctx.payload < 3:
                for _ in range(2):
                    await bus.dispatch(Job("fan", ctx.payload + 1))

        await bus.dispatch(Job("fan", 0))
        await bus.wait_idle()
    assert count == 15


async def test_leaving_the_block_waits_for_every_accepted_job(autojump_clock: Any) -> None:
    ran: list[float] = []
    async with open_bus() as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            ran.append(trio.current_time())

        await bus.dispatch(Job("a").delay(5))
        await bus.dispatch(Job("a").retry(0))
    assert ran == [0, 5]


async def test_cancelling_the_enclosing_scope_stops_at_once(autojump_clock: Any) -> None:
    started = trio.Event()
    with trio.move_on_after(3) as scope:
        async with open_bus() as bus:

            @bus.handler("a")
            async def handler(ctx: JobContext) -> None:
                started.set()
                await trio.sleep_forever()

            await bus.dispatch(Job("a"))
            await bus.dispatch(Job("a").delay(100))
    assert scope.cancelled_caught
    assert started.is_set()
    assert trio.current_time() == 3


async def test_the_bus_goes_on_after_handler_exceptions(autojump_clock: Any) -> None:
    done: list[int] = []
    async with open_bus(queues={"default": 1}) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            if ctx.payload % 2:
                raise RuntimeError("odd")
            done.append(ctx.payload)

        for i in range(6):
            await bus.dispatch(Job("a", i))
        await bus.wait_idle()
    assert done == [0, 2, 4]


async def test_observers_that_raise_do_not_hurt_the_bus(autojump_clock: Any) -> None:
    seen: list[EventKind] = []

    def broken(event: Any) -> None:
        raise RuntimeError("observer bug")

    async def async_observer(event: Any) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(event.kind)

    ran = 0
    async with open_bus(observers=[broken, async_observer]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            nonlocal ran
            ran += 1

        await bus.dispatch(Job("a"))
        await bus.wait_idle()
    assert ran == 1
    # The async observer yields, so the worker's events may interleave with dispatch's.
    assert seen[0] == EventKind.DISPATCH_STARTED
    assert sorted(seen) == sorted(
        [
            EventKind.DISPATCH_STARTED,
            EventKind.DISPATCH_SUCCEEDED,
            EventKind.JOB_STARTED,
            EventKind.JOB_SUCCEEDED,
        ]
    )
    assert seen.index(EventKind.JOB_STARTED) < seen.index(EventKind.JOB_SUCCEEDED)


async def test_every_public_async_method_checkpoints(autojump_clock: Any) -> None:
    async with open_bus() as bus:
        bus.register("a", noop)
        with trio.testing.assert_checkpoints():
            await bus.dispatch(Job("a"))
        with trio.testing.assert_checkpoints():
            await bus.wait_idle()
        with trio.testing.assert_checkpoints():
            await bus.wait_idle()
        with trio.testing.assert_checkpoints():
            chain_id = await bus.chain(Job("a")).dispatch()
        with trio.testing.assert_checkpoints():
            batch_id = await bus.batch(Job("a").delay(1)).dispatch()
        with trio.testing.assert_checkpoints():
            await bus.find_chain(chain_id)
        with trio.testing.assert_checkpoints():
            await bus.cancel_batch(batch_id)
        with trio.testing.assert_checkpoints():
            await bus.find_batch(batch_id)
        with trio.testing.assert_checkpoints():
            await bus.prune(datetime(2000, 1, 1, tzinfo=UTC))


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: Job("a").delay(-1), ValueError, "delay must be >= 0"),
        (lambda: Job("a").delay(math.nan), ValueError, "NaN"),
        (lambda: Job("a").delay(math.inf), ValueError, "finite"),
        (lambda: Job("a").timeout(0), ValueError, "timeout must be > 0"),
        (lambda: Job("a").timeout(-2), ValueError, "timeout"),
        (lambda: Job("a").retry(-1), ValueError, "retry must be >= 0"),
        (lambda: Job("a").retry(1.5), TypeError, "retry must be an int"),  # type: ignore[arg-type]
        (lambda: Job("a").backoff(math.nan), ValueError, "NaN"),
        (lambda: Job("a").unique_for(-3), ValueError, "unique_for"),
        (lambda: Job("a").delay("2"), TypeError, "number of seconds"),  # type: ignore[arg-type]
        (lambda: Job(""), ValueError, "job type"),
        (lambda: Job(3), TypeError, "job type"),  # type: ignore[arg-type]
        (lambda: Job("a").on_queue(""), ValueError, "queue name"),
    ],
)
def test_bad_job_options_fail_at_build_time(build: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


def test_builders_return_new_jobs() -> None:
    base = Job("a", {"x": 1})
    tuned = base.on_queue("q").delay(2).timeout(15).retry(3).backoff(0.5).unique_for(30)
    assert base.options == JobOptions()
    assert tuned.options == JobOptions(
        queue="q", delay=2.0, timeout=15.0, retry=3, backoff=0.5, unique_for=30.0
    )


async def test_bad_dispatches_fail_at_dispatch_and_queue_nothing(autojump_clock: Any) -> None:
    events = Recorder()
    ran: list[Any] = []
    async with open_bus(observers=[events]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            ran.append(ctx.payload)

        with pytest.raises(UnknownJobType, match=r"bus.register\('nope', handler\)"):
            await bus.dispatch(Job("nope"))
        with pytest.raises(LookupError):
            await bus.dispatch(Job("nope"))
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            await bus.dispatch(Job("a", {"when": object()}))
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            await bus.dispatch(Job("a", {"x": math.nan}))
        with pytest.raises(TypeError, match="not JSON-serialisable"):
            await bus.dispatch(Job("a", {1, 2}))
        with pytest.raises(ValueError, match="queue 'nowhere'"):
            await bus.dispatch(Job("a").on_queue("nowhere"))
        with pytest.raises(TypeError, match=r"takes an actors\.bus\.Job"):
            await bus.dispatch("a")  # type: ignore[arg-type]
        await bus.dispatch(Job("a", "fine"))
        await bus.wait_idle()
        assert bus.stats().outstanding == 0
    assert ran == ["fine"]
    assert len(events.of(EventKind.DISPATCH_FAILED)) == 6


async def test_register_checks_its_arguments(autojump_clock: Any) -> None:
    def sync_handler(ctx: JobContext) -> None:
        pass

    async with open_bus() as bus:
        bus.register("a", noop)
        with pytest.raises(ValueError, match="already has a handler"):
            bus.register("a", noop)
        with pytest.raises(TypeError, match="async"):
            bus.register("b", sync_handler)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            bus.register("c", 42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="job type"):
            bus.register("", noop)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"queues": {}}, ValueError),
        ({"queues": {"default": 0}}, ValueError),
        ({"queues": ["default"]}, TypeError),
        ({"middleware": [42]}, TypeError),
        ({"observers": [42]}, TypeError),
        ({"store": object()}, TypeError),
        ({"max_pending": 0}, ValueError),
        ({"idle_timeout": -1}, ValueError),
    ],
)
async def test_open_bus_checks_its_arguments(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        async with open_bus(**kwargs):
            pass  # pragma: no cover


async def test_a_closed_bus_says_so(autojump_clock: Any) -> None:
    async with open_bus() as bus:
        bus.register("a", noop)
    with pytest.raises(BusClosed, match="bus is closed"):
        await bus.dispatch(Job("a"))
    with pytest.raises(trio.ClosedResourceError):
        bus.chain(Job("a"))
    with pytest.raises(actors.ComponentClosed):
        await bus.find_batch("x")
    with pytest.raises(BusClosed):
        await bus.wait_idle()


async def test_a_broker_replaces_the_queues(autojump_clock: Any) -> None:
    """Workers and coordinators only use the `BrokerQueue` protocol (put, get, ack, retry),
    so any broker's queues can stand in."""
    made: dict[str, CountingQueue] = {}

    class CountingQueue(MemoryQueue):
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.puts = self.gets = self.acks = self.retries = 0
            made[name] = self

        async def put(self, jobs: Sequence[QueuedJob], *, delay: float = 0.0) -> None:
            self.puts += len(jobs)
            await super().put(jobs, delay=delay)

        async def get(self) -> Delivery:
            self.gets += 1
            return await super().get()

        async def ack(self, delivery: Delivery) -> None:
            self.acks += 1
            await super().ack(delivery)

        async def retry(self, delivery: Delivery, job: QueuedJob, *, delay: float) -> None:
            self.retries += 1
            await super().retry(delivery, job, delay=delay)

    class CountingBroker(MemoryBroker):
        def queue(self, name: str) -> MemoryQueue:
            return made.get(name) or CountingQueue(name)

    ran: list[Any] = []
    async with open_bus(queues={"q": 2}, broker=CountingBroker()) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            ran.append(ctx.payload)
            if ctx.payload == "retry" and ctx.attempt == 1:
                raise ValueError("once")

        await bus.dispatch(Job("a", "plain").delay(1))
        await bus.dispatch(Job("a", "retry").retry(1).backoff(1))
        await bus.chain(Job("a", 1), Job("a", 2)).dispatch()
        await bus.batch(Job("a", "x"), Job("a", "y")).dispatch()
        await bus.wait_idle()
        assert isinstance(made["q"], Queue)
    assert sorted(map(str, ran)) == ["1", "2", "plain", "retry", "retry", "x", "y"]
    assert made["q"].puts == 7  # six dispatched; MemoryQueue.retry puts the next attempt
    assert made["q"].retries == 1
    assert made["q"].gets >= 7  # (idle workers wait inside get() too)
    assert made["q"].acks == 6  # every final outcome acknowledged

    with pytest.raises(TypeError, match=r"must implement actors\.bus\.Broker"):
        async with open_bus(broker=object()):  # type: ignore[arg-type]
            pass  # pragma: no cover
