"""`SQLiteBroker`: durable queues in one SQLite file, for many worker processes of one host.

One table holds every job of every queue: a row per job *attempt*, with its JSON body, the
time it becomes visible (``visible_at``, wall clock seconds) and, once leased, the broker
instance that holds it (``owner``, a random id per open broker) and how often this attempt
was delivered.

- **put** inserts the rows in one transaction (``visible_at`` = now + delay): ready, delayed
  and retrying jobs are the same rows, visible at different times.
- **claim** (``get``) leases up to n visible rows, oldest first, in one transaction:
  ``owner`` = this broker, ``visible_at`` = now + ``visibility_timeout``, ``deliveries`` + 1.
  A lease is just a later ``visible_at``: when it lapses the row is visible again and the
  next claim redelivers it (``Delivery.delivery`` = 2). A delayed row has no lease, so
  nothing can deliver it before its time, whatever the delay.
- **heartbeat** (`serve`): every ``visibility_timeout / 3`` one ``UPDATE`` pushes
  ``visible_at`` forward on every row of the queue this broker owns (handed-out and
  prefetched alike).
- **ack** deletes the row; concurrent acks share one transaction (group commit). Idempotent.
- **retry** deletes the delivered row and inserts the next attempt, delayed, in one
  transaction, only if the delivered row was still there (a late retry of a row that another
  worker already settled does nothing): never lost, never doubled.
- **release** makes the rows visible now, unowned; prefetched rows never handed out are
  given back on close with their delivery uncounted.
- **discard** (a cancelled batch) deletes the batch's unowned rows and those prefetched here.

Calls go through `GroupCommit` (as `SQLiteStore`'s do): a thread call at a time per broker,
and calls that arrive while one runs share the next transaction. A local ``put`` wakes a
waiting local ``get`` at once; jobs put by other processes are seen within
``poll_interval`` (or at their due time, whichever comes first).

Lane jobs (``QueuedJob.lane``): only a lane's head is claimed, under a fenced lease; see
`_sqlite_lanes`.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from . import _sqlite_lanes as lanes
from ._broker import Delivery, QueueStats, decode_job
from ._group_commit import GroupCommit
from ._leased import (
    DEFAULT_MAX_PAYLOAD,
    Coalescer,
    LeasedQueue,
    LeaseOptions,
    encode_jobs,
    log,
)
from ._model import QueuedJob, check_seconds
from ._sqlite_schema import transaction as _transaction

T = TypeVar("T")

#: Schema migrations, applied in order; ``broker_schema_version`` says how many ran (a table
#: of its own, so the broker can share the file with an `SQLiteStore`).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE broker_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            batch_id TEXT,
            body TEXT NOT NULL,
            visible_at REAL NOT NULL,
            owner TEXT,
            deliveries INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX broker_jobs_visible ON broker_jobs (queue, visible_at, id)",
        "CREATE INDEX broker_jobs_owner ON broker_jobs (owner) WHERE owner IS NOT NULL",
        "CREATE INDEX broker_jobs_batch ON broker_jobs (batch_id) WHERE batch_id IS NOT NULL",
    ),
    lanes.MIGRATION,
)


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS broker_schema_version (version INTEGER)")
        row = conn.execute("SELECT version FROM broker_schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO broker_schema_version (version) VALUES (0)")
        version = 0 if row is None else int(row[0])
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("UPDATE broker_schema_version SET version = ?", (len(MIGRATIONS),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    conn = connect_wal(path, busy_timeout)
    try:
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def connect_wal(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, for calls from one thread at a time."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        # Two processes creating the file at once: switching to WAL can report "locked"
        # without waiting on the busy handler, so retry it within the busy timeout.
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


# ------------------------------------------------------------------------- in the thread


#: A row as put: (batch id, body, lane, the lane place to keep or None for the lane's end).
Row = tuple[str | None, str, str | None, int | None]


def _insert(conn: sqlite3.Connection, queue: str, rows: list[Row], visible_at: float) -> None:
    _insert_many(conn, queue, [(rows, visible_at)])


def _insert_many(
    conn: sqlite3.Connection, queue: str, groups: list[tuple[list[Row], float]]
) -> None:
    """Rows due at each group's time, all in one transaction."""
    with _transaction(conn):
        for rows, visible_at in groups:
            if all(lane is None for _, _, lane, _ in rows):
                conn.executemany(
                    "INSERT INTO broker_jobs (queue, batch_id, body, visible_at) "
                    "VALUES (?, ?, ?, ?)",
                    [(queue, batch_id, body, visible_at) for batch_id, body, _, _ in rows],
                )
                continue
            for batch_id, body, lane, seq in rows:  # in order: ids say the order of the queue
                lanes.insert(conn, queue, batch_id, body, visible_at, lane, seq)


