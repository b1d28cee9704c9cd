"""Stores: where chain and batch state, callback claims, unique keys and failed jobs live.

One `Store` protocol, two stores here: `MemoryStore` (the default) and `SQLiteStore`
(`_sqlite.py`). The rules of how a batch and a chain move are shared (`_rules.py`), so both
stores count the same way; a store's job is to apply them atomically and idempotently:

* every job's final outcome is counted once, whatever arrives twice (keyed by job id);
* a callback runs only after ``claim_callback`` recorded it, so it runs at most once even
  when two coordinators (two processes on one SQLite file) reach the same point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs
import trio

from ._errors import NotFound
from ._fences import MemoryFences
from ._memory_chains import MemoryChains, _MemoryChain
from ._model import BatchState, ChainState, JobRecord, LaneFence
from ._rules import (
    BatchRecord,
    BatchRow,
    BatchUpdate,
    BatchUpdater,
    ChainRecord,
    ChainStep,
    FailedJob,
    JobOutcome,
    chain_state,
    new_batch_row,
)


@runtime_checkable
class Store(Protocol):
    """What the bus needs from a store. Every method is atomic (one transaction)."""

    async def open(self) -> None:
        """Connect and create or migrate the schema; the bus calls it on open."""
        ...

    async def close(self) -> None:
        """Release connections; the bus calls it when it closes. `open` may follow again."""
        ...

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work while a bus runs (SQLite's group commit); a supervisor child."""
        ...

    async def claim_unique(self, key: str, now: datetime, expires_at: datetime) -> bool:
        """Take ``key`` until ``expires_at`` unless it is held past ``now``; True if taken."""
        ...

    async def create_chain(self, record: ChainRecord) -> None: ...

    async def get_chain(self, chain_id: str) -> ChainState:
        """The chain's state; `NotFound` for an unknown id."""
        ...

    async def record_chain_step(
        self,
        chain_id: str,
        index: int,
        failure: str | None,
        now: datetime,
        fence: LaneFence | None = None,
    ) -> ChainStep | None:
        """Record that node ``index`` succeeded (``failure`` None) or failed.

        Returns ``None`` if that node is not the one the chain waits for (a duplicate).
        A lane job's step comes with its ``fence``: `LeaseLost` (nothing recorded) if this
        store has recorded for that lane with a newer one (`actors.bus._fences`).
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
        """Count each job's final outcome once (later duplicates are ignored); an outcome
        whose lane fence is older than one recorded for its lane is left out.

        With ``progress=False`` the update's ``progressed`` is left empty (cheaper).
        """
        ...

    async def cancel_batch(self, batch_id: str, now: datetime) -> BatchUpdate:
        """Mark the batch cancelled unless it is over; `NotFound` for an unknown id."""
        ...

    async def claim_callback(self, owner: str, name: str, now: datetime) -> bool:
        """Record that callback ``name`` of ``owner`` runs now; False if it already did."""
        ...

    async def job_callbacks(self, owner: str) -> dict[str, JobRecord]:
        """The `Job` callbacks stored with ``owner`` (``"batch:<id>"``, ``"chain:<id>"``)."""
        ...

    async def batch_cancelled(self, batch_id: str) -> bool:
        """True if the batch was cancelled (from any process): its waiting jobs must not run."""
        ...

    async def abandon_batch(self, batch_id: str, now: datetime) -> BatchUpdate:
        """Cancel the batch and count every job not finished as cancelled, so it completes
        (for a batch whose process is gone); `NotFound` for an unknown id."""
        ...

    async def fail_chain(self, chain_id: str, failure: str, now: datetime) -> bool:
        """Stop the chain as failed with ``failure`` unless it has ended; True if it was
        stopped now. `NotFound` for an unknown id."""
        ...

    async def record_failed(self, job: FailedJob, fence: LaneFence | None = None) -> None:
        """Keep a failed job (one record per job id: a new failure replaces the old);
        `LeaseLost` for a stale lane ``fence``, as in `record_chain_step`."""
        ...

    async def failed_jobs(self) -> list[FailedJob]:
        """Every failed job kept, oldest first."""
        ...

    async def take_failed(self, job_id: str) -> FailedJob:
        """Remove and return a failed job's record; `NotFound` for an unknown id."""
        ...

    async def prune(self, before: datetime) -> int:
        """Delete finished chains and batches last updated before ``before`` (with their
        callback records), failed jobs recorded before it and unique keys expired by then;
        return how many chains and batches went."""
        ...

    async def in_flight(self, limit: int) -> tuple[list[BatchState], list[ChainState]]:
        """Up to ``limit`` batches and ``limit`` chains not over yet, oldest first (for
        operators: ``trio-lanes status``, ``trio-lanes batches``)."""
        ...


