"""The Bus: the face of the roles in this package, and `open_bus`, which wires them up.

The roles run as children of one supervisor: the broker's queues, the store's background
work (SQLite's group commit), the observers' buffers, the chain and batch coordinators, and
``workers`` tasks per queue. The `Bus` itself holds no state of a job, a chain or a batch.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

import attrs
import trio

import supervisors

from .._checks import check_duration, check_positive_int
from .._clock import trio_clock
from .._keyed import KeyedStats
from ._admission import Admission, check_many
from ._batches import Batches
from ._broker import Broker, BrokerQueue, QueueStats
from ._builders import BatchBuilder, ChainBuilder, check_jobs
from ._chains import Chains
from ._errors import BusClosed, InsideBus, NotFound
from ._handlers import H, Handler, Handlers, Observer, add_handler, handler_decorator
from ._limits import bind_middleware
from ._memory_broker import MemoryBroker
from ._memory_worker import MemoryWorker
from ._middleware import Middleware
from ._model import (
    BatchState,
    ChainState,
    DispatchResult,
    Job,
    JobOptions,
    check_text,
    decode_payload,
    id_source,
)
from ._observe import Emitter
from ._parts import INSIDE, Parts
from ._rules import FailedJob
from ._store import MemoryStore, Store
from ._urls import broker_from_url, store_from_url
from ._workers import serve_registration

log = logging.getLogger("actors.bus")

_PRIVATE: Final = object()


@attrs.frozen
class BusStats:
    """A snapshot of a bus."""

    outstanding: int
    """Accepted jobs without a recorded final outcome (queued, running, retrying)."""
    queues: Mapping[str, QueueStats]
    """Each queue's ready, delayed and running jobs (memory broker; see `Bus.queue_stats`)."""
    coordinators: KeyedStats
    """The chain and batch coordinators (keyed actors), summed: live, busy, reaped, ..."""
    unrecorded: int = 0
    """Store writes of outcomes waiting to be retried after a store error."""
    store_errors: int = 0
    """Failed store writes of outcomes so far (each retried until it committed)."""
    events_dropped: int = 0
    """Events an async observer missed because its buffer was full."""


def _sum(a: KeyedStats, b: KeyedStats) -> KeyedStats:
    return KeyedStats(*(x + y for x, y in zip(attrs.astuple(a), attrs.astuple(b), strict=True)))


def _check_id(value: object, what: str) -> None:
    """A batch or chain id: a str (else TypeError); an empty one is simply not found."""
    if not isinstance(value, str):
        raise TypeError(f"{what}_id must be a str, got {type(value).__name__}: {value!r}")
    if not value:
        raise NotFound(f"no {what} with an empty id; pass the id its dispatch() returned")