def _claim(
    conn: sqlite3.Connection, queue: str, owner: str, n: int, now: float, lease: float
) -> tuple[list[tuple[int, str, int, int]], float | None]:
    # In the group's transaction: nobody claims the same rows between the two statements.
    # A lane job is due only at the head of its lane (the lowest seq still there): while the
    # head is leased, delayed or retrying, the jobs behind it wait.
    found = conn.execute(
        "SELECT id, body, deliveries + 1, lane FROM broker_jobs AS j "
        f"WHERE queue = ? AND visible_at <= ? AND {lanes.IS_HEAD} "
        "ORDER BY visible_at, id LIMIT ?",
        (queue, now, n),
    ).fetchall()
    rows: list[tuple[int, str, int, int]] = []
    for row_id, body, count, lane in found:
        fence = 0
        if lane is not None:  # a new lease of the lane: its epoch moves on
            fence = lanes.start(conn, queue, lane)
        rows.append((row_id, body, count, fence))
    conn.executemany(
        "UPDATE broker_jobs SET owner = ?, visible_at = ?, deliveries = deliveries + 1, "
        "fence = ? WHERE id = ?",
        [(owner, now + lease, row[3], row[0]) for row in rows],
    )
    next_due = None
    if not rows:
        # When to look again: the next delayed job's time (a lapsing lease counts too).
        next_due = conn.execute(
            "SELECT MIN(visible_at) FROM broker_jobs WHERE queue = ? AND visible_at > ?",
            (queue, now),
        ).fetchone()[0]
    return rows, next_due


def _renew(conn: sqlite3.Connection, queue: str, owner: str, until: float) -> int:
    return conn.execute(
        "UPDATE broker_jobs SET visible_at = ? WHERE owner = ? AND queue = ?",
        (until, owner, queue),
    ).rowcount


def _delete(conn: sqlite3.Connection, ids: list[int]) -> None:
    with _transaction(conn):
        conn.executemany("DELETE FROM broker_jobs WHERE id = ?", [(i,) for i in ids])


def _retry(
    conn: sqlite3.Connection,
    row_id: int,
    queue: str,
    row: Row,
    visible_at: float,
    fence: int,
) -> bool:
    with _transaction(conn):
        lane = row[2]
        if lane is not None:
            seq = lanes.settle(conn, queue, lane, row_id, fence)
            if seq is None:
                return False
            row = (row[0], row[1], lane, seq)  # the next attempt keeps the lane's place
        elif conn.execute("DELETE FROM broker_jobs WHERE id = ?", (row_id,)).rowcount != 1:
            return False  # settled already (by another worker after a lapsed lease)
        _insert(conn, queue, [row], visible_at)
    return True


def _release(
    conn: sqlite3.Connection, ids: list[int], owner: str, now: float, uncount: int
) -> None:
    # Only rows this broker still owns: one that lapsed and went to another worker stays there.
    with _transaction(conn):
        conn.executemany(
            "UPDATE broker_jobs SET owner = NULL, visible_at = ?, deliveries = deliveries - ? "
            "WHERE id = ? AND owner = ?",
            [(now, uncount, i, owner) for i in ids],
        )


def _discard(
    conn: sqlite3.Connection, queue: str, batch_id: str, owner: str, buffered: list[int]
) -> list[str]:
    with _transaction(conn):
        waiting = conn.execute(
            "DELETE FROM broker_jobs WHERE queue = ? AND batch_id = ? AND owner IS NULL "
            "RETURNING id, body",
            (queue, batch_id),
        ).fetchall()
        mine = conn.execute(
            "DELETE FROM broker_jobs WHERE owner = ? "
            f"AND id IN ({', '.join('?' * len(buffered))}) RETURNING id, body",
            (owner, *buffered),
        ).fetchall()
    return [body for _, body in sorted([*waiting, *mine])]


