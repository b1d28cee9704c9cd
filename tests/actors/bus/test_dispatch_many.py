"""`Bus.dispatch_many`: many plain jobs checked as a whole, queued at once, on every broker,
ending exactly as the same jobs dispatched one by one; and `FakeBus.dispatch_many`."""

from __future__ import annotations

import secrets
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.bus import (
    BusLike,
    FakeBus,
    Handlers,
    Job,
    JobContext,
    MemoryBroker,
    MemoryQueue,
    UnknownJobType,
    open_bus,
)
from tests.services import redis_url

from .helpers import Recorder

request: ContextVar[str] = ContextVar("request", default="none")


def _handlers(seen: list[Any], all_ran: tuple[int, trio.Event] | None = None) -> Handlers:
    handlers = Handlers()

    @handlers.handler("t")
    async def run(ctx: JobContext) -> None:
        seen.append((ctx.payload, ctx.queue, ctx.attempt, request.get(), trio.current_time()))
        if all_ran is not None and len(seen) == all_ran[0]:
            all_ran[1].set()
        if ctx.payload == "flaky" and ctx.attempt == 1:
            raise ValueError("once")

    return handlers


def _jobs() -> list[Job]:
    return [
        Job("t", 0),
        Job("t", 1).on_queue("mail"),
        Job("t", 2).delay(3),
        Job("t", "flaky").retry(1).backoff(2),
        Job("t", 4).on_queue("mail").delay(1),
    ]


async def _run(many: bool) -> tuple[Any, ...]:
    seen: list[Any] = []
    events = Recorder()
    request.set("outer")
    start = trio.current_time()
    async with open_bus(
        handlers=_handlers(seen), queues={"default": 2, "mail": 1}, observers=[events]
    ) as bus:
        if many:
            results = await bus.dispatch_many(_jobs())
        else:
            results = [await bus.dispatch(job) for job in _jobs()]
        await bus.wait_idle()
        end = trio.current_time() - start
    fields = [(e.kind, e.job_type, e.queue, e.attempt) for e in events.events]
    return (
        [r.queue for r in results],
        sorted(((p, q, a, r, t - start) for p, q, a, r, t in seen), key=str),
        sorted(fields, key=str),
        end,
        results,
    )


async def test_dispatch_many_ends_as_dispatching_one_by_one(autojump_clock: Any) -> None:
    one_by_one = await _run(False)
    many = await _run(True)
    assert many[:-1] == one_by_one[:-1]  # same runs, contextvars, times and events
    results = many[-1]
    assert [r.queue for r in results] == ["default", "mail", "default", "default", "mail"]
    assert len({r.job_id for r in results}) == len({r.dispatch_id for r in results}) == 5


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (Job("nope"), UnknownJobType, r"job 2 of 4 refused: no handler .*'nope'"),
        (Job("t").on_queue("elsewhere"), ValueError, r"job 2 of 4 refused: .*'elsewhere'"),
        (Job("t", {1: "x"}), TypeError, r"job 2 of 4 refused: .*not a str"),
        (Job("t", object()), TypeError, r"job 2 of 4 refused: .*JSON-serialisable"),
        (Job("t").unique_for(60), ValueError, r"job 2 \('t'\) has unique_for"),
        ("t", TypeError, r"item 2 is a str, not an actors.bus.Job"),
    ],
)
async def test_one_bad_job_refuses_the_whole_call(bad: Any, error: type, match: str) -> None:
    seen: list[Any] = []
    events = Recorder()
    async with open_bus(handlers=_handlers(seen), observers=[events]) as bus:
        with pytest.raises(error, match=match) as raised:
            await bus.dispatch_many([Job("t", 0), Job("t", 1), bad, Job("t", 3)])
        assert "nothing was dispatched" in str(raised.value)
        assert bus.stats().outstanding == 0
        assert (await bus.queue_stats())["default"].ready == 0
        await bus.wait_idle()
    assert seen == []
    assert events.events == []


