"""Small helpers of the Redis modules: coredis on first use, its replies and its errors, and
retrying a call while the server is away (restarting, loading its append-only file)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

import trio

T = TypeVar("T")

log = logging.getLogger("actors.bus.brokers")

#: What a lost or refused connection raises (coredis's own errors added once it is imported;
#: its `BusyLoadingError`, a server still loading its data, is one of them).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, OSError, TimeoutError)


def coredis_module() -> ModuleType:
    """coredis, imported on first use: it is the optional ``redis`` extra."""
    global CONNECTION_ERRORS
    try:
        import coredis
        import coredis.exceptions
    except ImportError:
        raise ImportError("RedisBroker needs coredis: pip install 'trio-lanes[redis]'") from None
    CONNECTION_ERRORS = (
        coredis.exceptions.ConnectionError,
        ConnectionError,
        OSError,
        TimeoutError,
    )
    return coredis


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, groups flattened (coredis raises from task groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def is_connection_error(exc: BaseException) -> bool:
    """``exc`` (or every error in its group) is a lost or refused connection."""
    return all(isinstance(leaf, CONNECTION_ERRORS) for leaf in leaves(exc))


def unreachable(url: str, exc: BaseException) -> ConnectionError:
    """The error that names the server, with a hint."""
    return ConnectionError(
        f"cannot reach Redis at {url} ({type(exc).__name__}: {exc}); is redis-server "
        "running there? Start one (e.g. `redis-server --port 6379`) or pass the right URL"
    )


async def reconnecting(what: str, url: str, within: float, call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, called again with backoff (50 ms doubling to 1 s, each retry logged)
    while it fails on a lost connection, for up to ``within`` seconds; then the
    `unreachable` error. Other errors (and cancellation) pass at once.

    Only for calls that are safe to repeat: a call whose reply was lost may have run.
    """
    backoff = 0.05
    deadline = trio.current_time() + within
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            if trio.current_time() + backoff > deadline:
                raise unreachable(url, exc) from exc
            log.warning(
                "Redis broker %s: %s failed (%s: %s); retrying in %.2fs",
                url,
                what,
                type(exc).__name__,
                exc,
                backoff,
            )
        await trio.sleep(backoff)
        backoff = min(backoff * 2, 1.0)


def fields(raw: Any) -> dict[str, str]:
    """A stream entry's fields as a dict, whether coredis gave a dict or a flat list."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    items = list(raw)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items), 2)}