def _stats(conn: sqlite3.Connection, queue: str, now: float) -> tuple[int, int, int]:
    row = conn.execute(
        "SELECT "
        "COALESCE(SUM(visible_at <= ?), 0), "
        "COALESCE(SUM(visible_at > ? AND owner IS NULL), 0), "
        "COALESCE(SUM(visible_at > ? AND owner IS NOT NULL), 0) "
        "FROM broker_jobs WHERE queue = ?",
        (now, now, now, queue),
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


# ------------------------------------------------------------------------- the broker


class SQLiteBroker:
    """Durable queues in an SQLite file shared by the worker processes of one host.

    ``SQLiteBroker("jobs.db")`` (the store's file or its own). ``visibility_timeout``: how
    long a delivered job stays leased to a process that stops renewing it (it dies) before
    another worker gets it. ``claim_batch``: most jobs claimed in one statement.
    ``poll_interval``: how soon jobs put by other processes are seen. ``clock``: wall-clock
    seconds shared by the processes (tests pass their own).
    """

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        visibility_timeout: float = 30.0,
        claim_batch: int = 100,
        poll_interval: float = 0.25,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        busy_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = os.fspath(path)
        options = LeaseOptions.check(visibility_timeout, poll_interval, max_payload, claim_batch)
        self.visibility_timeout = options.visibility_timeout
        self.poll_interval = options.poll_interval
        self.max_payload = options.max_payload
        self.claim_batch = options.claim_batch
        self.owner = ""
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._queues: dict[str, SQLiteBrokerQueue] = {}
        self._db: GroupCommit | None = None

    def __repr__(self) -> str:
        return f"<SQLiteBroker {self.path!r}{'' if self._db else ' (closed)'}>"

    def now(self) -> float:
        return self._clock()

    async def open(self) -> None:
        """Create the file and its table if missing (safe against a concurrent opener)."""
        if self._db is not None:
            await trio.lowlevel.checkpoint()
            return
        self.owner = secrets.token_hex(8)
        try:
            self._db = GroupCommit(
                await trio.to_thread.run_sync(_connect, self.path, self._busy_timeout)
            )
        except sqlite3.Error as exc:
            raise ConnectionError(
                f"cannot open the SQLite broker file {self.path!r}: {exc} (is its folder "
                "there and writable?)"
            ) from exc

    async def close(self) -> None:
        """Give back prefetched jobs never handed out, and close the connection."""
        if self._db is None:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True):
            for queue in self._queues.values():
                buffered = queue._take_buffer()
                if buffered:
                    await self.run(
                        _release,
                        [int(d.receipt) for d in buffered],
                        self.owner,
                        self.now(),
                        1,
                    )
            db, self._db = self._db, None
            await db.close()

    def queue(self, name: str) -> SQLiteBrokerQueue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = SQLiteBrokerQueue(self, name)
        return queue

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the thread, in one transaction with concurrent calls.

        Cancelled before its group starts, the call is dropped; once started, it completes.
        """
        if self._db is None:
            raise RuntimeError(f"{self!r} is not open; the bus opens it (await broker.open())")
        return await self._db.run(fn, *args)


class SQLiteBrokerQueue(LeasedQueue):
    """One queue of an `SQLiteBroker` (rows of its table with this queue's name)."""

    def __init__(self, broker: SQLiteBroker, name: str) -> None:
        super().__init__(name, claim_batch=broker.claim_batch)
        self._broker = broker
        self._acks: Coalescer[int] = Coalescer(self._ack_many)

    def __repr__(self) -> str:
        return f"<SQLiteBrokerQueue {self.name!r} of {self._broker!r}>"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The heartbeat: renew this broker's leases every third of the visibility timeout."""
        broker = self._broker
        task_status.started()
        while True:
            await trio.sleep(broker.visibility_timeout / 3)
            try:
                await self.heartbeat()
            except sqlite3.Error as exc:  # busy for longer than busy_timeout: try again soon
                log.warning("SQLite broker %s: heartbeat failed (%s); retrying", broker.path, exc)

    async def heartbeat(self) -> int:
        """Renew the lease of every job of this queue this broker holds; how many."""
        broker = self._broker
        return await broker.run(
            _renew, self.name, broker.owner, broker.now() + broker.visibility_timeout
        )

    async def put(self, jobs: Sequence[QueuedJob], *, delay: float = 0.0) -> None:
        delay = check_seconds(delay, "delay")
        bodies = encode_jobs(jobs, self._broker.max_payload, "the SQLite broker")
        if not bodies:
            await trio.lowlevel.checkpoint()
            return
        rows: list[Row] = [
            (job.batch_id, body, job.lane, None) for job, body in zip(jobs, bodies, strict=True)
        ]
        await self._broker.run(_insert, self.name, rows, self._broker.now() + delay)
        self._local_put()

    async def put_many(self, jobs: Sequence[tuple[QueuedJob, float]]) -> None:
        """Every job at its own delay, in one transaction (all or none)."""
        delays = [check_seconds(delay, "delay") for _, delay in jobs]
        bodies = encode_jobs(
            [job for job, _ in jobs], self._broker.max_payload, "the SQLite broker"
        )
        groups: dict[float, list[Row]] = {}
        for (job, _), delay, body in zip(jobs, delays, bodies, strict=True):
            groups.setdefault(delay, []).append((job.batch_id, body, job.lane, None))
        now = self._broker.now()
        await self._broker.run(_insert_many, self.name, [(r, now + d) for d, r in groups.items()])
        self._local_put()

    async def _claim(self, n: int) -> tuple[list[Delivery], float]:
        broker = self._broker
        now = broker.now()
        rows, next_due = await broker.run(
            _claim, self.name, broker.owner, n, now, broker.visibility_timeout
        )
        deliveries = [
            Delivery(job=decode_job(body), delivery=count, receipt=str(row_id), fence=fence)
            for row_id, body, count, fence in rows
        ]
        wait = broker.poll_interval
        if next_due is not None:
            wait = max(0.0, min(wait, next_due - broker.now()))
        return deliveries, wait

    async def _ack_many(self, ids: list[int]) -> None:
        await self._broker.run(_delete, ids)

    async def ack(self, delivery: Delivery) -> None:
        """Remove the job for good; for a lane job only while this delivery's lease is the
        lane's (else `LeaseLost`), and the lane's next job is due at once."""
        lane = delivery.job.lane
        if lane is None:
            await self._acks.submit(int(delivery.receipt))
        else:
            try:
                await self._broker.run(
                    lanes.ack, self.name, lane, int(delivery.receipt), delivery.fence
                )
            finally:
                self._settled([delivery])
            self._local_put()
            return
        self._settled([delivery])

    async def retry(self, delivery: Delivery, job: QueuedJob, *, delay: float) -> None:
        delay = check_seconds(delay, "delay")
        (body,) = encode_jobs([job], self._broker.max_payload, "the SQLite broker")
        broker = self._broker
        row: Row = (job.batch_id, body, job.lane, None)
        try:
            await broker.run(
                _retry,
                int(delivery.receipt),
                self.name,
                row,
                broker.now() + delay,
                delivery.fence,
            )
        finally:
            self._settled([delivery])
        if delay == 0:
            self._local_put()

    async def release(self, deliveries: Sequence[Delivery], *, started: bool = True) -> None:
        broker = self._broker
        ids = [int(d.receipt) for d in deliveries]
        if ids:
            await broker.run(_release, ids, broker.owner, broker.now(), 0 if started else 1)
            self._local_put()
        else:
            await trio.lowlevel.checkpoint()
        self._settled(deliveries)

    async def discard(self, batch_id: str) -> list[QueuedJob]:
        broker = self._broker
        mine = [d for d in self._buffer if d.job.batch_id == batch_id]
        for delivery in mine:
            self._buffer.remove(delivery)
        bodies = await broker.run(
            _discard, self.name, batch_id, broker.owner, [int(d.receipt) for d in mine]
        )
        return [decode_job(body) for body in bodies]

    async def stats(self) -> QueueStats:
        ready, delayed, running = await self._broker.run(_stats, self.name, self._broker.now())
        return QueueStats(ready=ready, delayed=delayed, running=running)
