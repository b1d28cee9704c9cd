"""The PostgreSQL store's operations: each runs in a worker thread inside a transaction that
the store opens (alone, or with the other operations of a group commit).

PostgreSQL runs writers concurrently (READ COMMITTED), so an operation that reads a row to
write it back locks it first (``SELECT ... FOR UPDATE``): two processes recording outcomes
of one batch take turns on its row, and each counts only the jobs still pending. Claims are
single statements (``INSERT ... ON CONFLICT``), atomic on their own.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import attrs
import psycopg

from . import _fences as fences
from ._broker import encode_job
from ._errors import NotFound
from ._model import BatchState, ChainState, JobRecord, LaneFence
from ._rules import (
    BatchRecord,
    BatchRow,
    BatchUpdate,
    BatchUpdater,
    ChainRecord,
    ChainRow,
    ChainStep,
    FailedJob,
    JobOutcome,
    chain_state,
    new_batch_row,
    to_micros,
)
from ._sqlite_ops import _FAILED_COLUMNS, _failed_from_row
from ._sqlite_schema import (
    BATCH_COLUMNS,
    CHAIN_COLUMNS,
    JOB_COLUMNS,
    JOB_FIELDS,
    batch_row,
    chain_row,
    job_from_row,
    job_row,
)

Conn = psycopg.Connection[Any]

_JOB_VALUES = ", ".join(["%s"] * JOB_FIELDS)


def claim_unique(conn: Conn, key: str, now: int, expires_at: int) -> bool:
    taken = conn.execute(
        "INSERT INTO uniques (key, expires_at) VALUES (%s, %s) "
        "ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at "
        "WHERE uniques.expires_at <= %s RETURNING key",
        (key, expires_at, now),
    ).fetchone()
    return taken is not None


def _save_job_callbacks(
    conn: Conn, owner: str, callbacks: tuple[tuple[str, JobRecord], ...]
) -> None:
    if callbacks:
        conn.cursor().executemany(
            "INSERT INTO job_callbacks (owner, name, job) VALUES (%s, %s, %s)",
            [(owner, name, json.dumps(attrs.asdict(job))) for name, job in callbacks],
        )


def job_callbacks(conn: Conn, owner: str) -> dict[str, JobRecord]:
    rows = conn.execute("SELECT name, job FROM job_callbacks WHERE owner = %s", (owner,))
    return {name: JobRecord(**json.loads(job)) for name, job in rows}


def create_chain(conn: Conn, record: ChainRecord) -> None:
    created = to_micros(record.created_at)
    _save_job_callbacks(conn, f"chain:{record.chain_id}", record.callbacks)
    conn.execute(
        f"INSERT INTO chains ({CHAIN_COLUMNS}) "
        "VALUES (%s, %s, %s, %s, 0, false, false, NULL, %s, %s)",
        (record.chain_id, record.dispatch_id, record.queue, len(record.nodes), created, created),
    )
    conn.cursor().executemany(
        f"INSERT INTO chain_nodes (chain_id, idx, {JOB_COLUMNS}) VALUES (%s, %s, {_JOB_VALUES})",
        [(record.chain_id, i, *job_row(node)) for i, node in enumerate(record.nodes)],
    )


def _load_chain(conn: Conn, chain_id: str, *, lock: bool) -> ChainRow:
    found = conn.execute(
        f"SELECT {CHAIN_COLUMNS} FROM chains WHERE chain_id = %s{' FOR UPDATE' if lock else ''}",
        (chain_id,),
    ).fetchone()
    if found is None:
        raise NotFound(f"no chain {chain_id!r} in this store (wrong id, or pruned)")
    return chain_row(found)


def get_chain(conn: Conn, chain_id: str) -> ChainState:
    row = _load_chain(conn, chain_id, lock=False)
    nodes = [
        job_from_row(found)
        for found in conn.execute(
            f"SELECT {JOB_COLUMNS} FROM chain_nodes WHERE chain_id = %s ORDER BY idx", (chain_id,)
        )
    ]
    return chain_state(row, nodes)


_STEP = f"""
WITH step AS (
    UPDATE chains SET
        next_index = CASE WHEN %(failure)s::text IS NULL THEN next_index + 1 ELSE next_index END,
        completed = (%(failure)s::text IS NULL AND next_index + 1 >= length),
        failed = (%(failure)s::text IS NOT NULL),
        failure = %(failure)s,
        updated_at = %(now)s
    WHERE chain_id = %(chain_id)s AND next_index = %(index)s AND NOT completed AND NOT failed
    RETURNING chain_id, next_index, completed, failed
)
SELECT step.next_index, step.completed, step.failed, {", ".join(f"n.{c}" for c in JOB_COLUMNS.split(", "))}
FROM step LEFT JOIN chain_nodes n
    ON n.chain_id = step.chain_id AND n.idx = step.next_index
    AND NOT step.completed AND NOT step.failed
