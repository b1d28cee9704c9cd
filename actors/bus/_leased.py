"""What the durable brokers share: a local buffer of claimed deliveries, and coalesced acks.

A durable queue claims jobs from its backend in batches (one SQL statement, one XREADGROUP)
and hands them to this process's ``get``\\ s one by one. `LeasedQueue` does that part: one
``get`` at a time claims (as many jobs as there are ``get``\\ s waiting, up to
``claim_batch``), the others wait for what it brings, and a claim that finds nothing waits
for a local ``put`` or for the backend's poll interval. It also tracks which deliveries this
process holds (handed out or buffered), so the broker's heartbeat can renew their leases.
`Coalescer` turns concurrent calls (acks) into one backend round trip.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import attrs
import trio

from ._broker import Delivery, encode_job
from ._model import QueuedJob, check_seconds

T = TypeVar("T")

log = logging.getLogger("actors.bus.brokers")

#: The default largest encoded job a durable broker accepts (JSON text, in bytes).
DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024


@attrs.frozen
class LeaseOptions:
    """The options every durable broker takes, checked once."""

    visibility_timeout: float
    poll_interval: float
    max_payload: int
    claim_batch: int

    @classmethod
    def check(
        cls,
        visibility_timeout: object,
        poll_interval: object,
        max_payload: object,
        claim_batch: object,
    ) -> LeaseOptions:
        if not isinstance(max_payload, int) or max_payload < 1:
            raise ValueError(f"max_payload must be an int >= 1 (bytes), got {max_payload!r}")
        if not isinstance(claim_batch, int) or claim_batch < 1:
            raise ValueError(f"claim_batch must be an int >= 1, got {claim_batch!r}")
        return cls(
            check_seconds(visibility_timeout, "visibility_timeout", allow_zero=False),
            check_seconds(poll_interval, "poll_interval", allow_zero=False),
            max_payload,
            claim_batch,
        )


def encode_jobs(jobs: Sequence[QueuedJob], max_payload: int, broker: str) -> list[str]:
    """Every job as JSON text, or `ValueError` (before any is accepted) for one too large."""
    bodies = [encode_job(job) for job in jobs]
    for job, body in zip(jobs, bodies, strict=True):
        size = len(body.encode())
        if size > max_payload:
            raise ValueError(
                f"job {job.job_type!r} ({job.job_id}) is {size} bytes encoded, more than "
                f"{broker} accepts (max_payload={max_payload}); keep large data elsewhere "
                "(a file, a table, an object store) and put its key in the payload"
            )
    return bodies


class _Generation:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None


class Coalescer(Generic[T]):
    """Calls ``flush(items)`` for every item submitted meanwhile: one round trip for many.

    The first submitter flushes (shielded, so others' items are never left behind); items
    submitted while a flush runs go in the next one. `submit` returns once its item's flush
    is done, and raises the flush's error.
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]]) -> None:
        self._flush = flush
        self._items: list[T] = []
        self._generation = _Generation()
        self._flushing = False

    async def submit(self, item: T) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._items.append(item)
        generation = self._generation
        if not self._flushing:
            self._flushing = True
            try:
                with trio.CancelScope(shield=True):
                    while self._items:
                        items, self._items = self._items, []
                        current, self._generation = self._generation, _Generation()
                        try:
                            await self._flush(items)
                        except Exception as exc:
                            current.error = exc
                        current.done.set()
            finally:
                self._flushing = False
        else:
            # Cancelled here, the item still goes out with its flush: acks are idempotent.
            await generation.done.wait()
        if generation.error is not None:
            raise generation.error


# The longest a claim runs shielded from its getter's cancellation (see `LeasedQueue.get`).
CLAIM_SHIELD = 5.0


class LeasedQueue:
    """The local half of a durable queue: a buffer of claimed deliveries and who holds what.

    Subclasses implement `_claim` (lease up to ``n`` due jobs to this process; return them and
    how long to wait before claiming again if there were none).
    """

    name: str

    def __init__(self, name: str, *, claim_batch: int) -> None:
        self.name = name
        self._claim_batch = claim_batch
        self._buffer: deque[Delivery] = deque()
        self._held: dict[str, Delivery] = {}
        self._waiting = 0
        self._claiming = False
        self._lot = trio.lowlevel.ParkingLot()
        self._put_here = trio.Event()

    async def _claim(self, n: int) -> tuple[list[Delivery], float]:
        raise NotImplementedError

    def _local_put(self) -> None:
        """A job was put by this process: a claim waiting for one tries again at once."""
        self._put_here.set()
        self._put_here = trio.Event()

    def held(self) -> list[Delivery]:
        """Deliveries leased to this process: handed out and not settled, or buffered."""
        return [*self._held.values(), *self._buffer]

    def _settled(self, deliveries: Sequence[Delivery]) -> None:
        """These are no longer this process's (acked, retried, released)."""
        for delivery in deliveries:
            if self._held.pop(delivery.receipt, None) is None and delivery in self._buffer:
                self._buffer.remove(delivery)

    def _take_buffer(self) -> list[Delivery]:
        """Empty the buffer (on close, or for a discard): these were never handed out."""
        taken = list(self._buffer)
        self._buffer.clear()
        return taken

    def _demand(self) -> int:
        """How many to claim: one for every consumer of this process (the ones holding a
        delivery will be back soon), less what is buffered, up to ``claim_batch``. One
        consumer claims one at a time; a hundred claim a hundred at once."""
        wanted = len(self._held) + self._waiting + 1 - len(self._buffer)
        return max(1, min(self._claim_batch, wanted))

    async def get(self) -> Delivery:
        await trio.lowlevel.checkpoint()
        while True:
            if self._buffer:
                delivery = self._buffer.popleft()
                self._held[delivery.receipt] = delivery
                return delivery
            if self._claiming:
                self._waiting += 1
                try:
                    await self._lot.park()
                finally:
                    self._waiting -= 1
                continue
            self._claiming = True
            try:
                put_here = self._put_here
                # Shielded: a claim cancelled after the backend leased its jobs (its reply on
                # the way) would lose them to this process until their lease lapses, and a
                # graceful stop could not give them back. One round trip, its blocking read
                # bounded by the poll interval. What it brought is handed out (held) as an
                # unshielded claim that finished was; a pending cancel strikes if it found none.
                # The shield lasts CLAIM_SHIELD at most, so a claim stuck reconnecting to a
                # server that is down cannot hold up a stop (what it leased then lapses).
                got: list[Delivery] = []
                wait = 0.0
                deadline = trio.current_time() + CLAIM_SHIELD
                with trio.CancelScope(shield=True, deadline=deadline):
                    got, wait = await self._claim(self._demand())
                self._buffer.extend(got)
                if not got:
                    await trio.lowlevel.checkpoint_if_cancelled()
                if not got and wait > 0:
                    with trio.move_on_after(wait):
                        await put_here.wait()
            finally:
                self._claiming = False
                # Wake one waiter per job claimed (less the one this task takes), or one to
                # claim next if nothing came or this task was cancelled.
                self._lot.unpark(count=max(1, len(self._buffer) - 1))
