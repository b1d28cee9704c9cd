"""Middleware: code that wraps every job attempt, first in the list outermost.

A middleware is ``async def mw(ctx, call_next)``: it may look at or replace ``ctx``, call
``await call_next(ctx)`` once to run the rest (the handler last), skip it, or raise. The
built-in ones are classes with such a ``__call__``::

    open_bus(middleware=[audit, SkipWhen(is_test_account), FailOnError(is_permanent),
                         RateLimit("smtp", MemoryRateLimiter(limit=10, period=1.0))])
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import attrs
import trio

from .._keys import check_key
from ._errors import Release
from ._model import JobContext, check_seconds

CallNext = Callable[[JobContext], Awaitable[None]]
Middleware = Callable[[JobContext, CallNext], Awaitable[None]]
KeyFn = str | Callable[[JobContext], str]


def _key_of(key: KeyFn, ctx: JobContext) -> str:
    return key if isinstance(key, str) else check_key(key(ctx), "middleware key")


def _check_key_fn(key: object, what: str) -> None:
    if isinstance(key, str):
        check_key(key, what)
    elif not callable(key):
        raise TypeError(f"{what} must be a str or a function of the JobContext, got {key!r}")


async def _maybe_await(value: object) -> object:
    if inspect.isawaitable(value):
        return await value
    return value


@attrs.frozen
class SkipWhen:
    """Skip the job (it counts as succeeded, the handler does not run) when
    ``predicate(ctx)`` is true. The predicate may be sync or async."""

    predicate: Callable[[JobContext], object]

    def __attrs_post_init__(self) -> None:
        if not callable(self.predicate):
            raise TypeError(f"SkipWhen needs a callable predicate, got {self.predicate!r}")

    async def __call__(self, ctx: JobContext, call_next: CallNext) -> None:
        if await _maybe_await(self.predicate(ctx)):
            await trio.lowlevel.checkpoint()
            return
        await call_next(ctx)


@attrs.frozen
class FailOnError:
    """Errors for which ``when(exc)`` is true fail the job at once: no retry."""

    when: Callable[[BaseException], bool]

    def __attrs_post_init__(self) -> None:
        if not callable(self.when):
            raise TypeError(f"FailOnError needs a callable `when`, got {self.when!r}")

    async def __call__(self, ctx: JobContext, call_next: CallNext) -> None:
        try:
            await call_next(ctx)
        except Exception as exc:
            if not isinstance(exc, Release) and self.when(exc):
                ctx._flags.no_retry = True
            raise


@runtime_checkable
class RateLimiter(Protocol):
    """Decides whether a job under ``key`` may run now."""

    async def acquire(self, key: str) -> float:
        """Take a slot and return 0.0, or return the seconds until one will be free."""
        ...


class MemoryRateLimiter:
    """A token bucket per key on Trio's clock: ``limit`` runs per ``period`` seconds,
    up to ``burst`` (default ``limit``) at once after a quiet spell."""

    def __init__(self, limit: int, period: float = 1.0, *, burst: int | None = None) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        self.period = check_seconds(period, "period", allow_zero=False)
        if burst is None:
            burst = limit
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an int >= 1, got {burst!r}")
        self.limit = limit
        self.burst = burst
        self._rate = limit / self.period  # tokens per second
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    async def acquire(self, key: str) -> float:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate


@attrs.frozen
class RateLimit:
    """Run at most what ``limiter`` allows per key; a job over the limit is put back on its
    queue (`Release`) until the limiter says a slot is free. Not an attempt, not a failure.

    ``key``: a str, or a function of the `JobContext` (e.g. per customer).
    """

    key: KeyFn
    limiter: RateLimiter

    def __attrs_post_init__(self) -> None:
        _check_key_fn(self.key, "RateLimit key")
        if not isinstance(self.limiter, RateLimiter):
            raise TypeError(f"RateLimit needs a limiter with acquire(key), got {self.limiter!r}")

    async def __call__(self, ctx: JobContext, call_next: CallNext) -> None:
        wait = await self.limiter.acquire(_key_of(self.key, ctx))
        if wait > 0.0:
            raise Release(delay=wait)
        await call_next(ctx)


@runtime_checkable
class Lock(Protocol):
    async def release(self) -> None: ...


@runtime_checkable
class Locker(Protocol):
    """Hands out expiring locks by key (a Redis or SQL locker fits the same shape)."""

    async def acquire(self, key: str, ttl: float) -> Lock | None:
        """The lock, or ``None`` if someone else holds ``key`` and its ttl has not passed."""
        ...


class _MemoryLock:
    __slots__ = ("_key", "_locker")

    def __init__(self, locker: MemoryLocker, key: str) -> None:
        self._locker = locker
        self._key = key

    async def release(self) -> None:
        await trio.lowlevel.checkpoint()
        held = self._locker._held.get(self._key)
        if held is not None and held[0] is self:
            del self._locker._held[self._key]


class MemoryLocker:
    """Expiring locks in this process, on Trio's clock."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[_MemoryLock, float]] = {}

    async def acquire(self, key: str, ttl: float) -> Lock | None:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        held = self._held.get(key)
        if held is not None and held[1] > now:
            return None
        lock = _MemoryLock(self, key)
        self._held[key] = (lock, now + ttl)
        return lock

    def held(self, key: str) -> bool:
        """Whether ``key`` is locked now."""
        held = self._held.get(key)
        return held is not None and held[1] > trio.current_time()


@attrs.frozen
class WithoutOverlapping:
    """One job per key at a time: a job whose key is locked is put back on its queue
    (`Release`) for ``release_after`` seconds. The lock expires after ``ttl`` seconds even if
    its holder never releases it (a crashed process)."""

    key: KeyFn
    ttl: float
    locker: Locker = attrs.field(factory=MemoryLocker)
    release_after: float = 1.0

    def __attrs_post_init__(self) -> None:
        _check_key_fn(self.key, "WithoutOverlapping key")
        check_seconds(self.ttl, "ttl", allow_zero=False)
        check_seconds(self.release_after, "release_after")
        if not isinstance(self.locker, Locker):
            raise TypeError(f"WithoutOverlapping needs a Locker, got {self.locker!r}")

    async def __call__(self, ctx: JobContext, call_next: CallNext) -> None:
        lock = await self.locker.acquire(_key_of(self.key, ctx), self.ttl)
        if lock is None:
            raise Release(delay=self.release_after)
        try:
            await call_next(ctx)
        finally:
            with trio.CancelScope(shield=True):
                await lock.release()


def check_middleware(middleware: object) -> tuple[Middleware, ...]:
    if isinstance(middleware, str) or not isinstance(middleware, list | tuple):
        raise TypeError(f"middleware must be a list of async functions, got {middleware!r}")
    for mw in middleware:
        if not callable(mw):
            raise TypeError(f"middleware entries must be async functions, got {mw!r}")
    return tuple(middleware)
