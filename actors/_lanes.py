"""Lanes: per-key serialization. Each key is a FIFO turn, and a job runs in its caller's task.

>>> async with actors.open_lanes(idle_timeout=600.0) as lanes:
...     balance = await lanes.run(Key.namespace("account", "42"), deposit, 100)
...     await lanes.run_multi(["account:1", "account:2"], transfer, "account:1", "account:2", 5)

How a lane lives:

* **Idle**: the manager's dict maps the key to the Trio time it went idle, a bare float: no
  task, no queue, nothing for the garbage collector to walk. The reaper forgets it later.
* **Busy**: the dict maps the key to a `_Lane`: the task holding the turn and a deque of the
  tasks waiting for it. A caller that finds its lane busy parks in its own task; the holder,
  when its job ends, hands the turn straight to the first waiter and reschedules it.

So a job always runs as ``await fn(*args)`` in the task that called `Lanes.run` (DESIGN rule
6): its context variables, deadline, cancel scopes and exceptions are that caller's, whether
the lane was idle or busy. There is no second path to tell apart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, nullcontext
from typing import Any, TypeVar

import attrs
import outcome
import trio

from ._checks import check_async_fn, check_idle_timeout
from ._cluster import ClusterLeases
from ._errors import ComponentClosed
from ._idle import reap_forever, reap_stale
from ._keys import check_key
from ._nursery import open_component_nursery
from ._waits import check_wait, waiting

T = TypeVar("T")

_Task = trio.lowlevel.Task
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
_UNCHECKED = object()


@attrs.frozen
class LaneStats:
    """A snapshot of a `Lanes` manager."""

    live: int
    """Lanes that exist: busy ones and idle ones not reaped yet."""
    busy: int
    """Lanes running a job (or held by `Lanes.run_multi`) right now."""
    queued: int
    """Callers waiting for their lane's turn."""
    jobs_total: int
    """Jobs started since the manager opened (a `run_multi` counts once per key it holds)."""
    reaped_total: int
    """Idle lanes reaped since the manager opened."""


class _Lane:
    """A busy lane: who holds its turn, who waits for it (FIFO), how to cancel the holder.

    A waiter cancelled while queued stays in ``waiting`` and is counted in ``gone``: its entry
    is skipped when the turn reaches it (a task cancelled and queued again on the same lane
    has its stale entries before its live one, so skipping the first ones is right).
    """

    __slots__ = ("gone", "owner", "scope", "waiting")

    def __init__(self, owner: _Task) -> None:
        self.owner: _Task | None = owner
        self.waiting: deque[_Task] | None = None  # made when the first caller waits
        self.gone: dict[_Task, int] | None = None
        #: The running job's cancel scope, if its caller is outside the Lanes block.
        self.scope: trio.CancelScope | None = None


