"""The worker registry: each bus with workers registers in its broker, renews its entry with
its heartbeat, and drops out when it stops (removed) or stops beating (expired)."""

from __future__ import annotations

import gc
import secrets
from pathlib import Path

import pytest
import trio

from actors.bus import MemoryBroker, RedisBroker, SQLiteBroker, open_bus
from actors.bus._workers import RedisRegistry, SQLiteRegistry, WorkerInfo, registry_for
from tests.services import redis_url


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def info(worker_id: str, started: float) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id, host="h", pid=7, queues={"default": 4}, started_at=started, last_seen=0.0
    )


async def test_sqlite_entries_are_renewed_and_expire(tmp_path: Path) -> None:
    clock = Clock()
    one, two = (SQLiteBroker(tmp_path / "jobs.db", clock=clock) for _ in range(2))
    await one.open()
    await two.open()
    try:
        a, b = SQLiteRegistry(one), SQLiteRegistry(two)
        await a.beat(info("a", 1.0), ttl=5)
        clock.now += 3
        await b.beat(info("b", 2.0), ttl=5)
        seen = await a.workers()
        assert [(w.id, w.last_seen) for w in seen] == [("a", 1_000.0), ("b", 1_003.0)]
        assert seen[0].queues == {"default": 4}
        clock.now += 2.5  # a's entry lapsed, b's has not
        assert [w.id for w in await b.workers()] == ["b"]
        await b.beat(info("b", 2.0), ttl=5)  # renewed
        clock.now += 4
        assert [w.id for w in await a.workers()] == ["b"]
        await b.remove("b")
        assert await a.workers() == []
    finally:
        await one.close()
        await two.close()


async def test_redis_entries_are_renewed_and_expire() -> None:
    broker = RedisBroker(redis_url(), prefix=f"workers-{secrets.token_hex(4)}")
    await broker.open()
    try:
        registry = RedisRegistry(broker)
        await registry.beat(info("a", 1.0), ttl=60)
        await registry.beat(info("b", 2.0), ttl=0.2)
        seen = await registry.workers()
        assert [w.id for w in seen] == ["a", "b"]
        assert seen[0].queues == {"default": 4}
        with trio.fail_after(10):  # real time: the server's clock expires b
            while True:
                if len(await registry.workers()) == 1:
                    break
                await trio.sleep(0.05)
        assert [w.id for w in await registry.workers()] == ["a"]
        await registry.remove("a")
        assert await registry.workers() == []
    finally:
        await broker.close()
        gc.collect()  # coredis's closed streams, collected in this test


async def test_a_bus_with_workers_registers_while_it_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    watcher = SQLiteBroker(tmp_path / "jobs.db")
    await watcher.open()
    registry = registry_for(watcher)
    assert registry is not None
    try:
        async with open_bus(store=url, broker=url, queues={"default": 3, "mail": 1}):
            [me] = await registry.workers()
            assert dict(me.queues) == {"default": 3, "mail": 1}
            async with open_bus(store=url, broker=url, workers=False):
                assert len(await registry.workers()) == 1  # one that only dispatches: not listed
        assert await registry.workers() == []  # removed on the way out
    finally:
        await watcher.close()


def test_a_memory_broker_has_no_registry() -> None:
    assert registry_for(MemoryBroker()) is None


pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]
