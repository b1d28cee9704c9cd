"""`MemoryBroker`: the default broker, its queues in this process, on Trio's clock.

Jobs are lost with the process (``durable = False``); nothing is leased, since a worker that
dies takes the whole process with it. Ready jobs go out FIFO; delayed ones become ready when
Trio's clock reaches their time, so the autojump clock runs delays instantly in tests.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from itertools import count
from typing import TypeGuard

import trio

from ._broker import Delivery, QueueStats, put_grouped
from ._model import DispatchResult, Job, QueuedJob

#: A plain job as the bus's own dispatch puts it (`MemoryQueue.put_plain_now`): its
#: `DispatchResult`, the `Job` and its payload as JSON text, due now, on no lane. A tuple
#: costs a fraction of a `QueuedJob`; the same `QueuedJob` is built from it (`queued`)
#: wherever one is needed (`get`, a retry, a failure, anything but a plain success).
Plain = tuple[DispatchResult, Job, str]


def queued(item: QueuedJob | Plain) -> QueuedJob:
    """The `QueuedJob` of a ready job (the first attempt a `Plain` stands for; the one a
    plain dispatch on any other broker puts)."""
    if not isinstance(item, tuple):
        return item
    result, job, payload = item
    options = job.options
    return QueuedJob(
        result.job_id,
        result.dispatch_id,
        job.type,
        payload,
        result.queue,
        options.timeout,
        options.retry,
        options.backoff,
        1,  # attempt
        None,  # chain_id
        0,  # chain_index
        None,  # batch_id
        None,  # callback_of
        None,  # error
        options.lane,
    )


def _of_batch(item: QueuedJob | Plain, batch_id: str) -> TypeGuard[QueuedJob]:
    return not isinstance(item, tuple) and item.batch_id == batch_id  # (a `Plain` is of none)


class MemoryQueue:
    """One queue of a `MemoryBroker` (a `BrokerQueue`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ready: deque[QueuedJob | Plain] = deque()
        self._delayed: list[tuple[float, int, QueuedJob]] = []
        self._seq = count()
        self._running = 0
        #: Workers waiting in `get`, woken in order (a ParkingLot costs more on the path of
        #: every job).
        self._waiting: deque[trio.lowlevel.Task] = deque()
        #: Workers woken for a ready job and not yet resumed: that many of the ready jobs are
        #: theirs, so a running worker's get leaves them (no woken worker finds its job taken
        #: and parks again). The jobs stay in the ready deque: discard and stats see them.
        self._reserved = 0
        self._timer = trio.lowlevel.ParkingLot()
        #: Lanes with a job out, and the jobs waiting behind it: (due time, job).
        self._lanes: dict[str, deque[tuple[float, QueuedJob]]] = {}
        #: Set by `put_kept`: its caller, a worker of this queue, passed a cancel check and
        #: has not yielded since (its next job need not check again, see `Worker`).
        self.checked = False

    def __repr__(self) -> str:
        return f"<MemoryQueue {self.name!r} ready={len(self._ready)} delayed={len(self._delayed)}>"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Move delayed jobs to the ready deque when they fall due."""
        task_status.started()
        delayed = self._delayed
        while True:
            now = trio.current_time()
            while delayed and delayed[0][0] <= now:
                self._ready.append(heapq.heappop(delayed)[2])
                self._wake(1)
            with trio.move_on_at(delayed[0][0] if delayed else math.inf):
                await self._timer.park()

    def put_now(self, jobs: Sequence[QueuedJob], delay: float = 0.0) -> None:
        """`put` without yielding (the bus's own fast path to this queue)."""
        for job in jobs:
            if job.lane is not None:
                jobs = self._lane_heads(jobs, delay)
                break
        self._place(jobs, delay)

    def put_one_now(self, job: QueuedJob, delay: float) -> None:
        """`put_now` of one job (a plain dispatch's)."""
        if delay > 0 or job.lane is not None:
            self.put_now((job,), delay)
            return
        self.put_plain_now(job)

    def put_plain_now(self, job: QueuedJob | Plain) -> None:
        """`put_one_now` of a job due now, on no lane (a plain dispatch's `Plain`)."""
        self._ready.append(job)
        if self._waiting:
            self._reserved += 1
            trio.lowlevel.reschedule(self._waiting.popleft())

    def put_kept(self, job: QueuedJob) -> None:
        """Queue a ready plain job (no delay, no lane) for the running worker of this queue
        that calls this and takes its next job with `get_now` before it yields: no one is
        woken for it (a woken worker's task switch, where the job runs next either way).
        The caller has passed a cancel check (`checkpoint_if_cancelled`) with no scheduling
        point since: it says so (``checked``), and the worker skips its next job's check."""
        self._ready.append(job)
        self.checked = True

    def _lane_heads(self, jobs: Sequence[QueuedJob], delay: float) -> list[QueuedJob]:
        """The jobs that go out now: plain ones, and lane jobs whose lane has none out."""
        at = trio.current_time() + delay
        lanes = self._lanes
        out = []
        for job in jobs:
            lane = job.lane
            if lane is None:
                out.append(job)
            elif lane in lanes:
                lanes[lane].append((at, job))
            else:
                lanes[lane] = deque()
                out.append(job)
        return out

    def _lane_done(self, lane: str) -> None:
        """The lane's job out is settled: send the next one behind it, or free the lane."""
        waiting = self._lanes[lane]
        if not waiting:
            del self._lanes[lane]
            return
        at, job = waiting.popleft()
        self._place((job,), at - trio.current_time())

    def _place(self, jobs: Sequence[QueuedJob], delay: float) -> None:
        if not jobs:
            return
        if delay <= 0:
            self._ready.extend(jobs)
            if self._waiting:
                self._wake(len(jobs))
            return
        at = trio.current_time() + delay
        earliest = not self._delayed or at < self._delayed[0][0]
        for job in jobs:
            heapq.heappush(self._delayed, (at, next(self._seq), job))
        if earliest:
            self._timer.unpark_all()

    async def put(self, jobs: Sequence[QueuedJob], *, delay: float = 0.0) -> None:
        """Accept ``jobs`` now (never waits for room), then yield."""
        self.put_now(jobs, delay)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def put_many(self, jobs: Sequence[tuple[QueuedJob, float]]) -> None:
        """One `put` per delay (`put_grouped`)."""
        await put_grouped(self, jobs)

    async def get(self) -> Delivery:
        """Wait for a ready job; FIFO among ready jobs. A worker cancelled meanwhile gets
        none: it was not cancelled at the scheduling point it returns from."""
        return Delivery(queued(await self.take(trio.lowlevel.current_task())), 1, "")

    async def take(self, task: trio.lowlevel.Task) -> QueuedJob | Plain:
        """`get` for the current ``task``: its job, without the `Delivery` (every memory
        delivery is ``(job, 1, "")``) and maybe as a `Plain`: the bus's own workers build
        those only when a job does not simply succeed."""
        ready = self._ready
        if len(ready) > self._reserved:
            await trio.lowlevel.checkpoint()  # let others run between jobs
        if len(ready) <= self._reserved:  # none free: the rest are woken workers'
            waiting = self._waiting

            def abort(_: object) -> trio.lowlevel.Abort:
                waiting.remove(task)
                return trio.lowlevel.Abort.SUCCEEDED

            while True:
                waiting.append(task)
                await trio.lowlevel.wait_task_rescheduled(abort)  # (a checkpoint too)
                self._reserved -= 1
                if ready:  # the job it was woken for, unless a discard took it
                    break
            try:
                # Woken by a put, then cancelled before running: the job is another's.
                await trio.lowlevel.checkpoint_if_cancelled()
            except trio.Cancelled:
                self._wake(1)
                raise
        self._running += 1
        return ready.popleft()

    def _wake(self, n: int) -> None:
        """Wake up to ``n`` waiting workers, longest waiting first, each for a ready job."""
        waiting = self._waiting
        while n > 0 and waiting:
            self._reserved += 1
            trio.lowlevel.reschedule(waiting.popleft())
            n -= 1

    def get_now(self) -> Delivery | None:
        """A ready job without yielding, or None (for a worker that has just yielded)."""
        job = self.take_now()
        return None if job is None else Delivery(queued(job), 1, "")

    def take_now(self) -> QueuedJob | Plain | None:
        """`get_now`'s job, without the `Delivery` (see `take`)."""
        ready = self._ready
        if len(ready) <= self._reserved:  # none, or all woken workers'
            return None
        self._running += 1
        return ready.popleft()

    def ack_now(self, delivery: Delivery) -> None:
        self._running -= 1
        if delivery.job.lane is not None:
            self._lane_done(delivery.job.lane)

    async def ack(self, delivery: Delivery) -> None:
        """Nothing to remove: a delivered job left the queue when it was taken."""
        self.ack_now(delivery)
        await trio.lowlevel.checkpoint()

    async def retry(self, delivery: Delivery, job: QueuedJob, *, delay: float) -> None:
        """The next attempt, due in ``delay``; a lane job's keeps its lane's turn."""
        self._running -= 1
        if job.lane is None:
            await self.put((job,), delay=delay)
            return
        self._place((job,), delay)  # not `put`: the lane is this job's already
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def release(self, deliveries: Sequence[Delivery], *, started: bool = True) -> None:
        """Back to the front of the queue, in their order, due now (every memory delivery
        counts 1: nothing is redelivered, so ``started`` changes nothing)."""
        self._running -= len(deliveries)
        self._ready.extendleft(reversed([d.job for d in deliveries]))
        self._wake(len(deliveries))
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def discard(self, batch_id: str) -> list[QueuedJob]:
        """Remove and return every waiting job of ``batch_id``."""
        await trio.lowlevel.checkpoint()
        if self._lanes:
            return self._discard_with_lanes(batch_id)
        removed = [job for job in self._ready if _of_batch(job, batch_id)]
        if removed:
            kept = [job for job in self._ready if not _of_batch(job, batch_id)]
            self._ready.clear()
            self._ready.extend(kept)
        late = [entry for entry in self._delayed if entry[2].batch_id == batch_id]
        if late:
            self._delayed[:] = [entry for entry in self._delayed if entry[2].batch_id != batch_id]
            heapq.heapify(self._delayed)
            removed.extend(entry[2] for entry in sorted(late))
            self._timer.unpark_all()
        return removed

    def _discard_with_lanes(self, batch_id: str) -> list[QueuedJob]:
        removed: list[QueuedJob] = []
        for waiting in self._lanes.values():
            removed += [job for _, job in waiting if job.batch_id == batch_id]
            kept = [(at, job) for at, job in waiting if job.batch_id != batch_id]
            waiting.clear()
            waiting.extend(kept)
        heads = [job for job in self._ready if _of_batch(job, batch_id)]
        heads += [entry[2] for entry in sorted(self._delayed) if entry[2].batch_id == batch_id]
        self._ready = deque(job for job in self._ready if not _of_batch(job, batch_id))
        self._delayed[:] = [entry for entry in self._delayed if entry[2].batch_id != batch_id]
        heapq.heapify(self._delayed)
        self._timer.unpark_all()
        for job in heads:
            if job.lane is not None:
                self._lane_done(job.lane)
        return heads + removed

    async def stats(self) -> QueueStats:
        await trio.lowlevel.checkpoint()
        return self.stats_now()

    def stats_now(self) -> QueueStats:
        return QueueStats(ready=len(self._ready), delayed=len(self._delayed), running=self._running)


class MemoryBroker:
    """The default `Broker`: queues in this process; jobs are lost with it."""

    durable = False

    def __init__(self) -> None:
        self._queues: dict[str, MemoryQueue] = {}

    def __repr__(self) -> str:
        return f"<MemoryBroker {sorted(self._queues)}>"

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()

    def queue(self, name: str) -> MemoryQueue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = MemoryQueue(name)
        return queue