async def test_what_dispatch_many_takes() -> None:
    async with open_bus(handlers=_handlers([])) as bus:
        with pytest.raises(TypeError, match=r"iterable of actors.bus.Job.*use dispatch\(job\)"):
            await bus.dispatch_many(Job("t"))  # type: ignore[arg-type]
        assert await bus.dispatch_many([]) == []
        gen = await bus.dispatch_many(Job("t", i) for i in range(3))
        assert len(gen) == 3
        await bus.wait_idle()


async def test_cancelled_while_waiting_for_room_it_queues_nothing(autojump_clock: Any) -> None:
    seen: list[Any] = []
    handlers = Handlers()
    release = trio.Event()

    @handlers.handler("t")
    async def slow(ctx: JobContext) -> None:
        seen.append(ctx.payload)
        await release.wait()

    async with open_bus(handlers=handlers, max_pending=4, queues={"default": 1}) as bus:
        await bus.dispatch_many([Job("t", i) for i in range(4)])
        with trio.move_on_after(1) as scope:
            await bus.dispatch_many([Job("t", "late")])
        assert scope.cancelled_caught
        release.set()
        await bus.wait_idle()
    assert seen == [0, 1, 2, 3]


async def test_a_broker_that_refuses_the_put_leaves_nothing_outstanding() -> None:
    class Refusing(MemoryQueue):
        async def put_many(self, jobs: Any) -> None:
            raise ValueError("too large for this broker")

    class Broker(MemoryBroker):
        def queue(self, name: str) -> MemoryQueue:
            return self.__dict__.setdefault(name, Refusing(name))  # type: ignore[no-any-return]

    events = Recorder()
    async with open_bus(handlers=_handlers([]), broker=Broker(), observers=[events]) as bus:
        with pytest.raises(ValueError, match="too large"):
            await bus.dispatch_many([Job("t", 1), Job("t", 2)])
        assert bus.stats().outstanding == 0
        await bus.wait_idle()
    assert [str(e.kind) for e in events.events] == ["dispatch_started"] * 2 + [
        "dispatch_failed"
    ] * 2


def _durable(kind: str, tmp_path: Path) -> tuple[str, str]:
    store = f"sqlite:///{tmp_path}/store.db"
    if kind == "sqlite":
        return store, f"sqlite:///{tmp_path}/broker.db?poll_interval=0.01"
    return store, f"{redis_url()}?prefix=test-{secrets.token_hex(4)}&poll_interval=0.01"


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_dispatch_many_on_a_durable_broker(kind: str, tmp_path: Path) -> None:
    store, broker = _durable(kind, tmp_path)
    seen: list[Any] = []
    all_ran = trio.Event()
    handlers = _handlers(seen, (301, all_ran))
    jobs = [Job("t", i) for i in range(300)] + [Job("t", "later").delay(0.2)]
    async with open_bus(store=store, broker=broker, handlers=handlers, workers=False) as sender:
        results = await sender.dispatch_many(jobs)
        with pytest.raises(UnknownJobType, match="job 1 of 2 refused"):
            await sender.dispatch_many([Job("t"), Job("nope")])
        stats = (await sender.queue_stats())["default"]
        assert (stats.ready, stats.delayed) == (300, 1)
    assert len({r.job_id for r in results}) == 301
    async with open_bus(store=store, broker=broker, handlers=handlers):
        with trio.fail_after(10):
            await all_ran.wait()
    assert sorted(str(s[0]) for s in seen) == sorted([str(i) for i in range(300)] + ["later"])
    assert [s[0] for s in seen][:300] == list(range(300))  # in order


async def test_fake_bus_dispatch_many() -> None:
    fake = FakeBus(handlers=_handlers([]), queues=["default", "mail"])
    assert isinstance(fake, BusLike)
    results = await fake.dispatch_many([Job("t", 1), Job("t", 2).on_queue("mail")])
    assert [r.queue for r in results] == ["default", "mail"]
    fake.assert_dispatched_times("t", 2)
    fake.assert_dispatched_on("mail", "t")
    with pytest.raises(UnknownJobType, match="job 1 of 2 refused"):
        await fake.dispatch_many([Job("t", 3), Job("nope")])
    with pytest.raises(ValueError, match="unique_for"):
        await fake.dispatch_many([Job("t", 3).unique_for(5)])
    fake.assert_dispatched_times("t", 2)  # nothing of the refused calls
