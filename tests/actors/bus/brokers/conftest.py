"""Brokers under test, opened on real files and real servers."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.bus._broker import Broker, BrokerQueue
from actors.bus._redis_broker import RedisBroker
from actors.bus._sqlite_broker import SQLiteBroker
from tests.services import redis_url

OpenQueue = Callable[..., AbstractAsyncContextManager[BrokerQueue]]

#: The brokers the contract runs on (add "memory" here once MemoryBroker is leased).
KINDS = ["sqlite", "redis"]


def make_broker(kind: str, place: str, **options: Any) -> Broker:
    if kind == "sqlite":
        return SQLiteBroker(place, **options)
    return RedisBroker(place, **options)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def place(kind: str, tmp_path: Path) -> str:
    """Where the brokers of one test meet: an SQLite file, or the test Redis server."""
    return str(tmp_path / "broker.db") if kind == "sqlite" else redis_url()


@pytest.fixture
def open_queue(kind: str, place: str) -> OpenQueue:
    """``async with open_queue(**options) as q``: a queue of a newly opened broker (a
    "process"), its `serve` running unless ``serve=False``. Every call of one test opens
    another broker on the same file or server and the same queue name."""
    name = f"q-{secrets.token_hex(4)}"
    prefix = f"test-{secrets.token_hex(4)}"

    @asynccontextmanager
    async def opened(*, serve: bool = True, **options: Any) -> AsyncIterator[BrokerQueue]:
        if kind == "redis":
            options.setdefault("prefix", prefix)
        options.setdefault("poll_interval", 0.05)
        broker = make_broker(kind, place, **options)
        await broker.open()
        try:
            queue = broker.queue(name)
            async with trio.open_nursery() as nursery:
                if serve:
                    await nursery.start(queue.serve)
                yield queue
                nursery.cancel_scope.cancel()
        finally:
            await broker.close()

    return opened
