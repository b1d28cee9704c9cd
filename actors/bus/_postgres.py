"""`PostgresStore`: the bus's state in PostgreSQL, shared by processes on many hosts.

psycopg's async API runs on asyncio only, so the store uses psycopg 3's *sync* API and a
`psycopg_pool.ConnectionPool`, every call in a worker thread (`trio.to_thread.run_sync`).
Operations are group-committed the way `SQLiteStore`'s are: a writer actor (a keyed actor of
the core, served under the bus) takes every operation waiting in its mailbox
(`KeyedActors.take_pending`) and runs them in one transaction on one pooled connection, in
one thread hop; each caller waits on its own `actors._reply.Reply`. If one operation of a
group fails, the transaction is rolled back and each operation runs again in its own, so a
failure touches only its caller. Errors arrive as `StoreError` naming the DSN (without its
password); the bus retries outcome writes on them, so a server restart loses nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import trio

from .._keyed import KeyedActors, open_keyed
from .._reply import Reply
from ._errors import StoreError
from ._sql_store import SQLOperations, SQLOps

try:  # the `postgres` extra; without it `actors.bus` still imports, PostgresStore() says so
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg_pool import ConnectionPool, PoolTimeout

    from . import _postgres_ops as ops
    from ._postgres_schema import migrate, use_schema

    _MISSING: str | None = None
except ImportError as missing:  # pragma: no cover (the dev install has the extra)
    _MISSING = str(missing)

T = TypeVar("T")
log = logging.getLogger("actors.bus")

_Call = tuple[Callable[..., Any], tuple[Any, ...]]
_Op = tuple[Callable[..., Any], tuple[Any, ...], Reply[Any]]
_WRITER = "writer"
_HINT = (
    "is the server running there, and are the host, port, user and database right? "
    "(try: psql '<the same DSN>')"
)


def redact(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.partition(':')[0]}@{host}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    params = conninfo_to_dict(dsn)
    params.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def _run_alone(conn: ops.Conn, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        with conn.transaction():
            return True, fn(conn, *args)
    except Exception as exc:
        return False, exc


class _CommitLost(Exception):
    """The connection broke during COMMIT: the transaction may or may not have committed."""

    def __init__(self, error: Exception, results: list[tuple[bool, Any]]) -> None:
        super().__init__(str(error))
        self.error = error
        self.results = results


def _run_calls(conn: ops.Conn, calls: Sequence[_Call]) -> list[tuple[bool, Any]]:
    """In the thread, inside a begun transaction: every call, then COMMIT. If one raises, roll
    back and run each in its own transaction (unless the connection itself broke)."""
    results: list[tuple[bool, Any]] = []
    try:
        for fn, args in calls:
            results.append((True, fn(conn, *args)))
        conn.execute("COMMIT")
        return results
    except Exception as exc:
        if conn.broken:
            if len(results) == len(calls):
                raise _CommitLost(exc, results) from exc  # every call ran: COMMIT was sent
            return [(False, exc)] * len(calls)
        conn.execute("ROLLBACK")
        if len(calls) == 1:
            return [(False, exc)]
    return [_run_alone(conn, fn, args) for fn, args in calls]


class PostgresStore(SQLOperations):
    """A store in a PostgreSQL database, shared by every bus (and host) that opens it.

    ``PostgresStore("postgresql://app@db.internal/app")``; the tables are created (or
    migrated) in the PostgreSQL schema ``schema`` when the bus opens the store, safely when
    several processes open a new database at once. ``min_size``/``max_size`` bound the
    connection pool; ``connect_timeout`` (seconds) bounds connecting and waiting for a pooled
    connection. Needs the ``postgres`` extra (``pip install 'trio-lanes[postgres]'``).

    Each state change is one transaction; concurrent operations share one (group commit).
    Like `SQLiteStore`, prefer the real clock in tests: threads carry the calls.
    """

    _ops: SQLOps

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "trio_lanes",
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 10.0,
    ) -> None:
        if _MISSING is not None:  # pragma: no cover
            raise ImportError(
                f"PostgresStore needs psycopg 3 and psycopg_pool ({_MISSING}): "
                "pip install 'trio-lanes[postgres]'"
            )
        if not isinstance(dsn, str):
            raise TypeError(f"dsn must be a str, got {type(dsn).__name__}")
        try:
            conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ValueError(
                f"not a PostgreSQL DSN: {exc}; write a URL such as "
                "'postgresql://user@host:5432/db' or key=value pairs such as "
                "'host=... dbname=...'"
            ) from None
        if not isinstance(schema, str) or not schema:
            raise ValueError(f"schema must be a non-empty str, got {schema!r}")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(
                f"pool sizes must satisfy 0 <= min_size <= max_size and max_size >= 1, "
                f"got min_size={min_size}, max_size={max_size}"
            )
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, got {connect_timeout!r}")
        self._ops = ops
        self.dsn = dsn
        self.schema = schema
        self.safe_dsn = redact(dsn)
        self._min_size, self._max_size = min_size, max_size
        self._connect_timeout = float(connect_timeout)
        self._pool: ConnectionPool[ops.Conn] | None = None
        self._limiter = trio.CapacityLimiter(max_size)
        self._writer: KeyedActors[_Op, None] | None = None

    def __repr__(self) -> str:
        closed = "" if self._pool else " (closed)"
        return f"<PostgresStore {self.safe_dsn!r} schema={self.schema!r}{closed}>"

    # --------------------------------------------------------------------- plumbing

    def _wrap(self, exc: Exception) -> StoreError:
        error = StoreError(f"PostgreSQL store {self.safe_dsn!r}: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    def _answer(self, ok: bool, value: Any) -> tuple[bool, Any]:
        if not ok and isinstance(value, psycopg.Error | PoolTimeout):
            return False, self._wrap(value)
        return ok, value

    def _in_thread(self, calls: Sequence[_Call]) -> list[tuple[bool, Any]]:
        """The thread's side: take a connection, begin, run the calls. A pooled connection
        the server dropped (a restart) fails at BEGIN, before anything was sent: the pool
        discards it and the next one is tried."""
        pool = self._pool
        if pool is None:
            raise StoreError(f"{self!r} closed before this operation ran")
        for spare in range(self._max_size, -1, -1):
            with pool.connection() as conn:
                try:
                    conn.execute("BEGIN")
                except psycopg.OperationalError:
                    if spare == 0:
                        raise
                    continue
                row = conn.execute("SELECT txid_current()").fetchone()
                assert row is not None
                xid = int(row[0])
                try:
                    results = _run_calls(conn, calls)
                except _CommitLost as lost:
                    failure = lost
                else:
                    return [self._answer(ok, v) for ok, v in results]
            # (outside the block: the broken connection has gone back to the pool)
            results = self._after_lost_commit(xid, failure)
            return [self._answer(ok, v) for ok, v in results]
        raise AssertionError("unreachable")

    def commit_status(self, xid: int) -> str | None:
        """In a thread: ``committed``, ``aborted`` or ``in progress`` (`txid_status`) for a
        transaction id of this database; None if it is too old to know."""
        assert self._pool is not None
        with self._pool.connection() as conn:
            row = conn.execute("SELECT txid_status(%s)", (xid,)).fetchone()
        return None if row is None else row[0]

    def _after_lost_commit(self, xid: int, lost: _CommitLost) -> list[tuple[bool, Any]]:
        """The connection broke after COMMIT was sent. Ask the server (on a new connection)
        what became of the transaction: committed, the calls' results stand (a retry would
        read its own write as a duplicate, and a chain would stop); aborted, the error
        stands and the bus's retry is the write's first effect. If the server cannot say
        within ``connect_timeout``, the error says the outcome is unknown."""
        try:
            status = self.commit_status(xid)
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(
                f"PostgreSQL store {self.safe_dsn!r}: the connection broke during COMMIT "
                f"({lost.error}) and the server cannot say whether it committed ({exc})"
            ) from lost.error
        if status == "committed":
            log.warning("%r: COMMIT's answer was lost, but it committed (txid %d)", self, xid)
            return lost.results
        raise lost.error

    async def _hop(self, calls: Sequence[_Call]) -> list[tuple[bool, Any]]:
        try:
            return await trio.to_thread.run_sync(self._in_thread, calls, limiter=self._limiter)
        except (psycopg.Error, PoolTimeout) as exc:  # no connection, BEGIN or COMMIT failed
            raise self._wrap(exc) from exc

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a thread, in a transaction, group-committed with
        concurrent calls. Cancellation as `SQLiteStore`'s: a call cancelled before it is sent
        is dropped; once sent it completes and its result is returned."""
        if self._pool is None:
            raise RuntimeError(f"{self!r} is not open; the bus opens it (open_bus(store=...))")
        await trio.lowlevel.checkpoint_if_cancelled()
        writer = self._writer
        if writer is None:  # not served by a bus (used on its own): each call alone
            [(ok, value)] = await self._hop([(fn, args)])
            if not ok:
                raise value
            result: T = value
            return result
        reply: Reply[T] = Reply()
        with trio.CancelScope(shield=True):
            await writer.tell(_WRITER, (fn, args, reply))
            answer = await reply.wait()
        return answer

    async def _write_group(self, key: str, first: _Op) -> None:
        """The writer actor: this operation and every one waiting, in one transaction."""
        writer = self._writer
        assert writer is not None
        group = [first, *writer.take_pending(key)]
        try:
            results = await self._hop([(fn, args) for fn, args, _ in group])
        except BaseException as exc:
            for _, _, reply in group:
                reply.fail(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, reply), (ok, value) in zip(group, results, strict=True):
            if ok:
                reply.succeed(value)
            else:
                reply.fail(value)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the writer actor (group commit) until cancelled; the bus runs it."""
        async with open_keyed(self._write_group, name=f"writer of {self!r}") as writer:
            self._writer = writer
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._writer = None

    def _connect(self) -> ConnectionPool[ops.Conn]:
        """In a thread: migrate on a connection of its own (a clear error if the server is
        not there), then open the pool."""
        timeout = max(1, math.ceil(self._connect_timeout))  # libpq takes whole seconds
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=timeout) as conn:
            migrate(conn, self.schema)
        pool: ConnectionPool[ops.Conn] = ConnectionPool(
            self.dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            kwargs={"autocommit": True, "connect_timeout": timeout},
            configure=lambda conn: use_schema(conn, self.schema),
            timeout=self._connect_timeout,
            name=f"trio-lanes store {self.safe_dsn}",
            num_workers=1,
        )
        try:
            pool.open(wait=True, timeout=self._connect_timeout)
        except BaseException:
            pool.close()  # its threads too
            raise
        return pool

    async def open(self) -> None:
        """Connect, create or migrate the schema, and open the connection pool."""
        if self._pool is not None:
            await trio.lowlevel.checkpoint()
            return
        try:
            self._pool = await trio.to_thread.run_sync(self._connect)
        except psycopg.OperationalError as exc:
            error = StoreError(
                f"PostgreSQL store {self.safe_dsn!r} is unreachable "
                f"({type(exc).__name__}: {str(exc).strip()}); {_HINT}"
            )
            raise error from exc
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._wrap(exc) from exc

    async def close(self) -> None:
        """Close the pool (the database stays)."""
        pool, self._pool = self._pool, None
        if pool is None:
            await trio.lowlevel.checkpoint()
            return
        await trio.to_thread.run_sync(pool.close, limiter=self._limiter)

    def schema_version(self) -> int:
        """The schema version in the database (opens its own short connection)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            use_schema(conn, self.schema)
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            return 0 if row is None else int(row[0])
