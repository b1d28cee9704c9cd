"""Batch admission: a batch's jobs checked and frozen in one pass, stored, then queued.

Every job of a batch passes here, so the per-job work is kept to one id and one `QueuedJob`
(its first attempt, built once: the store keeps what it needs of it). A `Job` object that
appears more than once (``bus.batch(*[Job("noop")] * 100)``, or alike jobs built once) is
checked once: its later attempts are copies of the first with their own ids.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from itertools import islice, repeat
from operator import is_
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ._batches import BatchLocal
from ._broker import by_queue_and_delay
from ._builders import BatchBuilder
from ._events import EventKind
from ._job_checks import check_job
from ._memory_broker import MemoryQueue
from ._model import Job, JobRecord, QueuedJob
from ._rules import BatchRecord

if TYPE_CHECKING:
    from ._batches import Batches
    from ._model import IdSource
    from ._parts import Parts


class _Admission(Protocol):
    """What batch admission uses of `actors.bus._admission.Admission` (which calls it)."""

    _parts: Parts
    _handlers: Mapping[str, object]
    _batches: Batches
    default_queue: str

    def _local(
        self, builder: BatchBuilder, started: float
    ) -> tuple[object, tuple[tuple[str, JobRecord], ...]]: ...

    async def _undo(
        self, builder: BatchBuilder, owner_id: str, exc: BaseException, fields: dict[str, Any]
    ) -> None: ...

    def _report(self, kind: EventKind, fields: dict[str, Any], started: float) -> None: ...


_new = object.__new__
_set = object.__setattr__
_consume: Callable[[Iterable[object]], None] = deque[object](maxlen=0).extend  # (runs a map)


def attempts(
    jobs: Sequence[Job],
    fallback: str,
    handlers: Collection[str],
    queues: Collection[str],
    ids: IdSource,
    dispatch_id: str,
    batch_id: str,
) -> tuple[list[QueuedJob], list[float], bool]:
    """Each job's first attempt and delay, in order, and whether they all share the first
    one's queue and delay (one put then takes them all).

    Refuses what `check_job` refuses, at the first job it refuses (nothing is kept).
    """
    nxt = ids.next
    first_job = jobs[0]
    if all(map(is_, jobs, repeat(first_job))):  # one Job object: a batch of alike jobs
        return _alike(first_job, len(jobs), fallback, handlers, queues, nxt, dispatch_id, batch_id)
    out: list[QueuedJob] = []
    delays: list[float] = []
    seen: dict[int, tuple[dict[str, Any], float]] = {}
    one_put = True
    first: tuple[str, float] | None = None
    last: Job | None = None
    known: tuple[dict[str, Any], float] | None = None
    for job in jobs:
        if job is not last:  # (a run of one Job object asks the dict once)
            last = job
            known = seen.get(id(job))  # (the jobs stay alive in ``jobs``: ids not reused)
        if known is not None:
            # The same frozen Job checked before: the same attempt but for its id. A copy
            # of the first one's fields (equal to what `QueuedJob(...)` builds, and the
            # same field order), at half the cost of the frozen class's __init__.
            fields, delay = known
            fields = fields.copy()
            fields["job_id"] = nxt()
            attempt = _new(QueuedJob)
            _set(attempt, "__dict__", fields)
        else:
            options = job.options
            queue = options.queue or fallback
            delay = options.delay
            attempt = _first(job, queue, handlers, queues, nxt(), dispatch_id, batch_id)
            known = seen[id(job)] = (attempt.__dict__, delay)
            if first is None:
                first = (queue, delay)
            elif first != (queue, delay):
                one_put = False
        out.append(attempt)
        delays.append(delay)
    return out, delays, one_put


def _first(
    job: Job,
    queue: str,
    handlers: Collection[str],
    queues: Collection[str],
    job_id: str,
    dispatch_id: str,
    batch_id: str,
) -> QueuedJob:
    """The first attempt of a batch's job (refused as `check_job` refuses it)."""
    options = job.options
    return QueuedJob(
        job_id,
        dispatch_id,
        job.type,
        check_job(job, handlers, queues, queue),
        queue,
        options.timeout,
        options.retry,
        options.backoff,
        1,  # attempt
        None,  # chain_id
        0,  # chain_index
        batch_id,
        None,  # callback_of
        None,  # error
        options.lane,
    )


