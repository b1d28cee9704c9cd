"""The `Store` operations of the SQL stores, as one base class: each method hands its
operation (a function of the store's ops module, ``fn(conn, *args)``) to the store's ``_run``,
which runs it in a thread and a transaction. `SQLiteStore` and `PostgresStore` differ in
their ops modules and in how ``_run`` gets a connection, not in these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ._model import BatchState, ChainState, JobRecord, LaneFence
from ._rules import (
    BatchRecord,
    BatchUpdate,
    ChainRecord,
    ChainStep,
    FailedJob,
    JobOutcome,
    to_micros,
)

T = TypeVar("T")


class SQLOps(Protocol):
    """What a SQL store's ops module provides (``_sqlite_ops``, ``_postgres_ops``)."""

    def claim_unique(self, conn: Any, key: str, now: int, expires_at: int, /) -> bool: ...
    def create_chain(self, conn: Any, record: ChainRecord, /) -> None: ...
    def get_chain(self, conn: Any, chain_id: str, /) -> ChainState: ...
    def record_chain_step(
        self,
        conn: Any,
        chain_id: str,
        index: int,
        failure: str | None,
        now: datetime,
        fence: LaneFence | None,
        /,
    ) -> ChainStep | None: ...
    def fail_chain(self, conn: Any, chain_id: str, failure: str, now: datetime, /) -> bool: ...
    def create_batch(self, conn: Any, record: BatchRecord, /) -> BatchState: ...
    def get_batch(self, conn: Any, batch_id: str, /) -> BatchState: ...
    def record_batch(
        self,
        conn: Any,
        batch_id: str,
        outcomes: tuple[JobOutcome, ...],
        now: datetime,
        progress: bool,
        /,
    ) -> BatchUpdate: ...
    def cancel_batch(self, conn: Any, batch_id: str, now: datetime, /) -> BatchUpdate: ...
    def job_callbacks(self, conn: Any, owner: str, /) -> dict[str, JobRecord]: ...
    def batch_cancelled(self, conn: Any, batch_id: str, /) -> bool: ...
    def abandon_batch(self, conn: Any, batch_id: str, now: datetime, /) -> BatchUpdate: ...
    def claim_callback(self, conn: Any, owner: str, name: str, now: int, /) -> bool: ...
    def record_failed(self, conn: Any, job: FailedJob, fence: LaneFence | None, /) -> None: ...
    def failed_jobs(self, conn: Any, /) -> list[FailedJob]: ...
    def take_failed(self, conn: Any, job_id: str, /) -> FailedJob: ...
    def prune(self, conn: Any, before: int, /) -> int: ...
    def in_flight(self, conn: Any, limit: int, /) -> tuple[list[BatchState], list[ChainState]]: ...


class SQLOperations:
    """The `Store` methods, in terms of ``_ops`` and ``_run`` (see the module doc)."""

    _ops: SQLOps

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError  # pragma: no cover (each store has its own)

    async def claim_unique(self, key: str, now: datetime, expires_at: datetime) -> bool:
        return await self._run(self._ops.claim_unique, key, to_micros(now), to_micros(expires_at))

    async def create_chain(self, record: ChainRecord) -> None:
        await self._run(self._ops.create_chain, record)

    async def get_chain(self, chain_id: str) -> ChainState:
        return await self._run(self._ops.get_chain, chain_id)

    async def record_chain_step(
        self,
        chain_id: str,
        index: int,
        failure: str | None,
        now: datetime,
        fence: LaneFence | None = None,
    ) -> ChainStep | None:
        return await self._run(self._ops.record_chain_step, chain_id, index, failure, now, fence)

    async def fail_chain(self, chain_id: str, failure: str, now: datetime) -> bool:
        return await self._run(self._ops.fail_chain, chain_id, failure, now)

    async def create_batch(self, record: BatchRecord) -> BatchState:
        return await self._run(self._ops.create_batch, record)

    async def get_batch(self, batch_id: str) -> BatchState:
        return await self._run(self._ops.get_batch, batch_id)

    async def record_batch(
        self,
        batch_id: str,
        outcomes: Sequence[JobOutcome],
        now: datetime,
        *,
        progress: bool = True,
    ) -> BatchUpdate:
        return await self._run(self._ops.record_batch, batch_id, tuple(outcomes), now, progress)

    async def cancel_batch(self, batch_id: str, now: datetime) -> BatchUpdate:
        return await self._run(self._ops.cancel_batch, batch_id, now)

    async def job_callbacks(self, owner: str) -> dict[str, JobRecord]:
        return await self._run(self._ops.job_callbacks, owner)

    async def batch_cancelled(self, batch_id: str) -> bool:
        return await self._run(self._ops.batch_cancelled, batch_id)

    async def abandon_batch(self, batch_id: str, now: datetime) -> BatchUpdate:
        return await self._run(self._ops.abandon_batch, batch_id, now)

    async def claim_callback(self, owner: str, name: str, now: datetime) -> bool:
        return await self._run(self._ops.claim_callback, owner, name, to_micros(now))

    async def record_failed(self, job: FailedJob, fence: LaneFence | None = None) -> None:
        await self._run(self._ops.record_failed, job, fence)

    async def failed_jobs(self) -> list[FailedJob]:
        return await self._run(self._ops.failed_jobs)

    async def take_failed(self, job_id: str) -> FailedJob:
        return await self._run(self._ops.take_failed, job_id)

    async def prune(self, before: datetime) -> int:
        return await self._run(self._ops.prune, to_micros(before))

    async def in_flight(self, limit: int) -> tuple[list[BatchState], list[ChainState]]:
        return await self._run(self._ops.in_flight, limit)


def apply_migrations(conn: Any, migrations: Sequence[Sequence[str]], mark: str) -> int:
    """Run the ``migrations`` the database lacks and record its version; return that version.

    Call it inside the transaction that guards the schema. ``mark`` is the driver's parameter
    placeholder (``?`` for sqlite3, ``%s`` for psycopg).
    """
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    if row is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (0)")
    for statements in migrations[0 if row is None else int(row[0]) :]:
        for statement in statements:
            conn.execute(statement)
    conn.execute(f"UPDATE schema_version SET version = {mark}", (len(migrations),))
    return len(migrations)