# ------------------------------------------------------------------------------ memory


@attrs.define(eq=False)
class MemoryBatch:
    """A batch in a `MemoryStore`: its row and each job's status."""

    row: BatchRow
    jobs: dict[str, str]  # job id -> "pending" or its outcome
    #: A reading of a `trio_clock` (`actors._clock.clock_reading`) and its datetime maker:
    #: the row's ``updated_at``, made when something reads the row (`synced`).
    stamp: tuple[float, Callable[[float], datetime]] | None = None

    def synced(self) -> BatchRow:
        """The row, its ``updated_at`` made from a pending clock reading first."""
        stamp = self.stamp
        if stamp is not None:
            self.stamp = None
            self.row.updated_at = stamp[1](stamp[0])
        return self.row

    def count_success(
        self,
        job_id: str,
        now: datetime | None,
        reading: tuple[Callable[[], float], Callable[[float], datetime]] | None = None,
    ) -> bool:
        """Count a job's success without yielding, if that is all it does: the batch goes
        on (jobs still pending after it), is not cancelled, and the job's outcome is new.
        False (nothing recorded) when the outcome would do more (end the batch) or nothing
        (a duplicate): `MemoryStore.record_batch` then decides.

        The time is ``now``, or (``now`` None) a reading of a `trio_clock` (``reading``: its
        time source and datetime maker, `actors._clock.clock_reading`) taken here, its
        datetime made only when the row is read (`synced`): the same value. What
        `record_batch_now` would do with this one outcome, without building the update
        nobody reads (the bus's workers: `Batches.settle_now`).
        """
        row, jobs = self.row, self.jobs
        if row.pending <= 1 or row.cancelled or jobs.get(job_id) != "pending":
            return False
        jobs[job_id] = "succeeded"
        row.pending -= 1
        row.processed += 1
        if now is None:
            assert reading is not None
            self.stamp = (reading[0](), reading[1])
        else:
            self.stamp = None
            row.updated_at = now
        return True


