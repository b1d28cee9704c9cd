"""The records stores take and give, and the rules by which a batch and a chain move.

Shared by every store, so they all count the same way; a store's job is to apply them
atomically and idempotently (each job's outcome once, keyed by job id).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import attrs

from ._model import BatchState, ChainNode, ChainState, JobRecord, LaneFence, QueuedJob

#: The final outcome of a batch job: it ran and succeeded, it ran and failed (after its
#: retries), or it never ran because the batch was cancelled.
Outcome = Literal["succeeded", "failed", "cancelled"]


@attrs.frozen
class JobOutcome:
    """The final outcome of one batch job, as a worker reported it."""

    job_id: str
    outcome: Outcome
    fence: LaneFence | None = None
    """A lane job's fence: the outcome counts only while no newer holder has recorded."""


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
    callbacks: tuple[tuple[str, JobRecord], ...] = ()
    """The batch's `Job` callbacks by name ("then", ...): kept with it, run by any process."""


@attrs.frozen
class ChainRecord:
    """A new chain, as `Store.create_chain` receives it."""

    chain_id: str
    dispatch_id: str
    queue: str
    nodes: tuple[JobRecord, ...]
    created_at: datetime
    callbacks: tuple[tuple[str, JobRecord], ...] = ()
    """The chain's `Job` callbacks by name ("catch", "finally")."""


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


@attrs.frozen
class FailedJob:
    """A job that failed after its retries, kept until pruned (`Bus.failed_jobs`)."""

    id: str
    """The job's id (one record per job: a second failure of a retried one replaces it)."""
    job_type: str
    payload: str
    """The payload as JSON text."""
    queue: str
    error: str
    """``"ExceptionType: message"``."""
    traceback: str
    """The formatted traceback of the last attempt."""
    attempts: int
    failed_at: datetime
    job: QueuedJob = attrs.field(repr=False)
    """The job as it was queued (what `Bus.retry_failed` puts back)."""


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


def new_batch_row(record: BatchRecord, total: int | None = None) -> BatchRow:
    """A new batch's row; ``total`` when ``record.jobs`` is left empty (the memory store's
    admission passes only the jobs' ids)."""
    if total is None:
        total = len(record.jobs)
    return BatchRow(
        batch_id=record.batch_id,
        dispatch_id=record.dispatch_id,
        name=record.name,
        queue=record.queue,
        allow_failures=record.allow_failures,
        total=total,
        pending=total,
        processed=0,
        failed=0,
        cancelled=False,
        completed=not total,
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