"""  # noqa: E501


def record_chain_step(
    conn: Conn,
    chain_id: str,
    index: int,
    failure: str | None,
    now: datetime,
    fence: LaneFence | None = None,
) -> ChainStep | None:
    fences.check(conn, fence, "%s")
    # The hot path is one round trip: the step, by `ChainRow.step`'s rule (node ``index``
    # is the one due, and the chain has not ended), with the node to queue next.
    params = {"chain_id": chain_id, "index": index, "failure": failure, "now": to_micros(now)}
    found = conn.execute(_STEP, params).fetchone()
    if found is None:
        _load_chain(conn, chain_id, lock=False)  # NotFound, or else a duplicate
        return None
    next_index, completed, failed = found[:3]
    return ChainStep(
        next_index=next_index,
        completed=completed,
        failed=failed,
        next_node=None if completed or failed else job_from_row(found[3:]),
    )


def fail_chain(conn: Conn, chain_id: str, failure: str, now: datetime) -> bool:
    row = _load_chain(conn, chain_id, lock=True)
    if not row.step(row.next_index, failure, now):
        return False
    conn.execute(
        "UPDATE chains SET failed = true, failure = %s, updated_at = %s WHERE chain_id = %s",
        (failure, to_micros(now), chain_id),
    )
    return True


def create_batch(conn: Conn, record: BatchRecord) -> BatchState:
    row = new_batch_row(record)
    _save_job_callbacks(conn, f"batch:{record.batch_id}", record.callbacks)
    conn.execute(
        f"INSERT INTO batches ({BATCH_COLUMNS}) VALUES ({', '.join(['%s'] * 13)})",
        (
            row.batch_id,
            row.dispatch_id,
            row.name,
            row.queue,
            row.allow_failures,
            row.total,
            row.pending,
            row.processed,
            row.failed,
            row.cancelled,
            row.completed,
            to_micros(row.created_at),
            to_micros(row.updated_at),
        ),
    )
    conn.cursor().executemany(
        f"INSERT INTO batch_jobs (batch_id, status, {JOB_COLUMNS}) "
        f"VALUES (%s, 'pending', {_JOB_VALUES})",
        [(record.batch_id, *job_row(job)) for job in record.jobs],
    )
    return row.state()


def _load_batch(conn: Conn, batch_id: str, *, lock: bool) -> BatchRow:
    found = conn.execute(
        f"SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = %s{' FOR UPDATE' if lock else ''}",
        (batch_id,),
    ).fetchone()
    if found is None:
        raise NotFound(f"no batch {batch_id!r} in this store (wrong id, or pruned)")
    return batch_row(found)


def _save_batch(conn: Conn, row: BatchRow) -> None:
    conn.execute(
        "UPDATE batches SET pending = %s, processed = %s, failed = %s, cancelled = %s, "
        "completed = %s, updated_at = %s WHERE batch_id = %s",
        (
            row.pending,
            row.processed,
            row.failed,
            row.cancelled,
            row.completed,
            to_micros(row.updated_at),
            row.batch_id,
        ),
    )


def get_batch(conn: Conn, batch_id: str) -> BatchState:
    return _load_batch(conn, batch_id, lock=False).state()


def record_batch(
    conn: Conn, batch_id: str, outcomes: tuple[JobOutcome, ...], now: datetime, progress: bool
) -> BatchUpdate:
    updater = BatchUpdater(_load_batch(conn, batch_id, lock=True), now, progress=progress)
    first: dict[str, JobOutcome] = {}  # the first outcome of each job counts
    for outcome in outcomes:
        if fences.advance(conn, outcome.fence, "%s"):  # a stale lane holder's: left out
            first.setdefault(outcome.job_id, outcome)
    # One statement marks every job still pending and says which they were (under the
    # batch's row lock, so no other transaction counts them too).
    changed = {
        job_id
        for (job_id,) in conn.execute(
            "UPDATE batch_jobs SET status = v.status "
            "FROM unnest(%s::text[], %s::text[]) AS v(job_id, status) "
            "WHERE batch_jobs.batch_id = %s AND batch_jobs.job_id = v.job_id "
            "AND batch_jobs.status = 'pending' RETURNING batch_jobs.job_id",
            (list(first), [o.outcome for o in first.values()], batch_id),
        )
    }
    for outcome in first.values():
        if outcome.job_id in changed:
            updater.apply(outcome)
    _save_batch(conn, updater.row)
    return updater.result()


def cancel_batch(conn: Conn, batch_id: str, now: datetime) -> BatchUpdate:
    updater = BatchUpdater(_load_batch(conn, batch_id, lock=True), now)
    updater.cancel()
    if updater.cancelled_now:
        _save_batch(conn, updater.row)
    return updater.result()


def abandon_batch(conn: Conn, batch_id: str, now: datetime) -> BatchUpdate:
    updater = BatchUpdater(_load_batch(conn, batch_id, lock=True), now)
    updater.cancel()
    for (job_id,) in conn.execute(
        "UPDATE batch_jobs SET status = 'cancelled' WHERE batch_id = %s AND status = 'pending' "
        "RETURNING job_id",
        (batch_id,),
    ).fetchall():
        updater.apply(JobOutcome(job_id, "cancelled"))
    _save_batch(conn, updater.row)
    return updater.result()


def batch_cancelled(conn: Conn, batch_id: str) -> bool:
    row = conn.execute("SELECT cancelled FROM batches WHERE batch_id = %s", (batch_id,)).fetchone()
    return row is not None and bool(row[0])


def claim_callback(conn: Conn, owner: str, name: str, now: int) -> bool:
    cursor = conn.execute(
        "INSERT INTO callbacks (key, owner, invoked_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (key) DO NOTHING",
        (f"{owner}:{name}", owner, now),
    )
    return cursor.rowcount == 1


def record_failed(conn: Conn, job: FailedJob, fence: LaneFence | None = None) -> None:
    fences.check(conn, fence, "%s")
    conn.execute("DELETE FROM failed_jobs WHERE id = %s", (job.id,))
    conn.execute(
        f"INSERT INTO failed_jobs ({_FAILED_COLUMNS}) VALUES ({', '.join(['%s'] * 9)})",
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


def failed_jobs(conn: Conn) -> list[FailedJob]:
    rows = conn.execute(f"SELECT {_FAILED_COLUMNS} FROM failed_jobs ORDER BY failed_at, seq")
    return [_failed_from_row(tuple(row)) for row in rows]


def take_failed(conn: Conn, job_id: str) -> FailedJob:
    row = conn.execute(
        f"DELETE FROM failed_jobs WHERE id = %s RETURNING {_FAILED_COLUMNS}", (job_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no failed job {job_id!r} in this store (wrong id, or pruned)")
    return _failed_from_row(tuple(row))


def prune(conn: Conn, before: int) -> int:
    batches = [
        f"batch:{batch_id}"
        for (batch_id,) in conn.execute(
            "DELETE FROM batches WHERE completed AND updated_at < %s RETURNING batch_id",
            (before,),
        ).fetchall()
    ]
    chains = [
        f"chain:{chain_id}"
        for (chain_id,) in conn.execute(
            "DELETE FROM chains WHERE (completed OR failed) AND updated_at < %s RETURNING chain_id",
            (before,),
        ).fetchall()
    ]
    ids = [owner.partition(":")[2] for owner in batches]
    conn.execute("DELETE FROM batch_jobs WHERE batch_id = ANY(%s)", (ids,))
    ids = [owner.partition(":")[2] for owner in chains]
    conn.execute("DELETE FROM chain_nodes WHERE chain_id = ANY(%s)", (ids,))
    owners = batches + chains
    conn.execute("DELETE FROM callbacks WHERE owner = ANY(%s)", (owners,))
    conn.execute("DELETE FROM job_callbacks WHERE owner = ANY(%s)", (owners,))
    conn.execute("DELETE FROM uniques WHERE expires_at < %s", (before,))
    conn.execute("DELETE FROM failed_jobs WHERE failed_at < %s", (before,))
    return len(owners)


def in_flight(conn: Conn, limit: int) -> tuple[list[BatchState], list[ChainState]]:
    """The batches and chains not over yet, oldest first (at most ``limit`` of each)."""
    batches = conn.execute(
        f"SELECT {BATCH_COLUMNS} FROM batches WHERE NOT completed "
        "ORDER BY created_at, batch_id LIMIT %s",
        (limit,),
    ).fetchall()
    chains = conn.execute(
        "SELECT chain_id FROM chains WHERE NOT completed AND NOT failed "
        "ORDER BY created_at, chain_id LIMIT %s",
        (limit,),
    ).fetchall()
    return [batch_row(row).state() for row in batches], [get_chain(conn, c) for (c,) in chains]
