"""`SQLiteStore`: the bus's state in one SQLite file, through the stdlib `sqlite3` module.

SQLite calls block, so store methods run in a worker thread (`trio.to_thread.run_sync`), one
thread call at a time per store (a `trio.CapacityLimiter` of 1 guards the single connection).
Calls that arrive while a thread call runs are *group-committed*: the next thread call runs
them all in one ``BEGIN IMMEDIATE`` transaction, each inside its own savepoint, so one
failing call rolls back only itself. Many coordinators thus share one thread hop and one
commit. Several processes (or several stores in one process) can share the file: SQLite
serialises writers, and the unique constraints make job outcomes and callback records count
once.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import outcome
import trio

from ._errors import NotFound
from ._model import BatchState, ChainState, JobRecord
from ._store import (
    BatchRecord,
    BatchRow,
    BatchUpdate,
    BatchUpdater,
    ChainRecord,
    ChainRow,
    ChainStep,
    JobOutcome,
    chain_state,
    from_micros,
    new_batch_row,
    to_micros,
)

T = TypeVar("T")

#: Schema migrations, applied in order on first use; ``schema_version`` holds how many ran.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE chains (
            chain_id TEXT PRIMARY KEY,
            dispatch_id TEXT NOT NULL,
            queue TEXT NOT NULL,
            length INTEGER NOT NULL,
            next_index INTEGER NOT NULL,
            completed INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            failure TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )""",
        """CREATE TABLE chain_nodes (
            chain_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            job_id TEXT NOT NULL,
            job_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            queue TEXT NOT NULL,
            delay REAL NOT NULL,
            timeout REAL,
            retry INTEGER NOT NULL,
            backoff REAL NOT NULL,
            PRIMARY KEY (chain_id, idx)
        ) WITHOUT ROWID""",
        """CREATE TABLE batches (
            batch_id TEXT PRIMARY KEY,
            dispatch_id TEXT NOT NULL,
            name TEXT,
            queue TEXT NOT NULL,
            allow_failures INTEGER NOT NULL,
            total INTEGER NOT NULL,
            pending INTEGER NOT NULL,
            processed INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            cancelled INTEGER NOT NULL,
            completed INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )""",
        """CREATE TABLE batch_jobs (
            batch_id TEXT NOT NULL,
            job_id TEXT NOT NULL,
            status TEXT NOT NULL,
            job_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            queue TEXT NOT NULL,
            delay REAL NOT NULL,
            timeout REAL,
            retry INTEGER NOT NULL,
            backoff REAL NOT NULL,
            PRIMARY KEY (batch_id, job_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE callbacks (
            key TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            invoked_at INTEGER NOT NULL
        )""",
        "CREATE INDEX callbacks_owner ON callbacks (owner)",
        """CREATE TABLE uniques (
            key TEXT PRIMARY KEY,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX batches_done ON batches (completed, updated_at)",
        "CREATE INDEX chains_done ON chains (updated_at)",
    ),
)

_BATCH_COLUMNS = (
    "batch_id, dispatch_id, name, queue, allow_failures, total, pending, processed, failed, "
    "cancelled, completed, created_at, updated_at"
)
_CHAIN_COLUMNS = (
    "chain_id, dispatch_id, queue, length, next_index, completed, failed, failure, "
    "created_at, updated_at"
)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A transaction, or (inside a group's transaction) a savepoint: all or nothing."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT op")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            raise
        conn.execute("RELEASE op")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class _Call:
    """One store call waiting for (or done by) a group commit."""

    __slots__ = ("abandoned", "args", "done", "fn", "result", "taken")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.done = trio.Event()
        self.result: outcome.Outcome[Any] | None = None
        self.taken = False
        self.abandoned = False


def _run_group(conn: sqlite3.Connection, group: list[_Call]) -> None:
    """In the thread: every call of the group in one transaction, each in its savepoint."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for call in group:
            try:
                call.result = outcome.Value(call.fn(conn, *call.args))
            except Exception as exc:
                call.result = outcome.Error(exc)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date (idempotent, safe against a concurrent opener)."""
    with _transaction(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))
    return len(MIGRATIONS)


def _batch_row(row: Sequence[Any]) -> BatchRow:
    return BatchRow(
        batch_id=row[0],
        dispatch_id=row[1],
        name=row[2],
        queue=row[3],
        allow_failures=bool(row[4]),
        total=row[5],
        pending=row[6],
        processed=row[7],
        failed=row[8],
        cancelled=bool(row[9]),
        completed=bool(row[10]),
        created_at=from_micros(row[11]),
        updated_at=from_micros(row[12]),
    )


def _chain_row(row: Sequence[Any]) -> ChainRow:
    return ChainRow(
        chain_id=row[0],
        dispatch_id=row[1],
        queue=row[2],
        length=row[3],
        next_index=row[4],
        completed=bool(row[5]),
        failed=bool(row[6]),
        failure=row[7],
        created_at=from_micros(row[8]),
        updated_at=from_micros(row[9]),
    )


#: Job ids per ``IN (...)`` query, well under SQLite's limit on parameters.
_IDS_PER_QUERY = 500

_JOB_COLUMNS = "job_id, job_type, payload, queue, delay, timeout, retry, backoff"


def _job_row(job: JobRecord) -> tuple[Any, ...]:
    return (
        job.job_id,
        job.job_type,
        job.payload,
        job.queue,
        job.delay,
        job.timeout,
        job.retry,
        job.backoff,
    )


def _job_from_row(row: Sequence[Any]) -> JobRecord:
    return JobRecord(*row)


def _load_batch(conn: sqlite3.Connection, batch_id: str) -> BatchRow:
    row = conn.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?", (batch_id,))
    found = row.fetchone()
    if found is None:
        raise NotFound(f"no batch {batch_id!r} in this store (wrong id, or pruned)")
    return _batch_row(found)


def _save_batch(conn: sqlite3.Connection, row: BatchRow) -> None:
    conn.execute(
        "UPDATE batches SET pending = ?, processed = ?, failed = ?, cancelled = ?, "
        "completed = ?, updated_at = ? WHERE batch_id = ?",
        (
            row.pending,
            row.processed,
            row.failed,
            int(row.cancelled),
            int(row.completed),
            to_micros(row.updated_at),
            row.batch_id,
        ),
    )


def _load_chain(conn: sqlite3.Connection, chain_id: str) -> ChainRow:
    found = conn.execute(
        f"SELECT {_CHAIN_COLUMNS} FROM chains WHERE chain_id = ?", (chain_id,)
    ).fetchone()
    if found is None:
        raise NotFound(f"no chain {chain_id!r} in this store (wrong id, or pruned)")
    return _chain_row(found)


class SQLiteStore:
    """A store in an SQLite file that survives restarts; a reopened bus finds its state.

    ``SQLiteStore("bus.db")``; the schema is created (or migrated) when the bus opens it.
    Uses WAL mode, so readers never block the writer. Several buses, in one process or many,
    may share the file.

    What survives a restart is the *state* (chains, batches, callback records, unique keys),
    not the work: jobs waiting in a `MemoryQueue` are lost if the process stops, and a
    restarted bus does not re-queue the unfinished batches and chains it finds (a durable
    queue is future work). Callbacks are recorded as claimed *before* they run, so a process
    that dies mid-callback leaves it not run to the end: at most once, never twice. A
    chain's or batch's callbacks run only in the process that built it (they are functions,
    not stored).

    In tests, prefer the real clock (and a ``clock=`` you move by hand) to the autojump
    clock: while a thread works, the autojump clock sees every task blocked and jumps to the
    next timer, so Trio time races ahead.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._limiter: trio.CapacityLimiter | None = None
        self._pending: list[_Call] = []
        self._flushing = False

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}{'' if self._conn else ' (closed)'}>"

    # --------------------------------------------------------------------- plumbing

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # one call at a time, from trio's thread pool
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the thread, group-committed with concurrent calls.

        Like `trio.to_thread.run_sync`: cancelled before its group starts, the call is
        dropped; once started, it completes and its result is returned.
        """
        if self._conn is None or self._limiter is None:
            raise RuntimeError(f"{self!r} is not open; the bus opens it (open_bus(store=...))")
        await trio.lowlevel.checkpoint_if_cancelled()
        call = _Call(fn, args)
        self._pending.append(call)
        if not self._flushing:
            # This caller leads: it runs groups until nothing is pending (shielded, so the
            # calls of other tasks it took on are never left behind).
            self._flushing = True
            try:
                with trio.CancelScope(shield=True):
                    await self._flush()
            finally:
                self._flushing = False
        try:
            await call.done.wait()
        except trio.Cancelled:
            if not call.taken:
                call.abandoned = True
                raise
            with trio.CancelScope(shield=True):
                await call.done.wait()
        assert call.result is not None
        result: T = call.result.unwrap()
        return result

    async def _flush(self) -> None:
        conn, limiter = self._conn, self._limiter
        assert conn is not None
        assert limiter is not None
        while self._pending:
            group = [call for call in self._pending if not call.abandoned]
            self._pending = []
            for call in group:
                call.taken = True
            try:
                await trio.to_thread.run_sync(_run_group, conn, group, limiter=limiter)
            except BaseException as exc:  # BEGIN or COMMIT failed: the whole group failed
                for call in group:
                    call.result = outcome.Error(exc)
            for call in group:
                call.done.set()

    async def open(self) -> None:
        """Connect and create or migrate the schema."""
        if self._conn is not None:
            await trio.lowlevel.checkpoint()
            return
        self._limiter = trio.CapacityLimiter(1)
        self._conn = await trio.to_thread.run_sync(self._connect)

    async def close(self) -> None:
        """Close the connection (the file stays)."""
        conn, self._conn = self._conn, None
        if conn is None:
            await trio.lowlevel.checkpoint()
            return
        limiter = self._limiter
        assert limiter is not None
        await trio.to_thread.run_sync(conn.close, limiter=limiter)

    def schema_version(self) -> int:
        """The schema version of the file (opens its own short connection)."""
        conn = sqlite3.connect(self.path)
        try:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            return 0 if row is None else int(row[0])
        finally:
            conn.close()

    # --------------------------------------------------------------------- uniques

    async def claim_unique(self, key: str, now: datetime, expires_at: datetime) -> bool:
        return await self._run(_claim_unique, key, to_micros(now), to_micros(expires_at))

    # --------------------------------------------------------------------- chains

    async def create_chain(self, record: ChainRecord) -> None:
        await self._run(_create_chain, record)

    async def get_chain(self, chain_id: str) -> ChainState:
        return await self._run(_get_chain, chain_id)

    async def record_chain_step(
        self, chain_id: str, index: int, failure: str | None, now: datetime
    ) -> ChainStep | None:
        return await self._run(_record_chain_step, chain_id, index, failure, now)

    # --------------------------------------------------------------------- batches

    async def create_batch(self, record: BatchRecord) -> BatchState:
        return await self._run(_create_batch, record)

    async def get_batch(self, batch_id: str) -> BatchState:
        return await self._run(_get_batch, batch_id)

    async def record_batch(
        self,
        batch_id: str,
        outcomes: Sequence[JobOutcome],
        now: datetime,
        *,
        progress: bool = True,
    ) -> BatchUpdate:
        return await self._run(_record_batch, batch_id, tuple(outcomes), now, progress)

    async def cancel_batch(self, batch_id: str, now: datetime) -> BatchUpdate:
        return await self._run(_cancel_batch, batch_id, now)

    # --------------------------------------------------------------------- callbacks

    async def claim_callback(self, owner: str, name: str, now: datetime) -> bool:
        return await self._run(_claim_callback, owner, name, to_micros(now))

    async def prune(self, before: datetime) -> int:
        return await self._run(_prune, to_micros(before))


# ------------------------------------------------------------------------- in the thread


def _claim_unique(conn: sqlite3.Connection, key: str, now: int, expires_at: int) -> bool:
    with _transaction(conn):
        row = conn.execute("SELECT expires_at FROM uniques WHERE key = ?", (key,)).fetchone()
        if row is not None and row[0] > now:
            return False
        conn.execute(
            "INSERT INTO uniques (key, expires_at) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at",
            (key, expires_at),
        )
        return True


def _create_chain(conn: sqlite3.Connection, record: ChainRecord) -> None:
    created = to_micros(record.created_at)
    with _transaction(conn):
        conn.execute(
            f"INSERT INTO chains ({_CHAIN_COLUMNS}) VALUES (?, ?, ?, ?, 0, 0, 0, NULL, ?, ?)",
            (
                record.chain_id,
                record.dispatch_id,
                record.queue,
                len(record.nodes),
                created,
                created,
            ),
        )
        conn.executemany(
            f"INSERT INTO chain_nodes (chain_id, idx, {_JOB_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(record.chain_id, i, *_job_row(node)) for i, node in enumerate(record.nodes)],
        )


def _get_chain(conn: sqlite3.Connection, chain_id: str) -> ChainState:
    row = _load_chain(conn, chain_id)
    nodes = [
        _job_from_row(found)
        for found in conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM chain_nodes WHERE chain_id = ? ORDER BY idx", (chain_id,)
        )
    ]
    return chain_state(row, nodes)


def _record_chain_step(
    conn: sqlite3.Connection, chain_id: str, index: int, failure: str | None, now: datetime
) -> ChainStep | None:
    with _transaction(conn):
        row = _load_chain(conn, chain_id)
        if not row.step(index, failure, now):
            return None
        conn.execute(
            "UPDATE chains SET next_index = ?, completed = ?, failed = ?, failure = ?, "
            "updated_at = ? WHERE chain_id = ?",
            (
                row.next_index,
                int(row.completed),
                int(row.failed),
                row.failure,
                to_micros(row.updated_at),
                chain_id,
            ),
        )
        next_node = None
        if not (row.completed or row.failed):
            found = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM chain_nodes WHERE chain_id = ? AND idx = ?",
                (chain_id, row.next_index),
            ).fetchone()
            next_node = _job_from_row(found)
    return ChainStep(
        next_index=row.next_index, completed=row.completed, failed=row.failed, next_node=next_node
    )


def _create_batch(conn: sqlite3.Connection, record: BatchRecord) -> BatchState:
    row = new_batch_row(record)
    with _transaction(conn):
        conn.execute(
            f"INSERT INTO batches ({_BATCH_COLUMNS}) VALUES ({', '.join('?' * 13)})",
            (
                row.batch_id,
                row.dispatch_id,
                row.name,
                row.queue,
                int(row.allow_failures),
                row.total,
                row.pending,
                row.processed,
                row.failed,
                int(row.cancelled),
                int(row.completed),
                to_micros(row.created_at),
                to_micros(row.updated_at),
            ),
        )
        conn.executemany(
            f"INSERT INTO batch_jobs (batch_id, status, {_JOB_COLUMNS}) "
            "VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
            [(record.batch_id, *_job_row(job)) for job in record.jobs],
        )
    return row.state()


def _get_batch(conn: sqlite3.Connection, batch_id: str) -> BatchState:
    return _load_batch(conn, batch_id).state()


def _record_batch(
    conn: sqlite3.Connection,
    batch_id: str,
    outcomes: tuple[JobOutcome, ...],
    now: datetime,
    progress: bool,
) -> BatchUpdate:
    with _transaction(conn):
        updater = BatchUpdater(_load_batch(conn, batch_id), now, progress=progress)
        # Which of these jobs are still pending (a chunk of ids per query), then apply each
        # outcome once, in order, and write the new statuses in one executemany.
        pending: set[str] = set()
        ids = list({outcome.job_id for outcome in outcomes})
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            pending.update(
                job_id
                for (job_id,) in conn.execute(
                    "SELECT job_id FROM batch_jobs WHERE batch_id = ? AND status = 'pending' "
                    f"AND job_id IN ({', '.join('?' * len(chunk))})",
                    (batch_id, *chunk),
                )
            )
        changes = []
        for outcome in outcomes:
            if outcome.job_id in pending:
                pending.discard(outcome.job_id)
                updater.apply(outcome)
                changes.append((outcome.outcome, batch_id, outcome.job_id))
        conn.executemany(
            "UPDATE batch_jobs SET status = ? WHERE batch_id = ? AND job_id = ?", changes
        )
        _save_batch(conn, updater.row)
    return updater.result()


def _cancel_batch(conn: sqlite3.Connection, batch_id: str, now: datetime) -> BatchUpdate:
    with _transaction(conn):
        updater = BatchUpdater(_load_batch(conn, batch_id), now)
        updater.cancel()
        if updater.cancelled_now:
            _save_batch(conn, updater.row)
    return updater.result()


def _claim_callback(conn: sqlite3.Connection, owner: str, name: str, now: int) -> bool:
    with _transaction(conn):
        inserted = conn.execute(
            "INSERT INTO callbacks (key, owner, invoked_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING",
            (f"{owner}:{name}", owner, now),
        ).rowcount
    return inserted == 1


def _prune(conn: sqlite3.Connection, before: int) -> int:
    with _transaction(conn):
        batches = [
            batch_id
            for (batch_id,) in conn.execute(
                "SELECT batch_id FROM batches WHERE completed = 1 AND updated_at < ?", (before,)
            )
        ]
        chains = [
            chain_id
            for (chain_id,) in conn.execute(
                "SELECT chain_id FROM chains WHERE (completed = 1 OR failed = 1) "
                "AND updated_at < ?",
                (before,),
            )
        ]
        for batch_id in batches:
            conn.execute("DELETE FROM batch_jobs WHERE batch_id = ?", (batch_id,))
            conn.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))
            conn.execute("DELETE FROM callbacks WHERE owner = ?", (f"batch:{batch_id}",))
        for chain_id in chains:
            conn.execute("DELETE FROM chain_nodes WHERE chain_id = ?", (chain_id,))
            conn.execute("DELETE FROM chains WHERE chain_id = ?", (chain_id,))
            conn.execute("DELETE FROM callbacks WHERE owner = ?", (f"chain:{chain_id}",))
        conn.execute("DELETE FROM uniques WHERE expires_at < ?", (before,))
    return len(batches) + len(chains)
