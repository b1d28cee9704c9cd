"""Limits shared by every process on one Redis server: `RedisRateLimiter` and `RedisLocker`.

Both use the connection of a `RedisBroker` (the bus opens it), so they are made from the
broker and used as `RateLimit` and `WithoutOverlapping` take them::

    broker = RedisBroker("redis://queue:6379/0")
    smtp = RateLimit("smtp", RedisRateLimiter(broker, limit=10, period=1.0))
    nightly = WithoutOverlapping("nightly", ttl=60, locker=RedisLocker(broker))
    async with open_bus(broker=broker, middleware=[smtp, nightly], ...): ...

Each decision is one Lua script on the server's clock (``TIME``), so processes on hosts whose
clocks differ still agree. A lock carries a fencing token (a number that only grows per key):
releasing or renewing a lock checks it, so a holder whose ttl lapsed (a paused or crashed
process) can neither free nor extend the lock that another process took since.
"""

from __future__ import annotations

from typing import Any

from ._middleware import check_bucket
from ._model import check_seconds
from ._redis_broker import RedisBroker

# KEYS: bucket. ARGV: tokens per second, burst, expiry ms. Returns the wait (s) as text.
_ACQUIRE_TOKEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return tostring(wait)
"""

# KEYS: lock, fence counter. ARGV: ttl ms. Returns the fencing token, or 0 if held.
_ACQUIRE_LOCK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""

# KEYS: lock. ARGV: token. Returns 1 if this token held it (and it is released).
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lock. ARGV: token, ttl ms. Returns 1 if this token still held it (ttl renewed).
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class _Scripts:
    """Scripts registered on the broker's client once it is open."""

    def __init__(self, broker: RedisBroker, texts: dict[str, str]) -> None:
        if not isinstance(broker, RedisBroker):
            raise TypeError(
                f"needs the RedisBroker whose connection it shares, got {type(broker).__name__}"
            )
        self.broker = broker
        self._texts = texts
        self._client: object = None
        self._scripts: dict[str, Any] = {}

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        client = self.broker.client  # a clear RuntimeError while the bus has not opened it
        if client is not self._client:  # first use, or the broker was opened again
            self._scripts = {n: client.register_script(t) for n, t in self._texts.items()}
            self._client = client
        return await self._scripts[name](keys=keys, args=args)


class RedisRateLimiter:
    """A token bucket per key in Redis: ``limit`` runs per ``period`` seconds across every
    process sharing the server, up to ``burst`` (default ``limit``) after a quiet spell."""

    def __init__(
        self, broker: RedisBroker, limit: int, period: float = 1.0, *, burst: int | None = None
    ) -> None:
        self.limit, self.period, self.burst = check_bucket(limit, period, burst)
        self._scripts = _Scripts(broker, {"acquire": _ACQUIRE_TOKEN})

    def __repr__(self) -> str:
        return f"<RedisRateLimiter {self.limit}/{self.period:g}s on {self._scripts.broker!r}>"

    async def acquire(self, key: str) -> float:
        """Take a slot and return 0.0, or return the seconds until one will be free."""
        rate = self.limit / self.period
        expiry_ms = max(1000, int(self.burst / rate * 2000))
        bucket = f"{self._scripts.broker.prefix}:rate:{key}"
        wait = await self._scripts.run("acquire", [bucket], [repr(rate), self.burst, expiry_ms])
        return float(wait)


class RedisLock:
    """A lock held in Redis under a fencing token (``fence``), until released or its ttl."""

    def __init__(self, scripts: _Scripts, key: str, fence: int) -> None:
        self._scripts, self.key, self.fence = scripts, key, fence

    def __repr__(self) -> str:
        return f"<RedisLock {self.key!r} fence={self.fence}>"

    async def release(self) -> None:
        """Free the lock, unless its ttl lapsed and another holder has it now (fencing)."""
        await self._scripts.run("release", [self.key], [self.fence])

    async def renew(self, ttl: float) -> bool:
        """Extend the lock to ``ttl`` seconds from now; False if it is no longer ours."""
        ms = max(1, int(check_seconds(ttl, "ttl", allow_zero=False) * 1000))
        return bool(await self._scripts.run("renew", [self.key], [self.fence, ms]))


class RedisLocker:
    """Expiring locks in Redis shared by every process (for `WithoutOverlapping`)."""

    def __init__(self, broker: RedisBroker) -> None:
        self._scripts = _Scripts(
            broker, {"acquire": _ACQUIRE_LOCK, "release": _RELEASE_LOCK, "renew": _RENEW_LOCK}
        )

    def __repr__(self) -> str:
        return f"<RedisLocker on {self._scripts.broker!r}>"

    async def acquire(self, key: str, ttl: float) -> RedisLock | None:
        """The lock, or ``None`` if another holder has ``key`` and its ttl has not passed."""
        ms = max(1, int(check_seconds(ttl, "ttl", allow_zero=False) * 1000))
        name = f"{self._scripts.broker.prefix}:lock:{{{key}}}"  # one slot with its fence
        fence = int(await self._scripts.run("acquire", [name, f"{name}:fence"], [ms]))
        return None if fence == 0 else RedisLock(self._scripts, name, fence)
