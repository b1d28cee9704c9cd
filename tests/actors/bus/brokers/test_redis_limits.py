"""`RedisRateLimiter` and `RedisLocker`: one limit for every process sharing the server.

Each `RedisBroker` here is one "process" (its own connection and consumer), all on the test
Redis server.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from actors.bus import RedisBroker, RedisLocker, RedisRateLimiter
from tests.services import redis_url


@asynccontextmanager
async def processes(n: int) -> AsyncIterator[list[RedisBroker]]:
    prefix = f"limits-{secrets.token_hex(4)}"
    brokers = [RedisBroker(redis_url(), prefix=prefix) for _ in range(n)]
    for broker in brokers:
        await broker.open()
    try:
        yield brokers
    finally:
        for broker in reversed(brokers):
            await broker.close()


async def test_the_rate_limit_holds_across_processes() -> None:
    async with processes(3) as brokers:
        limiters = [RedisRateLimiter(b, limit=5, period=10.0) for b in brokers]
        waits = [await limiters[i % 3].acquire("smtp") for i in range(15)]
        assert sum(1 for w in waits if w == 0.0) == 5  # the burst, shared by the three
        assert all(0.0 < w <= 20.0 for w in waits[5:])
        assert await limiters[0].acquire("other") == 0.0  # per key


async def test_a_lock_holds_across_processes_and_fences_a_lapsed_holder() -> None:
    async with processes(2) as (one, two):
        a, b = RedisLocker(one), RedisLocker(two)
        first = await a.acquire("nightly", ttl=0.2)
        assert first is not None
        assert await b.acquire("nightly", ttl=0.2) is None
        await trio.sleep(0.3)  # real time: the server's clock expires the lock
        second = await b.acquire("nightly", ttl=5)
        assert second is not None
        assert second.fence > first.fence
        # The lapsed holder can neither free nor extend what the new holder has.
        await first.release()
        assert not await first.renew(5)
        assert await a.acquire("nightly", ttl=5) is None
        assert await second.renew(5)
        await second.release()
        third = await a.acquire("nightly", ttl=5)
        assert third is not None
        assert third.fence > second.fence


async def test_limits_need_an_open_redis_broker() -> None:
    with pytest.raises(TypeError, match="needs the RedisBroker"):
        RedisLocker("redis://localhost")  # type: ignore[arg-type]
    limiter = RedisRateLimiter(RedisBroker(redis_url()), limit=1)
    with pytest.raises(RuntimeError, match="not open"):
        await limiter.acquire("k")
