"""Stores: where chain and batch state, callback records and unique keys live.

One `Store` protocol, two stores here: `MemoryStore` (the default) and `SQLiteStore`
(`_sqlite.py`). The rules of how a batch moves (`apply_outcome`) are shared, so both stores
count the same way; a store's job is to apply them atomically and idempotently:

* every job's final outcome is counted once, whatever arrives twice (keyed by job id);
* a callback runs only after ``claim_callback`` recorded it, so it runs at most once even
  when two coordinators (two processes on one SQLite file) reach the same point.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

import attrs
import trio

from ._errors import NotFound
from ._model import BatchState, ChainNode, ChainState, JobRecord

#: The final outcome of a batch job: it ran and succeeded, it ran and failed (after its
#: retries), or it never ran because the batch was cancelled.
Outcome = Literal["succeeded", "failed", "cancelled"]


@attrs.frozen
class JobOutcome:
    """The final outcome of one batch job, as a worker reported it."""

    job_id: str
    outcome: Outcome


@attrs.frozen
class BatchRecord:
    """A new batch, as `Store.create_batch` receives it."""

    batch_id: str
    dispatch_id: str
    name: str | None
    queue: str
    allow_failures: bool
    jobs: tuple[JobRecord, ...]
    created_at: datetime


@attrs.frozen
class ChainRecord:
    """A new chain, as `Store.create_chain` receives it."""

    chain_id: str
    dispatch_id: str
    queue: str
    nodes: tuple[JobRecord, ...]
    created_at: datetime


@attrs.frozen
class BatchUpdate:
    """What one atomic batch update did."""

    state: BatchState
    """The state after the update."""
    progressed: tuple[BatchState, ...] = ()
    """The state after each newly finished job (succeeded or failed), in order (unless
    `Store.record_batch` was asked for no progress)."""
    progressed_jobs: tuple[str, ...] = ()
    """The job id behind each entry of ``progressed``, in the same order."""
    first_failure: str | None = None
    """The job id of the batch's first failure, if this update recorded it."""
    cancelled_now: bool = False
    """This update set ``cancelled``."""
    finished_now: bool = False
    """This update set ``completed``: the batch is over."""


@attrs.frozen
class ChainStep:
    """What recording one chain node's outcome did."""

    next_index: int
    completed: bool
    failed: bool
    next_node: JobRecord | None
    """The node to queue now (``None`` when the chain has ended)."""


@runtime_checkable
class Store(Protocol):
    """What the bus needs from a store. Every method is atomic (one transaction)."""

    async def open(self) -> None:
        """Connect and create or migrate the schema; the bus calls it on open."""
        ...

    async def close(self) -> None:
        """Release connections; the bus calls it when it closes. `open` may follow again."""
        ...

    async def claim_unique(self, key: str, now: datetime, expires_at: datetime) -> bool:
        """Take ``key`` until ``expires_at`` unless it is held past ``now``; True if taken."""
        ...

    async def create_chain(self, record: ChainRecord) -> None: ...

    async def get_chain(self, chain_id: str) -> ChainState:
        """The chain's state; `NotFound` for an unknown id."""
        ...

    async def record_chain_step(
        self, chain_id: str, index: int, failure: str | None, now: datetime
    ) -> ChainStep | None:
        """Record that node ``index`` succeeded (``failure`` None) or failed.

        Returns ``None`` if that node is not the one the chain waits for (a duplicate).
        """
        ...

    async def create_batch(self, record: BatchRecord) -> BatchState: ...

    async def get_batch(self, batch_id: str) -> BatchState:
        """The batch's state; `NotFound` for an unknown id."""
        ...

    async def record_batch(
        self,
        batch_id: str,
        outcomes: Sequence[JobOutcome],
        now: datetime,
        *,
        progress: bool = True,
    ) -> BatchUpdate:
        """Count each job's final outcome once (later duplicates are ignored).

        With ``progress=False`` the update's ``progressed`` is left empty (cheaper).
        """
        ...

    async def cancel_batch(self, batch_id: str, now: datetime) -> BatchUpdate:
        """Mark the batch cancelled unless it is over; `NotFound` for an unknown id."""
        ...

    async def claim_callback(self, owner: str, name: str, now: datetime) -> bool:
        """Record that callback ``name`` of ``owner`` runs now; False if it already did."""
        ...

    async def prune(self, before: datetime) -> int:
        """Delete finished chains and batches last updated before ``before`` (with their
        callback records) and unique keys expired by then; return how many chains and
        batches went."""
        ...


# ------------------------------------------------------------------------------ the rules


