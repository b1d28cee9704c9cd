"""`SQLiteRateLimiter` and `SQLiteLocker`: one limit for every process sharing the file.

Each `SQLiteBroker` here is one "process" (its own connection) on the same file; the
brokers read a clock the test moves by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from actors.bus import (
    MemoryBroker,
    Middleware,
    RateLimit,
    RedisBroker,
    RedisLocker,
    RedisRateLimiter,
    SQLiteBroker,
    SQLiteLocker,
    SQLiteRateLimiter,
    WithoutOverlapping,
)
from actors.bus._limits import bind_middleware


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def processes(path: Path, n: int, clock: Clock) -> AsyncIterator[list[SQLiteBroker]]:
    brokers = [SQLiteBroker(path, clock=clock) for _ in range(n)]
    for broker in brokers:
        await broker.open()
    try:
        yield brokers
    finally:
        for broker in brokers:
            await broker.close()


async def test_the_rate_limit_holds_across_processes(tmp_path: Path) -> None:
    clock = Clock()
    async with processes(tmp_path / "jobs.db", 3, clock) as brokers:
        limiters = [SQLiteRateLimiter(b, limit=5, period=10.0) for b in brokers]
        waits = [await limiters[i % 3].acquire("smtp") for i in range(7)]
        assert waits[:5] == [0.0] * 5  # the burst, shared by the three
        assert waits[5] == pytest.approx(2.0)  # one token per 2 s
        assert waits[6] == pytest.approx(2.0)
        assert await limiters[0].acquire("other") == 0.0  # per key
        clock.now += 2.0
        assert await limiters[1].acquire("smtp") == 0.0


async def test_a_lock_holds_across_processes_and_fences_a_lapsed_holder(tmp_path: Path) -> None:
    clock = Clock()
    async with processes(tmp_path / "jobs.db", 2, clock) as (one, two):
        a, b = SQLiteLocker(one), SQLiteLocker(two)
        first = await a.acquire("nightly", ttl=5)
        assert first is not None
        assert await b.acquire("nightly", ttl=5) is None
        clock.now += 4
        assert await first.renew(5)  # held until now + 5
        clock.now += 4
        assert await b.acquire("nightly", ttl=5) is None
        clock.now += 1.5  # not renewed: it lapses
        second = await b.acquire("nightly", ttl=5)
        assert second is not None
        assert second.fence > first.fence
        # The lapsed holder can neither free nor extend what the new holder has.
        await first.release()
        assert not await first.renew(5)
        assert await a.acquire("nightly", ttl=5) is None
        await second.release()
        third = await a.acquire("nightly", ttl=5)
        assert third is not None
        assert third.fence > second.fence


async def test_limits_on_a_path_open_a_connection_of_their_own(tmp_path: Path) -> None:
    path = tmp_path / "limits.db"
    limiter = SQLiteRateLimiter(path, limit=1, period=60.0)
    locker = SQLiteLocker(str(path))
    try:
        assert await limiter.acquire("k") == 0.0
        assert await limiter.acquire("k") > 0.0
        lock = await locker.acquire("k", ttl=60)
        assert lock is not None
        assert await SQLiteLocker(path).acquire("k", ttl=60) is None
        await lock.release()
    finally:
        await limiter.close()
        await locker.close()
    again = SQLiteLocker(path)
    try:
        assert await again.acquire("k", ttl=60) is not None  # the file kept the state
    finally:
        await again.close()


async def test_limits_check_their_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="SQLiteBroker or the path"):
        SQLiteLocker(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        SQLiteRateLimiter(tmp_path / "x.db", limit=0)
    limiter = SQLiteRateLimiter(SQLiteBroker(tmp_path / "x.db"), limit=1)
    with pytest.raises(RuntimeError, match="not open"):
        await limiter.acquire("k")


def test_the_bus_gives_middleware_its_brokers_limiter_and_locker(tmp_path: Path) -> None:
    declared: list[Middleware] = [
        RateLimit("smtp", limit=3, period=2.0),
        WithoutOverlapping("nightly", ttl=9),
    ]
    sqlite = bind_middleware(declared, SQLiteBroker(tmp_path / "jobs.db"))
    assert isinstance(sqlite[0], RateLimit)
    assert isinstance(sqlite[1], WithoutOverlapping)
    assert isinstance(sqlite[0].limiter, SQLiteRateLimiter)
    assert (sqlite[0].limiter.limit, sqlite[0].limiter.period) == (3, 2.0)
    assert isinstance(sqlite[1].locker, SQLiteLocker)
    assert sqlite[1].ttl == 9
    redis = bind_middleware(declared, RedisBroker("redis://localhost:1/0"))
    assert isinstance(redis[0], RateLimit)
    assert isinstance(redis[1], WithoutOverlapping)
    assert isinstance(redis[0].limiter, RedisRateLimiter)
    assert isinstance(redis[1].locker, RedisLocker)
    # One process only: they keep their own in-memory limiter and locker.
    assert bind_middleware(declared, MemoryBroker()) == tuple(declared)
    # A limiter or locker given explicitly is kept.
    mine: list[Middleware] = [
        WithoutOverlapping("nightly", ttl=9, locker=SQLiteLocker(tmp_path / "own.db"))
    ]
    assert bind_middleware(mine, RedisBroker("redis://localhost:1/0")) == tuple(mine)
