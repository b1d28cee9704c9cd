"""Admission: the one path by which jobs, chains and batches enter the bus.

``admit`` checks every job against the bus (type, queue, payload, callbacks), waits for room,
stores the chain or batch (or claims the unique key), hands the in-process callbacks to the
coordinator, and puts the jobs on their queues. Refused: nothing is kept and the caller gets
a clear error. Accepted: the dispatch completes whatever happens to the caller meanwhile. A
queue that refuses the jobs leaves no chain or batch behind (it is failed or cancelled in the
store) and the dispatch fails with ``dispatch_failed``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta
from hashlib import sha1
from typing import Any

import trio

from ._batches import Batches, BatchLocal
from ._builders import BatchBuilder, ChainBuilder
from ._chains import ChainLocal, Chains, queued
from ._errors import BusError, DuplicateJob, UnknownJobType
from ._events import EventKind
from ._model import DispatchResult, Job, JobRecord, describe, encode_payload
from ._parts import Parts
from ._rules import BatchRecord, ChainRecord


def check_job(
    job: Job, job_types: Collection[str] | None, queues: Collection[str] | None, queue: str
) -> None:
    """Refuse what a bus with these job types and queues would refuse (also `FakeBus`)."""
    if job_types is not None and job.type not in job_types:
        raise UnknownJobType(
            f"no handler is registered for job type {job.type!r}; register one with "
            f"bus.register({job.type!r}, handler) or @handlers.handler({job.type!r}) "
            f"(registered: {sorted(job_types)})"
        )
    if queues is not None and queue not in queues:
        raise ValueError(
            f"job {job.type!r} is for queue {queue!r}, which this bus does not have; "
            f"open_bus(queues=...) has {list(queues)}"
        )
    encode_payload(job.type, job.payload)


class Admission:
    """Turns checked jobs into stored records and queued attempts."""

    def __init__(
        self,
        parts: Parts,
        handlers: Mapping[str, object],
        chains: Chains,
        batches: Batches,
        *,
        runs_callbacks: bool,
    ) -> None:
        self._parts = parts
        self._handlers = handlers
        self._chains = chains
        self._batches = batches
        self._runs_callbacks = runs_callbacks
        self.default_queue = next(iter(parts.queues))

    def record(self, job: Job, default_queue: str | None) -> JobRecord:
        """Check a job against this bus and freeze it into a `JobRecord`."""
        options = job.options
        queue = options.queue or default_queue or self.default_queue
        check_job(job, self._handlers, self._parts.queues, queue)
        return JobRecord(
            job_id=self._parts.ids(),
            job_type=job.type,
            payload=encode_payload(job.type, job.payload),
            queue=queue,
            delay=options.delay,
            timeout=options.timeout,
            retry=options.retry,
            backoff=options.backoff,
        )

    def _callback(self, callback: Any, default_queue: str | None) -> Any:
        """A `Job` callback checked now (as its record); a callable kept as it is."""
        if callback is None:
            return None
        if isinstance(callback, Job):
            return self.record(callback, default_queue)
        if not self._runs_callbacks:
            raise BusError(
                "this bus runs no jobs (workers=False), so it cannot run a callable callback; "
                "pass a Job callback (e.g. .then(Job('reports:publish'))) that any worker runs"
            )
        return callback

    async def admit(
        self, jobs: Sequence[Job], builder: ChainBuilder | BatchBuilder | None
    ) -> DispatchResult | str:
        """Admit one job (``builder`` None), a chain or a batch; return its ids."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parts, emitter = self._parts, self._parts.emitter
        dispatch_id = parts.ids()
        owner_id = None if builder is None else parts.ids()
        fields: dict[str, Any] = {"dispatch_id": dispatch_id}
        if isinstance(builder, ChainBuilder):
            fields["chain_id"] = owner_id
        elif isinstance(builder, BatchBuilder):
            fields["batch_id"] = owner_id
        default_queue = None if builder is None else builder.queue
        queue = (jobs[0].options.queue if builder is None else None) or default_queue
        queue = queue or self.default_queue
        started = trio.current_time()
        if emitter.active:
            single = {"job_type": jobs[0].type} if builder is None else {}
            emitter.emit(EventKind.DISPATCH_STARTED, queue=queue, **fields, **single)
        try:
            records = [self.record(job, default_queue) for job in jobs]
            local = self._local(builder, started)
            await parts.wait_room(1 if isinstance(builder, ChainBuilder) else len(records))
            if builder is None and jobs[0].options.unique_for is not None:
                # Claimed last, just before queueing: a dispatch cancelled earlier claims nothing.
                await self._claim_unique(records[0], jobs[0].options.unique_for)
            now = parts.clock()
            if isinstance(builder, ChainBuilder):
                assert owner_id is not None
                await parts.store.create_chain(
                    ChainRecord(owner_id, dispatch_id, queue, tuple(records), now)
                )
            elif isinstance(builder, BatchBuilder):
                assert owner_id is not None
                await parts.store.create_batch(
                    BatchRecord(
                        owner_id,
                        dispatch_id,
                        builder.batch_name,
                        queue,
                        builder.allows_failures,
                        tuple(records),
                        now,
                    )
                )
        except BaseException as exc:
            if emitter.active:
                emitter.emit(EventKind.DISPATCH_FAILED, queue=queue, error=exc, **fields)
            raise
        # Accepted: queue and report it, whatever happens to the caller meanwhile.
        with trio.CancelScope(shield=True):
            try:
                await self._queue(builder, owner_id, dispatch_id, records, local)
            except BaseException as exc:
                await self._undo(builder, owner_id, exc)
                if emitter.active:
                    emitter.emit(EventKind.DISPATCH_FAILED, queue=queue, error=exc, **fields)
                raise
            if emitter.active:
                if isinstance(builder, ChainBuilder):
                    emitter.emit(EventKind.CHAIN_STARTED, queue=queue, **fields)
                elif isinstance(builder, BatchBuilder):
                    emitter.emit(EventKind.BATCH_STARTED, queue=queue, **fields)
                else:
                    fields.update(job_id=records[0].job_id, job_type=jobs[0].type)
                emitter.emit(
                    EventKind.DISPATCH_SUCCEEDED,
                    queue=records[0].queue if builder is None else queue,
                    duration=trio.current_time() - started,
                    **fields,
                )
        await trio.lowlevel.cancel_shielded_checkpoint()
        if builder is None:
            return DispatchResult(dispatch_id, records[0].job_id, records[0].queue)
        assert owner_id is not None
        return owner_id

    def _local(
        self, builder: ChainBuilder | BatchBuilder | None, started: float
    ) -> ChainLocal | BatchLocal | None:
        q = None if builder is None else builder.queue
        cb: Callable[[Any], Any] = lambda c: self._callback(c, q)  # noqa: E731
        if isinstance(builder, ChainBuilder):
            catch, finally_ = cb(builder.catch_callback), cb(builder.finally_callback)
            if catch is None and finally_ is None:
                return None
            return ChainLocal(catch, finally_, started)
        if isinstance(builder, BatchBuilder):
            return BatchLocal(
                progress=cb(builder.progress_callback),
                then=cb(builder.then_callback),
                catch=cb(builder.catch_callback),
                finally_=cb(builder.finally_callback),
                allow_failures=builder.allows_failures,
                started_at=started,
            )
        return None

    async def _queue(
        self,
        builder: ChainBuilder | BatchBuilder | None,
        owner_id: str | None,
        dispatch_id: str,
        records: Sequence[JobRecord],
        local: ChainLocal | BatchLocal | None,
    ) -> None:
        parts = self._parts
        if isinstance(builder, ChainBuilder):
            assert owner_id is not None
            if isinstance(local, ChainLocal):
                self._chains.adopt(owner_id, local)
            first = records[0]
            await parts.put(
                (queued(first, dispatch_id, chain_id=owner_id, chain_index=0),), first.delay
            )
        elif isinstance(builder, BatchBuilder):
            assert owner_id is not None
            assert isinstance(local, BatchLocal)
            self._batches.adopt(owner_id, local)
            await parts.put_many(
                [(queued(job, dispatch_id, batch_id=owner_id), job.delay) for job in records]
            )
        else:
            record = records[0]
            await parts.put((queued(record, dispatch_id),), record.delay)

    async def _undo(
        self, builder: ChainBuilder | BatchBuilder | None, owner_id: str | None, exc: BaseException
    ) -> None:
        """The queue refused: no chain or batch stays recorded as running."""
        parts, now = self._parts, self._parts.clock()
        reason = f"dispatch failed: {describe(exc)}"
        if isinstance(builder, ChainBuilder):
            assert owner_id is not None
            self._chains.forget(owner_id)
            await parts.recorder.write(
                f"the failed dispatch of chain {owner_id}",
                parts.store.fail_chain,
                owner_id,
                reason,
                now,
            )
        elif isinstance(builder, BatchBuilder):
            assert owner_id is not None
            self._batches.forget(owner_id)
            await parts.recorder.write(
                f"the failed dispatch of batch {owner_id}",
                parts.store.abandon_batch,
                owner_id,
                now,
            )
            for queue in parts.queues.values():  # what an earlier group put is taken back
                parts.done(len(await queue.discard(owner_id)))

    async def _claim_unique(self, record: JobRecord, ttl: float) -> None:
        digest = sha1(record.payload.encode(), usedforsecurity=False).hexdigest()
        now = self._parts.clock()
        key = f"{record.job_type}:{digest}"
        if not await self._parts.store.claim_unique(key, now, now + timedelta(seconds=ttl)):
            raise DuplicateJob(
                f"job {record.job_type!r} with this payload was already dispatched in the last "
                f"{ttl:g}s (unique_for); this dispatch was refused"
            )
