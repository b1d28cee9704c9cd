"""The worker registry: which worker processes share a durable broker, for ``status``.

Every bus with ``workers=True`` on an `SQLiteBroker` or a `RedisBroker` registers itself
(`WorkerInfo`: an id, host, pid, its queues and their concurrency, when it started) and
renews its entry every third of the broker's ``visibility_timeout``, as its leases are
renewed. An entry expires ``visibility_timeout`` after its last renewal, so a process that
died (SIGKILL) drops out when its leases lapse; one that stops cleanly removes its own.

- SQLite: a table ``broker_workers`` (made on first use) with each entry's expiry on the
  broker's clock.
- Redis: a hash of entries (JSON) and a sorted set of their expiries on the server's clock
  (``TIME``), one script per step; listing also removes the expired ones.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sqlite3
import time
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import trio

from ._broker import Broker

log = logging.getLogger("actors.bus.workers")


@attrs.frozen
class WorkerInfo:
    """One worker process as registered in its broker."""

    id: str
    host: str
    pid: int
    queues: Mapping[str, int]
    """Queue name -> how many jobs of it the process runs at once."""
    started_at: float
    """When it registered (seconds since the epoch, its own clock)."""
    last_seen: float
    """Its last renewal (seconds since the epoch, the broker's clock)."""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class Registry(Protocol):
    """Where a broker keeps its workers."""

    async def beat(self, info: WorkerInfo, ttl: float) -> None:
        """Register ``info``, or renew it, for ``ttl`` seconds from now."""
        ...

    async def remove(self, worker_id: str) -> None: ...

    async def workers(self) -> list[WorkerInfo]:
        """The registered workers whose entry has not expired, oldest first."""
        ...


# ------------------------------------------------------------------------------ SQLite

_TABLE = """CREATE TABLE IF NOT EXISTS broker_workers (
    id TEXT PRIMARY KEY, info TEXT NOT NULL, last_seen REAL NOT NULL, expires REAL NOT NULL)"""


def _sqlite_beat(
    conn: sqlite3.Connection, worker_id: str, info: str, now: float, ttl: float
) -> None:
    conn.execute(_TABLE)
    conn.execute(
        "INSERT INTO broker_workers (id, info, last_seen, expires) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen, "
        "expires = excluded.expires",
        (worker_id, info, now, now + ttl),
    )


def _sqlite_remove(conn: sqlite3.Connection, worker_id: str) -> None:
    conn.execute(_TABLE)
    conn.execute("DELETE FROM broker_workers WHERE id = ?", (worker_id,))


def _sqlite_list(conn: sqlite3.Connection, now: float) -> list[tuple[str, float]]:
    conn.execute(_TABLE)
    conn.execute("DELETE FROM broker_workers WHERE expires <= ?", (now,))
    rows = conn.execute("SELECT info, last_seen FROM broker_workers WHERE expires > ?", (now,))
    return [(str(info), float(seen)) for info, seen in rows.fetchall()]


class SQLiteRegistry:
    """Workers of an `SQLiteBroker`, in its file."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker

    async def beat(self, info: WorkerInfo, ttl: float) -> None:
        text = json.dumps(info.to_json())
        await self._broker.run(_sqlite_beat, info.id, text, self._broker.now(), ttl)

    async def remove(self, worker_id: str) -> None:
        await self._broker.run(_sqlite_remove, worker_id)

    async def workers(self) -> list[WorkerInfo]:
        rows = await self._broker.run(_sqlite_list, self._broker.now())
        return _sorted(_decode(info, seen) for info, seen in rows)


# ------------------------------------------------------------------------------- Redis

# KEYS: entries, expiries. ARGV: id, info, ttl ms. Returns the server's time (s) as text.
_REDIS_BEAT = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[3]), ARGV[1])
return tostring(now_ms / 1000)
"""

# KEYS: entries, expiries. Returns [info, expiry ms, ...] of the live ones; drops the others.
_REDIS_LIST = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)
for _, id in ipairs(dead) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local out = {}
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now_ms, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  local info = redis.call('HGET', KEYS[1], live[i])
  if info then
    table.insert(out, info)
    table.insert(out, live[i + 1])
  end