class Lanes:
    """Runs jobs one at a time per key, in arrival order; different keys run in parallel.

    Made by `open_lanes`. An idle lane is a float in a dict until it is reaped.
    """

    def __init__(
        self,
        idle_timeout: float,
        opener: _Task,
        outside: frozenset[object],
        cluster: ClusterLeases | None = None,
    ) -> None:
        self._idle_timeout = idle_timeout
        self._cluster = cluster  # holds each key across the fleet too (open_lanes(cluster=))
        self._keys: dict[str, float | _Lane] = {}
        self._busy = 0
        self._queued = 0
        self._jobs_total = 0
        self._reaped_total = 0
        self._closing = False
        self._closed = False
        self._all_idle = trio.lowlevel.ParkingLot()
        self._checked: object = _UNCHECKED  # the last async_fn that passed the check
        self._opener = opener
        self._outside = outside  # the opener's nurseries that were open before ours
        self._now = trio.lowlevel.current_clock().current_time  # Trio's clock, looked up once

    # ---------------------------------------------------------------- running jobs

    def _check_call(self, key: object, async_fn: object) -> None:
        if self._closed:
            raise ComponentClosed("lanes are closed: use them inside their `async with` block")
        if key.__class__ is not str or not key:
            check_key(key)
        # Callers usually send the same function again and again: check it once, not per job.
        if async_fn is not self._checked:
            check_async_fn(async_fn, "async_fn")
            self._checked = async_fn

    async def run(self, key: str, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await async_fn(*args)`` after the jobs sent to ``key`` before; return its result.

        The job runs in this task, exactly as ``await async_fn(*args)`` would (context
        variables, deadline, cancel scopes, exceptions), except that it waits for its turn.
        Cancelled while queued: the job never runs. Cancelled while running: the job is
        cancelled; the lane goes on either way.
        """
        self._check_call(key, async_fn)
        await trio.lowlevel.checkpoint_if_cancelled()
        task = trio.lowlevel.current_task()
        lane, idle = self._claim(key, task)
        if not idle:
            await self._wait_turn(key, lane, task)  # raises only if the turn never came
        self._jobs_total += 1
        try:
            if idle:
                await trio.lowlevel.cancel_shielded_checkpoint()  # a schedule point either way
            if self._cluster is not None:
                return await self._cluster.run((key,), self._job, task, (lane,), async_fn, args)
            if self._inside(task):
                return await async_fn(*args)
            return await self._run_scoped((lane,), async_fn, args)
        finally:
            self._release(key, lane)

    async def run_multi(
        self, keys: Iterable[str], async_fn: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        """Run ``await async_fn(*args)`` in this task while holding every lane in ``keys``.

        Lanes are taken in sorted order and duplicates count once, so overlapping multi-key
        jobs cannot deadlock. Running one of the held keys from inside the job raises
        `WouldDeadlock`.
        """
        if isinstance(keys, str):
            raise TypeError("run_multi() takes a list of keys; for one key use run(key, ...)")
        wanted = sorted({check_key(key) for key in keys})
        if not wanted:
            raise ValueError("run_multi() needs at least one key")
        self._check_call(wanted[0], async_fn)
        await trio.lowlevel.checkpoint_if_cancelled()
        task = trio.lowlevel.current_task()
        held: list[tuple[str, _Lane]] = []
        try:
            waited = False
            for key in wanted:
                lane, idle = self._claim(key, task)
                if not idle:
                    await self._wait_turn(key, lane, task)
                    waited = True
                held.append((key, lane))
                self._jobs_total += 1
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            if self._cluster is not None:
                lanes = [lane for _, lane in held]
                return await self._cluster.run(wanted, self._job, task, lanes, async_fn, args)
            if self._inside(task):
                return await async_fn(*args)
            return await self._run_scoped([lane for _, lane in held], async_fn, args)
        finally:
            for key, lane in reversed(held):
                self._release(key, lane)

    def _claim(self, key: str, task: _Task) -> tuple[_Lane, bool]:
        """Take an idle lane's turn now (True), or return the busy lane to wait on (False)."""
        entry = self._keys.get(key)
        if entry is None or entry.__class__ is float:
            lane = _Lane(task)
            self._keys[key] = lane
            self._busy += 1
            return lane, True
        assert isinstance(entry, _Lane)
        return entry, False

    async def _wait_turn(self, key: str, lane: _Lane, task: _Task) -> None:
        """Queue ``task`` on a busy lane and park it until the holder hands it the turn."""
        check_wait(task, lane, "lane", key)
        if lane.waiting is None:
            lane.waiting = deque()
        lane.waiting.append(task)
        self._queued += 1

        def abort(_: object) -> trio.lowlevel.Abort:
            gone = lane.gone
            if gone is None:
                gone = lane.gone = {}
            gone[task] = gone.get(task, 0) + 1
            self._queued -= 1
            del waiting[task]
            return _SUCCEEDED

        # Whoever ends the wait (the holder handing over, the abort, the shutdown) takes the
        # task out of `waiting` at that moment: a task handed the turn holds it, waits no more.
        waiting[task] = lane
        await trio.lowlevel.wait_task_rescheduled(abort)

    def _release(self, key: str, lane: _Lane) -> None:
        """The holder is done: hand the turn to the first live waiter, or let the lane idle."""
        lane.scope = None
        queue = lane.waiting
        while queue:
            task = queue.popleft()
            gone = lane.gone
            if gone and task in gone:
                left = gone[task] - 1
                if left:
                    gone[task] = left
                else:
                    del gone[task]
                continue
            lane.owner = task
            self._queued -= 1
            del waiting[task]
            trio.lowlevel.reschedule(task)
            return
        lane.owner = None
        self._keys[key] = self._now()
        self._busy -= 1
        if self._closing and not self._busy:
            self._all_idle.unpark_all()

    def _inside(self, task: _Task) -> bool:
        """Is ``task`` inside the Lanes block (so the block cannot end while it runs)?

        A task started in a nursery opened within the block (or the opening task itself) is
        cancelled with the block. Any other caller's job gets a cancel scope of its own, so a
        cancelled block stops it too: after the block nothing runs on.
        """
        opener = self._opener
        while task is not opener:
            nursery = task.parent_nursery
            if nursery is None:
                return False
            task = nursery.parent_task
            if task is opener:
                return nursery not in self._outside
        return True

    async def _job(
        self,
        task: _Task,
        lanes: Iterable[_Lane],
        async_fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
    ) -> T:
        """The job itself, once every turn is held (the cluster's path; the local one inlines
        it)."""
        if self._inside(task):
            return await async_fn(*args)
        return await self._run_scoped(lanes, async_fn, args)

    async def _run_scoped(
        self, lanes: Iterable[_Lane], async_fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]
    ) -> T:
        scope = trio.CancelScope()
        for lane in lanes:
            lane.scope = scope
        with scope:
            return await async_fn(*args)
        raise ComponentClosed("lanes shut down while this job ran, so it was cancelled")

    # ---------------------------------------------------------------- housekeeping

    def stats(self) -> LaneStats:
        """A snapshot of live, busy and queued lanes, and the totals so far."""
        return LaneStats(
            live=len(self._keys),
            busy=self._busy,
            queued=self._queued,
            jobs_total=self._jobs_total,
            reaped_total=self._reaped_total,
        )

    async def reap_idle(self) -> int:
        """Reap the lanes idle longer than ``idle_timeout`` now; return how many were reaped."""
        if self._closed:
            raise ComponentClosed("lanes are closed: use them inside their `async with` block")
        await trio.lowlevel.checkpoint()
        self._keys, reaped = reap_stale(self._keys, trio.current_time() - self._idle_timeout)
        self._reaped_total += reaped
        return reaped

    async def _drain(self) -> None:
        """Graceful end: wait until no job runs or waits (jobs may start others meanwhile)."""
        self._closing = True
        while self._busy:
            await self._all_idle.park()

    def _abort(self) -> None:
        """The block was cancelled or failed: cancel running jobs, turn away waiting ones."""
        self._closed = True
        for entry in list(self._keys.values()):
            if not isinstance(entry, _Lane):
                continue
            if entry.scope is not None:
                entry.scope.cancel()
            gone = entry.gone or {}
            while entry.waiting:
                task = entry.waiting.popleft()  # the deque exists: the loop test saw it
                if gone.get(task, 0):
                    gone[task] -= 1
                    continue
                self._queued -= 1
                del waiting[task]
                trio.lowlevel.reschedule(
                    task, outcome.Error(ComponentClosed("lanes shut down before this job ran"))
                )
            entry.gone = None


