"""Cluster-wide lanes: a key held across every process sharing one Redis, FIFO, under a lease.

``actors.open_lanes(cluster="redis://host:6379/0", lease=10.0)`` makes `Lanes` whose jobs
hold their key in this process (the in-process lane, FIFO and cheap, as without a cluster)
*and then* across the fleet. The job still runs in its caller's task (DESIGN rule 6); only
the wait for its turn is longer. Per key, on one Redis server (three keys per busy key, gone
when it idles):

- ``{p}:lanes:{key}:q``, a list of tickets: the fleet's FIFO of processes waiting for it
  (in-process lanes send one caller per key at a time, so one ticket per process and key);
- ``{p}:lanes:{key}:t``, a hash ticket -> expiry: a waiter refreshes its ticket each time it
  asks, so a waiter that died lapses from the queue instead of blocking it forever;
- ``{p}:lanes:{key}:l``, the lease: owner ticket, epoch, expiry (Redis's ``TIME``, the one
  clock every process shares). A holder renews it every ``lease / 3`` while its job runs.

Every step is one Lua script (atomic), and nothing is a lock a hard kill can leave behind:
a dead holder's lease lapses after ``lease`` seconds, a dead waiter's ticket likewise.

**Fencing.** Each lease taken gets ``INCR {p}:lanes:epoch``: one counter for every key, so a
key's tokens only grow (also across idle periods, when its own keys are gone) at the cost of
one small counter, not one per key ever used. The job reads it with `actors.current_fence`
and hands it to what it writes (a conditional ``UPDATE ... WHERE fence < ?``). This is the
part that makes the lease safe: a holder paused past its lease (GC, a frozen VM, SIGSTOP)
wakes up still running, and only the resource can tell that its token is stale. A holder
whose renewal fails (the lease moved on, or Redis was unreachable for a whole lease) has its
job cancelled, and `Lanes.run` raises `LeaseLost`.

**Waiting.** A waiter whose ticket is not first (or whose lease is still held) blocks in
``BLPOP`` on a wake-up list of its own ticket; the holder's release pushes to the next live
ticket's list in the same script, so a handover costs one round trip, not a poll interval.
The ``BLPOP`` times out every ``lease / 3`` to refresh the ticket and to take over a lapsed
lease (a dead holder wakes no one): takeover after a crash takes ``lease`` to ``4/3 lease``.
Pub/sub would need one subscriber connection and message routing; short polling costs a
round trip per waiter per interval and adds half an interval to each handover.

Requires one Redis server (or primary): the scripts touch keys of several hash slots (the
shared epoch), so Redis Cluster is not supported. Redis calls run in the caller's task; a
connection error while waiting reaches the caller (its ticket lapses).
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from . import _fence
from ._checks import check_duration
from ._errors import LeaseLost

if TYPE_CHECKING:
    import coredis

T = TypeVar("T")

log = logging.getLogger("actors.lanes.cluster")

_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: queue, tickets, lease, epoch. ARGV: ticket, lease_ms, wake key.
# Returns the new epoch if the lease is now this ticket's, else 0.
_ACQUIRE = (
    _MS
    + """
local now, ticket, lease = now_ms(), ARGV[1], tonumber(ARGV[2])
local keep = lease * 3
if redis.call('HSETNX', KEYS[2], ticket, now + lease) == 1 then
  redis.call('RPUSH', KEYS[1], ticket)
else
  redis.call('HSET', KEYS[2], ticket, now + lease)
end
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
if tonumber(redis.call('HGET', KEYS[3], 'until') or '0') > now then return 0 end
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if head == false then return 0 end
  if tonumber(redis.call('HGET', KEYS[2], head) or '0') > now then break end
  redis.call('LPOP', KEYS[1])
  redis.call('HDEL', KEYS[2], head)
