"""Batch coordinators: one keyed actor per batch, the only writer of its batch.

Workers *tell* a batch's coordinator each job's final outcome (`Done`); the coordinator takes
every outcome waiting in its mailbox (`KeyedActors.take_pending`), records them in one store
write (retried until it commits), acknowledges their deliveries, then acts on the update:
cancels what is left (after a failure or `cancel_batch`), reports progress and runs the
callbacks, ``finally_`` last of all. Whether a batch is cancelled, its callbacks and its first
error live here and nowhere else; workers only read `cancelled_now`, and count a success
that changes nothing else themselves (`settle_now`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import attrs
import trio

from .._clock import clock_reading
from .._keyed import KeyedActors
from ._broker import Delivery
from ._callbacks import Callback, Owner, run_callback
from ._coordinators import Coordinators, Done
from ._errors import BusError, NotFound
from ._events import EventKind
from ._fences import fence_of
from ._memory_broker import MemoryQueue
from ._model import BatchState, JobRecord, QueuedJob
from ._parts import INSIDE, Parts
from ._rules import BatchUpdate, JobOutcome
from ._store import MemoryBatch

log = logging.getLogger("actors.bus")


@attrs.frozen
class Cancel:
    """`Bus.cancel_batch` -> the batch's coordinator (asked: it answers with the state)."""

    abandon: bool = False


_CANCEL: Final = Cancel()
#: The `Job` callbacks of at most this many batches built elsewhere are kept (`Batches`).
_FOREIGN_KEPT: Final = 1024
Message = Done | Cancel


@attrs.define(eq=False)
class BatchLocal:
    """What only the process that built a batch knows: callbacks, start time, first error."""

    progress: Callback | None = None
    then: Callback | None = None
    catch: Callback | None = None
    finally_: Callback | None = None
    allow_failures: bool = False
    started_at: float = 0.0
    has_jobs: bool = False
    r"""Some callbacks are `Job`\ s, stored with the batch."""
    first_error: BaseException | None = None
    finished: bool = False
    stored: dict[str, JobRecord] | None = None
    r"""The `Job` callbacks stored with the batch, once read (they never change)."""


