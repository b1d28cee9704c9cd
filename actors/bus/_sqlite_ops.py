"""The SQLite store's operations: each runs in the store's thread, in one transaction (or a
savepoint of a group commit's transaction)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import attrs

from . import _fences as fences
from ._broker import decode_job, encode_job
from ._errors import NotFound
from ._model import BatchState, ChainState, JobRecord, LaneFence
from ._rules import (
    BatchRecord,
    BatchUpdate,
    BatchUpdater,
    ChainRecord,
    ChainStep,
    FailedJob,
    JobOutcome,
    chain_state,
    from_micros,
    new_batch_row,
    to_micros,
)
from ._sqlite_schema import (
    BATCH_COLUMNS,
    CHAIN_COLUMNS,
    IDS_PER_QUERY,
    JOB_COLUMNS,
    JOB_FIELDS,
    batch_row,
    job_from_row,
    job_row,
    load_batch,
    load_chain,
    save_batch,
    transaction,
)

T = TypeVar("T")

_JOB_VALUES = ", ".join(["?"] * JOB_FIELDS)


def claim_unique(conn: sqlite3.Connection, key: str, now: int, expires_at: int) -> bool:
    with transaction(conn):
        row = conn.execute("SELECT expires_at FROM uniques WHERE key = ?", (key,)).fetchone()
        if row is not None and row[0] > now:
            return False
        conn.execute(
            "INSERT INTO uniques (key, expires_at) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at",
            (key, expires_at),
        )
        return True


INSERT_JOB_CALLBACK = "INSERT INTO job_callbacks (owner, name, job) VALUES (?, ?, ?)"
INSERT_CHAIN = f"INSERT INTO chains ({CHAIN_COLUMNS}) VALUES (?, ?, ?, ?, 0, 0, 0, NULL, ?, ?)"
_INSERT_CHAIN_NODE = (
    f"INSERT INTO chain_nodes (chain_id, idx, {JOB_COLUMNS}) VALUES (?, ?, {_JOB_VALUES})"
)


def callback_row(owner: str, name: str, job: JobRecord) -> tuple[str, str, str]:
    return owner, name, json.dumps(attrs.asdict(job))


def new_chain_row(record: ChainRecord) -> tuple[object, ...]:
    """A new chain's row of ``chains``, for `INSERT_CHAIN`."""
    created = to_micros(record.created_at)
    return (record.chain_id, record.dispatch_id, record.queue, len(record.nodes), created, created)


def _save_job_callbacks(
    conn: sqlite3.Connection, owner: str, callbacks: tuple[tuple[str, JobRecord], ...]
) -> None:
    conn.executemany(
        INSERT_JOB_CALLBACK, [callback_row(owner, name, job) for name, job in callbacks]
    )


def job_callbacks(conn: sqlite3.Connection, owner: str) -> dict[str, JobRecord]:
    rows = conn.execute("SELECT name, job FROM job_callbacks WHERE owner = ?", (owner,))
    return {name: JobRecord(**json.loads(job)) for name, job in rows}


def create_chain(conn: sqlite3.Connection, record: ChainRecord) -> None:
    with transaction(conn):
        _save_job_callbacks(conn, f"chain:{record.chain_id}", record.callbacks)
        conn.execute(INSERT_CHAIN, new_chain_row(record))
        conn.executemany(
            _INSERT_CHAIN_NODE,
            [(record.chain_id, i, *job_row(node)) for i, node in enumerate(record.nodes)],
        )


def get_chain(conn: sqlite3.Connection, chain_id: str) -> ChainState:
    row = load_chain(conn, chain_id)
    nodes = [
        job_from_row(found)
        for found in conn.execute(
            f"SELECT {JOB_COLUMNS} FROM chain_nodes WHERE chain_id = ? ORDER BY idx", (chain_id,)
        )
    ]
    return chain_state(row, nodes)


