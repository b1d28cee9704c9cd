"""`SQLiteStore`: the bus's state in one SQLite file, through the stdlib `sqlite3` module.

SQLite calls block, so store operations run in a worker thread (`trio.to_thread.run_sync`),
one thread call at a time per store. Operations that arrive while one runs are
*group-committed*: the store's writer (a task the bus runs, `SQLiteStore.serve`) takes every
operation waiting for it and runs them in one ``BEGIN IMMEDIATE`` transaction, so that one
failing operation rolls back only itself (chain steps and new chains set-based, the others
each in its own savepoint: `_sqlite_group`); each caller waits on its own
`actors._reply.Reply`. Many coordinators thus share one thread hop and one commit. A chain
step may also be sent with no caller waiting (`SQLiteStore.record_chain_step_to`): the
writer's task settles it when its group commits. Several processes (or stores) may share the
file: SQLite serialises writers, and the unique constraints make job outcomes and callback
claims count once. Errors arrive as `StoreError` naming the file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

import trio

from .._reply import Reply
from . import _sqlite_ops as ops
from ._errors import StoreError
from ._sql_store import SQLOperations, SQLOps
from ._sqlite_group import deliver_group, run_group
from ._sqlite_schema import connect

T = TypeVar("T")

log = logging.getLogger("actors.bus")


class StepAnswer(Protocol):
    """Where an operation's result goes: a waiting caller's `Reply`, or the answer given to
    `SQLiteStore.record_chain_step_to`."""

    def succeed(self, value: Any) -> None: ...
    def fail(self, exc: BaseException) -> None: ...


_Op = tuple[Callable[..., Any], tuple[Any, ...], StepAnswer]

#: `SQLiteStore.record_chain_step_to` queues nothing (its caller takes the slow path) while
#: this many operations wait for the writer.
_WAITING_AT_MOST = 1024


class _Writer:
    """The writer's queue: operations wait in a list, and the writer's task takes them all
    at once, a group at a time (no task, mailbox or envelope per operation)."""

    __slots__ = ("_parked", "pending")

    def __init__(self) -> None:
        self.pending: list[_Op] = []
        self._parked: trio.lowlevel.Task | None = None

    def send(self, op: _Op) -> None:
        """Queue ``op`` (no yield), waking the writer if it waits for work."""
        self.pending.append(op)
        task = self._parked
        if task is not None:
            self._parked = None
            trio.lowlevel.reschedule(task)

    async def next_group(self) -> list[_Op]:
        """Every operation waiting, once there is one (a checkpoint when it waits; when work
        is waiting already the group's thread call is the writer's next one)."""
        if not self.pending:
            self._parked = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        group, self.pending = self.pending, []
        return group

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED


class SQLiteStore(SQLOperations):
    """A store in an SQLite file that survives restarts; a reopened bus finds its state.

    ``SQLiteStore("bus.db")``; the schema is created (or migrated) when the bus opens it.
    Uses WAL mode, so readers never block the writer. Several buses, in one process or many,
    may share the file (and may create it at the same moment).

    Callbacks that are Python callables run only in the process that built the chain or batch
    and are claimed before they run (at most once); `Job` callbacks are dispatched through
    the same claim and run anywhere.

    In tests, prefer the real clock (and a ``clock=`` you move by hand) to the autojump
    clock: while a thread works, the autojump clock sees every task blocked and jumps to the
    next timer, so Trio time races ahead.
    """

    _ops: SQLOps = ops

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._writer: _Writer | None = None

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r}{'' if self._conn else ' (closed)'}>"

    # --------------------------------------------------------------------- plumbing

    def _wrap(self, exc: sqlite3.Error) -> StoreError:
        error = StoreError(f"SQLite store {self.path!r}: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in the thread, group-committed with concurrent calls.

        On its own (no writer): like `trio.to_thread.run_sync`, a call cancelled
        before its thread call starts is dropped, once started it runs to its end. Served
        (under a bus): a call cancelled before it is sent is dropped; once sent it completes
        and its result is returned, so no write is left unknown to its caller (a stored
        chain whose dispatch looked cancelled would never be queued).
        """
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"{self!r} is not open; the bus opens it (open_bus(store=...))")
        await trio.lowlevel.checkpoint_if_cancelled()
        writer = self._writer
        if writer is None:  # not served by a bus (used on its own): one call at a time
            try:
                result: T = await trio.to_thread.run_sync(
                    ops.in_transaction, conn, fn, args, limiter=self._limiter
                )
            except sqlite3.Error as exc:
                raise self._wrap(exc) from exc
            return result
        reply: Reply[T] = Reply()
        # Sent without a checkpoint: the wait for the answer is this call's schedule point
        # (and, like a shielded one, not a cancellation point).
        writer.send((fn, args, reply))
        return await reply.wait_shielded()

    def record_chain_step_to(
        self, chain_id: str, index: int, failure: str | None, now: datetime, answer: StepAnswer
    ) -> bool:
        """`record_chain_step` without a caller that waits: queued for the writer now (no
        yield), and ``answer.succeed(step)`` or ``answer.fail(error)`` is called in the
        writer's task once its group has committed or failed (the error as
        `record_chain_step` raises it; any other exception, such as the writer's cancellation,
        as it is). The answer must not raise (the group's other answers follow it). False:
        nothing is queued (the store is not served by a bus, or its writer has
        `_WAITING_AT_MOST` operations waiting)."""
        writer = self._writer
        if writer is None or self._conn is None or len(writer.pending) >= _WAITING_AT_MOST:
            return False
        writer.send((ops.record_chain_step, (chain_id, index, failure, now), answer))
        return True

    async def _write_group(self, group: list[_Op]) -> None:
        """The writer: these operations (every one waiting), in one transaction."""
        conn = self._conn
        if conn is None:
            for _, _, reply in group:
                reply.fail(StoreError(f"{self!r} closed before this operation ran"))
            return
        try:
            results = await trio.to_thread.run_sync(run_group, conn, group, limiter=self._limiter)
        except sqlite3.Error as exc:  # BEGIN or COMMIT failed: the whole group failed
            for _, _, reply in group:
                reply.fail(self._wrap(exc))
            return
        except BaseException as exc:
            for _, _, reply in group:
                reply.fail(exc)
            raise
        deliver_group(group, results, self._wrap)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the writer (group commit) until cancelled; the bus runs it. Operations still
        waiting then fail with the writer's cancellation, as those of a group in flight."""
        writer = self._writer = _Writer()
        try:
            task_status.started()
            while True:
                await self._write_group(await writer.next_group())
        except BaseException as exc:
            group, writer.pending = writer.pending, []
            for _, _, reply in group:
                reply.fail(exc)
            raise
        finally:
            self._writer = None

    async def open(self) -> None:
        """Connect and create or migrate the schema."""
        if self._conn is not None:
            await trio.lowlevel.checkpoint()
            return
        try:
            self._conn = await trio.to_thread.run_sync(connect, self.path, self._busy_timeout)
        except sqlite3.Error as exc:
            raise self._wrap(exc) from exc

    async def close(self) -> None:
        """Close the connection (the file stays)."""
        conn, self._conn = self._conn, None
        if conn is None:
            await trio.lowlevel.checkpoint()
            return
        await trio.to_thread.run_sync(conn.close, limiter=self._limiter)

    def schema_version(self) -> int:
        """The schema version of the file (opens its own short connection)."""
        conn = sqlite3.connect(self.path)
        try:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            return 0 if row is None else int(row[0])
        finally:
            conn.close()