class Batches(Coordinators[Message, BatchState | None, BatchLocal]):
    """The registry of batch coordinators (a supervisor child of the bus)."""

    kind = "batch"

    def __init__(self, parts: Parts, idle_timeout: float) -> None:
        super().__init__(parts, idle_timeout)
        #: Batches known cancelled here, whose waiting jobs were taken off this bus's queues.
        self._cancelled: set[str] = set()
        #: The task running each batch's coordinator turn now (a callback of the batch may
        #: cancel it from inside that turn).
        self._turn: dict[str, trio.lowlevel.Task] = {}
        #: Batches whose first failure is on its way to the coordinator (it will cancel them).
        self._stopping: set[str] = set()
        #: The `Job` callbacks of batches built elsewhere, as read (`_job_callbacks`).
        self._foreign: dict[str, dict[str, JobRecord]] = {}
        #: The store's entries of the batches whose successes a worker may count itself
        #: (`settle_now`, `counted_here`), by id (read by the memory worker's loop).
        self.quick: dict[str, MemoryBatch] = {}
        #: The bus's clock, if a `trio_clock`: a success counted here keeps a reading of it
        #: (`MemoryBatch.count_success`), its datetime made only if the batch is read.
        self._reading = clock_reading(parts.clock)

    def adopt(self, owner_id: str, local: BatchLocal) -> None:
        super().adopt(owner_id, local)
        memory = self._parts.memory
        if memory is not None and local.progress is None and not local.has_jobs:
            entry = memory.batch_now(owner_id)
            if entry is not None:
                self.quick[owner_id] = entry

    def forget(self, owner_id: str) -> None:
        super().forget(owner_id)
        self.quick.pop(owner_id, None)

    def cancelled_now(self, batch_id: str) -> bool | None:
        """Whether a worker must not start a job of the batch, if that is known without a
        store call: known cancelled here, or a plain `MemoryStore` (in this process, so
        nothing else can change it: a dict lookup answers). None: ask the store."""
        entry = self.quick.get(batch_id)
        if entry is not None:  # (not known cancelled here: the store's row says)
            return entry.row.cancelled
        if batch_id in self._cancelled or batch_id in self._stopping:
            return True
        memory = self._parts.memory
        return None if memory is None else memory.batch_cancelled_now(batch_id)

    def settle_now(self, delivery: Delivery) -> bool:
        """A worker's fast path (DESIGN rule 6) for a job that succeeded: count it in the
        store, acknowledge it and count it out, right where it finished, without a tell;
        False (nothing done) if the coordinator must see it.

        Only where no one could tell it from the coordinator doing it: a plain `MemoryStore`
        (a write that cannot fail or yield), the memory broker, no observer (no events to
        order), a batch built here with no `progress` callback (nothing runs per job), its
        coordinator idle (no outcome of this batch waits before this one), not cancelled, and
        this job not its last (the coordinator ends the batch and runs its callbacks). What
        the coordinator would then do is exactly this: one outcome recorded, nothing to act on
        (`_settle` returns at once), the delivery acknowledged, the job counted out.

        The batches that may (``quick``: built here with no `progress` or `Job` callback,
        on a plain `MemoryStore`, not known cancelled or stopping) are known at adoption.
        """
        job = delivery.job
        entry = self.quick.get(job.batch_id)  # type: ignore[arg-type]
        if entry is None or job.lane is not None:
            return False
        queue = self._parts.queues[job.queue]
        if type(queue) is not MemoryQueue or not self.counted_here(entry, job):
            return False
        queue.ack_now(delivery)
        self._parts.done(1)  # a job of a batch built here (``local``): this bus's own
        return True

    def counted_here(self, entry: MemoryBatch, job: QueuedJob) -> bool:
        """`settle_now` for the memory worker's inline batch job (`_memory_worker`), whose
        entry (from ``quick``), queue (a `MemoryQueue`) and lane (none) it has checked: the
        success counted in ``entry``; the caller acknowledges it and counts it out. False
        (nothing done) if the coordinator must see it."""
        registry, reading = self._registry, self._reading
        if (
            registry is None
            or self._parts.emitter.active
            or not registry.is_idle(job.batch_id)  # type: ignore[arg-type]
            or not entry.count_success(
                job.job_id, None if reading is not None else self._parts.clock(), reading
            )
        ):
            return False
        self.handled_inline += 1
        return True

    async def tell(self, done: Done) -> None:
        """Hand the coordinator a job's outcome. A failure that will cancel the batch stops
        this process's workers from starting its jobs at once, before the write is done."""
        batch_id = done.job.batch_id
        assert batch_id is not None
        if done.outcome == "failed":
            local = self._local.get(batch_id)
            if local is not None and not local.allow_failures:
                self._stopping.add(batch_id)
                self.quick.pop(batch_id, None)
        await self._keyed.tell(batch_id, done)

    async def cancel(self, batch_id: str, *, abandon: bool = False) -> BatchState:
        """Have the coordinator cancel the batch; from the batch's own callback, do it here."""
        message = Cancel(abandon) if abandon else _CANCEL
        if self._turn.get(batch_id) is trio.lowlevel.current_task():
            return await self._cancel(batch_id, message)
        self._parts.add(1)  # the bus is not idle while a cancel is under way
        try:
            state = await self._keyed.ask(batch_id, message)
        finally:
            self._parts.done(1)
        assert state is not None  # a cancel always answers with the state
        return state

    # ---------------------------------------------------------------- the coordinator

    async def _handle(self, batch_id: str, message: Message) -> BatchState | None:
        # Reset after: with an older core an ask may run this in the asker's task.
        inside = INSIDE.set(True)
        self._turn[batch_id] = trio.lowlevel.current_task()
        try:
            if isinstance(message, Cancel):
                return await self._cancel(batch_id, message)
            return await self._record(batch_id, message)
        finally:
            del self._turn[batch_id]
            INSIDE.reset(inside)

    async def _cancel(self, batch_id: str, message: Cancel) -> BatchState:
        store, now = self._parts.store, self._parts.clock()
        if message.abandon:
            update = await store.abandon_batch(batch_id, now)
        else:
            update = await store.cancel_batch(batch_id, now)
        return await self._settle(batch_id, update, ())

    async def _record(self, batch_id: str, first: Done) -> BatchState | None:
        keyed, parts = self._keyed, self._parts
        local = self._local.get(batch_id)
        # Progress is tracked for whoever reads it: observers, a progress callback (a
        # callable here, or a `Job` stored with the batch, which any process runs).
        progress = (
            parts.emitter.active
            or (local is not None and local.progress is not None)
            or "progress" in await self._job_callbacks(batch_id, local)
        )
        messages: list[Done] = [first]
        while True:
            taken = _take(keyed, batch_id)
            if taken:
                messages.extend(taken)
                self.handled_taken += len(taken)
            try:
                outcomes = [
                    JobOutcome(m.job.job_id, m.outcome, fence_of(m.delivery)) for m in messages
                ]
                memory = parts.memory
                if memory is not None:
                    try:
                        update: BatchUpdate | None = memory.record_batch_now(
                            batch_id, outcomes, parts.clock(), progress=progress
                        )
                    except NotFound as exc:
                        log.error("bus: cannot record outcomes of %s: %s", batch_id, exc)
                        update = None
                else:
                    update = await parts.recorder.write(
                        f"{len(messages)} job outcome(s) of batch {batch_id}",
                        parts.store.record_batch,
                        batch_id,
                        outcomes,
                        parts.clock(),
                        progress=progress,
                    )
                if update is None:  # the batch is gone from the store (logged): drop these
                    for m in messages:
                        await parts.ack(m.delivery)
                    return None
                over = update.state.completed and not update.finished_now
                if over and any(m.delivery.delivery > 1 for m in messages):
                    await self._recover(batch_id, update.state)
                # Acknowledged once what the outcomes set off is done (the next callbacks
                # claimed, `Job` callbacks queued): a crash before redelivers them.
                state = await self._settle(batch_id, update, messages)
                for m in messages:
                    await parts.ack(m.delivery)
            finally:
                parts.finished([m.job for m in messages], in_hand=True)
            if state.completed:
                return state
            # Linger one scheduling round: outcomes reported meanwhile join this write.
            await trio.lowlevel.checkpoint()
            messages = _take(keyed, batch_id)
            if not messages:
                return state
            self.handled_taken += len(messages)

    async def _recover(self, batch_id: str, state: BatchState) -> None:
        """A redelivered outcome of a batch that is over: the process that finished it may
        have died before it queued the `Job` callbacks, so queue the due ones again."""
        stored = await self._stored(batch_id)
        owner = Owner("batch", batch_id, state.dispatch_id, state.queue)
        error = BusError(f"{state.failed} job(s) of batch {batch_id} failed")
        due = {
            "then": not state.failed and state.processed == state.total,
            "catch": bool(state.failed),
            "finally": True,
        }
        for name, record in stored.items():
            if due.get(name):
                args = (state, error) if name == "catch" else (state,)
                await run_callback(
                    self._parts,
                    owner,
                    name,
                    record,
                    args,
                    error=error if name == "catch" else None,
                    recovering=True,
                )

    async def _discard(self, batch_id: str) -> list[QueuedJob]:
        removed: list[QueuedJob] = []
        for queue in self._parts.queues.values():
            removed.extend(await queue.discard(batch_id))
        return removed

    async def _settle(
        self, batch_id: str, update: BatchUpdate, messages: Sequence[Done]
    ) -> BatchState:
        """Act on an update: cancel what is left, report progress, run the callbacks."""
        parts = self._parts
        emitter = parts.emitter
        local = self._local.get(batch_id)
        state, finished = update.state, update.finished_now
        if not (update.progressed or finished or state.cancelled or update.first_failure):
            return state  # nothing to act on: no cancel, no event, no callback
        first_error: BaseException | None = None
        if update.first_failure is not None:
            first_error = next(
                (m.error for m in messages if m.job.job_id == update.first_failure), None
            ) or BusError(f"batch job {update.first_failure} failed")
            if local is not None:
                local.first_error = first_error
        if state.cancelled and batch_id not in self._cancelled:
            self._cancelled.add(batch_id)
            self.quick.pop(batch_id, None)
            removed = await self._discard(batch_id)
            if removed:
                try:
                    more = await parts.recorder.write(
                        f"the cancelled jobs of batch {batch_id}",
                        parts.store.record_batch,
                        batch_id,
                        [JobOutcome(job.job_id, "cancelled") for job in removed],
                        parts.clock(),
                    )
                finally:
                    parts.finished(removed)
                if more is not None:
                    state, finished = more.state, finished or more.finished_now
        owner = Owner("batch", batch_id, state.dispatch_id, state.queue)
        common: dict[str, Any] = {
            "dispatch_id": state.dispatch_id,
            "batch_id": batch_id,
            "queue": state.queue,
        }
        by_id = {m.job.job_id: m for m in messages}
        callbacks = await self._callbacks(batch_id, local, update, first_error, finished)
        progress, catch = callbacks.get("progress"), callbacks.get("catch")
        over = local is not None and local.finished
        for step, job_id in zip(update.progressed, update.progressed_jobs, strict=False):
            if emitter.active:
                done = by_id.get(job_id)
                emitter.emit(
                    EventKind.BATCH_PROGRESSED,
                    **common,
                    **({} if done is None else _job_fields(done)),
                )
            if progress is not None and not (over or (local is not None and local.finished)):
                await run_callback(
                    parts, owner, "progress", progress, (step,), claim=f"progress:{job_id}"
                )
        if first_error is not None and catch is not None and not (local and local.finished):
            await run_callback(
                parts, owner, "catch", catch, (state, first_error), error=first_error
            )
        if finished:
            await self._finish(batch_id, state, local, common, callbacks)
        return state

    async def _callbacks(
        self,
        batch_id: str,
        local: BatchLocal | None,
        update: BatchUpdate,
        first_error: BaseException | None,
        finished: bool,
    ) -> dict[str, Callback]:
        """The callbacks this update may run: this process's callables, and the `Job`
        callbacks stored with the batch (read only when there may be some)."""
        found: dict[str, Callback] = {}
        if local is not None:
            for name in ("progress", "then", "catch", "finally"):
                fn = getattr(local, "finally_" if name == "finally" else name)
                if fn is not None:
                    found[name] = fn
        if (local is None or local.has_jobs) and (
            update.progressed or first_error is not None or finished
        ):
            for name, record in (await self._job_callbacks(batch_id, local)).items():
                found.setdefault(name, record)
        return found

    async def _job_callbacks(self, batch_id: str, local: BatchLocal | None) -> dict[str, JobRecord]:
        r"""The `Job` callbacks stored with the batch, read once per batch (they never
        change): kept in its `BatchLocal`, or for a batch built elsewhere in ``_foreign``."""
        if local is not None:
            if not local.has_jobs:
                return {}
            if local.stored is None:
                local.stored = await self._stored(batch_id)
            return local.stored
        stored = self._foreign.get(batch_id)
        if stored is None:
            stored = await self._stored(batch_id)
            if len(self._foreign) >= _FOREIGN_KEPT:  # the oldest goes (read again if needed)
                del self._foreign[next(iter(self._foreign))]
            self._foreign[batch_id] = stored
        return stored

    async def _stored(self, batch_id: str) -> dict[str, JobRecord]:
        return await self._parts.recorder.read(
            f"the Job callbacks of batch {batch_id}",
            self._parts.store.job_callbacks,
            f"batch:{batch_id}",
        )

    async def _finish(
        self,
        batch_id: str,
        state: BatchState,
        local: BatchLocal | None,
        common: dict[str, Any],
        callbacks: dict[str, Callback],
    ) -> None:
        parts = self._parts
        succeeded = state.failed == 0 and state.processed == state.total
        if local is not None:
            local.finished = True  # no progress or catch after this, even from an outer turn
        if parts.emitter.active:
            if state.failed:
                kind = EventKind.BATCH_FAILED
            elif succeeded:
                kind = EventKind.BATCH_COMPLETED
            else:
                kind = EventKind.BATCH_CANCELLED
            parts.emitter.emit(
                kind,
                duration=None if local is None else trio.current_time() - local.started_at,
                error=None if local is None or not state.failed else local.first_error,
                **common,
            )
        self._local.pop(batch_id, None)
        self.quick.pop(batch_id, None)
        self._foreign.pop(batch_id, None)
        self._cancelled.discard(batch_id)
        self._stopping.discard(batch_id)
        owner = Owner("batch", batch_id, state.dispatch_id, state.queue)
        then, finally_ = callbacks.get("then"), callbacks.get("finally")
        if then is not None and succeeded:
            await run_callback(parts, owner, "then", then, (state,))
        if finally_ is not None:
            await run_callback(parts, owner, "finally", finally_, (state,))


def _is_done(message: Message) -> bool:
    return message.__class__ is Done


def _take(keyed: KeyedActors[Message, BatchState | None], batch_id: str) -> list[Done]:
    """The outcomes waiting in the batch's mailbox (up to the first ask, a cancel)."""
    return keyed.take_pending(batch_id, _is_done)  # type: ignore[return-value]


def _job_fields(done: Done) -> dict[str, Any]:
    job = done.job
    return {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "attempt": job.attempt,
        "error": done.error if done.outcome == "failed" else None,
    }
