"""The Bus: queue workers run jobs; one coordinator actor per chain and per batch.

How the pieces talk (every arrow is a message, nothing is shared but the store):

* ``dispatch`` checks the job, stores the chain or batch (if any) and puts the job on its
  `Queue`. Delays, retries and releases are the queue's delayed jobs, on Trio's clock.
* A queue's workers (``workers`` tasks per queue, children of the bus's supervisor) take a
  job, run it through the middleware and the handler, retry it when it fails, and report its
  final outcome: a plain job is done; a batch's job is *told* to the batch's coordinator. A
  chain's job is told too when the store does I/O; on the `MemoryStore` the worker *asks*
  instead, and since a chain's coordinator is idle between its jobs, the keyed core runs it
  inline in the worker (no task spawned per step).
* Coordinators are keyed actors (`actors.open_keyed`) keyed by ``"c:<chain id>"`` and
  ``"b:<batch id>"``: spawned by the first message, reaped when idle. Only a coordinator
  changes its chain's or batch's state, one message at a time, so there is one writer and no
  lock. A batch coordinator takes every outcome already waiting in its mailbox and records
  them in one store transaction. It advances the chain, counts the batch, cancels what is
  left, and runs the callbacks; all of its state is in the store, so a reaped coordinator
  picks up where it was.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from hashlib import sha1
from typing import Any, Final, TypeVar

import attrs
import trio

import supervisors

from .._checks import check_async_fn, check_duration, check_positive_int
from .._clock import trio_clock
from .._keyed import KeyedActors, KeyedStats, open_keyed
from .._keys import check_key
from ._builders import BatchBuilder, ChainBuilder, check_jobs
from ._errors import BusClosed, BusError, DuplicateJob, NotFound, Release, UnknownJobType
from ._events import Event, EventKind
from ._middleware import CallNext, Middleware, check_middleware
from ._model import (
    BatchState,
    ChainState,
    DispatchResult,
    Job,
    JobContext,
    JobRecord,
    QueuedJob,
    decode_payload,
    describe,
    encode_payload,
    id_source,
)
from ._queue import MemoryQueue, Queue, QueueStats
from ._store import BatchRecord, BatchUpdate, ChainRecord, JobOutcome, MemoryStore, Outcome, Store

log = logging.getLogger("actors.bus")

Handler = Callable[[JobContext], Awaitable[object]]
Observer = Callable[[Event], object]
H = TypeVar("H", bound=Handler)

#: True in the bus's own tasks (workers, coordinators): their dispatches never wait for room,
#: or a full bus could wait on itself.
_INSIDE: ContextVar[bool] = ContextVar("actors.bus.inside", default=False)

#: The coordinator key whose turn the current task holds, and that task (a callback that
#: calls `Bus.cancel_batch` on its own batch runs inside that turn).
_TURN: ContextVar[tuple[str, trio.lowlevel.Task] | None] = ContextVar(
    "actors.bus.turn", default=None
)

_PRIVATE: Final = object()


@attrs.frozen
class BusStats:
    """A snapshot of a bus."""

    outstanding: int
    """Accepted jobs not finished yet (running, queued, delayed or waiting to retry)."""
    queues: Mapping[str, QueueStats]
    """Each queue's ready and delayed jobs."""
    coordinators: KeyedStats
    """The chain and batch coordinators (keyed actors): live, busy, reaped, ..."""


class _Done:
    """Worker -> coordinator: a chain's or batch's job has its final outcome."""

    __slots__ = ("error", "job", "outcome")

    def __init__(self, job: QueuedJob, outcome: Outcome, error: BaseException | None) -> None:
        self.job = job
        self.outcome = outcome
        self.error = error


class _Cancel:
    """`Bus.cancel_batch` -> batch coordinator (asked, so it answers with the state)."""


_CANCEL: Final = _Cancel()
_Message = _Done | _Cancel


@attrs.define(eq=False)
class _BatchLocal:
    """What only this process knows about a batch it dispatched: callbacks, timing, errors."""

    builder: BatchBuilder
    started_at: float
    first_error: BaseException | None = None


@attrs.define(eq=False)
class _ChainLocal:
    builder: ChainBuilder
    started_at: float


def _wrap(mw: Middleware, call_next: CallNext) -> CallNext:
    async def step(ctx: JobContext) -> None:
        await mw(ctx, call_next)

    return step


