"""`SQLiteBroker`'s lanes: a lane's rows are its waiting list, its head's lease is the lane's.

A lane job's row carries its lane, its place in the lane (``seq``: the lane's end when put,
kept by its retries) and the fence of its latest delivery. Only a lane's head (its lowest
``seq`` still there) may be claimed, so while the head is leased, delayed or retrying the
rows behind it wait. Claiming a head moves the lane's epoch on (``broker_lanes``, one row
per lane ever used: a few bytes each); the row's fence is that epoch, and an ack or retry
deletes the row only ``WHERE fence = ?``: a worker whose lease lapsed (its row claimed again,
with a new epoch) gets `LeaseLost` instead of settling the job. All in the transaction of the
claim or the ack, so a hard kill leaves nothing half-done and no lock behind.
"""

from __future__ import annotations

import sqlite3

from ._errors import LeaseLost
from ._sqlite_schema import transaction

#: The broker's schema migration for lanes.
MIGRATION = (
    "ALTER TABLE broker_jobs ADD COLUMN lane TEXT",
    "ALTER TABLE broker_jobs ADD COLUMN seq INTEGER",
    "ALTER TABLE broker_jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX broker_jobs_lane ON broker_jobs (queue, lane, seq) WHERE lane IS NOT NULL",
    """CREATE TABLE broker_lanes (
        queue TEXT NOT NULL,
        lane TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        PRIMARY KEY (queue, lane)
    ) WITHOUT ROWID""",
)

#: The claim's test that a row is due as far as lanes go: plain, or its lane's head.
IS_HEAD = (
    "(lane IS NULL OR seq = "
    "(SELECT MIN(seq) FROM broker_jobs WHERE queue = j.queue AND lane = j.lane))"
)


def insert(
    conn: sqlite3.Connection,
    queue: str,
    batch_id: str | None,
    body: str,
    visible_at: float,
    lane: str | None,
    seq: int | None,
) -> None:
    """Add a lane job at ``seq`` (a retry keeps its place), or at the lane's end (None); a
    plain job (no lane) as it is."""
    if lane is not None and seq is None:
        last = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM broker_jobs WHERE queue = ? AND lane = ?",
            (queue, lane),
        ).fetchone()[0]
        seq = int(last) + 1
    conn.execute(
        "INSERT INTO broker_jobs (queue, batch_id, body, visible_at, lane, seq) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (queue, batch_id, body, visible_at, lane, seq),
    )


def start(conn: sqlite3.Connection, queue: str, lane: str) -> int:
    """A new lease of ``lane``: its epoch moves on; return it (the delivery's fence)."""
    epoch: int = conn.execute(
        "INSERT INTO broker_lanes (queue, lane, epoch) VALUES (?, ?, 1) "
        "ON CONFLICT (queue, lane) DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
        (queue, lane),
    ).fetchone()[0]
    return epoch


def settle(conn: sqlite3.Connection, queue: str, lane: str, row_id: int, fence: int) -> int | None:
    """Delete a lane job's row if this delivery's fence is still the lane's; return its seq.

    None if the row is gone and the fence is still the lane's (settled already: idempotent).
    Raises `LeaseLost` if the lane's epoch moved on (the lease lapsed and was taken over).
    """
    row = conn.execute(
        "DELETE FROM broker_jobs WHERE id = ? AND fence = ? RETURNING seq", (row_id, fence)
    ).fetchone()
    if row is not None:
        return int(row[0])
    epoch = conn.execute(
        "SELECT epoch FROM broker_lanes WHERE queue = ? AND lane = ?", (queue, lane)
    ).fetchone()
    if epoch is None or epoch[0] != fence:
        raise LeaseLost(
            f"the lease on lane {lane!r} of queue {queue!r} lapsed and was taken over (fence "
            f"{fence}, the lane is at {None if epoch is None else epoch[0]}): another worker "
            "has this job now, so this outcome must not be recorded"
        )
    return None


def ack(conn: sqlite3.Connection, queue: str, lane: str, row_id: int, fence: int) -> None:
    with transaction(conn):
        settle(conn, queue, lane, row_id, fence)
