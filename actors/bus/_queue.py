"""Queues: where jobs wait for a worker. A narrow protocol, and the in-memory default.

Workers only ``get`` jobs; the bus and the coordinators only ``put`` and ``discard`` them.
A queue on a real broker implements the same few methods and replaces `MemoryQueue` through
``open_bus(queue_factory=...)`` without touching workers or coordinators.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from itertools import count
from typing import Protocol, runtime_checkable

import attrs
import trio

from ._model import QueuedJob


@attrs.frozen
class QueueStats:
    """A snapshot of a queue."""

    ready: int
    """Jobs a worker may take now."""
    delayed: int
    """Jobs waiting for their time (a delay, a retry's backoff, a release)."""


@runtime_checkable
class Queue(Protocol):
    """What the bus needs from a queue. Times are Trio times (`trio.current_time`)."""

    name: str

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (timers, a broker connection); runs under the bus's supervisor."""
        ...

    async def put(self, jobs: Sequence[QueuedJob], *, at: float | None = None) -> None:
        """Accept ``jobs``, in order; workers may take them at Trio time ``at`` (None: now).

        One call per dispatch, or per batch (a broker would publish them in one go). Must
        not wait for room: the bus limits what it accepts itself, and coordinators put from
        inside the flow that drains the queue.
        """
        ...

    async def get(self) -> QueuedJob:
        """Wait for a job that is due and hand it to exactly one worker."""
        ...

    async def discard(self, batch_id: str) -> list[QueuedJob]:
        """Remove and return the jobs of ``batch_id`` still waiting (ready or delayed).

        A queue that cannot remove may return ``[]``: workers skip the jobs of a cancelled
        batch when they get them.
        """
        ...

    def stats(self) -> QueueStats: ...

    # Optional: ``def put_nowait(self, jobs, *, at=None) -> None``, `put` without yielding,
    # defined by the same class as `put`. The bus then queues a dispatch's jobs and reports
    # the dispatch before any worker can start them (``dispatch_succeeded`` comes before
    # ``job_started``). A subclass that overrides only `put` keeps having `put` called.


class MemoryQueue:
    """The default queue: a deque of ready jobs and a heap of delayed ones, in one process.

    Ready jobs are handed out in FIFO order; delayed jobs become ready when Trio's clock
    reaches their time (so the autojump clock runs delays instantly in tests).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._ready: deque[QueuedJob] = deque()
        self._delayed: list[tuple[float, int, QueuedJob]] = []
        self._seq = count()
        self._workers = trio.lowlevel.ParkingLot()
        self._timer = trio.lowlevel.ParkingLot()

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
                self._workers.unpark()
            with trio.move_on_at(delayed[0][0] if delayed else math.inf):
                await self._timer.park()

    async def put(self, jobs: Sequence[QueuedJob], *, at: float | None = None) -> None:
        """Accept ``jobs`` now (never waits for room), then yield to the scheduler."""
        self.put_nowait(jobs, at=at)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def put_nowait(self, jobs: Sequence[QueuedJob], *, at: float | None = None) -> None:
        """Accept ``jobs`` now without yielding; workers run them once this task yields."""
        if at is None or at <= trio.current_time():
            self._ready.extend(jobs)
            if self._workers:
                self._workers.unpark(count=len(jobs))
        else:
            earliest = not self._delayed or at < self._delayed[0][0]
            for job in jobs:
                heapq.heappush(self._delayed, (at, next(self._seq), job))
            if earliest:
                self._timer.unpark_all()

    async def get(self) -> QueuedJob:
        """Wait for a ready job and return it; FIFO among ready jobs."""
        ready = self._ready
        if ready:
            await trio.lowlevel.checkpoint()  # let others run between jobs
        while not ready:
            await self._workers.park()  # (a checkpoint too)
        return ready.popleft()

    async def discard(self, batch_id: str) -> list[QueuedJob]:
        """Remove and return every waiting job of ``batch_id``."""
        await trio.lowlevel.checkpoint()
        removed = [job for job in self._ready if job.batch_id == batch_id]
        if removed:
            kept = [job for job in self._ready if job.batch_id != batch_id]
            self._ready.clear()
            self._ready.extend(kept)
        late = [entry for entry in self._delayed if entry[2].batch_id == batch_id]
        if late:
            self._delayed[:] = [entry for entry in self._delayed if entry[2].batch_id != batch_id]
            heapq.heapify(self._delayed)
            removed.extend(entry[2] for entry in sorted(late))
            self._timer.unpark_all()
        return removed

    def stats(self) -> QueueStats:
        """How many jobs are ready and how many are delayed."""
        return QueueStats(ready=len(self._ready), delayed=len(self._delayed))
