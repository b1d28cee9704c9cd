"""Middleware: order, SkipWhen, FailOnError, RateLimit, WithoutOverlapping, custom."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

from actors.bus import (
    CallNext,
    EventKind,
    FailOnError,
    Job,
    JobContext,
    MemoryLocker,
    MemoryRateLimiter,
    RateLimit,
    Release,
    SkipWhen,
    WithoutOverlapping,
    open_bus,
)

from .helpers import Recorder


async def test_the_first_middleware_is_outermost(autojump_clock: Any) -> None:
    trace: list[str] = []

    def named(name: str) -> Any:
        async def mw(ctx: JobContext, call_next: CallNext) -> None:
            trace.append(f"{name}>")
            await call_next(ctx)
            trace.append(f"<{name}")

        return mw

    async with open_bus(middleware=[named("outer"), named("inner")]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            trace.append("handler")

        await bus.dispatch(Job("a"))
        await bus.wait_idle()
    assert trace == ["outer>", "inner>", "handler", "<inner", "<outer"]


async def test_middleware_may_replace_the_context(autojump_clock: Any) -> None:
    seen: list[Any] = []

    async def enrich(ctx: JobContext, call_next: CallNext) -> None:
        await call_next(attrs.evolve(ctx, payload={**ctx.payload, "tenant": "t1"}))

    async with open_bus(middleware=[enrich]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            seen.append(ctx.payload)

        await bus.dispatch(Job("a", {"x": 1}))
        await bus.wait_idle()
    assert seen == [{"x": 1, "tenant": "t1"}]


async def test_skip_when_skips_and_counts_as_success(autojump_clock: Any) -> None:
    ran: list[str] = []
    finals: list[Any] = []
    events = Recorder()

    async def is_test(ctx: JobContext) -> bool:
        return bool(ctx.payload["test"])

    async with open_bus(middleware=[SkipWhen(is_test)], observers=[events]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            ran.append(ctx.payload["name"])

        await bus.dispatch(Job("a", {"name": "real", "test": False}))
        await bus.dispatch(Job("a", {"name": "fake", "test": True}))
        await bus.chain(Job("a", {"name": "c", "test": True})).finally_(finals.append).dispatch()
        await bus.wait_idle()
    assert ran == ["real"]
    assert finals[0].completed
    assert len(events.of(EventKind.JOB_SUCCEEDED)) == 3
    with pytest.raises(TypeError):
        SkipWhen(42)  # type: ignore[arg-type]


async def test_fail_on_error_stops_retries_for_matched_errors(autojump_clock: Any) -> None:
    attempts: list[tuple[str, int]] = []

    def permanent(exc: BaseException) -> bool:
        return isinstance(exc, PermissionError)

    async with open_bus(middleware=[FailOnError(permanent)]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            attempts.append((ctx.payload, ctx.attempt))
            raise PermissionError() if ctx.payload == "denied" else ConnectionError()

        await bus.dispatch(Job("a", "denied").retry(3))
        await bus.dispatch(Job("a", "flaky").retry(3))
        await bus.wait_idle()
    assert [a for a in attempts if a[0] == "denied"] == [("denied", 1)]
    assert [a for a in attempts if a[0] == "flaky"] == [("flaky", n) for n in (1, 2, 3, 4)]


async def test_rate_limit_releases_jobs_over_the_limit(autojump_clock: Any) -> None:
    ran: list[tuple[int, int, float]] = []
    limiter = MemoryRateLimiter(limit=2, period=1.0)
    events = Recorder()
    async with open_bus(middleware=[RateLimit("smtp", limiter)], observers=[events]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            ran.append((ctx.payload, ctx.attempt, trio.current_time()))

        for i in range(6):
            await bus.dispatch(Job("a", i).retry(0))
        await bus.wait_idle()
    # Two at once (the burst), then one every half second; attempts are not used up.
    assert sorted(t for _, _, t in ran) == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert {attempt for _, attempt, _ in ran} == {1}
    assert events.of(EventKind.JOB_FAILED) == []


async def test_rate_limit_keys_may_depend_on_the_job(autojump_clock: Any) -> None:
    ran: list[tuple[str, float]] = []
    limiter = MemoryRateLimiter(limit=1, period=10.0)
    per_customer = RateLimit(lambda ctx: ctx.payload, limiter)
    async with open_bus(middleware=[per_customer]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            ran.append((ctx.payload, trio.current_time()))

        for customer in ("x", "y", "x"):
            await bus.dispatch(Job("a", customer))
        await bus.wait_idle()
    assert sorted(ran) == [("x", 0.0), ("x", 10.0), ("y", 0.0)]


async def test_without_overlapping_runs_one_per_key(autojump_clock: Any) -> None:
    spans: list[tuple[float, float]] = []
    locker = MemoryLocker()
    mw = WithoutOverlapping("report", ttl=60, locker=locker, release_after=0.5)
    async with open_bus(middleware=[mw]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            start = trio.current_time()
            assert locker.held("report")
            await trio.sleep(1)
            spans.append((start, trio.current_time()))

        for _ in range(3):
            await bus.dispatch(Job("a"))
        await bus.wait_idle()
    assert spans == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert not locker.held("report")


async def test_without_overlapping_locks_expire_after_their_ttl(autojump_clock: Any) -> None:
    locker = MemoryLocker()
    lock = await locker.acquire("k", 5)
    assert lock is not None
    assert await locker.acquire("k", 5) is None
    await trio.sleep(5)
    second = await locker.acquire("k", 5)
    assert second is not None
    await lock.release()  # a stale holder cannot release the new holder's lock
    assert locker.held("k")
    await second.release()
    assert not locker.held("k")


async def test_custom_middleware_may_release_a_job(autojump_clock: Any) -> None:
    ran: list[float] = []

    async def closed_until_ten(ctx: JobContext, call_next: CallNext) -> None:
        if trio.current_time() < 10:
            raise Release(delay=10 - trio.current_time())
        await call_next(ctx)

    async with open_bus(middleware=[closed_until_ten]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            ran.append(trio.current_time())

        await bus.dispatch(Job("a").delay(3))
        await bus.wait_idle()
    assert ran == [10.0]


def test_middleware_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="limit"):
        MemoryRateLimiter(limit=0)
    with pytest.raises(ValueError, match="NaN"):
        MemoryRateLimiter(limit=1, period=float("nan"))
    with pytest.raises(TypeError, match="limiter"):
        RateLimit("k", object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        WithoutOverlapping("k", ttl=-1)
    with pytest.raises(TypeError, match="key"):
        WithoutOverlapping(3, ttl=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        FailOnError("all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delay"):
        Release(-1)


async def test_without_overlapping_renews_its_lock_while_the_job_runs(autojump_clock: Any) -> None:
    spans: list[tuple[float, float]] = []
    locker = MemoryLocker()
    # A ttl far shorter than the job: only the renewal keeps the second job out.
    mw = WithoutOverlapping("report", ttl=3, locker=locker, release_after=0.5)
    async with open_bus(middleware=[mw]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            start = trio.current_time()
            await trio.sleep(10)
            spans.append((start, trio.current_time()))

        for _ in range(2):
            await bus.dispatch(Job("a"))
        await bus.wait_idle()
    assert spans[0] == (0.0, 10.0)
    assert spans[1][0] >= 10.0
    assert not locker.held("report")


async def test_a_lock_not_renewed_lapses_after_its_ttl(autojump_clock: Any) -> None:
    locker = MemoryLocker()
    lock = await locker.acquire("k", 3)
    assert lock is not None
    await trio.sleep(2)
    assert await lock.renew(3)  # held until 5 now
    await trio.sleep(2.5)
    assert locker.held("k")
    await trio.sleep(1)
    assert not locker.held("k")
    assert not await lock.renew(3)  # lapsed: no longer ours


async def test_rate_limit_with_a_limit_and_no_limiter_keeps_its_own(autojump_clock: Any) -> None:
    ran: list[float] = []
    async with open_bus(middleware=[RateLimit("smtp", limit=1, period=2.0)]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            ran.append(trio.current_time())

        for i in range(3):
            await bus.dispatch(Job("a", i))
        await bus.wait_idle()
    assert sorted(ran) == [0.0, 2.0, 4.0]


def test_rate_limit_takes_a_limiter_or_a_limit() -> None:
    with pytest.raises(TypeError, match="limiter or limit="):
        RateLimit("k")
    with pytest.raises(TypeError, match="not both"):
        RateLimit("k", MemoryRateLimiter(limit=1), limit=2)
    with pytest.raises(ValueError, match="limit"):
        RateLimit("k", limit=0)


async def test_without_overlapping_passes_the_jobs_error_on_as_it_is(autojump_clock: Any) -> None:
    attempts: list[int] = []
    permanent = FailOnError(lambda exc: isinstance(exc, PermissionError))
    async with open_bus(middleware=[permanent, WithoutOverlapping("k", ttl=3)]) as bus:

        @bus.handler("a")
        async def handler(ctx: JobContext) -> None:
            attempts.append(ctx.attempt)
            await trio.sleep(5)  # renewed meanwhile
            raise PermissionError("no")

        await bus.dispatch(Job("a").retry(3))
        await bus.wait_idle()
        (failed,) = await bus.failed_jobs()
    assert attempts == [1]  # FailOnError saw the PermissionError itself, not a group
    assert "PermissionError" in failed.error