class Bus:
    """A job bus; get one from ``async with actors.bus.open_bus(...) as bus``.

    ::

        bus.register("emails:send", send_email)
        await bus.dispatch(Job("emails:send", {"to": "a@b"}).retry(3).backoff(0.5))
        chain_id = await bus.chain(Job("reserve"), Job("charge")).catch(undo).dispatch()
        batch_id = await bus.batch(*jobs).progress(show).then(report).dispatch()
        await bus.wait_idle()

    Durability: the store keeps chain and batch *state*; the jobs themselves wait in the
    queues, and a `MemoryQueue` (the default) loses them if the process stops. A restarted
    bus does not re-queue the unfinished batches and chains it finds in its store (a durable
    queue is future work). Callbacks are recorded as claimed before they run: at most once
    (not at all, or cut short, if the process dies mid-callback), never twice. They run only
    in the process that built the chain or batch.
    """

    def __init__(
        self,
        token: object,
        *,
        store: Store,
        queues: dict[str, Queue],
        middleware: tuple[Middleware, ...],
        observers: tuple[Observer, ...],
        clock: Callable[[], datetime],
        max_pending: int,
        idle_timeout: float,
    ) -> None:
        if token is not _PRIVATE:
            raise TypeError("Bus has no public constructor; use `async with open_bus(...)`")
        self._store = store
        self._inline_chains = isinstance(store, MemoryStore)
        self._queues = queues
        self._default_queue = next(iter(queues))
        self._observers = observers
        self._clock = clock
        self._max_pending = max_pending
        self._idle_timeout = idle_timeout
        self._ids = id_source()
        self._handlers: dict[str, Handler] = {}
        self._call = self._compose(middleware)
        self._closed = False
        self._outstanding = 0
        #: Dispatches under way (checked open, not returned yet): `wait_idle` waits for them
        #: too, so no dispatch is accepted after the bus has gone idle and closed.
        self._admitting = 0
        self._idle = trio.lowlevel.ParkingLot()  # wait_idle() callers
        self._room = trio.lowlevel.ParkingLot()
        #: Batches whose jobs not started yet must not start (workers check it).
        self._cancelled: set[str] = set()
        #: Batches whose waiting jobs a coordinator has already taken off the queues.
        self._discarded: set[str] = set()
        self._batches: dict[str, _BatchLocal] = {}
        self._chains: dict[str, _ChainLocal] = {}
        self._coordinators: KeyedActors[_Message, BatchState | None] | None = None
        #: Each queue's synchronous ``put_nowait`` if it has one (`MemoryQueue` does): a
        #: dispatch then queues without yielding, so its events come before the job's.
        self._put_nowait = {name: _put_nowait(queue) for name, queue in queues.items()}

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._outstanding} outstanding"
        return f"<Bus queues={list(self._queues)} {state}>"

    # ------------------------------------------------------------------ registering

    def register(self, job_type: str, handler: Handler) -> None:
        """Run ``await handler(ctx)`` for jobs of ``job_type``; one handler per type."""
        self._check_open()
        check_key(job_type, "job type")
        check_async_fn(handler, "handler")
        if job_type in self._handlers:
            raise ValueError(f"job type {job_type!r} already has a handler; register it once")
        self._handlers[job_type] = handler

    def handler(self, job_type: str) -> Callable[[H], H]:
        """Decorator form of `register`::

        @bus.handler("emails:send")
        async def send(ctx: JobContext) -> None: ...
        """
        check_key(job_type, "job type")

        def decorate(fn: H) -> H:
            self.register(job_type, fn)
            return fn

        return decorate

    # ------------------------------------------------------------------ dispatching

    async def dispatch(self, job: Job) -> DispatchResult:
        """Check ``job`` and queue it; return its ids. Waits while the bus is full.

        Raises at once, and queues nothing, for: an unregistered type (`UnknownJobType`), an
        unknown queue (`ValueError`), a payload that is not JSON-serialisable (`TypeError`),
        a repeat within ``unique_for`` (`DuplicateJob`). Cancelled while it waits for room,
        it queues (and claims) nothing; once the job is accepted the dispatch completes, and
        the cancellation takes effect at the caller's next checkpoint.
        """
        self._check_open()
        if not isinstance(job, Job):
            raise TypeError(f"dispatch() takes an actors.bus.Job, got {type(job).__name__}")
        self._admitting += 1
        try:
            return await self._dispatch(job)
        finally:
            self._admitted()

    async def _dispatch(self, job: Job) -> DispatchResult:
        await trio.lowlevel.checkpoint_if_cancelled()
        dispatch_id = self._ids()
        observed = bool(self._observers)
        queue = job.options.queue or self._default_queue
        if observed:
            started = trio.current_time()
            await self._emit(
                EventKind.DISPATCH_STARTED, dispatch_id=dispatch_id, job_type=job.type, queue=queue
            )
        try:
            record = self._record(job, None)
            if self._outstanding >= self._max_pending:
                await self._wait_room(1)
            if job.options.unique_for is not None:
                # Claimed last, just before queueing: a dispatch cancelled earlier claims nothing.
                await self._claim_unique(record, job.options.unique_for)
        except BaseException as exc:
            if observed:
                await self._emit(
                    EventKind.DISPATCH_FAILED,
                    dispatch_id=dispatch_id,
                    job_type=job.type,
                    queue=queue,
                    error=exc,
                )
            raise
        # Accepted: queue it and report it, whatever happens to the caller meanwhile.
        if not observed and self._put_nowait[record.queue] is not None:
            # Nothing below can checkpoint, so nothing can cancel it: no shield needed (a shield
            # scope is a third of a plain dispatch's cost).
            await self._enqueue(self._queued(record, dispatch_id), record.delay)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return DispatchResult(dispatch_id=dispatch_id, job_id=record.job_id, queue=record.queue)
        with trio.CancelScope(shield=True):
            await self._enqueue(self._queued(record, dispatch_id), record.delay)
            if observed:
                await self._emit(
                    EventKind.DISPATCH_SUCCEEDED,
                    dispatch_id=dispatch_id,
                    job_id=record.job_id,
                    job_type=job.type,
                    queue=record.queue,
                    duration=trio.current_time() - started,
                )
            await trio.lowlevel.cancel_shielded_checkpoint()
        return DispatchResult(dispatch_id=dispatch_id, job_id=record.job_id, queue=record.queue)

    def chain(self, *jobs: Job) -> ChainBuilder:
        """A chain of ``jobs`` to configure and ``await ....dispatch()``."""
        self._check_open()
        return ChainBuilder(self, check_jobs(jobs, "chain"))

    def batch(self, *jobs: Job) -> BatchBuilder:
        """A batch of ``jobs`` to configure and ``await ....dispatch()``."""
        self._check_open()
        return BatchBuilder(self, check_jobs(jobs, "batch"))

    async def _submit_chain(self, chain: ChainBuilder) -> str:
        self._check_open()
        self._admitting += 1
        try:
            return await self._dispatch_chain(chain)
        finally:
            self._admitted()

    async def _dispatch_chain(self, chain: ChainBuilder) -> str:
        await trio.lowlevel.checkpoint_if_cancelled()
        chain_id, dispatch_id = self._ids(), self._ids()
        ids: dict[str, Any] = {"dispatch_id": dispatch_id, "chain_id": chain_id}
        started = trio.current_time()
        queue = chain.queue or self._default_queue
        if self._observers:
            await self._emit(EventKind.DISPATCH_STARTED, queue=queue, **ids)
        try:
            nodes = tuple(self._record(job, chain.queue) for job in chain.jobs)
            await self._wait_room(1)
            await self._store.create_chain(
                ChainRecord(chain_id, dispatch_id, queue, nodes, self._clock())
            )
        except BaseException as exc:
            if self._observers:
                await self._emit(EventKind.DISPATCH_FAILED, queue=queue, error=exc, **ids)
            raise
        # Stored: queue the first job and report, whatever happens to the caller meanwhile
        # (a stored chain whose first job is never queued would never end).
        with trio.CancelScope(shield=True):
            self._chains[chain_id] = _ChainLocal(chain, started)
            first = nodes[0]
            await self._enqueue(
                self._queued(first, dispatch_id, chain_id=chain_id, chain_index=0), first.delay
            )
            if self._observers:
                await self._emit(EventKind.CHAIN_STARTED, queue=queue, **ids)
                duration = trio.current_time() - started
                await self._emit(
                    EventKind.DISPATCH_SUCCEEDED, queue=queue, duration=duration, **ids
                )
            await trio.lowlevel.cancel_shielded_checkpoint()
        return chain_id

    async def _submit_batch(self, batch: BatchBuilder) -> str:
        self._check_open()
        self._admitting += 1
        try:
            return await self._dispatch_batch(batch)
        finally:
            self._admitted()

    async def _dispatch_batch(self, batch: BatchBuilder) -> str:
        await trio.lowlevel.checkpoint_if_cancelled()
        batch_id, dispatch_id = self._ids(), self._ids()
        ids: dict[str, Any] = {"dispatch_id": dispatch_id, "batch_id": batch_id}
        started = trio.current_time()
        queue = batch.queue or self._default_queue
        if self._observers:
            await self._emit(EventKind.DISPATCH_STARTED, queue=queue, **ids)
        try:
            jobs = tuple(self._record(job, batch.queue) for job in batch.jobs)
            await self._wait_room(len(jobs))
            await self._store.create_batch(
                BatchRecord(
                    batch_id,
                    dispatch_id,
                    batch.batch_name,
                    queue,
                    batch.allows_failures,
                    jobs,
                    self._clock(),
                )
            )
        except BaseException as exc:
            if self._observers:
                await self._emit(EventKind.DISPATCH_FAILED, queue=queue, error=exc, **ids)
            raise
        # Stored: queue every job and report, whatever happens to the caller meanwhile.
        with trio.CancelScope(shield=True):
            self._batches[batch_id] = _BatchLocal(batch, started)
            await self._enqueue_many(
                [(self._queued(job, dispatch_id, batch_id=batch_id), job.delay) for job in jobs]
            )
            if self._observers:
                await self._emit(EventKind.BATCH_STARTED, queue=queue, **ids)
                duration = trio.current_time() - started
                await self._emit(
                    EventKind.DISPATCH_SUCCEEDED, queue=queue, duration=duration, **ids
                )
            await trio.lowlevel.cancel_shielded_checkpoint()
        return batch_id

    def _record(self, job: Job, default_queue: str | None) -> JobRecord:
        """Check a job against this bus and freeze it into a `JobRecord`."""
        if job.type not in self._handlers:
            known = sorted(self._handlers)
            raise UnknownJobType(
                f"no handler is registered for job type {job.type!r}; register one with "
                f"bus.register({job.type!r}, handler) (registered: {known})"
            )
        options = job.options
        queue = options.queue or default_queue or self._default_queue
        if queue not in self._queues:
            raise ValueError(
                f"job {job.type!r} is for queue {queue!r}, which this bus does not have; "
                f"open_bus(queues=...) has {list(self._queues)}"
            )
        return JobRecord(
            job_id=self._ids(),
            job_type=job.type,
            payload=encode_payload(job.type, job.payload),
            queue=queue,
            delay=options.delay,
            timeout=options.timeout,
            retry=options.retry,
            backoff=options.backoff,
        )

    async def _claim_unique(self, record: JobRecord, ttl: float) -> None:
        digest = sha1(record.payload.encode(), usedforsecurity=False).hexdigest()
        now = self._clock()
        key = f"{record.job_type}:{digest}"
        if not await self._store.claim_unique(key, now, now + timedelta(seconds=ttl)):
            raise DuplicateJob(
                f"job {record.job_type!r} with this payload was already dispatched in the last "
                f"{ttl:g}s (unique_for); this dispatch was refused"
            )

    @staticmethod
    def _queued(
        record: JobRecord,
        dispatch_id: str,
        *,
        chain_id: str | None = None,
        chain_index: int = 0,
        batch_id: str | None = None,
    ) -> QueuedJob:
        return QueuedJob(
            job_id=record.job_id,
            dispatch_id=dispatch_id,
            job_type=record.job_type,
            payload=record.payload,
            queue=record.queue,
            timeout=record.timeout,
            retry=record.retry,
            backoff=record.backoff,
            attempt=1,
            chain_id=chain_id,
            chain_index=chain_index,
            batch_id=batch_id,
        )

    # ------------------------------------------------------------------ accounting

    def _add(self, n: int) -> None:
        self._outstanding += n

    def _done(self, n: int) -> None:
        self._outstanding -= n
        if not self._outstanding and not self._admitting and self._idle:
            self._idle.unpark_all()
        if self._room and self._outstanding <= self._max_pending // 2:
            self._room.unpark_all()

    def _admitted(self) -> None:
        """A dispatch returned (accepted or not)."""
        self._admitting -= 1
        if not self._outstanding and not self._admitting and self._idle:
            self._idle.unpark_all()

    async def _wait_room(self, n: int) -> None:
        if _INSIDE.get():
            return
        while self._outstanding and self._outstanding + n > self._max_pending:
            await self._room.park()

    async def _enqueue(self, job: QueuedJob, delay: float) -> None:
        """Queue one job; without yielding if its queue has ``put_nowait``."""
        self._add(1)
        at = trio.current_time() + delay if delay else None
        try:
            put_nowait = self._put_nowait[job.queue]
            if put_nowait is not None:
                put_nowait((job,), at=at)
            else:
                await self._queues[job.queue].put((job,), at=at)
        except BaseException:
            self._done(1)
            raise

    async def _enqueue_many(self, jobs: Sequence[tuple[QueuedJob, float]]) -> None:
        """Queue many jobs with one `Queue.put` per queue and delay."""
        groups: dict[tuple[str, float], list[QueuedJob]] = {}
        for job, delay in jobs:
            groups.setdefault((job.queue, delay), []).append(job)
        now = trio.current_time()
        for (queue, delay), group in groups.items():
            self._add(len(group))
            at = now + delay if delay else None
            try:
                put_nowait = self._put_nowait[queue]
                if put_nowait is not None:
                    put_nowait(group, at=at)
                else:
                    await self._queues[queue].put(group, at=at)
            except BaseException:
                self._done(len(group))
                raise

    # ------------------------------------------------------------------ waiting, looking

    async def wait_idle(self) -> None:
        """Wait until every accepted job, retry, chain step and callback has finished (and
        every dispatch under way has returned)."""
        self._check_open()
        if not self._outstanding and not self._admitting:
            await trio.lowlevel.checkpoint()
        while self._outstanding or self._admitting:
            await self._idle.park()

    async def find_batch(self, batch_id: str) -> BatchState:
        """The batch's current state from the store; `NotFound` (a `LookupError`) if unknown."""
        self._check_open()
        _check_id(batch_id, "batch")
        return await self._store.get_batch(batch_id)

    async def find_chain(self, chain_id: str) -> ChainState:
        """The chain's current state from the store; `NotFound` (a `LookupError`) if unknown."""
        self._check_open()
        _check_id(chain_id, "chain")
        return await self._store.get_chain(chain_id)

    async def cancel_batch(self, batch_id: str) -> BatchState:
        """Cancel the batch's jobs that have not started; return its state.

        Running jobs finish; ``finally_`` runs once they have. Cancelling a finished (or
        already cancelled) batch does nothing. `NotFound` for an unknown id. May be called
        from the batch's own callbacks (``progress(state)`` cancelling on some condition).
        """
        self._check_open()
        _check_id(batch_id, "batch")
        coordinators = self._coordinators
        assert coordinators is not None
        key = "b:" + batch_id
        turn = _TURN.get()
        if turn is not None and turn[0] == key and turn[1] is trio.lowlevel.current_task():
            # Called from this batch's own callback: its coordinator is us, mid-turn (asking
            # it would wait for ourselves). Apply the cancel here, as the coordinator would.
            update = await self._store.cancel_batch(batch_id, self._clock())
            return await self._settle_batch(batch_id, update, ())
        self._add(1)
        try:
            state = await coordinators.ask(key, _CANCEL)
        finally:
            self._done(1)
        assert state is not None
        return state

    async def prune(self, before: datetime) -> int:
        """Delete finished chains and batches last updated before ``before``; return how many."""
        self._check_open()
        if not isinstance(before, datetime):
            raise TypeError(f"prune() takes a datetime, got {type(before).__name__}")
        if before.tzinfo is None:
            raise ValueError("prune() needs an aware datetime, e.g. datetime(..., tzinfo=UTC)")
        return await self._store.prune(before)

    def stats(self) -> BusStats:
        """A snapshot: outstanding jobs, each queue's backlog, the coordinators."""
        coordinators = self._coordinators
        assert coordinators is not None
        return BusStats(
            outstanding=self._outstanding,
            queues={name: queue.stats() for name, queue in self._queues.items()},
            coordinators=coordinators.stats(),
        )

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("the bus is closed: use it inside its `async with open_bus(...)` block")

    # ------------------------------------------------------------------ workers

    def _compose(self, middleware: Sequence[Middleware]) -> CallNext:
        handlers = self._handlers

        async def run_handler(ctx: JobContext) -> None:
            # The timeout wraps the handler alone, innermost, so every middleware sees the
            # attempt fail with TimeoutError (FailOnError can match it), never Cancelled.
            timeout = ctx._flags.timeout
            if timeout is None:
                await handlers[ctx.job_type](ctx)
                return
            with trio.move_on_after(timeout) as scope:
                await handlers[ctx.job_type](ctx)
            # cancel_called, not cancelled_caught: a handler that swallowed the Cancelled
            # and returned still ran out of time.
            if scope.cancel_called:
                raise TimeoutError(
                    f"job {ctx.job_type!r} (attempt {ctx.attempt}) timed out after {timeout:g}s"
                )

        call: CallNext = run_handler
        for mw in reversed(middleware):
            call = _wrap(mw, call)
        return call

    async def _worker(
        self, queue: Queue, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """One worker of ``queue``: take a job, run it, report it; forever."""
        _INSIDE.set(True)
        task_status.started()
        while True:
            job = await queue.get()
            try:
                await self._run(queue, job)
            except Exception:
                # Our machinery (a queue, the coordinators) failed, not the job: the job's
                # outcome is lost, so count it out rather than let wait_idle() hang.
                log.exception("bus worker on queue %r failed to handle job %r", queue.name, job)
                self._done(1)

    async def _run(self, queue: Queue, job: QueuedJob) -> None:
        batch_id = job.batch_id
        if batch_id is not None and batch_id in self._cancelled:
            await self._finish(job, "cancelled", None)
            return
        ctx = JobContext(
            decode_payload(job.payload),
            job.attempt,
            job.job_type,
            job.dispatch_id,
            job.job_id,
            job.chain_id,
            batch_id,
            job.queue,
        )
        ctx._flags.timeout = job.timeout
        observed = bool(self._observers)
        if observed:
            await self._emit_job(EventKind.JOB_STARTED, job)
        started = trio.current_time()
        error: Exception | None = None
        known = job.job_type in self._handlers
        try:
            if not known:
                raise UnknownJobType(f"no handler is registered for job type {job.job_type!r}")
            await self._call(ctx)
        except Release as release:
            await queue.put((job,), at=trio.current_time() + release.delay)
            return
        except Exception as exc:
            error = exc
        if error is None:
            if observed:
                duration = trio.current_time() - started
                await self._emit_job(EventKind.JOB_SUCCEEDED, job, duration=duration)
            await self._finish(job, "succeeded", None)
            return
        if observed:
            duration = trio.current_time() - started
            await self._emit_job(EventKind.JOB_FAILED, job, duration=duration, error=error)
        if known and job.attempt <= job.retry and not ctx._flags.no_retry:
            if batch_id is not None and batch_id in self._cancelled:
                await self._finish(job, "cancelled", None)
                return
            retry = attrs.evolve(job, attempt=job.attempt + 1)
            await queue.put((retry,), at=trio.current_time() + job.backoff if job.backoff else None)
            return
        if batch_id is not None:
            local = self._batches.get(batch_id)
            if local is not None and not local.builder.allows_failures:
                # Stop this process's workers at once; the coordinator hears of the failure
                # next (it is told below, before anyone can yield) and cancels the rest.
                self._cancelled.add(batch_id)
        await self._finish(job, "failed", error)

    async def _finish(self, job: QueuedJob, outcome: Outcome, error: BaseException | None) -> None:
        """Hand a job's final outcome to its coordinator (or just count it out)."""
        coordinators = self._coordinators
        assert coordinators is not None
        if job.batch_id is not None:
            # Many jobs of a batch finish at once: tell, and the coordinator takes them all.
            await coordinators.tell("b:" + job.batch_id, _Done(job, outcome, error))
        elif job.chain_id is not None:
            message = _Done(job, outcome, error)
            if self._inline_chains:
                # A chain runs one job at a time, so its coordinator is idle now: ask, and the
                # keyed core runs it inline in this task (no task to spawn, no hop).
                await coordinators.ask("c:" + job.chain_id, message)
            else:
                # The store does I/O: tell, so this worker goes on with the next job while
                # the coordinator waits (and its write is group-committed with others).
                await coordinators.tell("c:" + job.chain_id, message)
        else:
            self._done(1)

    # ------------------------------------------------------------------ coordinators

    async def _host_coordinators(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The registry of chain and batch coordinators (a supervisor child)."""
        async with open_keyed(
            self._coordinate,
            idle_timeout=self._idle_timeout,
            name="bus coordinators",
            on_error=self._coordinator_failed,
        ) as keyed:
            self._coordinators = keyed
            task_status.started()
            await trio.sleep_forever()

    def _coordinator_failed(self, key: str, message: _Message, exc: BaseException) -> None:
        log.error("bus coordinator %r failed handling %r", key, message, exc_info=exc)

    async def _coordinate(self, key: str, message: _Message) -> BatchState | None:
        token = _INSIDE.set(True)
        turn = _TURN.set((key, trio.lowlevel.current_task()))
        try:
            if key.startswith("b:"):
                return await self._coordinate_batch(key, key[2:], message)
            assert isinstance(message, _Done)
            await self._coordinate_chain(key[2:], message)
            return None
        finally:
            _TURN.reset(turn)
            _INSIDE.reset(token)

    async def _coordinate_batch(self, key: str, batch_id: str, message: _Message) -> BatchState:
        if isinstance(message, _Cancel):
            update = await self._store.cancel_batch(batch_id, self._clock())
            return await self._settle_batch(batch_id, update, ())
        coordinators = self._coordinators
        assert coordinators is not None
        local = self._batches.get(batch_id)
        progress = bool(self._observers) or (
            local is not None and local.builder.progress_callback is not None
        )
        messages: list[_Done] = [message]
        while True:
            messages.extend(m for m in coordinators.take_pending(key) if isinstance(m, _Done))
            try:
                update = await self._store.record_batch(
                    batch_id,
                    [JobOutcome(m.job.job_id, m.outcome) for m in messages],
                    self._clock(),
                    progress=progress,
                )
                state = await self._settle_batch(batch_id, update, messages)
            finally:
                self._done(len(messages))
            if state.completed:
                return state
            # Linger for one scheduling round: outcomes that workers report meanwhile are
            # handled here, together, instead of by a new task each.
            await trio.lowlevel.checkpoint()
            messages = []
            for m in coordinators.take_pending(key):
                if isinstance(m, _Done):
                    messages.append(m)
            if not messages:
                return state

    async def _settle_batch(
        self, batch_id: str, update: BatchUpdate, messages: Sequence[_Done]
    ) -> BatchState:
        """Act on a batch update: cancel what is left, report progress, run callbacks."""
        local = self._batches.get(batch_id)
        first_error: BaseException | None = None
        if update.first_failure is not None:
            for m in messages:
                if m.job.job_id == update.first_failure:
                    first_error = m.error
            if first_error is None:
                first_error = BusError(f"batch job {update.first_failure} failed")
            if local is not None:
                local.first_error = first_error
        state = update.state
        finished = update.finished_now
        if state.cancelled and not state.completed and batch_id not in self._discarded:
            self._cancelled.add(batch_id)
            self._discarded.add(batch_id)
            removed: list[QueuedJob] = []
            for queue in self._queues.values():
                removed.extend(await queue.discard(batch_id))
            if removed:
                try:
                    more = await self._store.record_batch(
                        batch_id,
                        [JobOutcome(job.job_id, "cancelled") for job in removed],
                        self._clock(),
                    )
                finally:
                    self._done(len(removed))
                state = more.state
                finished = finished or more.finished_now
        builder = local.builder if local is not None else None
        common: dict[str, Any] = {
            "dispatch_id": state.dispatch_id,
            "batch_id": batch_id,
            "queue": state.queue,
        }
        progress = builder.progress_callback if builder is not None else None
        if update.progressed and (self._observers or progress is not None):
            jobs = update.progressed_jobs
            by_id = {m.job.job_id: m for m in messages} if self._observers else {}
            for i, step in enumerate(update.progressed):
                if self._observers:
                    done = by_id.get(jobs[i]) if i < len(jobs) else None
                    if done is None:
                        await self._emit(EventKind.BATCH_PROGRESSED, **common)
                    else:
                        await self._emit(
                            EventKind.BATCH_PROGRESSED,
                            job_id=done.job.job_id,
                            job_type=done.job.job_type,
                            attempt=done.job.attempt,
                            error=done.error if done.outcome == "failed" else None,
                            **common,
                        )
                if progress is not None:
                    await self._callback("batch", batch_id, "progress", progress, (step,), common)
        if builder is not None and first_error is not None and builder.catch_callback:
            await self._callback(
                "batch", batch_id, "catch", builder.catch_callback, (state, first_error), common
            )
        if finished:
            # Every job ran and succeeded: the batch completed, even if a cancel_batch came
            # after the last one had started.
            succeeded = state.failed == 0 and state.processed == state.total
            if self._observers:
                if state.failed:
                    kind = EventKind.BATCH_FAILED
                elif succeeded:
                    kind = EventKind.BATCH_COMPLETED
                else:
                    kind = EventKind.BATCH_CANCELLED
                await self._emit(
                    kind,
                    duration=None if local is None else trio.current_time() - local.started_at,
                    error=None if local is None or not state.failed else local.first_error,
                    **common,
                )
            if builder is not None:
                if builder.then_callback and succeeded:
                    await self._callback(
                        "batch", batch_id, "then", builder.then_callback, (state,), common
                    )
                if builder.finally_callback:
                    await self._callback(
                        "batch", batch_id, "finally", builder.finally_callback, (state,), common
                    )
            self._batches.pop(batch_id, None)
            self._cancelled.discard(batch_id)
            self._discarded.discard(batch_id)
        return state

    async def _coordinate_chain(self, chain_id: str, message: _Done) -> None:
        try:
            await self._advance_chain(chain_id, message)
        except Exception as exc:  # logged here: the asking worker has its own jobs to run
            self._coordinator_failed("c:" + chain_id, message, exc)
        finally:
            self._done(1)

    async def _advance_chain(self, chain_id: str, message: _Done) -> None:
        job = message.job
        error = message.error if message.outcome == "failed" else None
        step = await self._store.record_chain_step(
            chain_id,
            job.chain_index,
            None if error is None else describe(error),
            self._clock(),
        )
        if step is None:
            return
        common: dict[str, Any] = {
            "dispatch_id": job.dispatch_id,
            "chain_id": chain_id,
            "job_id": job.job_id,
            "job_type": job.job_type,
            "queue": job.queue,
        }
        local = self._chains.get(chain_id)
        if step.next_node is not None:
            if self._observers:
                await self._emit(EventKind.CHAIN_ADVANCED, **common)
            node = step.next_node
            await self._enqueue(
                self._queued(node, job.dispatch_id, chain_id=chain_id, chain_index=step.next_index),
                node.delay,
            )
            return
        if self._observers:
            await self._emit(
                EventKind.CHAIN_FAILED if step.failed else EventKind.CHAIN_COMPLETED,
                duration=None if local is None else trio.current_time() - local.started_at,
                error=error,
                **common,
            )
        self._chains.pop(chain_id, None)
        builder = None if local is None else local.builder
        if builder is None or not (builder.catch_callback or builder.finally_callback):
            return
        state = await self._store.get_chain(chain_id)
        common = {"dispatch_id": job.dispatch_id, "chain_id": chain_id, "queue": state.queue}
        if error is not None and builder.catch_callback:
            await self._callback(
                "chain", chain_id, "catch", builder.catch_callback, (state, error), common
            )
        if builder.finally_callback:
            await self._callback(
                "chain", chain_id, "finally", builder.finally_callback, (state,), common
            )

    async def _callback(
        self,
        owner_kind: str,
        owner_id: str,
        name: str,
        fn: Callable[..., object],
        args: tuple[Any, ...],
        common: dict[str, Any],
    ) -> None:
        """Run one callback at most once (claimed in the store first; progress is counted
        once per job by the store already); a callback's exception becomes an event."""
        if name != "progress" and not await self._store.claim_callback(
            f"{owner_kind}:{owner_id}", name, self._clock()
        ):
            return
        observed = bool(self._observers)
        fields = {**common, "job_type": name}
        if observed:
            await self._emit(EventKind.CALLBACK_STARTED, **fields)
        started = trio.current_time()
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.error("bus %s callback of %s %s raised", name, owner_kind, owner_id, exc_info=exc)
            if observed:
                await self._emit(
                    EventKind.CALLBACK_FAILED,
                    duration=trio.current_time() - started,
                    error=exc,
                    **fields,
                )
            return
        if observed:
            await self._emit(
                EventKind.CALLBACK_SUCCEEDED, duration=trio.current_time() - started, **fields
            )

    # ------------------------------------------------------------------ events

    async def _emit_job(
        self,
        kind: EventKind,
        job: QueuedJob,
        *,
        duration: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        await self._emit(
            kind,
            dispatch_id=job.dispatch_id,
            job_id=job.job_id,
            chain_id=job.chain_id,
            batch_id=job.batch_id,
            attempt=job.attempt,
            job_type=job.job_type,
            queue=job.queue,
            duration=duration,
            error=error,
        )

    async def _emit(self, kind: EventKind, **fields: Any) -> None:
        event = Event(kind, self._ids(), time=self._clock(), **fields)
        for observer in self._observers:
            try:
                result = observer(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("bus observer %r raised on %s; ignored", observer, kind)


def _put_nowait(queue: Queue) -> Callable[..., None] | None:
    """``queue.put_nowait`` if the class that defines its ``put`` defines ``put_nowait`` too
    (a subclass that overrides only ``put`` must still have its ``put`` called)."""
    for cls in type(queue).__mro__:
        if "put" in vars(cls):
            if "put_nowait" in vars(cls):
                put_nowait: Callable[..., None] = queue.put_nowait  # type: ignore[attr-defined]
                return put_nowait
            return None
    return None


def _check_id(value: object, what: str) -> None:
    """A batch or chain id: a str (else TypeError); an empty one is simply not found."""
    if not isinstance(value, str):
        raise TypeError(f"{what}_id must be a str, got {type(value).__name__}: {value!r}")
    if not value:
        raise NotFound(f"no {what} with an empty id; pass the id its dispatch() returned")


def _check_queues(queues: object) -> dict[str, int]:
    if queues is None:
        return {"default": 4}
    if not isinstance(queues, Mapping):
        raise TypeError(f"queues must be a dict of queue name -> workers, got {queues!r}")
    if not queues:
        raise ValueError("queues must name at least one queue, e.g. {'default': 4}")
    checked: dict[str, int] = {}
    for name, workers in queues.items():
        check_key(name, "queue name")
        checked[name] = check_positive_int(workers, f"workers of queue {name!r}")
    return checked


@asynccontextmanager
async def open_bus(
    store: Store | None = None,
    queues: Mapping[str, int] | None = None,
    middleware: Sequence[Middleware] = (),
    observers: Sequence[Observer] = (),
    clock: Callable[[], datetime] | None = None,
    *,
    max_pending: int = 10_000,
    queue_factory: Callable[[str], Queue] = MemoryQueue,
    idle_timeout: float = 60.0,
) -> AsyncIterator[Bus]:
    """Open a bus: its queues' workers and its coordinators run until the block ends.

    ``store``: a `MemoryStore` (default) or `SQLiteStore`. ``queues``: name -> number of
    workers (default ``{"default": 4}``); jobs that name no queue go to the first.
    ``middleware`` wraps every attempt, first outermost; ``observers`` get every `Event` (sync
    or async callables; one that raises is logged and ignored). ``clock`` gives the wall-clock
    times of states and events (default: `actors.trio_clock`). ``max_pending``: dispatches
    from outside the bus wait while this many jobs are outstanding (backpressure).
    ``queue_factory(name)`` makes each queue (default `MemoryQueue`). ``idle_timeout``: seconds
    before an idle coordinator is reaped.

    Leaving the block waits for every accepted job, retry and callback (`Bus.wait_idle`), then
    stops the workers; cancelling the enclosing scope stops everything at once.
    """
    store = MemoryStore() if store is None else store
    if not isinstance(store, Store):
        raise TypeError(f"store must implement actors.bus.Store, got {type(store).__name__}")
    workers = _check_queues(queues)
    mws = check_middleware(middleware)
    if isinstance(observers, str) or not isinstance(observers, Sequence):
        raise TypeError(f"observers must be a list of callables, got {observers!r}")
    for observer in observers:
        if not callable(observer):
            raise TypeError(f"observers must be callables taking an Event, got {observer!r}")
    if clock is not None and not callable(clock):
        raise TypeError(f"clock must be a callable returning a datetime, got {clock!r}")
    check_positive_int(max_pending, "max_pending")
    check_duration(idle_timeout, "idle_timeout", allow_zero=False)
    if not callable(queue_factory):
        raise TypeError(f"queue_factory must be callable, got {queue_factory!r}")
    made = {name: queue_factory(name) for name in workers}
    for name, made_queue in made.items():
        if not isinstance(made_queue, Queue):
            raise TypeError(f"queue_factory({name!r}) did not return an actors.bus.Queue")
    bus = Bus(
        _PRIVATE,
        store=store,
        queues=made,
        middleware=mws,
        observers=tuple(observers),
        clock=trio_clock() if clock is None else clock,
        max_pending=max_pending,
        idle_timeout=idle_timeout,
    )
    await store.open()
    try:
        async with supervisors.open_supervisor("one_for_one", name="bus") as sup:
            # shutdown=0: by the time the bus stops its children, wait_idle() has returned
            # (or the enclosing scope was cancelled), so there is nothing left to finish.
            await sup.start_child("coordinators", bus._host_coordinators, shutdown=0)
            for name, queue in made.items():
                await sup.start_child(f"queue {name}", queue.serve, shutdown=0)
                for i in range(workers[name]):
                    await sup.start_child(f"worker {name} {i}", bus._worker, queue, shutdown=0)
            yield bus
            await bus.wait_idle()
            # Closed with no checkpoint since wait_idle() saw the bus idle: a dispatch from
            # outside now gets BusClosed instead of queueing a job no worker would run.
            bus._closed = True
            await sup.shutdown()
    finally:
        bus._closed = True
        with trio.CancelScope(shield=True):
            await store.close()
