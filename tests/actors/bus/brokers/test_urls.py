"""Broker and store URLs: parsed at once, with errors that say what to write instead."""

from __future__ import annotations

import gc
import secrets
from pathlib import Path

import pytest
import trio

from actors.bus import (
    Handlers,
    Job,
    JobContext,
    MemoryBroker,
    MemoryStore,
    QueueStats,
    SQLiteStore,
    open_bus,
)
from actors.bus._redis_broker import RedisBroker
from actors.bus._sqlite_broker import SQLiteBroker
from actors.bus._urls import ServiceURL, broker_from_url, parse_url, store_from_url
from tests.services import free_port, redis_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", ServiceURL("memory", "")),
        ("sqlite:///jobs.db", ServiceURL("sqlite", "jobs.db")),
        ("sqlite:///data/jobs.db", ServiceURL("sqlite", "data/jobs.db")),
        ("sqlite:////var/lib/app/jobs.db", ServiceURL("sqlite", "/var/lib/app/jobs.db")),
        ("redis://localhost:6379/0", ServiceURL("redis", "redis://localhost:6379/0")),
        (
            "redis://h:6380/2?visibility_timeout=5&claim_batch=50",
            ServiceURL("redis", "redis://h:6380/2", {"visibility_timeout": 5.0, "claim_batch": 50}),
        ),
        (
            "sqlite:///j.db?visibility_timeout=0.5&poll_interval=0.1",
            ServiceURL("sqlite", "j.db", {"visibility_timeout": 0.5, "poll_interval": 0.1}),
        ),
    ],
)
def test_broker_urls(url: str, expected: ServiceURL) -> None:
    assert parse_url(url) == expected


def test_store_urls() -> None:
    assert parse_url("postgresql://u@h/db", what="store") == ServiceURL(
        "postgresql", "postgresql://u@h/db"
    )
    assert parse_url("postgres://u@h/db", what="store").scheme == "postgresql"
    assert parse_url("sqlite:////tmp/s.db", what="store") == ServiceURL("sqlite", "/tmp/s.db")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kafka://h/q", r"unknown broker URL 'kafka://h/q': the scheme must be one of memory://"),
        ("jobs.db", "unknown broker URL"),
        ("postgresql://h/db", "unknown broker URL"),
        ("sqlite://host/jobs.db", "names a host"),
        ("sqlite:///", "no file path"),
        ("redis://h/0?visibility=5", r"unknown option 'visibility'.*takes: claim_batch"),
        ("redis://h/0?visibility_timeout=soon", r"visibility_timeout='soon'.*not a valid float"),
    ],
)
def test_bad_urls_say_what_to_write(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)


def test_a_url_makes_its_broker() -> None:
    sqlite = broker_from_url("sqlite:///x.db?visibility_timeout=7")
    assert isinstance(sqlite, SQLiteBroker)
    assert (sqlite.path, sqlite.visibility_timeout) == ("x.db", 7.0)
    redis = broker_from_url("redis://localhost:6379/1?claim_batch=10&prefix=app")
    assert isinstance(redis, RedisBroker)
    assert (redis.url, redis.claim_batch, redis.prefix) == ("redis://localhost:6379/1", 10, "app")
    assert isinstance(broker_from_url("memory://"), MemoryBroker)


def test_a_url_makes_its_store() -> None:
    assert isinstance(store_from_url("memory://"), MemoryStore)
    sqlite = store_from_url("sqlite:////tmp/x.db?busy_timeout=3")
    assert isinstance(sqlite, SQLiteStore)
    assert sqlite.path == "/tmp/x.db"
    with pytest.raises(ValueError, match="unknown store URL 'redis://h/0'"):
        store_from_url("redis://h/0")


async def test_open_bus_takes_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ran: list[int] = []

    async def job(ctx: JobContext) -> None:
        ran.append(ctx.delivery)

    url = "sqlite:///jobs.db?visibility_timeout=5&poll_interval=0.01"
    async with open_bus(store="sqlite:///jobs.db", broker=url) as bus:
        bus.register("t", job)
        await bus.dispatch(Job("t"))
        await bus.wait_idle()
        assert (await bus.queue_stats())["default"] == QueueStats(ready=0, delayed=0)
    assert ran == [1]
    assert (tmp_path / "jobs.db").exists()


async def test_open_bus_refuses_a_bad_url_at_once() -> None:
    with pytest.raises(ValueError, match="unknown broker URL 'amqp://h'"):
        async with open_bus(broker="amqp://h"):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="unknown option 'visibility' in the broker URL"):
        async with open_bus(broker="sqlite:///x.db?visibility=5"):
            pass  # pragma: no cover


# coredis leaves the failed connection's streams to the garbage collector (see test_errors).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_open_bus_names_an_unreachable_redis() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(ConnectionError, match=rf"cannot reach Redis at {url}.*redis-server"):
        async with open_bus(broker=url):
            pass  # pragma: no cover
    gc.collect()


async def test_a_bus_on_redis_opens_and_closes_cleanly() -> None:
    # Its close exits the connection pool's scope entered at open: never under a shield of
    # the bus's (that corrupted Trio's cancel-scope stack on leaving the block).
    url = f"{redis_url()}?prefix=urls-{secrets.token_hex(4)}&poll_interval=0.05"
    ran: list[int] = []
    second = trio.Event()

    async def job(ctx: JobContext) -> None:
        ran.append(ctx.delivery)
        if len(ran) == 2:
            second.set()

    handlers = Handlers()
    handlers.register("t", job)  # declared before the bus opens: it may take a job at once
    async with open_bus(broker=url, handlers=handlers) as bus:
        await bus.dispatch(Job("t"))
        await bus.wait_idle()
    async with open_bus(broker=url, handlers=handlers, workers=False) as sender:
        await sender.dispatch(Job("t"))
    async with open_bus(broker=url, handlers=handlers):
        with trio.fail_after(10):
            await second.wait()
    assert ran == [1, 1]
