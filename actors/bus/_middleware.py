"""Middleware: code that wraps every job attempt, first in the list outermost.

A middleware is ``async def mw(ctx, call_next)``: it may look at or replace ``ctx``, call
``await call_next(ctx)`` once to run the rest (the handler last), skip it, or raise. The
built-in ones are classes with such a ``__call__``::

    open_bus(middleware=[audit, SkipWhen(is_test_account), FailOnError(is_permanent),
                         RateLimit("smtp", MemoryRateLimiter(limit=10, period=1.0))])
"""

from __future__ import annotations

import inspect
import logging
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

log = logging.getLogger("actors.bus.middleware")


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


def check_bucket(limit: object, period: object, burst: object) -> tuple[int, float, int]:
    """A token bucket's ``limit``, ``period`` and ``burst`` (default ``limit``), checked."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")
    seconds = check_seconds(period, "period", allow_zero=False)
    burst = limit if burst is None else burst
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ValueError(f"burst must be an int >= 1, got {burst!r}")
    return limit, seconds, burst


class MemoryRateLimiter:
    """A token bucket per key on Trio's clock: ``limit`` runs per ``period`` seconds,
    up to ``burst`` (default ``limit``) at once after a quiet spell."""

    def __init__(self, limit: int, period: float = 1.0, *, burst: int | None = None) -> None:
        self.limit, self.period, self.burst = check_bucket(limit, period, burst)
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

    ``key``: a str, or a function of the `JobContext` (e.g. per customer). Either a
    ``limiter``, or ``limit=`` runs per ``period`` seconds (``burst`` after a quiet spell):
    the bus then makes the limiter of its broker, so the limit holds for every process
    sharing it (`RedisRateLimiter` on Redis, `SQLiteRateLimiter` on SQLite; a
    `MemoryRateLimiter` of this middleware's own otherwise).
    """

    key: KeyFn
    limiter: RateLimiter | None = None
    limit: int | None = attrs.field(default=None, kw_only=True)
    period: float = attrs.field(default=1.0, kw_only=True)
    burst: int | None = attrs.field(default=None, kw_only=True)
    _own: RateLimiter | None = attrs.field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_key_fn(self.key, "RateLimit key")
        if self.limiter is None:
            if self.limit is None:
                raise TypeError(
                    "RateLimit needs a limiter or limit= (runs per period), e.g. "
                    'RateLimit("smtp", limit=10, period=1.0)'
                )
            own = MemoryRateLimiter(self.limit, self.period, burst=self.burst)
            object.__setattr__(self, "_own", own)
        elif not isinstance(self.limiter, RateLimiter):
            raise TypeError(f"RateLimit needs a limiter with acquire(key), got {self.limiter!r}")
        elif self.limit is not None:
            raise TypeError("RateLimit takes a limiter or limit=, not both")

    def with_limiter(self, limiter: RateLimiter) -> RateLimit:
        """This middleware on ``limiter`` (how the bus gives it its broker's), unless it was
        given a limiter of its own."""
        if self.limiter is not None:
            return self
        return RateLimit(self.key, limiter)

    async def __call__(self, ctx: JobContext, call_next: CallNext) -> None:
        limiter = self.limiter or self._own
        assert limiter is not None
        wait = await limiter.acquire(_key_of(self.key, ctx))
        if wait > 0.0:
            raise Release(delay=wait)
        await call_next(ctx)


@runtime_checkable
class Lock(Protocol):
    """A lock handed out by a `Locker`. One that also has ``async renew(ttl) -> bool`` (every
    built-in lock) is renewed by `WithoutOverlapping` while its job runs."""

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

    async def renew(self, ttl: float) -> bool:
        """Extend the lock to ``ttl`` seconds from now; False if it is no longer ours."""
        await trio.lowlevel.checkpoint()
        held = self._locker._held.get(self._key)
        now = trio.current_time()
        if held is None or held[0] is not self or held[1] <= now:
            return False
        self._locker._held[self._key] = (self, now + ttl)
        return True


class MemoryLocker:
    """Expiring locks in this process, on Trio's clock."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[_MemoryLock, float]] = {}

    async def acquire(self, key: str, ttl: float) -> _MemoryLock | None:
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
    (`Release`) for ``release_after`` seconds.

    The lock is renewed every ``ttl / 3`` seconds while its job runs, so a job longer than
    ``ttl`` keeps it; a holder that dies (or stops renewing) loses it ``ttl`` seconds after
    its last renewal. Without a ``locker`` the bus gives it its broker's, held by every
    process sharing it (`RedisLocker` on Redis, `SQLiteLocker` on SQLite; a `MemoryLocker`
    of this middleware's own otherwise).
    """

    key: KeyFn
    ttl: float
    locker: Locker | None = None
    release_after: float = 1.0
    _own: Locker = attrs.field(init=False, factory=MemoryLocker, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_key_fn(self.key, "WithoutOverlapping key")
        check_seconds(self.ttl, "ttl", allow_zero=False)
        check_seconds(self.release_after, "release_after")
        if self.locker is not None and not isinstance(self.locker, Locker):
            raise TypeError(f"WithoutOverlapping needs a Locker, got {self.locker!r}")

    def with_locker(self, locker: Locker) -> WithoutOverlapping:
        """This middleware on ``locker`` (how the bus gives it its broker's), unless it was
        given a locker of its own."""
        if self.locker is not None:
            return self
        return attrs.evolve(self, locker=locker)

    async def __call__(self, ctx: JobContext, call_next: CallNext) -> None:
        key = _key_of(self.key, ctx)
        lock = await (self.locker or self._own).acquire(key, self.ttl)
        if lock is None:
            raise Release(delay=self.release_after)
        error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            renew = getattr(lock, "renew", None)
            if renew is not None:
                nursery.start_soon(_keep, renew, self.ttl, key)
            try:
                await call_next(ctx)
            except BaseException as exc:  # raised as it is below, not in the nursery's group
                error = exc
            finally:
                nursery.cancel_scope.cancel()  # no renewal after the release
                with trio.CancelScope(shield=True):
                    await lock.release()
        if error is not None:
            try:
                raise error
            finally:
                error = None


async def _keep(renew: Callable[[float], Awaitable[bool]], ttl: float, key: str) -> None:
    """Renew a lock every third of its ttl until cancelled (its job ended)."""
    while True:
        await trio.sleep(ttl / 3)
        try:
            kept = await renew(ttl)
        except Exception as exc:  # the backend is away: the next renewal may reach it
            log.warning("WithoutOverlapping %r: renewing the lock failed (%s)", key, exc)
            continue
        if not kept:
            log.warning(
                "WithoutOverlapping %r: the lock lapsed while its job ran (paused longer than "
                "its ttl?); another job of this key may run now",
                key,
            )
            return


def check_middleware(middleware: object) -> tuple[Middleware, ...]:
    if isinstance(middleware, str) or not isinstance(middleware, list | tuple):
        raise TypeError(f"middleware must be a list of async functions, got {middleware!r}")
    for mw in middleware:
        if not callable(mw):
            raise TypeError(f"middleware entries must be async functions, got {mw!r}")
    return tuple(middleware)
