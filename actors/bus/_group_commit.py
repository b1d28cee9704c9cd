"""`GroupCommit`: one SQLite connection used from Trio, many calls per transaction.

SQLite calls block, so they run in a worker thread (`trio.to_thread.run_sync`), one thread
call at a time (a `trio.CapacityLimiter` of 1 guards the connection). Calls that arrive while
a thread call runs are *group-committed*: the next thread call runs them all in one
``BEGIN IMMEDIATE`` transaction (`_sqlite_group.run_plain_group`), so many tasks share one
thread hop and one commit; each caller waits on its own `actors._reply.Reply`. A call that
needs all-or-nothing inside the group uses its own savepoint (`_sqlite_schema.transaction`).
Unlike `SQLiteStore`, which is served by a writer actor under the bus, this needs no task of
its own: the first caller to find no group running leads, and runs groups until none waits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from .._reply import Reply
from ._sqlite import _Op
from ._sqlite_group import deliver_group, run_plain_group

T = TypeVar("T")


class GroupCommit:
    """Runs ``fn(conn, *args)`` calls in a thread, group-committed (see the module doc)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.limiter = trio.CapacityLimiter(1)
        self._pending: list[_Op] = []
        self._flushing = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Cancelled before its call is queued, the call is dropped; once queued, it completes
        and its result is returned (so no write is left unknown to its caller)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        reply: Reply[T] = Reply()
        self._pending.append((fn, args, reply))
        with trio.CancelScope(shield=True):
            if not self._flushing:
                # This caller leads: it runs groups until nothing is pending (shielded, so the
                # calls of other tasks it took on are never left behind).
                self._flushing = True
                try:
                    await self._flush()
                finally:
                    self._flushing = False
            answer = await reply.wait()
        return answer

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                results = await trio.to_thread.run_sync(
                    run_plain_group, self.conn, group, limiter=self.limiter
                )
            except BaseException as exc:  # BEGIN or COMMIT failed: the whole group failed
                for _, _, reply in group:
                    reply.fail(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            deliver_group(group, results, lambda exc: exc)

    async def close(self) -> None:
        await trio.to_thread.run_sync(self.conn.close, limiter=self.limiter)
