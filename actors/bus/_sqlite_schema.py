"""The SQLite store's schema, its migrations, and the row conversions its operations share."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ._errors import NotFound
from ._model import JobRecord
from ._rules import BatchRow, ChainRow, from_micros, to_micros
from ._sql_store import apply_migrations

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
    (
        """CREATE TABLE failed_jobs (
            id TEXT PRIMARY KEY,
            job_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            queue TEXT NOT NULL,
            error TEXT NOT NULL,
            traceback TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            failed_at INTEGER NOT NULL,
            job TEXT NOT NULL
        )""",
        "CREATE INDEX failed_jobs_at ON failed_jobs (failed_at)",
        """CREATE TABLE job_callbacks (
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            job TEXT NOT NULL,
            PRIMARY KEY (owner, name)
        ) WITHOUT ROWID""",
    ),
    (  # lane jobs in chains and batches: a stored job keeps its lane key; lane fences
        "ALTER TABLE chain_nodes ADD COLUMN lane TEXT",
        "ALTER TABLE batch_jobs ADD COLUMN lane TEXT",
        # the highest lane fence recorded with, per lane (`_fences`)
        """CREATE TABLE lane_fences (
            queue TEXT NOT NULL,
            lane TEXT NOT NULL,
            fence BIGINT NOT NULL,
            PRIMARY KEY (queue, lane)
        ) WITHOUT ROWID""",
    ),
)

BATCH_COLUMNS = (
    "batch_id, dispatch_id, name, queue, allow_failures, total, pending, processed, failed, "
    "cancelled, completed, created_at, updated_at"
)
CHAIN_COLUMNS = (
    "chain_id, dispatch_id, queue, length, next_index, completed, failed, failure, "
    "created_at, updated_at"
)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
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


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date (idempotent, safe against a concurrent opener)."""
    with transaction(conn):
        version = apply_migrations(conn, MIGRATIONS, "?")
    return version


def batch_row(row: Sequence[Any]) -> BatchRow:
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


def chain_row(row: Sequence[Any]) -> ChainRow:
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
IDS_PER_QUERY = 500

JOB_COLUMNS = "job_id, job_type, payload, queue, delay, timeout, retry, backoff, lane"
#: How many columns `job_row` fills (for the placeholders of an INSERT).
JOB_FIELDS = len(JOB_COLUMNS.split(", "))


def job_row(job: JobRecord) -> tuple[Any, ...]:
    return (
        job.job_id,
        job.job_type,
        job.payload,
        job.queue,
        job.delay,
        job.timeout,
        job.retry,
        job.backoff,
        job.lane,
    )


def job_from_row(row: Sequence[Any]) -> JobRecord:
    return JobRecord(*row)


def load_batch(conn: sqlite3.Connection, batch_id: str) -> BatchRow:
    row = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = ?", (batch_id,))
    found = row.fetchone()
    if found is None:
        raise NotFound(f"no batch {batch_id!r} in this store (wrong id, or pruned)")
    return batch_row(found)


def save_batch(conn: sqlite3.Connection, row: BatchRow) -> None:
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


def load_chain(conn: sqlite3.Connection, chain_id: str) -> ChainRow:
    found = conn.execute(
        f"SELECT {CHAIN_COLUMNS} FROM chains WHERE chain_id = ?", (chain_id,)
    ).fetchone()
    if found is None:
        raise chain_not_found(chain_id)
    return chain_row(found)


def chain_not_found(chain_id: str) -> NotFound:
    return NotFound(f"no chain {chain_id!r} in this store (wrong id, or pruned)")


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open ``path`` in WAL mode and migrate it, waiting out other openers.

    Switching a new file to WAL takes a lock that SQLite's busy handler does not wait for, so
    two processes creating one file at once could see "database is locked" at once; this
    retries that step (and the migration) until ``busy_timeout`` has passed.
    """
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,  # one call at a time, from trio's thread pool
    )
    deadline = time.monotonic() + busy_timeout
    pause = 0.005
    try:
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                migrate(conn)
                return conn
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
            time.sleep(pause)  # in a worker thread (trio.to_thread), never on the event loop
            pause = min(pause * 2, 0.1)
    except BaseException:
        conn.close()
        raise