class Bus:
    """A job bus; get one from ``async with actors.bus.open_bus(...) as bus``.

    ::

        bus.register("emails:send", send_email)
        await bus.dispatch(Job("emails:send", {"to": "a@b"}).retry(3).backoff(0.5))
        chain_id = await bus.chain(Job("reserve"), Job("charge")).catch(undo).dispatch()
        batch_id = await bus.batch(*jobs).progress(show).then(report).dispatch()
        await bus.wait_idle()

    Callable callbacks are claimed in the store before they run (at most once, never twice)
    and run only in the process that built the chain or batch; `Job` callbacks are queued
    through the same claim and run on any worker.
    """

    def __init__(
        self,
        token: object,
        *,
        parts: Parts,
        handlers: dict[str, Handler],
        admission: Admission,
        chains: Chains,
        batches: Batches,
        workers: bool,
    ) -> None:
        if token is not _PRIVATE:
            raise TypeError("Bus has no public constructor; use `async with open_bus(...)`")
        self._parts = parts
        self._handlers = handlers
        self._admission = admission
        self._admit_now = admission.admit_now  # (bound once: every plain dispatch calls it)
        self._chains = chains
        self._batches = batches
        self._workers = workers
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._parts.jobs} outstanding"
        mode = "" if self._workers else " (no workers)"
        return f"<Bus queues={list(self._parts.queues)} {state}{mode}>"

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosed("the bus is closed: use it inside its `async with open_bus(...)` block")

    # ------------------------------------------------------------------ registering

    def register(self, job_type: str, handler: Handler) -> None:
        """Run ``await handler(ctx)`` for jobs of ``job_type``; one handler per type."""
        self._check_open()
        add_handler(self._handlers, job_type, handler)

    def handler(self, job_type: str) -> Callable[[H], H]:
        """Decorator form of `register`: ``@bus.handler("emails:send")``."""
        return handler_decorator(self.register, job_type)

    # ------------------------------------------------------------------ dispatching

    async def _admit(self, jobs: Sequence[Job], builder: ChainBuilder | BatchBuilder | None) -> Any:
        self._check_open()
        parts = self._parts
        parts.admit()  # a dispatch under way keeps the bus from going idle and closing
        try:
            return await self._admission.admit(jobs, builder)
        finally:
            parts.admitted()

    async def dispatch(self, job: Job) -> DispatchResult:
        """Check ``job`` and queue it; return its ids. Waits while the bus is full.

        Raises at once, and queues nothing, for: an unregistered type (`UnknownJobType`), an
        unknown queue (`ValueError`), a payload that is not JSON-serialisable (`TypeError`),
        a repeat within ``unique_for`` (`DuplicateJob`). Cancelled while it waits for room,
        it queues (and claims) nothing; once the job is accepted the dispatch completes, and
        the cancellation takes effect at the caller's next checkpoint.
        """
        if self._closed:
            self._check_open()
        if not isinstance(job, Job):
            raise TypeError(f"dispatch() takes an actors.bus.Job, got {type(job).__name__}")
        parts = self._parts
        parts.admitting += 1  # `_admit` inlined: this is the path of every plain job
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            # The common case without a coroutine of its own (see `Admission.admit_now`).
            result = self._admit_now(job)
            if result is None:
                return await self._admission.admit_job(job)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return result
        finally:
            # `Parts.admitted`, inlined.
            parts.admitting = admitting = parts.admitting - 1
            if not admitting and parts.idle_waiting and not (parts.jobs and parts.in_hand):
                parts.wake_idle()

    async def dispatch_many(self, jobs: Iterable[Job]) -> list[DispatchResult]:
        """Check every job, then queue them all at once; return their ids, in order.

        For many plain jobs (one broker round trip per queue, not one per job). Each job is
        checked as `dispatch` checks it, and one that `dispatch` would refuse refuses the
        whole call (the error names it): nothing is queued. ``unique_for`` is refused here
        (dispatch such a job on its own). Waits while the bus is full; cancelled meanwhile,
        it queues nothing; once accepted, every job is queued.
        """
        self._check_open()
        found = check_many(jobs)
        self._parts.admit()
        try:
            return await self._admission.admit_many(found)
        finally:
            self._parts.admitted()

    def chain(self, *jobs: Job) -> ChainBuilder:
        """A chain of ``jobs`` to configure and ``await ....dispatch()``."""
        self._check_open()
        return ChainBuilder(self, check_jobs(jobs, "chain"))

    def batch(self, *jobs: Job) -> BatchBuilder:
        """A batch of ``jobs`` to configure and ``await ....dispatch()``."""
        self._check_open()
        return BatchBuilder(self, check_jobs(jobs, "batch"))

    def _submit_chain(self, chain: ChainBuilder) -> Coroutine[Any, Any, str]:
        # `_admit`'s coroutine handed back: one frame less at each resumption of a dispatch.
        return self._admit(chain.jobs, chain)

    async def _submit_batch(self, batch: BatchBuilder) -> str:
        batch_id: str = await self._admit(batch.jobs, batch)
        return batch_id

    # ------------------------------------------------------------------ waiting, looking

    async def wait_idle(self) -> None:
        """Wait until every accepted job, retry, chain step and callback has finished and its
        outcome is recorded (and every dispatch under way has returned).

        On a bus with ``workers=False``: until every dispatch under way is in the broker.
        Raises `InsideBus` from a handler or callback, where it would wait for itself.
        """
        self._check_open()
        if INSIDE.get():
            raise InsideBus(
                "wait_idle() was called from a job handler or callback of this bus; it would "
                "wait for itself forever. Call it from outside the bus's work"
            )
        await trio.lowlevel.checkpoint()
        await self._parts.wait_idle()

    async def find_batch(self, batch_id: str) -> BatchState:
        """The batch's current state from the store; `NotFound` (a `LookupError`) if unknown."""
        self._check_open()
        _check_id(batch_id, "batch")
        return await self._parts.store.get_batch(batch_id)

    async def find_chain(self, chain_id: str) -> ChainState:
        """The chain's current state from the store; `NotFound` (a `LookupError`) if unknown."""
        self._check_open()
        _check_id(chain_id, "chain")
        return await self._parts.store.get_chain(chain_id)

    async def cancel_batch(self, batch_id: str, *, abandon: bool = False) -> BatchState:
        """Cancel the batch's jobs that have not started (on every worker sharing the store);
        return its state.

        Running jobs finish; ``finally_`` runs once they have. Cancelling a finished batch
        does nothing; `NotFound` for an unknown id. May be called from the batch's own
        callbacks. ``abandon=True`` also counts every job not finished as cancelled, so the
        batch completes now: for a batch whose process is gone (its jobs will never report).
        """
        self._check_open()
        _check_id(batch_id, "batch")
        if not isinstance(abandon, bool):
            raise TypeError(f"abandon must be a bool, got {abandon!r}")
        return await self._batches.cancel(batch_id, abandon=abandon)

    async def cancel_chain(self, chain_id: str) -> ChainState:
        """Stop the chain as failed (``failure`` "cancelled") unless it has ended, so a chain
        whose process is gone can be pruned. A step still running is then ignored."""
        self._check_open()
        _check_id(chain_id, "chain")
        store = self._parts.store
        await store.fail_chain(chain_id, "cancelled", self._parts.clock())
        self._chains.forget(chain_id)
        return await store.get_chain(chain_id)

    async def prune(self, before: datetime) -> int:
        """Delete finished chains and batches last updated before ``before`` (and failed jobs
        recorded before it); return how many chains and batches went."""
        self._check_open()
        if not isinstance(before, datetime):
            raise TypeError(f"prune() takes a datetime, got {type(before).__name__}")
        if before.tzinfo is None:
            raise ValueError("prune() needs an aware datetime, e.g. datetime(..., tzinfo=UTC)")
        return await self._parts.store.prune(before)

    async def failed_jobs(self) -> list[FailedJob]:
        """Every job that failed after its retries and is kept in the store, oldest first."""
        self._check_open()
        return await self._parts.store.failed_jobs()

    async def retry_failed(self, job_id: str) -> DispatchResult:
        """Put a failed job back on its queue as a new plain job (first attempt) and remove
        its record; a new failure makes a new record. `NotFound` for an unknown id."""
        self._check_open()
        check_text(job_id, "job_id")
        record = await self._parts.store.take_failed(job_id)
        queued = record.job
        options = JobOptions(
            queue=queued.queue, timeout=queued.timeout, retry=queued.retry, backoff=queued.backoff
        )
        return await self.dispatch(Job(record.job_type, decode_payload(record.payload), options))

    async def in_flight(self, limit: int = 100) -> tuple[list[BatchState], list[ChainState]]:
        """Up to ``limit`` batches and ``limit`` chains not over yet, from the store (every
        process's), oldest first."""
        self._check_open()
        return await self._parts.store.in_flight(check_positive_int(limit, "limit"))

    def stats(self) -> BusStats:
        """A snapshot: outstanding jobs, queues, coordinators, store errors, dropped events."""
        parts = self._parts
        queues = {
            name: queue.stats_now()
            for name, queue in parts.queues.items()
            if hasattr(queue, "stats_now")
        }
        return BusStats(
            outstanding=parts.jobs,
            queues=queues,
            coordinators=_sum(self._chains.stats(), self._batches.stats()),
            unrecorded=parts.recorder.waiting,
            store_errors=parts.recorder.errors,
            events_dropped=parts.emitter.dropped,
        )

    async def queue_stats(self) -> dict[str, QueueStats]:
        """Each queue's counts from its broker (for a durable broker: across processes)."""
        self._check_open()
        return {name: await queue.stats() for name, queue in self._parts.queues.items()}