class MemoryStore(MemoryChains):
    """The default store: dicts in this process. State lives as long as the object.

    Share one `MemoryStore` between buses opened one after another to keep their history.
    """

    def __init__(self) -> None:
        self._batches: dict[str, MemoryBatch] = {}
        self._chains: dict[str, _MemoryChain] = {}
        self._callbacks: dict[str, str] = {}  # "owner:name" -> owner
        self._uniques: dict[str, datetime] = {}
        self._failed: dict[str, FailedJob] = {}
        self._job_callbacks: dict[str, dict[str, JobRecord]] = {}
        self._fences = MemoryFences()

    def __repr__(self) -> str:
        return f"<MemoryStore batches={len(self._batches)} chains={len(self._chains)}>"

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to do in the background."""
        task_status.started()
        await trio.sleep_forever()

    async def claim_unique(self, key: str, now: datetime, expires_at: datetime) -> bool:
        await trio.lowlevel.checkpoint()
        held = self._uniques.get(key)
        if held is not None and held > now:
            return False
        self._uniques[key] = expires_at
        return True

    async def create_batch(self, record: BatchRecord) -> BatchState:
        await trio.lowlevel.checkpoint()
        self.create_batch_now(record, [job.job_id for job in record.jobs])
        return self._batches[record.batch_id].synced().state()

    def create_batch_now(self, record: BatchRecord, job_ids: Sequence[str]) -> None:
        """`create_batch` without yielding, for the bus's batch admission on the memory
        broker (a batch stored and its jobs queued with no scheduling point between).

        This store keeps only the jobs' ids, so ``record.jobs`` is not read: the admission
        passes the ids of the attempts it built (no `JobRecord` per job)."""
        if record.callbacks:
            self._job_callbacks[f"batch:{record.batch_id}"] = dict(record.callbacks)
        row = new_batch_row(record, len(job_ids))
        self._batches[record.batch_id] = MemoryBatch(row, dict.fromkeys(job_ids, "pending"))

    async def get_batch(self, batch_id: str) -> BatchState:
        await trio.lowlevel.checkpoint()
        return self._batch(batch_id).synced().state()

    async def record_batch(
        self,
        batch_id: str,
        outcomes: Sequence[JobOutcome],
        now: datetime,
        *,
        progress: bool = True,
    ) -> BatchUpdate:
        await trio.lowlevel.checkpoint()
        return self.record_batch_now(batch_id, outcomes, now, progress=progress)

    def record_batch_now(
        self,
        batch_id: str,
        outcomes: Sequence[JobOutcome],
        now: datetime,
        *,
        progress: bool = True,
    ) -> BatchUpdate:
        """`record_batch` without yielding (see `record_chain_step_now`)."""
        batch = self._batch(batch_id)
        updater = BatchUpdater(batch.synced(), now, progress=progress)
        jobs = batch.jobs
        for outcome in outcomes:
            if jobs.get(outcome.job_id) == "pending" and self._fences.advance(outcome.fence):
                jobs[outcome.job_id] = outcome.outcome
                updater.apply(outcome)
        return updater.result()

    def batch_now(self, batch_id: str) -> MemoryBatch | None:
        """The batch's live entry (its row changes as outcomes are recorded), or None: for
        the bus's workers, which count a batch's successes and check its cancel in it
        (`Batches.settle_now`) for as long as the batch runs. No entry is replaced while its
        batch runs (only `prune` removes finished ones)."""
        return self._batches.get(batch_id)

    def batch_cancelled_now(self, batch_id: str) -> bool:
        """`batch_cancelled` without a coroutine (a worker asks before every batch job)."""
        batch = self._batches.get(batch_id)
        return batch is not None and batch.row.cancelled

    async def cancel_batch(self, batch_id: str, now: datetime) -> BatchUpdate:
        await trio.lowlevel.checkpoint()
        updater = BatchUpdater(self._batch(batch_id).synced(), now)
        updater.cancel()
        return updater.result()

    async def claim_callback(self, owner: str, name: str, now: datetime) -> bool:
        await trio.lowlevel.checkpoint()
        key = f"{owner}:{name}"
        if key in self._callbacks:
            return False
        self._callbacks[key] = owner
        return True

    async def job_callbacks(self, owner: str) -> dict[str, JobRecord]:
        await trio.lowlevel.checkpoint()
        return dict(self._job_callbacks.get(owner, {}))

    async def batch_cancelled(self, batch_id: str) -> bool:
        # No checkpoint: a worker asks before every batch job, and a dict lookup cannot block
        # (a scheduling point here would also reorder which worker starts first).
        return self.batch_cancelled_now(batch_id)

    async def abandon_batch(self, batch_id: str, now: datetime) -> BatchUpdate:
        await trio.lowlevel.checkpoint()
        batch = self._batch(batch_id)
        updater = BatchUpdater(batch.synced(), now)
        updater.cancel()
        for job_id, status in batch.jobs.items():
            if status == "pending":
                batch.jobs[job_id] = "cancelled"
                updater.apply(JobOutcome(job_id, "cancelled"))
        return updater.result()

    async def record_failed(self, job: FailedJob, fence: LaneFence | None = None) -> None:
        await trio.lowlevel.checkpoint()
        self._fences.check(fence)
        self._failed.pop(job.id, None)
        self._failed[job.id] = job

    async def failed_jobs(self) -> list[FailedJob]:
        await trio.lowlevel.checkpoint()
        return list(self._failed.values())

    async def take_failed(self, job_id: str) -> FailedJob:
        await trio.lowlevel.checkpoint()
        try:
            return self._failed.pop(job_id)
        except KeyError:
            raise NotFound(
                f"no failed job {job_id!r} in this store (wrong id, or pruned)"
            ) from None

    async def prune(self, before: datetime) -> int:
        await trio.lowlevel.checkpoint()
        self._failed = {k: f for k, f in self._failed.items() if f.failed_at >= before}
        owners: set[str] = set()
        for batch_id, batch in list(self._batches.items()):
            if batch.row.completed and batch.synced().updated_at < before:
                del self._batches[batch_id]
                owners.add(f"batch:{batch_id}")
        for chain_id, chain in list(self._chains.items()):
            row = chain.row
            if (row.completed or row.failed) and row.updated_at < before:
                del self._chains[chain_id]
                owners.add(f"chain:{chain_id}")
        self._callbacks = {k: o for k, o in self._callbacks.items() if o not in owners}
        for owner in owners:
            self._job_callbacks.pop(owner, None)
        self._uniques = {k: t for k, t in self._uniques.items() if t >= before}
        return len(owners)

    async def in_flight(self, limit: int) -> tuple[list[BatchState], list[ChainState]]:
        await trio.lowlevel.checkpoint()
        batches = [b.synced().state() for b in self._batches.values() if not b.row.completed]
        chains = [
            chain_state(c.row, c.nodes)
            for c in self._chains.values()
            if not (c.row.completed or c.row.failed)
        ]
        return batches[:limit], chains[:limit]

    def _batch(self, batch_id: str) -> MemoryBatch:
        try:
            return self._batches[batch_id]
        except KeyError:
            raise NotFound(f"no batch {batch_id!r} in this store (wrong id, or pruned)") from None
