"""`GroupCommit`: one SQLite connection used from Trio, many calls per transaction.

SQLite calls block, so they run in a worker thread (`trio.to_thread.run_sync`), one thread
call at a time (a `trio.CapacityLimiter` of 1 guards the connection). Calls that arrive while
a thread call runs are *group-committed*: the next thread call runs them all in one
``BEGIN IMMEDIATE`` transaction, so many tasks share one thread hop and one commit. A call
that needs all-or-nothing inside the group uses its own savepoint (``_sqlite._transaction``).
This is `SQLiteStore`'s scheme, as a class the store can share.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

from ._sqlite import _Call, _run_group

T = TypeVar("T")


class GroupCommit:
    """Runs ``fn(conn, *args)`` calls in a thread, group-committed (see the module doc)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.limiter = trio.CapacityLimiter(1)
        self._pending: list[_Call] = []
        self._flushing = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Cancelled before its group starts, the call is dropped; once started, it completes
        and its result is returned."""
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
        while self._pending:
            group = [call for call in self._pending if not call.abandoned]
            self._pending = []
            for call in group:
                call.taken = True
            try:
                await trio.to_thread.run_sync(_run_group, self.conn, group, limiter=self.limiter)
            except BaseException as exc:  # BEGIN or COMMIT failed: the whole group failed
                for call in group:
                    call.result = outcome.Error(exc)
            for call in group:
                call.done.set()

    async def close(self) -> None:
        await trio.to_thread.run_sync(self.conn.close, limiter=self.limiter)
