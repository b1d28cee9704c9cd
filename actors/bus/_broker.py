"""Brokers: where jobs wait between `dispatch` and a worker. The seam every broker implements.

A `Broker` makes one `BrokerQueue` per queue name. A worker ``get``\\ s a `Delivery` (a job
leased to it), runs it, has the outcome recorded in the store, and only then ``ack``\\ s it.
A durable broker keeps a delivered job until it is acknowledged: if the worker dies, its lease
lapses (``visibility_timeout``) and another worker gets the job again, with
``Delivery.delivery`` one higher. A retry replaces the job by its next attempt in one atomic
step, so a crash between the two can neither lose it nor run it twice.

Times here are seconds *from now* (``delay``): each broker reads its own clock (Trio's for
`MemoryBroker`, the wall clock shared by processes for the durable ones), so nothing crosses a
process boundary as a Trio time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import trio

from ._model import QueuedJob


@attrs.frozen
class QueueStats:
    """A snapshot of one queue in its broker (for a durable broker: across every process)."""

    ready: int
    """Jobs a worker may take now."""
    delayed: int
    """Jobs waiting for their time (a delay, a retry's backoff)."""
    running: int = 0
    """Jobs delivered to a worker and not acknowledged yet (leased)."""


@attrs.frozen(slots=False)  # built per delivery: a dict class is built faster
class Delivery:
    """One job handed to one worker under a lease, until `BrokerQueue.ack` or `retry`."""

    job: QueuedJob
    """The job, as it was put (its ``attempt`` says which attempt this run is)."""
    delivery: int
    """1 the first time this attempt is handed out; more after a lapsed lease (redelivery)."""
    receipt: str
    """The broker's handle on this delivery (a row id, a stream entry id); opaque to the bus."""
    fence: int = 0
    """A fencing token for lane jobs (an epoch that only grows); 0 where none applies."""


@runtime_checkable
class BrokerQueue(Protocol):
    """What the bus needs from one queue of a broker."""

    name: str

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work under the bus's supervisor: promote due delayed jobs, renew the
        leases of deliveries held by this process (heartbeat), take back lapsed ones."""
        ...

    async def put(self, jobs: Sequence[QueuedJob], *, delay: float = 0.0) -> None:
        """Accept ``jobs`` in order, due ``delay`` seconds from now; durable once it returns.

        Never waits for room (the bus bounds what it accepts). Raises ``ValueError`` for a job
        the broker cannot hold (too large), before accepting any of ``jobs``.
        """
        ...

    async def put_many(self, jobs: Sequence[tuple[QueuedJob, float]]) -> None:
        """`put` for jobs each with its own delay (``(job, delay)``), in order per delay;
        durable once it returns. A broker may take them in one round trip; `put_grouped` is
        the plain way (one `put` per delay). Raises ``ValueError`` for a job the broker
        cannot hold before accepting any of ``jobs``.
        """
        ...

    async def get(self) -> Delivery:
        """Wait for a due job and lease it to this process (brokers may claim in batches)."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """The job's final outcome is recorded: remove it for good. Idempotent.

        Brokers may coalesce concurrent acks into one round trip; returns once durable.
        """
        ...

    async def retry(self, delivery: Delivery, job: QueuedJob, *, delay: float) -> None:
        """Replace the delivered job by ``job`` (its next attempt), due in ``delay`` seconds,
        atomically. A delayed job is never redelivered early, whatever its delay."""
        ...

    async def release(self, deliveries: Sequence[Delivery], *, started: bool = True) -> None:
        """Give jobs back unfinished (a graceful stop): due now, for any worker, at once.

        ``started=False``: the jobs never began (stopped before their handler ran), so their
        next delivery counts as this one again (``Delivery.delivery`` does not grow).
        """
        ...

    async def discard(self, batch_id: str) -> list[QueuedJob]:
        """Remove and return the waiting (not delivered) jobs of ``batch_id``.

        A broker that cannot remove may return ``[]``: workers skip a cancelled batch's jobs.
        """
        ...

    async def stats(self) -> QueueStats:
        """Ready, delayed and running counts for this queue."""
        ...


@runtime_checkable
class Broker(Protocol):
    """Makes the bus's queues and owns what they share (a connection pool, a file)."""

    durable: bool
    """True if jobs survive the process (`SQLiteBroker`, `RedisBroker`)."""

    async def open(self) -> None:
        """Connect (and create what is missing); raise a clear error naming the URL if not."""
        ...

    async def close(self) -> None: ...

    def queue(self, name: str) -> BrokerQueue:
        """The queue called ``name`` (made on first use; the same object after)."""
        ...


def by_queue_and_delay(
    jobs: Sequence[tuple[QueuedJob, float]],
) -> dict[tuple[str, float], list[QueuedJob]]:
    """``(job, delay)`` pairs grouped by queue and delay, in order within each group."""
    groups: dict[tuple[str, float], list[QueuedJob]] = {}
    for job, delay in jobs:
        groups.setdefault((job.queue, delay), []).append(job)
    return groups


async def put_grouped(queue: BrokerQueue, jobs: Sequence[tuple[QueuedJob, float]]) -> None:
    """`BrokerQueue.put_many` as one `put` per delay (the default of the seam)."""
    groups = by_queue_and_delay(jobs)
    if not groups:
        await trio.lowlevel.checkpoint()
    for (_, delay), group in groups.items():
        await queue.put(group, delay=delay)


def encode_job(job: QueuedJob) -> str:
    """A job as JSON text, for a broker that stores it outside the process."""
    return json.dumps(attrs.asdict(job, recurse=False), separators=(",", ":"))


def decode_job(text: str | bytes) -> QueuedJob:
    """The inverse of `encode_job`."""
    fields: dict[str, Any] = json.loads(text)
    return QueuedJob(**fields)
