"""The broker's limiter and locker as the defaults of `RateLimit` and `WithoutOverlapping`.

Middleware is declared before any broker exists (in `Handlers`, at import time), so a
`RateLimit` given ``limit=`` and a `WithoutOverlapping` given no locker are bound to the
bus's broker when the bus opens: on a `RedisBroker` to a `RedisRateLimiter` /
`RedisLocker`, on an `SQLiteBroker` to an `SQLiteRateLimiter` / `SQLiteLocker` (the same
file), so the limit holds for every process sharing the broker. On any other broker they
keep their own in-memory limiter or locker (one process).
"""

from __future__ import annotations

from collections.abc import Sequence

from ._broker import Broker
from ._middleware import Locker, Middleware, RateLimit, RateLimiter, WithoutOverlapping


def broker_rate_limiter(
    broker: Broker, limit: int, period: float, burst: int | None
) -> RateLimiter | None:
    """The shared limiter for ``broker``, or None if it has none (a `MemoryBroker`)."""
    from ._redis_broker import RedisBroker
    from ._sqlite_broker import SQLiteBroker

    if isinstance(broker, RedisBroker):
        from ._redis_limits import RedisRateLimiter

        return RedisRateLimiter(broker, limit, period, burst=burst)
    if isinstance(broker, SQLiteBroker):
        from ._sqlite_limits import SQLiteRateLimiter

        return SQLiteRateLimiter(broker, limit, period, burst=burst)
    return None


def broker_locker(broker: Broker) -> Locker | None:
    """The shared locker for ``broker``, or None if it has none (a `MemoryBroker`)."""
    from ._redis_broker import RedisBroker
    from ._sqlite_broker import SQLiteBroker

    if isinstance(broker, RedisBroker):
        from ._redis_limits import RedisLocker

        return RedisLocker(broker)
    if isinstance(broker, SQLiteBroker):
        from ._sqlite_limits import SQLiteLocker

        return SQLiteLocker(broker)
    return None


def bind_middleware(middleware: Sequence[Middleware], broker: Broker) -> tuple[Middleware, ...]:
    """``middleware`` with the broker's limiter and locker where none was given."""
    bound: list[Middleware] = []
    for mw in middleware:
        if isinstance(mw, RateLimit) and mw.limiter is None and mw.limit is not None:
            limiter = broker_rate_limiter(broker, mw.limit, mw.period, mw.burst)
            mw = mw if limiter is None else mw.with_limiter(limiter)
        elif isinstance(mw, WithoutOverlapping) and mw.locker is None:
            locker = broker_locker(broker)
            mw = mw if locker is None else mw.with_locker(locker)
        bound.append(mw)
    return tuple(bound)
