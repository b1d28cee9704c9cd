"""What every role of the bus shares: the store, the queues, the events, and the count of
outstanding work that `Bus.wait_idle` waits on.

Nothing here decides anything; it is the plumbing the roles (`_admission`, `_worker`,
`_chains`, `_batches`, `_callbacks`) are built on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

import trio

from .._errors import LeaseLost
from ._broker import BrokerQueue, Delivery, by_queue_and_delay
from ._memory_broker import MemoryQueue
from ._model import IdSource, QueuedJob
from ._observe import Emitter
from ._recording import Recorder
from ._store import MemoryStore, Store

log = logging.getLogger("actors.bus")

#: True in the bus's own tasks (workers, coordinators, callbacks): their dispatches never
#: wait for room (a full bus would wait on itself) and `wait_idle` refuses to run there.
INSIDE: ContextVar[bool] = ContextVar("actors.bus.inside", default=False)


class Parts:
    """The shared plumbing of one bus."""

    def __init__(
        self,
        *,
        store: Store,
        queues: Mapping[str, BrokerQueue],
        emitter: Emitter,
        clock: Callable[[], datetime],
        ids: IdSource,
        max_pending: int,
    ) -> None:
        self.store = store
        self.queues = queues
        self.emitter = emitter
        self.clock = clock
        self.ids = ids
        self.recorder = Recorder(store)
        #: The store itself if it is exactly a `MemoryStore` (not a subclass): coordinators
        #: then record without a scheduling point (`MemoryStore.record_chain_step_now`).
        self.memory = store if type(store) is MemoryStore else None
        self.max_pending = max_pending
        self.counts_jobs = True
        """False on a bus that runs no jobs: a job leaves this bus once it is in the broker."""
        self.jobs = 0
        """Jobs this bus accepted (made) without a recorded final outcome (queued, running,
        retrying). A durable broker also hands its workers jobs other processes dispatched:
        those never count here (`mine`)."""
        self.admitting = 0
        """Dispatches under way (checked open, not returned yet)."""
        self.in_hand = 0
        """Deliveries this bus's workers took and whose outcome is not recorded yet (own
        jobs or other processes'): what leaving a bus on a durable broker waits for."""
        # Woken when the bus goes idle. Not a trio-util AsyncBool: setting one on every edge
        # (a job in, the job out) cost a microsecond per job; this costs only when awaited.
        self._idle = trio.lowlevel.ParkingLot()
        #: Tasks parked in ``_idle`` (read on the path of every job: a ParkingLot's truth
        #: is a call).
        self.idle_waiting = 0
        self._room = trio.lowlevel.ParkingLot()
        self._room_waiting = 0  # dispatches parked in `_room`, not yet woken
        # The memory broker's queues take jobs without yielding (the events of a dispatch
        # then come before its job's, as with any broker whose put returns before a worker
        # can start).
        memory = {name: queue for name, queue in queues.items() if type(queue) is MemoryQueue}
        self._now = {name: queue.put_now for name, queue in memory.items()}
        #: A memory queue's `MemoryQueue.put_one_now`, by name (a plain dispatch's put).
        self.one_now = {name: queue.put_one_now for name, queue in memory.items()}
        #: Its `MemoryQueue.put_plain_now`, by name.
        self.plain_now = {name: queue.put_plain_now for name, queue in memory.items()}

    # ---------------------------------------------------------------- counting

    @property
    def idle(self) -> bool:
        """No job outstanding and no dispatch under way."""
        return not self.jobs and not self.admitting

    async def wait_idle(self) -> None:
        while self.jobs or self.admitting:  # woken when idle, it may have moved on again
            await self._park_idle()

    async def wait_settled(self) -> None:
        """Until no dispatch is under way and nothing is in this bus's hands: on a durable
        broker the jobs still waiting there are safe, for any worker of any process."""
        while self.in_hand or self.admitting:
            await self._park_idle()

    async def _park_idle(self) -> None:
        self.idle_waiting += 1
        try:
            await self._idle.park()
        finally:
            self.idle_waiting -= 1

    def wake_idle(self) -> None:
        """Wake `wait_idle` and `wait_settled` (they check again)."""
        self._idle.unpark_all()

    def let_go(self, n: int) -> None:
        """``n`` deliveries left this bus's hands (recorded, retried or given back)."""
        self.in_hand -= n
        if not self.in_hand and not self.admitting and self.idle_waiting:
            self._idle.unpark_all()

    def add(self, n: int) -> None:
        self.jobs += n

    def mine(self, jobs: Iterable[QueuedJob]) -> int:
        """How many of ``jobs`` count on this bus: the ones it made (none if it runs no jobs)."""
        if not self.counts_jobs:
            return 0
        prefix, n = self.ids.prefix, 0
        for job in jobs:
            if job.job_id.startswith(prefix):  # IdSource.made, inlined: once or twice a job
                n += 1
        return n

    def finished(self, jobs: Sequence[QueuedJob], *, in_hand: bool = False) -> None:
        """``jobs`` have their final outcome recorded (or were discarded); ``in_hand``: they
        were deliveries of this bus's workers, which now let them go."""
        self.done(self.mine(jobs))
        if in_hand:
            self.let_go(len(jobs))

    def done(self, n: int) -> None:
        # Never below zero, as a safety net: the counts are exact (`mine`), but a failure in
        # the bus's own machinery (the worker's catch-all) may count a job out twice.
        jobs = self.jobs - n
        self.jobs = jobs = 0 if jobs < 0 else jobs
        # The counts first: this runs for every job, and a ParkingLot's truth is a call.
        if not jobs and not self.admitting and self.idle_waiting:
            self._idle.unpark_all()
        if self._room_waiting and jobs <= self.max_pending // 2:
            self._room_waiting -= len(self._room.unpark_all())  # (not again till they park)

    def settled_here(self) -> None:
        """`done` and `let_go` of one delivery of this bus's own, acknowledged by its worker
        (one call on the path of every plain job that succeeds)."""
        jobs = self.jobs - 1
        self.jobs = jobs = 0 if jobs < 0 else jobs
        self.in_hand = in_hand = self.in_hand - 1
        if (not jobs or not in_hand) and not self.admitting and self.idle_waiting:
            self._idle.unpark_all()
        if self._room_waiting and jobs <= self.max_pending // 2:
            self._room_waiting -= len(self._room.unpark_all())  # (not again till they park)

    def admit(self) -> None:
        self.admitting += 1

    def admitted(self) -> None:
        self.admitting -= 1
        if not self.admitting and not (self.jobs and self.in_hand) and self.idle_waiting:
            self._idle.unpark_all()

    async def wait_room(self, n: int) -> None:
        """Outside the bus's own tasks, wait while ``n`` more jobs would pass ``max_pending``."""
        if self.jobs + n <= self.max_pending or INSIDE.get():
            return
        while self.jobs and self.jobs + n > self.max_pending:
            # Counted while parked: a waker counts out those it wakes, so the jobs after it
            # do not wake an empty lot again before they run.
            self._room_waiting += 1
            try:
                await self._room.park()
            except BaseException:  # not woken (a park that returns was unparked)
                self._room_waiting -= 1
                raise

    # ---------------------------------------------------------------- queueing

    def puts_now(self, queue: str) -> bool:
        """True if a put on ``queue`` never yields (the memory broker's)."""
        return queue in self._now

    def put_now(self, jobs: Sequence[QueuedJob], delay: float = 0.0) -> None:
        """`put` for a queue that `puts_now`: no yield, so no cancellation either."""
        self.add(self.mine(jobs))
        self._now[jobs[0].queue](jobs, delay)

    def put_one_now(self, job: QueuedJob, delay: float) -> None:
        """`put_now` of one job this bus made (so it counts, if the bus counts jobs)."""
        if self.counts_jobs:
            self.jobs += 1
        self.one_now[job.queue](job, delay)

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge a delivery (without yielding on the memory broker)."""
        queue = self.queues[delivery.job.queue]
        if type(queue) is MemoryQueue:
            queue.ack_now(delivery)
        else:
            with lease_lost_ok(delivery):
                await queue.ack(delivery)

    async def put(self, jobs: Sequence[QueuedJob], delay: float = 0.0) -> None:
        """Queue jobs of one queue, counted as outstanding until their outcome is recorded."""
        counted = self.mine(jobs)
        self.add(counted)
        try:
            put_now = self._now.get(jobs[0].queue)
            if put_now is not None:
                put_now(jobs, delay)
            else:
                await self.queues[jobs[0].queue].put(jobs, delay=delay)
        except BaseException:
            self.done(counted)
            raise

    def put_many_now(self, jobs: Sequence[tuple[QueuedJob, float]]) -> None:
        """`put_many` when every queue `puts_now`: no yield, so no cancellation either."""
        self.add(self.mine(job for job, _ in jobs))
        for (queue, delay), group in by_queue_and_delay(jobs).items():
            self._now[queue](group, delay)

    async def put_many(self, jobs: Sequence[tuple[QueuedJob, float]]) -> None:
        """Queue jobs, each with its delay: one `BrokerQueue.put_many` per queue, in order."""
        by_queue: dict[str, list[tuple[QueuedJob, float]]] = {}
        for item in jobs:
            by_queue.setdefault(item[0].queue, []).append(item)
        for name, items in by_queue.items():
            counted = self.mine(job for job, _ in items)
            self.add(counted)
            try:
                if name in self._now:
                    for (_, delay), group in by_queue_and_delay(items).items():
                        self._now[name](group, delay)
                else:
                    await self.queues[name].put_many(items)
            except BaseException:
                self.done(counted)
                raise


@contextmanager
def lease_lost_ok(delivery: Delivery) -> Iterator[None]:
    """A lane job's lease lapsed and another worker has the job now: this one lets it go."""
    try:
        yield
    except LeaseLost as exc:
        log.warning("bus lane job %s: %s", delivery.job.job_id, exc)
