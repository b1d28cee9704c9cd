"""Batches: parallel jobs, progress, allow_failures, cancellation, callbacks exactly once."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.bus import BatchState, EventKind, Job, JobContext, NotFound, open_bus

from .helpers import Recorder


def jobs(*payloads: Any) -> list[Job]:
    return [Job("work", p) for p in payloads]


async def _work(ctx: JobContext) -> None:
    """Payload: seconds to sleep, or "fail" / "fail-later" (sleep 1 then fail)."""
    if ctx.payload == "fail":
        raise ValueError("failed")
    if ctx.payload == "fail-later":
        await trio.sleep(1)
        raise ValueError("failed later")
    await trio.sleep(ctx.payload)


async def test_a_batch_runs_its_jobs_in_parallel_with_progress(autojump_clock: Any) -> None:
    progress: list[tuple[int, int, int, float]] = []
    thens: list[BatchState] = []
    finals: list[BatchState] = []
    contexts: list[JobContext] = []

    async def on_progress(state: BatchState) -> None:
        progress.append((state.processed, state.pending, state.failed, trio.current_time()))

    async with open_bus(queues={"default": 4}) as bus:

        @bus.handler("work")
        async def work(ctx: JobContext) -> None:
            contexts.append(ctx)
            await _work(ctx)

        batch_id = await (
            bus.batch(*jobs(3, 1, 2))
            .name("nightly")
            .progress(on_progress)
            .then(thens.append)
            .finally_(finals.append)
            .dispatch()
        )
        await bus.wait_idle()
        state = await bus.find_batch(batch_id)
    assert progress == [(1, 2, 0, 1.0), (2, 1, 0, 2.0), (3, 0, 0, 3.0)]
    assert {ctx.batch_id for ctx in contexts} == {batch_id}
    assert (state.name, state.total, state.pending, state.processed, state.failed) == (
        "nightly",
        3,
        0,
        3,
        0,
    )
    assert state.completed
    assert not state.cancelled
    assert not state.allow_failures
    assert thens == [state]
    assert finals == [state]


async def test_a_progress_job_runs_after_each_job(autojump_clock: Any) -> None:
    """A `Job` progress callback is queued once per finished job, with no observer attached
    (it never ran: progress was tracked only for a callable or an observer)."""
    seen: list[tuple[int, float]] = []

    async def on_progress(ctx: JobContext) -> None:
        assert isinstance(ctx.state, BatchState)
        seen.append((ctx.state.processed, trio.current_time()))

    async with open_bus(queues={"default": 4}) as bus:
        bus.register("work", _work)
        bus.register("progress", on_progress)
        await bus.batch(*jobs(3, 1, 2)).progress(Job("progress")).then(Job("progress")).dispatch()
        await bus.wait_idle()
    assert seen == [(1, 1.0), (2, 2.0), (3, 3.0), (3, 3.0)]  # after each job, then `then`


async def test_first_failure_cancels_the_jobs_not_started(autojump_clock: Any) -> None:
    ran: list[Any] = []
    caught: list[tuple[BatchState, BaseException]] = []
    thens: list[BatchState] = []
    finals: list[BatchState] = []
    events = Recorder()
    async with open_bus(queues={"default": 2}, observers=[events]) as bus:

        @bus.handler("work")
        async def work(ctx: JobContext) -> None:
            ran.append(ctx.payload)
            await _work(ctx)

        batch_id = await (
            bus.batch(*jobs(2, "fail-later", 5, 5, 5))
            .catch(lambda state, error: caught.append((state, error)))
            .then(thens.append)
            .finally_(finals.append)
            .dispatch()
        )
        await bus.wait_idle()
        state = await bus.find_batch(batch_id)
    # Worker 2 fails at t=1; the three jobs queued behind are never started. Job 1 finishes.
    assert ran == [2, "fail-later"]
    assert trio.current_time() == 2
    assert (state.total, state.pending, state.processed, state.failed) == (5, 0, 2, 1)
    assert state.cancelled
    assert state.completed
    [(at_catch, error)] = caught
    assert at_catch.failed == 1
    assert not at_catch.completed
    assert str(error) == "failed later"
    assert thens == []
    assert finals == [state]
    [failed] = events.of(EventKind.BATCH_FAILED)
    assert failed.error is error
    assert failed.duration == 2
    assert len(events.of(EventKind.BATCH_PROGRESSED)) == 2


async def test_allow_failures_runs_every_job_and_catch_runs_once(autojump_clock: Any) -> None:
    ran: list[Any] = []
    caught: list[BaseException] = []
    thens: list[BatchState] = []
    finals: list[BatchState] = []
    progress: list[tuple[int, int]] = []
    async with open_bus(queues={"default": 2}) as bus:

        @bus.handler("work")
        async def work(ctx: JobContext) -> None:
            ran.append(ctx.payload)
            await _work(ctx)

        batch_id = await (
            bus.batch(*jobs("fail", 1, "fail", 1))
            .allow_failures()
            .progress(lambda s: progress.append((s.processed, s.failed)))
            .catch(lambda state, error: caught.append(error))
            .then(thens.append)
            .finally_(finals.append)
            .dispatch()
        )
        await bus.wait_idle()
        state = await bus.find_batch(batch_id)
    assert sorted(map(str, ran)) == ["1", "1", "fail", "fail"]
    assert (state.processed, state.failed, state.pending) == (4, 2, 0)
    assert state.allow_failures
    assert not state.cancelled
    assert state.completed
    assert len(caught) == 1
    assert thens == []
    assert finals == [state]
    assert [p for p, _ in progress] == [1, 2, 3, 4]
    assert progress[-1] == (4, 2)


async def test_cancel_batch_cancels_what_has_not_started(autojump_clock: Any) -> None:
    ran: list[Any] = []
    finals: list[tuple[BatchState, float]] = []
    thens: list[BatchState] = []
    events = Recorder()
    async with open_bus(queues={"default": 1}, observers=[events]) as bus:

        @bus.handler("work")
        async def work(ctx: JobContext) -> None:
            ran.append(ctx.payload)
            await _work(ctx)

        batch_id = await (
            bus.batch(*jobs(4, 4, 4), Job("work", 4).delay(100))
            .then(thens.append)
            .finally_(lambda s: finals.append((s, trio.current_time())))
            .dispatch()
        )
        await trio.sleep(1)
        at_cancel = await bus.cancel_batch(batch_id)
        assert at_cancel.cancelled
        assert not at_cancel.completed
        assert at_cancel.pending == 1
        again = await bus.cancel_batch(batch_id)
        assert again.cancelled
        await bus.wait_idle()
        state = await bus.find_batch(batch_id)
    assert ran == [4]
    assert trio.current_time() == 4  # the delayed job was dropped, not waited for
    assert (state.processed, state.failed, state.pending, state.total) == (1, 0, 0, 4)
    assert state.cancelled
    assert state.completed
    assert finals == [(state, 4.0)]
    assert thens == []
    assert [e.kind for e in events.events if e.kind.value.startswith("batch_")][-1] == (
        EventKind.BATCH_CANCELLED
    )


async def test_cancelling_a_batch_whose_jobs_all_wait_finishes_it_at_once(
    autojump_clock: Any,
) -> None:
    finals: list[BatchState] = []
    async with open_bus() as bus:

        @bus.handler("work")
        async def work(ctx: JobContext) -> None:
            await _work(ctx)  # pragma: no cover - never runs

        batch_id = await bus.batch(Job("work", 1).delay(10)).finally_(finals.append).dispatch()
        state = await bus.cancel_batch(batch_id)
        assert state.completed
        assert state.cancelled
        assert state.processed == 0
        assert finals == [state]
        await bus.wait_idle()
        # A finished batch stays finished.
        assert await bus.cancel_batch(batch_id) == state
        with pytest.raises(NotFound, match="no batch"):
            await bus.cancel_batch("missing")
        with pytest.raises(LookupError):
            await bus.find_batch("missing")
    assert trio.current_time() == 0


async def test_a_job_waiting_to_retry_in_a_cancelled_batch_is_not_retried(
    autojump_clock: Any,
) -> None:
    attempts: list[int] = []
    async with open_bus(queues={"default": 2}) as bus:

        @bus.handler("work")
        async def work(ctx: JobContext) -> None:
            if ctx.payload == "flaky":
                attempts.append(ctx.attempt)
                raise ValueError("flaky")
            await _work(ctx)

        batch_id = await bus.batch(
            Job("work", "flaky").retry(5).backoff(10), Job("work", 1)
        ).dispatch()
        await trio.sleep(2)
        await bus.cancel_batch(batch_id)
        await bus.wait_idle()
        state = await bus.find_batch(batch_id)
    assert attempts == [1]
    assert trio.current_time() == 2
    assert (state.processed, state.failed, state.pending) == (1, 0, 0)


async def test_callback_exceptions_are_events_and_the_bus_goes_on(autojump_clock: Any) -> None:
    events = Recorder()
    finals: list[BatchState] = []

    def broken(state: BatchState) -> None:
        raise RuntimeError(f"progress bug at {state.processed}")

    async def broken_then(state: BatchState) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("then bug")

    async with open_bus(observers=[events]) as bus:

        @bus.handler("work")
        async def work(ctx: JobContext) -> None:
            await _work(ctx)

        await (
            bus.batch(*jobs(1, 2))
            .progress(broken)
            .then(broken_then)
            .finally_(finals.append)
            .dispatch()
        )
        await bus.wait_idle()
        second = await bus.batch(*jobs(1)).finally_(finals.append).dispatch()
        await bus.wait_idle()
    failed = events.of(EventKind.CALLBACK_FAILED)
    assert [(e.job_type, str(e.error)) for e in failed] == [
        ("progress", "progress bug at 1"),
        ("progress", "progress bug at 2"),
        ("then", "then bug"),
    ]
    assert len(finals) == 2
    assert finals[1].batch_id == second
    assert len(events.of(EventKind.CALLBACK_SUCCEEDED)) == 2


async def test_bad_batches_fail_at_build_or_dispatch(autojump_clock: Any) -> None:
    async with open_bus() as bus:

        @bus.handler("work")
        async def work(ctx: JobContext) -> None:
            pass

        builder = bus.batch(Job("work"))
        for method in ("progress", "then", "finally_"):
            with pytest.raises(TypeError, match=f"{method} callback"):
                getattr(builder, method)("not callable")
        with pytest.raises(TypeError, match="catch callback"):
            builder.catch(1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="batch name"):
            builder.name("")
        with pytest.raises(TypeError):
            builder.allow_failures("yes")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least one"):
            bus.batch()
        with pytest.raises(LookupError):
            await bus.batch(Job("work"), Job("other")).dispatch()
        with pytest.raises(ValueError, match="queue 'nope'"):
            await builder.on_queue("nope").dispatch()
        assert bus.stats().outstanding == 0