def record_chain_step(
    conn: sqlite3.Connection,
    chain_id: str,
    index: int,
    failure: str | None,
    now: datetime,
    fence: LaneFence | None = None,
) -> ChainStep | None:
    with transaction(conn):
        row = load_chain(conn, chain_id)
        fences.check(conn, fence, "?")
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
                f"SELECT {JOB_COLUMNS} FROM chain_nodes WHERE chain_id = ? AND idx = ?",
                (chain_id, row.next_index),
            ).fetchone()
            next_node = job_from_row(found)
    return ChainStep(
        next_index=row.next_index, completed=row.completed, failed=row.failed, next_node=next_node
    )


def create_batch(conn: sqlite3.Connection, record: BatchRecord) -> BatchState:
    row = new_batch_row(record)
    with transaction(conn):
        _save_job_callbacks(conn, f"batch:{record.batch_id}", record.callbacks)
        conn.execute(
            f"INSERT INTO batches ({BATCH_COLUMNS}) VALUES ({', '.join('?' * 13)})",
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
            f"INSERT INTO batch_jobs (batch_id, status, {JOB_COLUMNS}) "
            f"VALUES (?, 'pending', {_JOB_VALUES})",
            [(record.batch_id, *job_row(job)) for job in record.jobs],
        )
    return row.state()


def get_batch(conn: sqlite3.Connection, batch_id: str) -> BatchState:
    return load_batch(conn, batch_id).state()


def record_batch(
    conn: sqlite3.Connection,
    batch_id: str,
    outcomes: tuple[JobOutcome, ...],
    now: datetime,
    progress: bool,
) -> BatchUpdate:
    with transaction(conn):
        updater = BatchUpdater(load_batch(conn, batch_id), now, progress=progress)
        # Which of these jobs are still pending (a chunk of ids per query), then apply each
        # outcome once, in order, and write the new statuses in one executemany.
        pending: set[str] = set()
        ids = list({outcome.job_id for outcome in outcomes})
        for start in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[start : start + IDS_PER_QUERY]
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
            if outcome.job_id in pending and fences.advance(conn, outcome.fence, "?"):
                pending.discard(outcome.job_id)
                updater.apply(outcome)
                changes.append((outcome.outcome, batch_id, outcome.job_id))
        conn.executemany(
            "UPDATE batch_jobs SET status = ? WHERE batch_id = ? AND job_id = ?", changes
        )
        save_batch(conn, updater.row)
    return updater.result()


def cancel_batch(conn: sqlite3.Connection, batch_id: str, now: datetime) -> BatchUpdate:
    with transaction(conn):
        updater = BatchUpdater(load_batch(conn, batch_id), now)
        updater.cancel()
        if updater.cancelled_now:
            save_batch(conn, updater.row)
    return updater.result()


def claim_callback(conn: sqlite3.Connection, owner: str, name: str, now: int) -> bool:
    with transaction(conn):
        inserted = conn.execute(
            "INSERT INTO callbacks (key, owner, invoked_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING",
            (f"{owner}:{name}", owner, now),
        ).rowcount
    return inserted == 1


def prune(conn: sqlite3.Connection, before: int) -> int:
    with transaction(conn):
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
            conn.execute("DELETE FROM job_callbacks WHERE owner = ?", (f"batch:{batch_id}",))
        for chain_id in chains:
            conn.execute("DELETE FROM chain_nodes WHERE chain_id = ?", (chain_id,))
            conn.execute("DELETE FROM chains WHERE chain_id = ?", (chain_id,))
            conn.execute("DELETE FROM callbacks WHERE owner = ?", (f"chain:{chain_id}",))
            conn.execute("DELETE FROM job_callbacks WHERE owner = ?", (f"chain:{chain_id}",))
        conn.execute("DELETE FROM uniques WHERE expires_at < ?", (before,))
        conn.execute("DELETE FROM failed_jobs WHERE failed_at < ?", (before,))
    return len(batches) + len(chains)