@asynccontextmanager
async def open_lanes(
    idle_timeout: float = 600.0,
    *,
    cluster: str | None = None,
    lease: float = 10.0,
    prefix: str = "trio-lanes",
) -> AsyncIterator[Lanes]:
    """Open a lane manager. Leaving the block lets running and queued jobs finish.

    Cancelling the block (or an exception leaving it) stops at once: running jobs are
    cancelled, waiting callers get `ComponentClosed`, and nothing runs on after the block.
    ``idle_timeout``: seconds a lane may stay idle before the background reaper forgets it.

    ``cluster="redis://host:6379/0"`` holds each key across every process sharing that Redis
    too (FIFO per key across the fleet), under a lease of ``lease`` seconds renewed while the
    job runs; inside the job `actors.current_fence` gives the lease's fencing token. Keys in
    Redis start with ``prefix``. See `actors._cluster`.
    """
    idle_timeout = check_idle_timeout(idle_timeout)
    leases = None if cluster is None else ClusterLeases(cluster, lease=lease, prefix=prefix)
    async with nullcontext() if leases is None else leases.connected():
        opener = trio.lowlevel.current_task()
        lanes = Lanes(idle_timeout, opener, frozenset(opener.child_nurseries), leases)
        async with _serving(lanes, idle_timeout, leases) as served:
            yield served


@asynccontextmanager
async def _serving(
    lanes: Lanes, idle_timeout: float, leases: ClusterLeases | None
) -> AsyncIterator[Lanes]:
    try:
        async with open_component_nursery() as nursery:
            reaper = trio.CancelScope()

            async def reap() -> None:
                with reaper:
                    await reap_forever(idle_timeout, lanes.reap_idle)

            renewer = trio.CancelScope()

            async def renew(leases: ClusterLeases) -> None:
                with renewer:  # until every job has ended: the leases are theirs
                    await leases.renew_forever()

            nursery.start_soon(reap)
            if leases is not None:
                nursery.start_soon(renew, leases)
            try:
                yield lanes
                await lanes._drain()
            except BaseException:
                lanes._abort()
                raise
            finally:
                reaper.cancel()
                renewer.cancel()
    finally:
        lanes._closed = True