end
return out
"""

# KEYS: entries, expiries. ARGV: id.
_REDIS_REMOVE = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


class RedisRegistry:
    """Workers of a `RedisBroker`, on its server."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker
        tag = f"{broker.prefix}:{{workers}}"
        self._keys = [tag, f"{tag}:expiries"]
        self._client: object = None
        self._scripts: dict[str, Any] = {}

    async def _run(self, name: str, args: list[Any]) -> Any:
        broker = self._broker
        client = broker.client
        if client is not self._client:  # first use, or the broker was opened again
            texts = {"beat": _REDIS_BEAT, "list": _REDIS_LIST, "remove": _REDIS_REMOVE}
            self._scripts = {n: client.register_script(t) for n, t in texts.items()}
            self._client = client
        script = self._scripts[name]
        return await broker.call(f"workers {name}", lambda: script(keys=self._keys, args=args))

    async def beat(self, info: WorkerInfo, ttl: float) -> None:
        # The expiry is scored on the server's clock; the entry's last_seen is read back
        # from it when listed (expiry - ttl).
        data = info.to_json() | {"ttl": ttl}
        await self._run("beat", [info.id, json.dumps(data), max(1, int(ttl * 1000))])

    async def remove(self, worker_id: str) -> None:
        await self._run("remove", [worker_id])

    async def workers(self) -> list[WorkerInfo]:
        out = await self._run("list", [])
        found = []
        for i in range(0, len(out), 2):
            data = json.loads(out[i])
            found.append(_decode(out[i], float(out[i + 1]) / 1000 - float(data["ttl"])))
        return _sorted(found)


# ------------------------------------------------------------------------------ common


def _decode(text: str, last_seen: float) -> WorkerInfo:
    data = json.loads(text)
    return WorkerInfo(
        id=str(data["id"]),
        host=str(data["host"]),
        pid=int(data["pid"]),
        queues={str(k): int(v) for k, v in data["queues"].items()},
        started_at=float(data["started_at"]),
        last_seen=last_seen,
    )


def _sorted(found: Any) -> list[WorkerInfo]:
    return sorted(found, key=lambda w: (w.started_at, w.id))


def registry_for(broker: Broker) -> Registry | None:
    """The registry of ``broker`` (or of the broker it wraps), None for a `MemoryBroker`."""
    from ._redis_broker import RedisBroker
    from ._sqlite_broker import SQLiteBroker

    inner = getattr(broker, "inner", broker)  # the CLI worker's StoppingBroker
    if isinstance(inner, SQLiteBroker):
        return SQLiteRegistry(inner)
    if isinstance(inner, RedisBroker):
        return RedisRegistry(inner)
    return None


@attrs.define
class _Registered:
    registry: Registry
    worker_id: str
    lock: trio.Lock = attrs.field(factory=trio.Lock)


#: The registration of each bus with workers, by its broker, until `unregister`.
_LIVE: weakref.WeakKeyDictionary[Broker, _Registered] = weakref.WeakKeyDictionary()


async def serve_registration(
    broker: Broker,
    queues: Mapping[str, int],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep this process registered in ``broker``'s registry while it runs (a supervisor
    child of a bus with workers); `unregister` when cancelled. Nothing for a `MemoryBroker`."""
    registry = registry_for(broker)
    if registry is None:
        task_status.started()
        await trio.sleep_forever()
    assert registry is not None
    ttl = float(getattr(getattr(broker, "inner", broker), "visibility_timeout", 30.0))
    info = WorkerInfo(
        id=secrets.token_hex(6),
        host=socket.gethostname(),
        pid=os.getpid(),
        queues=dict(queues),
        started_at=time.time(),
        last_seen=time.time(),
    )
    registered = _LIVE[broker] = _Registered(registry, info.id)
    try:
        await _beat(broker, registered, info, ttl)  # listed once the bus is open
        task_status.started()
        while _LIVE.get(broker) is registered:
            await trio.sleep(ttl / 3)
            await _beat(broker, registered, info, ttl)
        await trio.sleep_forever()
    finally:
        await unregister(broker)


async def _beat(broker: Broker, registered: _Registered, info: WorkerInfo, ttl: float) -> None:
    async with registered.lock:
        if _LIVE.get(broker) is not registered:
            return  # unregistered meanwhile
        try:
            await registered.registry.beat(info, ttl)
        except Exception as exc:  # the next beat may reach it; status misses us meanwhile
            log.warning("could not register worker %s in %r (%s)", info.id, broker, exc)


async def unregister(broker: Broker) -> None:
    """Remove the entry of the bus with workers on ``broker``, and renew it no more.

    A bus does it when it stops; a process may do it sooner, while the broker's connection
    still works (the CLI worker, before it cancels its bus). An entry not removed (the
    server away) expires after the broker's visibility timeout.
    """
    registered = _LIVE.pop(broker, None)
    if registered is None:
        await trio.lowlevel.checkpoint()
        return
    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
        async with registered.lock:  # after a beat in flight, never before it
            try:
                await registered.registry.remove(registered.worker_id)
            except Exception as exc:
                log.warning("could not unregister worker %s (%s)", registered.worker_id, exc)