def _alike(
    job: Job,
    n: int,
    fallback: str,
    handlers: Collection[str],
    queues: Collection[str],
    nxt: Callable[[], str],
    dispatch_id: str,
    batch_id: str,
) -> tuple[list[QueuedJob], list[float], bool]:
    """`attempts` for ``n`` times one `Job` object: the first attempt checked and built as
    `attempts` builds it, the others copies of its fields with their own ids (drawn in
    order, as one by one), made in bulk."""
    queue = job.options.queue or fallback
    first = _first(job, queue, handlers, queues, nxt(), dispatch_id, batch_id)
    more = n - 1
    # All in C, no bytecode per job: copies of the first one's fields (a copy keeps the
    # order, and ``job_id`` is replaced where it stands), each with the next id.
    dicts = list(map(dict.copy, repeat(first.__dict__, more)))
    _consume(map(dict.__setitem__, dicts, repeat("job_id"), islice(iter(nxt, None), more)))
    out = [first, *map(_new, repeat(QueuedJob, more))]
    _consume(map(_set, islice(out, 1, None), repeat("__dict__"), dicts))
    return out, [job.options.delay] * n, True


def stored(attempt: QueuedJob, delay: float) -> JobRecord:
    """The job of a first attempt, as a store other than the `MemoryStore` keeps it."""
    return JobRecord(
        attempt.job_id,
        attempt.job_type,
        attempt.payload,
        attempt.queue,
        delay,
        attempt.timeout,
        attempt.retry,
        attempt.backoff,
        attempt.lane,
    )


def _put_now(parts: Parts, found: list[QueuedJob], delays: list[float], one_put: bool) -> None:
    """`Parts.put_many` on memory queues, without yielding: one put per queue and delay,
    each counted out again if its queue refuses it (as `Parts.put` does).

    Every job here has an id this bus drew, so each counts (`Parts.mine` would say so of
    each, one by one) unless the bus runs no jobs."""
    if one_put:
        groups = {(found[0].queue, delays[0]): found}
    else:
        groups = by_queue_and_delay(list(zip(found, delays, strict=True)))
    for (name, delay), group in groups.items():
        queue = parts.queues[name]
        assert isinstance(queue, MemoryQueue)  # (`Parts.puts_now`)
        counted = len(group) if parts.counts_jobs else 0
        parts.add(counted)
        try:
            queue.put_now(group, delay)
        except BaseException:
            parts.done(counted)
            raise


async def admit_batch(admission: _Admission, jobs: Sequence[Job], builder: BatchBuilder) -> str:
    """`Admission.admit` for a batch: stored first, then its jobs queued.

    On a plain `MemoryStore` with every job's queue on the memory broker, nothing from the
    checks to the return yields (so no shield): the batch is stored and its jobs queued at
    once, as the other stores and brokers do across their awaits, and the dispatch has one
    scheduling point at its end (DESIGN rule 6: the same events, store contents and outcome
    either way; tests/actors/bus/test_batch_fast_paths.py).
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    parts, emitter = admission._parts, admission._parts.emitter
    dispatch_id, batch_id = parts.ids(), parts.ids()
    queue = builder.queue or admission.default_queue
    fields: dict[str, Any] = {"dispatch_id": dispatch_id, "batch_id": batch_id, "queue": queue}
    started = trio.current_time()
    if emitter.active:
        emitter.emit(EventKind.DISPATCH_STARTED, **fields)
    memory = parts.memory
    handlers: Mapping[str, object] = admission._handlers
    try:
        found, delays, one_put = attempts(
            jobs, queue, handlers, parts.queues, parts.ids, dispatch_id, batch_id
        )
        local, callbacks = admission._local(builder, started)
        n = len(found)
        if parts.jobs + n > parts.max_pending:  # (else there is room: no call to wait)
            await parts.wait_room(n)
        record = BatchRecord(
            batch_id,
            dispatch_id,
            builder.batch_name,
            queue,
            builder.allows_failures,
            (),
            parts.clock(),
            callbacks,
        )
        at_once = (
            memory is not None
            and parts.puts_now(found[0].queue)
            and (one_put or all(parts.puts_now(job.queue) for job in found))
        )
        if memory is not None and at_once:
            memory.create_batch_now(record, [job.job_id for job in found])
        else:
            records = tuple(map(stored, found, delays))
            await parts.store.create_batch(attrs.evolve(record, jobs=records))
    except BaseException as exc:
        if emitter.active:
            emitter.emit(EventKind.DISPATCH_FAILED, error=exc, **fields)
        raise
    # Stored: queue and report it, whatever happens to the caller meanwhile (a stored
    # batch whose jobs never reach a queue would never end).
    try:
        assert isinstance(local, BatchLocal)
        admission._batches.adopt(batch_id, local)
        if at_once:
            _put_now(parts, found, delays, one_put)
        else:
            with trio.CancelScope(shield=True):
                await parts.put_many(list(zip(found, delays, strict=True)))
    except BaseException as exc:
        await admission._undo(builder, batch_id, exc, fields)
        raise
    if emitter.active:
        admission._report(EventKind.BATCH_STARTED, fields, started)
    await trio.lowlevel.cancel_shielded_checkpoint()
    return batch_id
