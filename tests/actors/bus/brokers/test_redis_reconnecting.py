"""`reconnecting`: a Redis call retried with backoff while the server is away, bounded."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio

from actors.bus._redis_util import coredis_module, reconnecting

URL = "redis://127.0.0.1:6390/0"


async def test_a_call_is_retried_until_the_server_is_back(autojump_clock: Any) -> None:
    errors = coredis_module().exceptions
    failures: list[BaseException] = [
        OSError("All connection attempts failed"),
        errors.ConnectionError("Unable to establish a connection"),
        errors.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
        ExceptionGroup("from coredis's task group", [ConnectionResetError()]),
    ]
    calls: list[float] = []

    async def call() -> str:
        calls.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if failures:
            raise failures.pop(0)
        return "ok"

    assert await reconnecting("put", URL, 60.0, call) == "ok"
    # 50 ms doubling between tries.
    assert calls == pytest.approx([0.0, 0.05, 0.15, 0.35, 0.75])


async def test_it_gives_up_after_its_budget_naming_the_server(autojump_clock: Any) -> None:
    async def call() -> None:
        await trio.lowlevel.checkpoint()
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionError, match=re.escape(f"cannot reach Redis at {URL}")):
        await reconnecting("ack", URL, 5.0, call)
    assert 4.0 <= trio.current_time() <= 5.0


async def test_other_errors_pass_at_once(autojump_clock: Any) -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        await trio.lowlevel.checkpoint()
        raise coredis_module().exceptions.ResponseError("WRONGTYPE")

    with pytest.raises(Exception, match="WRONGTYPE"):
        await reconnecting("put", URL, 60.0, call)
    assert calls == 1