end
if redis.call('LINDEX', KEYS[1], 0) ~= ticket then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('HDEL', KEYS[2], ticket)
redis.call('DEL', ARGV[3])
local epoch = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[3], 'owner', ticket, 'epoch', epoch, 'until', now + lease)
redis.call('PEXPIRE', KEYS[3], keep)
return epoch
"""
)

# KEYS: lease, queue, tickets. ARGV: ticket, epoch, wake key prefix. Frees the lease if it is
# still this ticket's and wakes the next waiter; 1 if it was ours.
_RELEASE = """
local owner, epoch = unpack(redis.call('HMGET', KEYS[1], 'owner', 'epoch'))
if owner ~= ARGV[1] or epoch ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
local head = redis.call('LINDEX', KEYS[2], 0)
if head then
  redis.call('RPUSH', ARGV[3] .. head, '1')
  redis.call('PEXPIRE', ARGV[3] .. head, 60000)
end
return 1
"""

# A waiter gives up (cancelled). KEYS: queue, tickets, lease. ARGV: ticket, wake key, prefix.
_LEAVE = """
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 0 then
  local head = redis.call('LINDEX', KEYS[1], 0)
  if head then
    redis.call('RPUSH', ARGV[3] .. head, '1')
    redis.call('PEXPIRE', ARGV[3] .. head, 60000)
  end
end
return 1
"""

# KEYS: leases. ARGV: lease_ms, then (ticket, epoch) per lease. Returns 1/0 per lease.
_RENEW = (
    _MS
    + """
local now, lease, out = now_ms(), tonumber(ARGV[1]), {}
for i, key in ipairs(KEYS) do
  local ticket, epoch = ARGV[i * 2], ARGV[i * 2 + 1]
  if redis.call('HGET', key, 'owner') == ticket and redis.call('HGET', key, 'epoch') == epoch then
    redis.call('HSET', key, 'until', now + lease)
    redis.call('PEXPIRE', key, lease * 3)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
)


class _Held:
    """One lease this process holds while its job runs."""

    __slots__ = ("epoch", "key", "lost", "scope", "ticket")

    def __init__(self, key: str, ticket: str, epoch: int, scope: trio.CancelScope) -> None:
        self.key = key
        self.ticket = ticket
        self.epoch = epoch
        self.scope = scope
        self.lost = False


def check_lease(value: object) -> float:
    seconds = check_duration(value, "lease", allow_zero=False)
    if math.isinf(seconds) or seconds < 0.01:
        raise ValueError(
            f"lease must be a finite number of seconds >= 0.01, got {value!r}; it is how long "
            "a key stays taken by a process that stopped renewing it (it died)"
        )
    return seconds