@attrs.define
class BatchRow:
    """A batch's counters while a store updates them (one transaction)."""

    batch_id: str
    dispatch_id: str
    name: str | None
    queue: str
    allow_failures: bool
    total: int
    pending: int
    processed: int
    failed: int
    cancelled: bool
    completed: bool
    created_at: datetime
    updated_at: datetime

    def state(self) -> BatchState:
        return BatchState(
            batch_id=self.batch_id,
            dispatch_id=self.dispatch_id,
            name=self.name,
            queue=self.queue,
            allow_failures=self.allow_failures,
            total=self.total,
            pending=self.pending,
            processed=self.processed,
            failed=self.failed,
            cancelled=self.cancelled,
            completed=self.completed,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class BatchUpdater:
    """Applies outcomes to a `BatchRow` by the batch rules and collects what happened.

    The rules: a finished job leaves ``pending`` and is ``processed`` (and ``failed`` if it
    failed); a cancelled job only leaves ``pending``. The first failure without
    ``allow_failures`` cancels the jobs not started yet. The batch is ``completed`` when
    nothing is pending.
    """

    def __init__(self, row: BatchRow, now: datetime, *, progress: bool = True) -> None:
        self.row = row
        self.now = now
        self.track_progress = progress
        self.progressed: list[BatchState] = []
        self.progressed_jobs: list[str] = []
        self.first_failure: str | None = None
        self.cancelled_now = False
        self.finished_now = False

    def apply(self, outcome: JobOutcome) -> None:
        """Apply one outcome the store has verified is new for this job."""
        row = self.row
        row.pending -= 1
        row.updated_at = self.now
        if outcome.outcome != "cancelled":
            row.processed += 1
            if outcome.outcome == "failed":
                row.failed += 1
                if row.failed == 1:
                    self.first_failure = outcome.job_id
                    if not row.allow_failures and row.pending > 0 and not row.cancelled:
                        row.cancelled = True
                        self.cancelled_now = True
            self._check_finished()
            if self.track_progress:
                self.progressed.append(row.state())
                self.progressed_jobs.append(outcome.job_id)
        else:
            self._check_finished()

    def cancel(self) -> None:
        row = self.row
        if not row.completed and not row.cancelled:
            row.cancelled = True
            row.updated_at = self.now
            self.cancelled_now = True

    def _check_finished(self) -> None:
        row = self.row
        if row.pending <= 0 and not row.completed:
            row.pending = 0
            row.completed = True
            self.finished_now = True

    def result(self) -> BatchUpdate:
        return BatchUpdate(
            state=self.row.state(),
            progressed=tuple(self.progressed),
            progressed_jobs=tuple(self.progressed_jobs),
            first_failure=self.first_failure,
            cancelled_now=self.cancelled_now,
            finished_now=self.finished_now,
        )


@attrs.define
class ChainRow:
    """A chain's progress while a store updates it."""

    chain_id: str
    dispatch_id: str
    queue: str
    length: int
    next_index: int
    completed: bool
    failed: bool
    failure: str | None
    created_at: datetime
    updated_at: datetime

    def step(self, index: int, failure: str | None, now: datetime) -> bool:
        """Record node ``index``'s outcome; False (nothing changed) if it is not the one due."""
        if self.completed or self.failed or index != self.next_index:
            return False
        self.updated_at = now
        if failure is not None:
            self.failed = True
            self.failure = failure
        else:
            self.next_index += 1
            self.completed = self.next_index >= self.length
        return True


# ------------------------------------------------------------------------------ memory


@attrs.define(eq=False)
class _MemoryBatch:
    row: BatchRow
    jobs: dict[str, str]  # job id -> "pending" or its outcome


@attrs.define(eq=False)
class _MemoryChain:
    row: ChainRow
    nodes: tuple[JobRecord, ...]


class MemoryStore:
    """The default store: dicts in this process. State lives as long as the object.

    Share one `MemoryStore` between buses opened one after another to keep their history.
    """

    def __init__(self) -> None:
        self._batches: dict[str, _MemoryBatch] = {}
        self._chains: dict[str, _MemoryChain] = {}
        self._callbacks: dict[str, str] = {}  # "owner:name" -> owner
        self._uniques: dict[str, datetime] = {}

    def __repr__(self) -> str:
        return f"<MemoryStore batches={len(self._batches)} chains={len(self._chains)}>"

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()

    async def claim_unique(self, key: str, now: datetime, expires_at: datetime) -> bool:
        await trio.lowlevel.checkpoint()
        held = self._uniques.get(key)
        if held is not None and held > now:
            return False
        self._uniques[key] = expires_at
        return True

    async def create_chain(self, record: ChainRecord) -> None:
        await trio.lowlevel.checkpoint()
        self._chains[record.chain_id] = _MemoryChain(
            ChainRow(
                chain_id=record.chain_id,
                dispatch_id=record.dispatch_id,
                queue=record.queue,
                length=len(record.nodes),
                next_index=0,
                completed=False,
                failed=False,
                failure=None,
                created_at=record.created_at,
                updated_at=record.created_at,
            ),
            record.nodes,
        )

    async def get_chain(self, chain_id: str) -> ChainState:
        await trio.lowlevel.checkpoint()
        chain = self._chain(chain_id)
        return chain_state(chain.row, chain.nodes)

    async def record_chain_step(
        self, chain_id: str, index: int, failure: str | None, now: datetime
    ) -> ChainStep | None:
        await trio.lowlevel.checkpoint()
        chain = self._chain(chain_id)
        row = chain.row
        if not row.step(index, failure, now):
            return None
        ended = row.completed or row.failed
        return ChainStep(
            next_index=row.next_index,
            completed=row.completed,
            failed=row.failed,
            next_node=None if ended else chain.nodes[row.next_index],
        )

    async def create_batch(self, record: BatchRecord) -> BatchState:
        await trio.lowlevel.checkpoint()
        row = new_batch_row(record)
        self._batches[record.batch_id] = _MemoryBatch(
            row, dict.fromkeys((job.job_id for job in record.jobs), "pending")
        )
        return row.state()

    async def get_batch(self, batch_id: str) -> BatchState:
        await trio.lowlevel.checkpoint()
        return self._batch(batch_id).row.state()

    async def record_batch(
        self,
        batch_id: str,
        outcomes: Sequence[JobOutcome],
        now: datetime,
        *,
        progress: bool = True,
    ) -> BatchUpdate:
        await trio.lowlevel.checkpoint()
        batch = self._batch(batch_id)
        updater = BatchUpdater(batch.row, now, progress=progress)
        jobs = batch.jobs
        for outcome in outcomes:
            if jobs.get(outcome.job_id) == "pending":
                jobs[outcome.job_id] = outcome.outcome
                updater.apply(outcome)
        return updater.result()

    async def cancel_batch(self, batch_id: str, now: datetime) -> BatchUpdate:
        await trio.lowlevel.checkpoint()
        updater = BatchUpdater(self._batch(batch_id).row, now)
        updater.cancel()
        return updater.result()

    async def claim_callback(self, owner: str, name: str, now: datetime) -> bool:
        await trio.lowlevel.checkpoint()
        key = f"{owner}:{name}"
        if key in self._callbacks:
            return False
        self._callbacks[key] = owner
        return True

    async def prune(self, before: datetime) -> int:
        await trio.lowlevel.checkpoint()
        owners: set[str] = set()
        for batch_id, batch in list(self._batches.items()):
            if batch.row.completed and batch.row.updated_at < before:
                del self._batches[batch_id]
                owners.add(f"batch:{batch_id}")
        for chain_id, chain in list(self._chains.items()):
            row = chain.row
            if (row.completed or row.failed) and row.updated_at < before:
                del self._chains[chain_id]
                owners.add(f"chain:{chain_id}")
        self._callbacks = {k: o for k, o in self._callbacks.items() if o not in owners}
        self._uniques = {k: t for k, t in self._uniques.items() if t >= before}
        return len(owners)

    def _batch(self, batch_id: str) -> _MemoryBatch:
        try:
            return self._batches[batch_id]
        except KeyError:
            raise NotFound(f"no batch {batch_id!r} in this store (wrong id, or pruned)") from None

    def _chain(self, chain_id: str) -> _MemoryChain:
        try:
            return self._chains[chain_id]
        except KeyError:
            raise NotFound(f"no chain {chain_id!r} in this store (wrong id, or pruned)") from None


def new_batch_row(record: BatchRecord) -> BatchRow:
    return BatchRow(
        batch_id=record.batch_id,
        dispatch_id=record.dispatch_id,
        name=record.name,
        queue=record.queue,
        allow_failures=record.allow_failures,
        total=len(record.jobs),
        pending=len(record.jobs),
        processed=0,
        failed=0,
        cancelled=False,
        completed=not record.jobs,
        created_at=record.created_at,
        updated_at=record.created_at,
    )


def chain_state(row: ChainRow, nodes: Sequence[JobRecord]) -> ChainState:
    return ChainState(
        chain_id=row.chain_id,
        dispatch_id=row.dispatch_id,
        queue=row.queue,
        nodes=tuple(ChainNode(node.job_id, node.to_job()) for node in nodes),
        next_index=row.next_index,
        completed=row.completed,
        failed=row.failed,
        failure=row.failure,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """An aware datetime as exact integer microseconds since the Unix epoch (for SQL)."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND
