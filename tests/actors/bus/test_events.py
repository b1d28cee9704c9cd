"""Events: every kind emitted, with its ids, attempt, queue, duration, time and error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from actors import trio_clock
from actors.bus import BatchState, Event, EventKind, Job, JobContext, open_bus

from .helpers import Recorder

ALL_KINDS = {
    "dispatch_started",
    "dispatch_succeeded",
    "dispatch_failed",
    "job_started",
    "job_succeeded",
    "job_failed",
    "chain_started",
    "chain_advanced",
    "chain_completed",
    "chain_failed",
    "batch_started",
    "batch_progressed",
    "batch_completed",
    "batch_failed",
    "batch_cancelled",
    "callback_started",
    "callback_succeeded",
    "callback_failed",
}


def test_event_kinds_are_exactly_the_contract() -> None:
    assert {kind.value for kind in EventKind} == ALL_KINDS
    assert str(EventKind.JOB_FAILED) == "job_failed"
    assert [f.name for f in Event.__attrs_attrs__] == [
        "kind",
        "event_id",
        "dispatch_id",
        "job_id",
        "chain_id",
        "batch_id",
        "attempt",
        "job_type",
        "queue",
        "duration",
        "time",
        "error",
    ]


async def test_every_event_kind_is_emitted(autojump_clock: Any) -> None:
    events = Recorder()
    start = datetime(2030, 1, 1, tzinfo=UTC)

    def broken(state: BatchState) -> None:
        raise RuntimeError("callback bug")

    async with open_bus(observers=[events], clock=trio_clock(start)) as bus:

        @bus.handler("ok")
        async def ok(ctx: JobContext) -> None:
            await trio.sleep(1)

        @bus.handler("bad")
        async def bad(ctx: JobContext) -> None:
            raise ValueError("bad")

        await bus.dispatch(Job("ok"))
        with pytest.raises(TypeError):
            await bus.dispatch(Job("ok", object()))
        await bus.chain(Job("ok"), Job("ok")).dispatch()
        await bus.chain(Job("bad")).dispatch()
        await bus.batch(Job("ok")).then(broken).dispatch()
        await bus.batch(Job("bad")).finally_(lambda s: None).dispatch()
        cancelled = await bus.batch(Job("ok").delay(5)).dispatch()
        await bus.cancel_batch(cancelled)
        await bus.wait_idle()
    assert {kind.value for kind in events.count()} == ALL_KINDS
    assert all(isinstance(e.event_id, str) for e in events.events)
    assert len({e.event_id for e in events.events}) == len(events.events)
    assert all(start <= e.time <= start + timedelta(seconds=5) for e in events.events)


async def test_job_events_carry_ids_attempt_queue_duration(autojump_clock: Any) -> None:
    events = Recorder()
    async with open_bus(queues={"mail": 1}, observers=[events]) as bus:

        @bus.handler("send")
        async def send(ctx: JobContext) -> None:
            await trio.sleep(2)
            if ctx.attempt == 1:
                raise ConnectionError("down")

        result = await bus.dispatch(Job("send").retry(1).backoff(3))
        await bus.wait_idle()
    job_events = [e for e in events.events if e.kind.value.startswith("job_")]
    assert [(e.kind.value, e.attempt, e.duration) for e in job_events] == [
        ("job_started", 1, None),
        ("job_failed", 1, 2.0),
        ("job_started", 2, None),
        ("job_succeeded", 2, 2.0),
    ]
    for e in job_events:
        assert (e.dispatch_id, e.job_id, e.queue, e.job_type) == (
            result.dispatch_id,
            result.job_id,
            "mail",
            "send",
        )
    assert isinstance(job_events[1].error, ConnectionError)
    assert job_events[3].error is None
    [ok] = events.of(EventKind.DISPATCH_SUCCEEDED)
    assert ok.job_id == result.job_id
    assert ok.queue == "mail"


async def test_batch_and_callback_events_carry_the_batch(autojump_clock: Any) -> None:
    events = Recorder()
    async with open_bus(observers=[events]) as bus:

        @bus.handler("ok")
        async def ok(ctx: JobContext) -> None:
            await trio.sleep(1)

        batch_id = await bus.batch(Job("ok"), Job("ok")).then(lambda s: None).dispatch()
        await bus.wait_idle()
    batch_events = [e for e in events.events if e.batch_id == batch_id]
    assert [e.kind.value for e in batch_events if not e.kind.value.startswith("job_")] == [
        "dispatch_started",
        "batch_started",
        "dispatch_succeeded",
        "batch_progressed",
        "batch_progressed",
        "batch_completed",
        "callback_started",
        "callback_succeeded",
    ]
    completed = events.of(EventKind.BATCH_COMPLETED)[0]
    assert completed.duration == 1.0
    assert completed.error is None
    assert events.of(EventKind.CALLBACK_SUCCEEDED)[0].job_type == "then"
