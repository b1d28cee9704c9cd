"""Admission: the one path by which jobs, chains and batches enter the bus.

``admit`` checks every job against the bus (type, queue, payload, callbacks), waits for room,
stores the chain or batch (or claims the unique key), hands the in-process callbacks to the
coordinator, and puts the jobs on their queues. Refused: nothing is kept and the caller gets
a clear error. Accepted: the dispatch completes whatever happens to the caller meanwhile. A
queue that refuses the jobs leaves no chain or batch behind (it is failed or cancelled in the
store) and the dispatch fails with ``dispatch_failed``.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Mapping, Sequence
from datetime import timedelta
from hashlib import sha1
from typing import Any

import trio

from ._batch_admission import admit_batch
from ._batches import Batches, BatchLocal
from ._builders import BatchBuilder, ChainBuilder
from ._chains import ChainLocal, Chains, queued
from ._errors import BusError, DuplicateJob
from ._events import EventKind
from ._job_checks import check_all as check_all
from ._job_checks import check_job as check_job
from ._job_checks import check_many as check_many
from ._memory_broker import queued as queued_job
from ._model import DispatchResult, Job, JobRecord, QueuedJob, describe
from ._parts import Parts
from ._rules import ChainRecord

#: What this process keeps of a chain without callbacks when nothing times it (no observer):
#: one value for them all (a `ChainLocal` is only read).
_NO_CALLBACKS = ChainLocal(None, None, 0.0)


def _fields(job: QueuedJob) -> dict[str, Any]:
    return {"dispatch_id": job.dispatch_id, "job_type": job.job_type, "queue": job.queue}


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
        return self.records((job,), default_queue)[0]

    def records(self, jobs: Iterable[Job], default_queue: str | None) -> tuple[JobRecord, ...]:
        """`record` for each job of a chain or batch, in order (one loop: a chain's or
        batch's every job passes here)."""
        handlers, queues, ids = self._handlers, self._parts.queues, self._parts.ids.next
        fallback = default_queue or self.default_queue
        out = []
        last, payload, queue = None, "", ""
        for job in jobs:
            options = job.options
            if job is not last:  # (``bus.chain(*[job] * 3)``: checked once)
                last, queue = job, options.queue or fallback
                payload = check_job(job, handlers, queues, queue)
            out.append(
                JobRecord(
                    ids(),
                    job.type,
                    payload,
                    queue,
                    options.delay,
                    options.timeout,
                    options.retry,
                    options.backoff,
                    options.lane,
                )
            )
        return tuple(out)

    def _attempts(
        self, jobs: Sequence[Job], default_queue: str | None, dispatch_id: str, chain_id: str
    ) -> tuple[tuple[QueuedJob, ...], tuple[float, ...]]:
        """`records` of a chain's jobs as their first attempts and their delays (the same
        checks in the same order, the same ids), for `MemoryStore.start_queued_chain_now`:
        no `JobRecord` built, and none per step."""
        handlers, queues, ids = self._handlers, self._parts.queues, self._parts.ids.next
        fallback = default_queue or self.default_queue
        out, delays = [], []
        last, payload, queue = None, "", ""
        for index, job in enumerate(jobs):
            options = job.options
            if job is not last:
                last, queue = job, options.queue or fallback
                payload = check_job(job, handlers, queues, queue)
            out.append(
                QueuedJob(
                    ids(),
                    dispatch_id,
                    job.type,
                    payload,
                    queue,
                    options.timeout,
                    options.retry,
                    options.backoff,
                    1,  # attempt
                    chain_id,
                    index,
                    None,  # batch_id
                    None,  # callback_of
                    None,  # error
                    options.lane,
                )
            )
            delays.append(options.delay)
        return tuple(out), tuple(delays)

    def _callbacks(
        self, named: Sequence[tuple[str, Any]], default_queue: str | None
    ) -> tuple[dict[str, Any], tuple[tuple[str, JobRecord], ...]]:
        """The callables (kept in this process) and the checked `Job` callbacks (stored with
        the chain or batch, so any process runs them)."""
        callables: dict[str, Any] = {}
        jobs: list[tuple[str, JobRecord]] = []
        for name, callback in named:
            if isinstance(callback, Job):
                jobs.append((name, self.record(callback, default_queue)))
            elif callback is not None:
                self._check_callable()
                callables[name] = callback
        return callables, tuple(jobs)

    def _check_callable(self) -> None:
        if not self._runs_callbacks:
            raise BusError(
                "this bus runs no jobs (workers=False), so it cannot run a callable callback; "
                "pass a Job callback (e.g. .then(Job('reports:publish'))) that any worker runs"
            )

    def admit(
        self, jobs: Sequence[Job], builder: ChainBuilder | BatchBuilder | None
    ) -> Coroutine[Any, Any, DispatchResult | str]:
        """Admit one job (``builder`` None), a chain or a batch: await it for its ids.

        A plain function handing back the coroutine of the path it picks: one frame less at
        every resumption of a dispatch."""
        if builder is None:
            return self.admit_job(jobs[0])
        if isinstance(builder, ChainBuilder):
            return self._admit_chain(jobs, builder)
        return self._admit_batch(jobs, builder)

    async def _admit_chain(self, jobs: Sequence[Job], builder: ChainBuilder) -> str:
        """`admit` for a chain: stored first, then its first job queued.

        On a plain `MemoryStore` and the memory broker, nothing from the checks to the return
        yields (so no shield): the chain is stored and its first job queued at once, as the
        other stores and brokers do across their awaits, and the dispatch has one scheduling
        point at its end, as a plain job's (DESIGN rule 6: the same events, store contents
        and outcome either way).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        parts, emitter = self._parts, self._parts.emitter
        ids = parts.ids.next
        dispatch_id, chain_id = ids(), ids()
        queue = builder.queue or self.default_queue
        fields: dict[str, Any] = {}
        started = 0.0  # read only for the events' durations
        if emitter.active:
            started = trio.current_time()
            fields = {"dispatch_id": dispatch_id, "chain_id": chain_id, "queue": queue}
            emitter.emit(EventKind.DISPATCH_STARTED, **fields)
        memory = parts.memory
        # On the memory store and broker, the chain is kept as its jobs' first attempts.
        first_queue = jobs[0].options.queue or queue
        at_once = memory is not None and parts.puts_now(first_queue)
        try:
            if at_once:
                records: tuple[JobRecord, ...] = ()
                attempts, delays = self._attempts(jobs, builder.queue, dispatch_id, chain_id)
            else:
                records = self.records(jobs, builder.queue)
            if started or builder.catch_callback is not None or builder.finally_callback:
                local, callbacks = self._local(builder, started)
            else:  # (`_local`'s answer, without its call)
                local, callbacks = _NO_CALLBACKS, ()
            if parts.jobs >= parts.max_pending:  # (else there is room: no call to wait)
                await parts.wait_room(1)
            if memory is not None and at_once:
                memory.start_queued_chain_now(
                    chain_id, dispatch_id, queue, attempts, delays, parts.clock(), callbacks
                )
            else:
                await parts.store.create_chain(
                    ChainRecord(chain_id, dispatch_id, queue, records, parts.clock(), callbacks)
                )
        except BaseException as exc:
            if emitter.active:
                emitter.emit(EventKind.DISPATCH_FAILED, error=exc, **fields)
            raise
        # Stored: queue and report it, whatever happens to the caller meanwhile (a stored
        # chain whose first job never reaches a queue would never end).
        try:
            if at_once:
                assert isinstance(local, ChainLocal)
                self._chains.adopt(chain_id, local)
                parts.put_one_now(attempts[0], delays[0])
            else:
                with trio.CancelScope(shield=True):
                    await self._queue(builder, chain_id, dispatch_id, records, local)
        except BaseException as exc:
            await self._undo(builder, chain_id, exc, fields)
            raise
        if emitter.active:
            self._report(EventKind.CHAIN_STARTED, fields, started)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return chain_id

    def _admit_batch(self, jobs: Sequence[Job], builder: BatchBuilder) -> Coroutine[Any, Any, str]:
        """`admit` for a batch (`actors.bus._batch_admission`; the coroutine handed back,
        as `admit` does: no frame of its own)."""
        return admit_batch(self, jobs, builder)

    def _report(self, kind: EventKind, fields: dict[str, Any], started: float) -> None:
        """A chain or batch is stored and queued: it started, and its dispatch succeeded."""
        emitter = self._parts.emitter
        emitter.emit(kind, **fields)
        duration = trio.current_time() - started
        emitter.emit(EventKind.DISPATCH_SUCCEEDED, duration=duration, **fields)

    def _queued(self, job: Job, dispatch_id: str, queue: str) -> QueuedJob:
        """A plain job checked against this bus, as its first attempt."""
        options, parts = job.options, self._parts
        if job.payload is None and job.type in self._handlers and queue in parts.queues:
            payload = "null"  # what `check_job` would find, without its call
        else:
            payload = check_job(job, self._handlers, parts.queues, queue)
        return QueuedJob(
            parts.ids.next(),
            dispatch_id,
            job.type,
            payload,
            queue,
            options.timeout,
            options.retry,
            options.backoff,
            lane=options.lane,
        )

    def admit_now(self, job: Job) -> DispatchResult | None:
        """`admit_job` between its first checkpoint and its last, when nothing there can
        yield or be seen (no observer, no ``unique_for``, room, a memory queue); else None,
        having done nothing. Refused, it raises as `admit_job` does (the same ids drawn)."""
        parts, options = self._parts, job.options
        queue = options.queue or self.default_queue
        put = parts.plain_now.get(queue)  # (`Parts.puts_now` and `put_one_now`, inlined)
        if (
            put is None
            or parts.emitter.active
            or options.unique_for is not None
            or parts.jobs >= parts.max_pending
        ):
            return None
        ids = parts.ids.next
        dispatch_id = ids()
        job_type = job.type
        if job.payload is None and job_type in self._handlers:  # (`_queued`, inlined)
            payload = "null"  # what `check_job` would find, without its call
        else:
            payload = check_job(job, self._handlers, parts.queues, queue)
        result = DispatchResult(dispatch_id, ids(), queue)
        if parts.counts_jobs:
            parts.jobs += 1
        if options.delay > 0 or options.lane is not None:
            parts.one_now[queue](queued_job((result, job, payload)), options.delay)
        else:
            put((result, job, payload))  # a `Plain`: its `QueuedJob` is made if needed
        return result

    async def admit_job(self, job: Job) -> DispatchResult:
        """`admit` for one plain job: no store record, one `QueuedJob` built, and on the
        memory broker no yield (so no shield) between acceptance and return."""
        await trio.lowlevel.checkpoint_if_cancelled()
        parts, emitter = self._parts, self._parts.emitter
        dispatch_id = parts.ids()
        options = job.options
        queue = options.queue or self.default_queue
        if emitter.active:
            started = trio.current_time()
            fields: dict[str, Any] = {
                "dispatch_id": dispatch_id,
                "job_type": job.type,
                "queue": queue,
            }
            emitter.emit(EventKind.DISPATCH_STARTED, **fields)
        try:
            queued = self._queued(job, dispatch_id, queue)
            if parts.jobs >= parts.max_pending:  # `wait_room`'s own test, without its await
                await parts.wait_room(1)
            if options.unique_for is not None:
                # Claimed last, just before queueing: a dispatch cancelled earlier claims nothing.
                await self._claim_unique(job.type, queued.payload, options.unique_for)
        except BaseException as exc:
            if emitter.active:
                emitter.emit(EventKind.DISPATCH_FAILED, error=exc, **fields)
            raise
        # Accepted: queue and report it, whatever happens to the caller meanwhile.
        if parts.puts_now(queue):
            parts.put_one_now(queued, options.delay)  # nothing here yields: no shield needed
        else:
            with trio.CancelScope(shield=True):
                try:
                    await parts.put((queued,), options.delay)
                except BaseException as exc:
                    if emitter.active:
                        emitter.emit(EventKind.DISPATCH_FAILED, error=exc, **fields)
                    raise
        if emitter.active:
            duration = trio.current_time() - started
            emitter.emit(
                EventKind.DISPATCH_SUCCEEDED, job_id=queued.job_id, duration=duration, **fields
            )
        await trio.lowlevel.cancel_shielded_checkpoint()
        return DispatchResult(dispatch_id, queued.job_id, queue)

    async def admit_many(self, jobs: Sequence[Job]) -> list[DispatchResult]:
        """Many plain jobs at once (`Bus.dispatch_many`): every job is checked before any is
        queued (one bad job refuses the call), then one put per queue (`BrokerQueue.put_many`).

        Each job gets its own dispatch id and the events a `dispatch` of it would emit.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        parts, emitter = self._parts, self._parts.emitter
        default = self.default_queue
        queued = check_all(
            jobs, lambda job: self._queued(job, parts.ids(), job.options.queue or default)
        )
        started = trio.current_time()
        if emitter.active:
            for job in queued:
                emitter.emit(EventKind.DISPATCH_STARTED, **_fields(job))
        try:
            await parts.wait_room(len(queued))
        except BaseException as exc:
            if emitter.active:
                for job in queued:
                    emitter.emit(EventKind.DISPATCH_FAILED, error=exc, **_fields(job))
            raise
        items = [(job, one.options.delay) for job, one in zip(queued, jobs, strict=True)]
        if all(parts.puts_now(name) for name in {job.queue for job in queued}):
            parts.put_many_now(items)  # nothing here yields: no shield needed
        else:
            with trio.CancelScope(shield=True):
                try:
                    await parts.put_many(items)
                except BaseException as exc:
                    if emitter.active:
                        for job in queued:
                            emitter.emit(EventKind.DISPATCH_FAILED, error=exc, **_fields(job))
                    raise
        if emitter.active:
            duration = trio.current_time() - started
            for job in queued:
                emitter.emit(
                    EventKind.DISPATCH_SUCCEEDED,
                    job_id=job.job_id,
                    duration=duration,
                    **_fields(job),
                )
        await trio.lowlevel.cancel_shielded_checkpoint()
        return [DispatchResult(job.dispatch_id, job.job_id, job.queue) for job in queued]

    def _local(
        self, builder: ChainBuilder | BatchBuilder, started: float
    ) -> tuple[ChainLocal | BatchLocal, tuple[tuple[str, JobRecord], ...]]:
        """What this process keeps (callables, timing) and the `Job` callbacks to store."""
        if isinstance(builder, ChainBuilder):
            if builder.catch_callback is None and builder.finally_callback is None:
                return (_NO_CALLBACKS if not started else ChainLocal(None, None, started)), ()
            fns, jobs = self._callbacks(
                [("catch", builder.catch_callback), ("finally", builder.finally_callback)],
                builder.queue,
            )
            return ChainLocal(fns.get("catch"), fns.get("finally"), started, bool(jobs)), jobs
        fns, jobs = self._callbacks(
            [
                ("progress", builder.progress_callback),
                ("then", builder.then_callback),
                ("catch", builder.catch_callback),
                ("finally", builder.finally_callback),
            ],
            builder.queue,
        )
        local = BatchLocal(
            progress=fns.get("progress"),
            then=fns.get("then"),
            catch=fns.get("catch"),
            finally_=fns.get("finally"),
            allow_failures=builder.allows_failures,
            started_at=started,
            has_jobs=bool(jobs),
        )
        return local, jobs

    async def _queue(
        self,
        builder: ChainBuilder,
        chain_id: str,
        dispatch_id: str,
        records: Sequence[JobRecord],
        local: ChainLocal | BatchLocal,
    ) -> None:
        """A stored chain's first job queued, the awaited way (batches: `_batch_admission`)."""
        assert isinstance(local, ChainLocal)
        self._chains.adopt(chain_id, local)
        first = records[0]
        await self._parts.put(
            (queued(first, dispatch_id, chain_id=chain_id, chain_index=0),), first.delay
        )

    async def _undo(
        self,
        builder: ChainBuilder | BatchBuilder,
        owner_id: str,
        exc: BaseException,
        fields: dict[str, Any],
    ) -> None:
        """The queue refused a stored chain's or batch's jobs: none stays recorded as running
        (shielded: this must finish whatever happens to the caller), and the dispatch is
        reported failed."""
        with trio.CancelScope(shield=True):
            await self._take_back(builder, owner_id, exc)
        if self._parts.emitter.active:
            self._parts.emitter.emit(EventKind.DISPATCH_FAILED, error=exc, **fields)

    async def _take_back(
        self, builder: ChainBuilder | BatchBuilder, owner_id: str, exc: BaseException
    ) -> None:
        parts, now = self._parts, self._parts.clock()
        reason = f"dispatch failed: {describe(exc)}"
        if isinstance(builder, ChainBuilder):
            self._chains.forget(owner_id)
            await parts.recorder.write(
                f"the failed dispatch of chain {owner_id}",
                parts.store.fail_chain,
                owner_id,
                reason,
                now,
            )
        else:
            self._batches.forget(owner_id)
            await parts.recorder.write(
                f"the failed dispatch of batch {owner_id}",
                parts.store.abandon_batch,
                owner_id,
                now,
            )
            for queue in parts.queues.values():  # what an earlier group put is taken back
                parts.finished(await queue.discard(owner_id))

    async def _claim_unique(self, job_type: str, payload: str, ttl: float) -> None:
        digest = sha1(payload.encode(), usedforsecurity=False).hexdigest()
        now = self._parts.clock()
        key = f"{job_type}:{digest}"
        if not await self._parts.store.claim_unique(key, now, now + timedelta(seconds=ttl)):
            raise DuplicateJob(
                f"job {job_type!r} with this payload was already dispatched in the last "
                f"{ttl:g}s (unique_for); this dispatch was refused"
            )