class ClusterLeases:
    """The Redis half of cluster `Lanes`: takes, renews and releases keys' leases."""

    def __init__(self, url: str, *, lease: float, prefix: str) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(
                f'cluster must be a Redis URL like "redis://localhost:6379/0", got {url!r}'
            )
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, got {prefix!r}")
        self.url = url
        self.lease = check_lease(lease)
        self.prefix = prefix
        self._lease_ms = max(1, round(self.lease * 1000))
        self._id = secrets.token_hex(8)
        self._tickets = itertools.count(1)
        self._held: dict[int, _Held] = {}
        self._client: coredis.Redis[str] | None = None
        self._scripts: dict[str, Any] = {}

    # ---------------------------------------------------------------- connection

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """Connected to Redis (a clear `ConnectionError` if it does not answer) for the block."""
        try:
            import coredis
        except ImportError:
            raise ImportError(
                "cluster Lanes need coredis: pip install 'trio-lanes[redis]'"
            ) from None
        client: coredis.Redis[str] = coredis.Redis.from_url(self.url, decode_responses=True)
        ready = False
        try:
            async with client:
                with trio.fail_after(5):
                    await client.ping()
                self._scripts = {
                    name: client.register_script(text)
                    for name, text in {
                        "acquire": _ACQUIRE,
                        "release": _RELEASE,
                        "leave": _LEAVE,
                        "renew": _RENEW,
                    }.items()
                }
                self._client, ready = client, True
                try:
                    yield
                finally:
                    self._client = None
        except Exception as exc:
            if ready:
                raise
            raise ConnectionError(
                f"cluster Lanes cannot reach Redis at {self.url} ({type(exc).__name__}: "
                f"{exc}); is redis-server running there? Pass the right URL"
            ) from exc

    def _keys(self, key: str) -> tuple[str, str, str, str]:
        base = f"{self.prefix}:lanes:{{{key}}}"
        return f"{base}:q", f"{base}:t", f"{base}:l", f"{base}:w:"

    async def _call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys), args=list(args))

    # ---------------------------------------------------------------- holding keys

    async def acquire(self, key: str) -> tuple[str, int]:
        """Wait for ``key``'s turn across the fleet; return (ticket, epoch)."""
        client = self._client
        assert client is not None
        queue, tickets, lease, wake_prefix = self._keys(key)
        ticket = f"{self._id}.{next(self._tickets)}"
        wake = wake_prefix + ticket
        keys = (queue, tickets, lease, f"{self.prefix}:lanes:epoch")
        args = (ticket, self._lease_ms, wake)
        try:
            while True:
                epoch = int(await self._call("acquire", keys, args))
                if epoch:
                    return ticket, epoch
                await client.blpop([wake], max(0.01, self.lease / 3))
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(self.lease):
                try:
                    await self._call("leave", (queue, tickets, lease), (ticket, wake, wake_prefix))
                except Exception as exc:  # the ticket lapses on its own
                    log.warning("cluster lane %r: could not withdraw a ticket (%s)", key, exc)
            raise

    async def release(self, key: str, ticket: str, epoch: int) -> bool:
        """Free the key for the next waiter; False if the lease was someone else's by then."""
        queue, tickets, lease, wake_prefix = self._keys(key)
        with trio.CancelScope(shield=True), trio.move_on_after(self.lease):
            try:
                args = (ticket, epoch, wake_prefix)
                return bool(int(await self._call("release", (lease, queue, tickets), args)))
            except Exception as exc:  # the lease lapses on its own
                log.warning("cluster lane %r: could not release its lease (%s)", key, exc)
        return True  # not known to be lost

    async def run(self, keys: Sequence[str], job: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Hold every key (in the given, sorted order) across the fleet and run the job.

        Raises `LeaseLost` if a lease was found lost while the job ran (the job was cancelled)
        or when it ended (the job had returned: its result is dropped, as its writes may have
        raced another holder's). An exception of the job's own is raised unchanged.
        """
        scope = trio.CancelScope()
        held: list[_Held] = []
        try:
            for key in keys:
                ticket, epoch = await self.acquire(key)
                entry = _Held(key, ticket, epoch, scope)
                held.append(entry)
                self._held[id(entry)] = entry
            token = _fence.push(tuple((entry.key, entry.epoch) for entry in held))
            try:
                with scope:
                    result = await job(*args)
            finally:
                _fence.pop(token)
        finally:
            for entry in reversed(held):
                self._held.pop(id(entry), None)
                if not entry.lost and not await self.release(entry.key, entry.ticket, entry.epoch):
                    entry.lost = True
        lost = [entry.key for entry in held if entry.lost]
        if lost or scope.cancelled_caught:
            raise LeaseLost(
                f"the cluster lease on {lost} lapsed while the job ran (a pause or a lost "
                f"connection longer than lease={self.lease}s), so another process may have "
                "held the key meanwhile: the job's fencing token is stale. Writes guarded "
                "by the token were refused; redo the work if it still needs doing"
            )
        return result

    async def renew_forever(self) -> None:
        """Renew the leases held by this process every ``lease / 3``; cancel the jobs of
        those lost (taken over, or not renewed for a whole lease)."""
        last_ok = trio.current_time()
        while True:
            await trio.sleep(self.lease / 3)
            held = list(self._held.values())
            if not held:
                last_ok = trio.current_time()
                continue
            args: list[Any] = [self._lease_ms]
            for entry in held:
                args += [entry.ticket, entry.epoch]
            try:
                answers = await self._call("renew", [self._keys(e.key)[2] for e in held], args)
            except Exception as exc:
                log.warning("cluster lanes: could not renew %d leases (%s)", len(held), exc)
                if trio.current_time() - last_ok < self.lease:
                    continue
                answers = [0] * len(held)
            else:
                last_ok = trio.current_time()
            for entry, ok in zip(held, answers, strict=True):
                if not int(ok) and not entry.lost:
                    log.warning("cluster lane %r: lease lost; cancelling its job", entry.key)
                    entry.lost = True
                    entry.scope.cancel()