def batch_cancelled(conn: sqlite3.Connection, batch_id: str) -> bool:
    row = conn.execute("SELECT cancelled FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
    return row is not None and bool(row[0])


def abandon_batch(conn: sqlite3.Connection, batch_id: str, now: datetime) -> BatchUpdate:
    with transaction(conn):
        updater = BatchUpdater(load_batch(conn, batch_id), now)
        updater.cancel()
        pending = [
            job_id
            for (job_id,) in conn.execute(
                "SELECT job_id FROM batch_jobs WHERE batch_id = ? AND status = 'pending'",
                (batch_id,),
            )
        ]
        for job_id in pending:
            updater.apply(JobOutcome(job_id, "cancelled"))
        conn.execute(
            "UPDATE batch_jobs SET status = 'cancelled' WHERE batch_id = ? AND status = 'pending'",
            (batch_id,),
        )
        save_batch(conn, updater.row)
    return updater.result()


def fail_chain(conn: sqlite3.Connection, chain_id: str, failure: str, now: datetime) -> bool:
    with transaction(conn):
        row = load_chain(conn, chain_id)
        if not row.step(row.next_index, failure, now):
            return False
        conn.execute(
            "UPDATE chains SET failed = 1, failure = ?, updated_at = ? WHERE chain_id = ?",
            (failure, to_micros(now), chain_id),
        )
    return True


def record_failed(conn: sqlite3.Connection, job: FailedJob, fence: LaneFence | None = None) -> None:
    with transaction(conn):
        fences.check(conn, fence, "?")
        conn.execute("DELETE FROM failed_jobs WHERE id = ?", (job.id,))
        conn.execute(
            "INSERT INTO failed_jobs (id, job_type, payload, queue, error, traceback, attempts, "
            "failed_at, job) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                job.job_type,
                job.payload,
                job.queue,
                job.error,
                job.traceback,
                job.attempts,
                to_micros(job.failed_at),
                encode_job(job.job),
            ),
        )


_FAILED_COLUMNS = "id, job_type, payload, queue, error, traceback, attempts, failed_at, job"


def _failed_from_row(row: tuple[object, ...]) -> FailedJob:
    (id_, job_type, payload, queue, error, tb, attempts, failed_at, job) = row
    return FailedJob(
        id=str(id_),
        job_type=str(job_type),
        payload=str(payload),
        queue=str(queue),
        error=str(error),
        traceback=str(tb),
        attempts=int(attempts),  # type: ignore[call-overload]
        failed_at=from_micros(int(failed_at)),  # type: ignore[call-overload]
        job=decode_job(str(job)),
    )


def failed_jobs(conn: sqlite3.Connection) -> list[FailedJob]:
    rows = conn.execute(f"SELECT {_FAILED_COLUMNS} FROM failed_jobs ORDER BY failed_at, rowid")
    return [_failed_from_row(tuple(row)) for row in rows]


def take_failed(conn: sqlite3.Connection, job_id: str) -> FailedJob:
    with transaction(conn):
        row = conn.execute(
            f"SELECT {_FAILED_COLUMNS} FROM failed_jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no failed job {job_id!r} in this store (wrong id, or pruned)")
        conn.execute("DELETE FROM failed_jobs WHERE id = ?", (job_id,))
    return _failed_from_row(tuple(row))


def in_flight(conn: sqlite3.Connection, limit: int) -> tuple[list[BatchState], list[ChainState]]:
    batches = conn.execute(
        f"SELECT {BATCH_COLUMNS} FROM batches WHERE completed = 0 "
        "ORDER BY created_at, rowid LIMIT ?",
        (limit,),
    )
    chains = conn.execute(
        "SELECT chain_id FROM chains WHERE completed = 0 AND failed = 0 "
        "ORDER BY created_at, rowid LIMIT ?",
        (limit,),
    )
    return [batch_row(row).state() for row in batches], [get_chain(conn, c) for (c,) in chains]


def in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[object, ...]) -> T:
    """One operation alone (no writer actor running): its own transaction."""
    with transaction(conn):
        return fn(conn, *args)