def _check_queues(queues: object) -> dict[str, int]:
    if queues is None:
        return {"default": 4}
    if not isinstance(queues, Mapping):
        raise TypeError(f"queues must be a dict of queue name -> workers, got {queues!r}")
    if not queues:
        raise ValueError("queues must name at least one queue, e.g. {'default': 4}")
    checked: dict[str, int] = {}
    for name, workers in queues.items():
        check_text(name, "queue name")
        checked[name] = check_positive_int(workers, f"workers of queue {name!r}")
    return checked


@asynccontextmanager
async def open_bus(
    store: Store | str | None = None,
    broker: Broker | str | None = None,
    queues: Mapping[str, int] | None = None,
    handlers: Handlers | None = None,
    middleware: Sequence[Middleware] = (),
    observers: Sequence[Observer] = (),
    workers: bool = True,
    clock: Callable[[], datetime] | None = None,
    *,
    max_pending: int = 10_000,
    idle_timeout: float = 60.0,
) -> AsyncIterator[Bus]:
    """Open a bus: its workers, coordinators and queues run until the block ends.

    ``store``: a `MemoryStore` (default), `SQLiteStore` or `PostgresStore`, or its URL
    (``"sqlite:///jobs.db"``, ``"postgresql://user@host/db"``). ``broker``: where jobs wait, a
    `MemoryBroker` (default), `SQLiteBroker` or `RedisBroker`, or its URL (``"memory://"``,
    ``"sqlite:///jobs.db?visibility_timeout=5"``, ``"redis://localhost:6379/0"``).
    ``queues``: name -> number of workers (default ``{"default": 4}``); jobs that name no
    queue go to the first. ``handlers``: a `Handlers` declared beforehand (its middleware run
    outside ``middleware``, its observers with ``observers``). Middleware wraps every
    attempt, first outermost; observers get every `Event` (sync ones inline, async ones from
    a buffer: see `actors.bus._observe`).
    ``workers=False``: this bus only dispatches (leaving waits only until what it dispatched
    is in the broker). ``clock`` gives the wall-clock times of states and events (default
    `actors.trio_clock`). ``max_pending``: dispatches from outside the bus wait while this
    many jobs are outstanding. ``idle_timeout``: seconds before an idle coordinator is reaped.

    Leaving the block waits for every accepted job, retry and callback (`Bus.wait_idle`), then
    stops; cancelling the enclosing scope stops everything at once.
    """
    store = MemoryStore() if store is None else store
    if isinstance(store, str):
        store = store_from_url(store)
    if not isinstance(store, Store):
        raise TypeError(f"store must implement actors.bus.Store, got {type(store).__name__}")
    broker = MemoryBroker() if broker is None else broker
    if isinstance(broker, str):
        broker = broker_from_url(broker)
    if not isinstance(broker, Broker):
        raise TypeError(f"broker must implement actors.bus.Broker, got {type(broker).__name__}")
    counts = _check_queues(queues)
    declared = Handlers.merged(handlers, middleware, observers)
    if not isinstance(workers, bool):
        raise TypeError(f"workers must be a bool, got {workers!r}")
    if clock is not None and not callable(clock):
        raise TypeError(f"clock must be a callable returning a datetime, got {clock!r}")
    check_positive_int(max_pending, "max_pending")
    check_duration(idle_timeout, "idle_timeout", allow_zero=False)
    made: dict[str, BrokerQueue] = {name: broker.queue(name) for name in counts}
    ids = id_source()
    wall = trio_clock() if clock is None else clock
    emitter = Emitter(declared.observers, ids, wall)
    parts = Parts(
        store=store, queues=made, emitter=emitter, clock=wall, ids=ids, max_pending=max_pending
    )
    parts.counts_jobs = workers
    table = declared.table()
    chains, batches = Chains(parts, idle_timeout), Batches(parts, idle_timeout)
    admission = Admission(parts, table, chains, batches, runs_callbacks=workers)
    bus = Bus(
        _PRIVATE,
        parts=parts,
        handlers=table,
        admission=admission,
        chains=chains,
        batches=batches,
        workers=workers,
    )
    worker = MemoryWorker(
        parts, table, bind_middleware(declared.middleware, broker), chains, batches
    )
    await store.open()
    try:
        await broker.open()
        try:
            async with supervisors.open_supervisor("one_for_one", name="bus") as sup:
                # shutdown=0: by the time the bus stops its children, wait_idle() has
                # returned (or the enclosing scope was cancelled): nothing is left to finish.
                await sup.start_child("store", store.serve, shutdown=0)
                await sup.start_child("observers", emitter.serve, shutdown=0)
                await sup.start_child("chain coordinators", chains.serve, shutdown=0)
                await sup.start_child("batch coordinators", batches.serve, shutdown=0)
                for name, queue in made.items():
                    await sup.start_child(f"queue {name}", queue.serve, shutdown=0)
                    for i in range(counts[name] if workers else 0):
                        serve = worker.serve(queue)
                        await sup.start_child(f"worker {name} {i}", serve, queue, shutdown=0)
                if workers:  # listed by `trio-lanes status` (a durable broker's registry)
                    await sup.start_child(
                        "registration", serve_registration, broker, counts, shutdown=0
                    )
                yield bus
                if workers and broker.durable:
                    # What waits in a durable broker is safe there (any worker of any process
                    # runs it); the jobs in this bus's hands are seen to their outcome.
                    await parts.wait_settled()
                else:
                    await bus.wait_idle()
                # Closed with no checkpoint since wait_idle() saw the bus idle: a dispatch
                # from outside now gets BusClosed instead of queueing a job no one would run.
                bus._closed = True
                await emitter.aclose()
                await sup.shutdown()
        finally:
            bus._closed = True
            # Not under a shield of ours: a broker shields what must finish itself, and
            # RedisBroker's pool (a task group entered in open) must not exit inside a scope
            # opened after it.
            await broker.close()
    finally:
        bus._closed = True
        with trio.CancelScope(shield=True):
            await store.close()
