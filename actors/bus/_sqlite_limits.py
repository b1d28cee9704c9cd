"""Limits shared by every process using one SQLite file: `SQLiteRateLimiter`, `SQLiteLocker`.

The SQLite counterparts of `RedisRateLimiter` and `RedisLocker`, for the worker processes of
one host. Each takes the `SQLiteBroker` whose connection it shares (its group commits), or a
file path of its own (a connection opened on first use; `close` it)::

    broker = SQLiteBroker("jobs.db")
    smtp = RateLimit("smtp", SQLiteRateLimiter(broker, limit=10, period=1.0))
    nightly = WithoutOverlapping("nightly", ttl=60, locker=SQLiteLocker(broker))

On an SQLite broker the bus makes these by itself for a `RateLimit` given ``limit=`` and a
`WithoutOverlapping` given no locker (see `actors.bus._limits`). Each decision is one
``BEGIN IMMEDIATE`` transaction on the wall clock (every process of a host reads the same).
A lock carries a fencing token (a number that only grows per key): releasing or renewing
checks it, so a holder whose ttl lapsed can neither free nor extend the lock another process
took since.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from ._group_commit import GroupCommit
from ._middleware import check_bucket
from ._model import check_seconds
from ._sqlite_broker import SQLiteBroker, connect_wal
from ._sqlite_schema import transaction

T = TypeVar("T")

_TABLES = (
    """CREATE TABLE IF NOT EXISTS limit_buckets (
        key TEXT PRIMARY KEY, tokens REAL NOT NULL, at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS limit_locks (
        key TEXT PRIMARY KEY, fence INTEGER NOT NULL, expires REAL NOT NULL)""",
)


def _create(conn: sqlite3.Connection) -> None:
    with transaction(conn):
        for statement in _TABLES:
            conn.execute(statement)


def _take_token(conn: sqlite3.Connection, key: str, rate: float, burst: int, now: float) -> float:
    with transaction(conn):
        row = conn.execute("SELECT tokens, at FROM limit_buckets WHERE key = ?", (key,)).fetchone()
        tokens = float(burst) if row is None else float(row[0])
        at = now if row is None else float(row[1])
        tokens = min(float(burst), tokens + max(0.0, now - at) * rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate
        conn.execute(
            "INSERT INTO limit_buckets (key, tokens, at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
            (key, tokens, now),
        )
    return wait


def _lock(conn: sqlite3.Connection, key: str, now: float, ttl: float) -> int:
    """The new fencing token, or 0 if another holder's lock has not expired."""
    with transaction(conn):
        row = conn.execute(
            "SELECT fence, expires FROM limit_locks WHERE key = ?", (key,)
        ).fetchone()
        if row is not None and float(row[1]) > now:
            return 0
        fence = 1 if row is None else int(row[0]) + 1
        conn.execute(
            "INSERT INTO limit_locks (key, fence, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET fence = excluded.fence, expires = excluded.expires",
            (key, fence, now + ttl),
        )
    return fence


def _unlock(conn: sqlite3.Connection, key: str, fence: int) -> int:
    # The row stays (expired), so the key's next fence is still higher.
    cursor = conn.execute(
        "UPDATE limit_locks SET expires = 0 WHERE key = ? AND fence = ?", (key, fence)
    )
    return cursor.rowcount


def _renew(conn: sqlite3.Connection, key: str, fence: int, now: float, ttl: float) -> int:
    cursor = conn.execute(
        "UPDATE limit_locks SET expires = ? WHERE key = ? AND fence = ? AND expires > ?",
        (now + ttl, key, fence, now),
    )
    return cursor.rowcount


class _Connection:
    """The broker's connection, or one of its own on ``path``; the tables made on first use."""

    def __init__(
        self, target: SQLiteBroker | str | os.PathLike[str], clock: Callable[[], float] | None
    ) -> None:
        self._broker: SQLiteBroker | None = None
        if isinstance(target, SQLiteBroker):
            self._broker = target
            self.path = target.path
            self.now: Callable[[], float] = clock or target.now
        elif isinstance(target, str | os.PathLike):
            self.path = os.fspath(target)
            self.now = clock or time.time
        else:
            raise TypeError(f"needs an SQLiteBroker or the path of an SQLite file, got {target!r}")
        self._db: GroupCommit | None = None
        self._ready = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._broker is not None:
            runner = self._broker.run  # a clear RuntimeError while the bus has not opened it
        else:
            if self._db is None:
                self._db = GroupCommit(await trio.to_thread.run_sync(connect_wal, self.path, 10.0))
            runner = self._db.run
        if not self._ready:
            await runner(_create)
            self._ready = True
        return await runner(fn, *args)

    async def close(self) -> None:
        db, self._db = self._db, None
        self._ready = self._broker is not None and self._ready
        if db is None:
            await trio.lowlevel.checkpoint()
        else:
            await db.close()


class SQLiteRateLimiter:
    """A token bucket per key in an SQLite file: ``limit`` runs per ``period`` seconds across
    every process sharing the file, up to ``burst`` (default ``limit``) after a quiet spell."""

    def __init__(
        self,
        target: SQLiteBroker | str | os.PathLike[str],
        limit: int,
        period: float = 1.0,
        *,
        burst: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.limit, self.period, self.burst = check_bucket(limit, period, burst)
        self._conn = _Connection(target, clock)

    def __repr__(self) -> str:
        return f"<SQLiteRateLimiter {self.limit}/{self.period:g}s on {self._conn.path!r}>"

    async def acquire(self, key: str) -> float:
        """Take a slot and return 0.0, or return the seconds until one will be free."""
        rate = self.limit / self.period
        return await self._conn.run(_take_token, key, rate, self.burst, self._conn.now())

    async def close(self) -> None:
        """Close the connection of its own (nothing to do on a broker's)."""
        await self._conn.close()


class SQLiteLock:
    """A lock held in an SQLite file under a fencing token (``fence``), until released or
    its ttl."""

    def __init__(self, conn: _Connection, key: str, fence: int) -> None:
        self._conn, self.key, self.fence = conn, key, fence

    def __repr__(self) -> str:
        return f"<SQLiteLock {self.key!r} fence={self.fence}>"

    async def release(self) -> None:
        """Free the lock, unless its ttl lapsed and another holder has it now (fencing)."""
        await self._conn.run(_unlock, self.key, self.fence)

    async def renew(self, ttl: float) -> bool:
        """Extend the lock to ``ttl`` seconds from now; False if it is no longer ours."""
        ttl = check_seconds(ttl, "ttl", allow_zero=False)
        return bool(await self._conn.run(_renew, self.key, self.fence, self._conn.now(), ttl))


class SQLiteLocker:
    """Expiring locks in an SQLite file shared by its processes (for `WithoutOverlapping`)."""

    def __init__(
        self,
        target: SQLiteBroker | str | os.PathLike[str],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._conn = _Connection(target, clock)

    def __repr__(self) -> str:
        return f"<SQLiteLocker on {self._conn.path!r}>"

    async def acquire(self, key: str, ttl: float) -> SQLiteLock | None:
        """The lock, or ``None`` if another holder has ``key`` and its ttl has not passed."""
        ttl = check_seconds(ttl, "ttl", allow_zero=False)
        fence = await self._conn.run(_lock, key, self._conn.now(), ttl)
        return None if fence == 0 else SQLiteLock(self._conn, key, fence)

    async def close(self) -> None:
        """Close the connection of its own (nothing to do on a broker's)."""
        await self._conn.close()
