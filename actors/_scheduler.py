"""Scheduler: a ticker that asks each registered job ``is_due(now)`` and runs the due ones.

>>> async with actors.open_scheduler(limit=50) as sched:
...     sched.add(Cron("*/5 * * * *", sync_inventory))
...     async for tick in sched.results():          # one TickResult per tick
...         for job_id, result in tick.items():
...             print(tick.time, job_id, result.value if result.ok else result.error)

Ticks fall on multiples of ``interval`` of the scheduler's clock (each minute at :00 by
default). Due jobs wait in one FIFO queue (a record each, no task, at most ``max_queued``: past
it the oldest is reported `NotStarted`) and run in their own task as slots free up, at most
``limit`` at once; a tick's result is published when all of its jobs have finished, so ticks
may complete out of order. A job whose ``is_due`` or ``run`` raises, whatever it raises, is
reported for that job alone; a clock that raises skips ticks, never the scheduler.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs
import trio

import supervisors

from ._checks import check_async_fn, check_duration, check_positive_int
from ._clock import trio_clock
from ._errors import ActorsError, ComponentClosed
from ._keys import check_key
from ._nursery import open_component_nursery
from ._reply import Reply

log = logging.getLogger("actors.scheduler")

#: The ticker yields to other tasks after asking this many jobs ``is_due``.
_ASK_CHUNK = 512

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class ScheduledJob(Protocol):
    """What the `Scheduler` runs: `Cron`, `Every`, or any object with these three members."""

    @property
    def id(self) -> str:
        """A non-empty name; one registered job per id, and the key of its result in a tick."""

    def is_due(self, now: datetime) -> bool:
        """Whether to run at the tick ``now`` (an aware UTC datetime on an interval boundary)."""

    async def run(self) -> object:
        """Do the work; the value lands in `JobResult.value`, an exception in `JobCrashed`."""


class SkippedDuplicate(ActorsError):
    """The job was due, but with ``dedupe=True`` a run of the same id was still in flight."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} skipped: a run of it is still in flight (dedupe)")
        self.job_id = job_id


class JobCrashed(ActorsError, RuntimeError):
    """The job raised (from ``run`` or from ``is_due``); the scheduler itself went on.

    ``exception`` (also ``__cause__``) is what it raised, ``traceback`` the formatted text.
    """

    def __init__(self, job_id: str, exception: BaseException) -> None:
        super().__init__(f"job {job_id!r} crashed: {safe_repr(exception)}")
        self.job_id = job_id
        self.exception = exception
        try:
            self.traceback = "".join(traceback.format_exception(exception))
        except Exception:  # an exception whose str() raises: keep what can be had
            self.traceback = f"{safe_repr(exception)} (its traceback could not be formatted)"
        self.__cause__ = exception


def safe_repr(value: object) -> str:
    """``repr(value)``, or a stand-in naming its type when its ``__repr__`` raises."""
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__qualname__} object; its repr() raised {type(exc).__qualname__}>"


class NotStarted(ActorsError):
    """The job never ran: it was waiting for a slot when the scheduler shut down, or was the
    oldest of more than ``max_queued`` waiting jobs."""

    def __init__(self, job_id: str, reason: str = "the scheduler shut down first") -> None:
        super().__init__(f"job {job_id!r} not started: {reason}")
        self.job_id = job_id


@attrs.frozen
class JobResult:
    """What one due job did in one tick: a value, or an error saying why there is none."""

    value: Any = None
    """What ``run()`` returned (``None`` when ``error`` is set)."""
    error: ActorsError | None = None
    """`JobCrashed`, `SkippedDuplicate`, `NotStarted`, or `ComponentClosed` for a run cut off
    because the scheduler was cancelled; ``None`` if the job succeeded."""
    started_at: datetime | None = attrs.field(default=None, eq=False, kw_only=True)
    """Scheduler clock time the run started; `None` if it never ran. Not compared by ``==``."""
    ended_at: datetime | None = attrs.field(default=None, eq=False, kw_only=True)
    """Scheduler clock time the result was known. Not compared by ``==``."""

    @property
    def ok(self) -> bool:
        """The job ran and returned."""
        return self.error is None

    @property
    def crashed(self) -> bool:
        """The job itself raised (`JobCrashed`), as opposed to being skipped or not run."""
        return isinstance(self.error, JobCrashed)


@attrs.frozen
class TickResult(Mapping[str, JobResult]):
    """One tick: its time and, for each job that was due, its `JobResult` (``tick[job.id]``)."""

    time: datetime
    """The tick's time: an interval boundary (or the clock's time for `Scheduler.run_now`)."""
    results: Mapping[str, JobResult]
    """Job id -> result, in the order the jobs were registered (or passed to ``run_now``)."""

    def __getitem__(self, job_id: str) -> JobResult:
        return self.results[job_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def errors(self) -> dict[str, ActorsError]:
        """Job id -> error for the jobs that did not succeed."""
        return {job_id: r.error for job_id, r in self.results.items() if r.error is not None}


@attrs.frozen
class SchedulerStats:
    """A snapshot of a `Scheduler`."""

    in_flight: int
    """Jobs running now (each holds one of the ``limit`` slots)."""
    queued: int
    """Due jobs waiting for a slot."""
    ticks_total: int
    """Ticks so far, `Scheduler.run_now` calls included."""
    dedupe_skips_total: int
    """Due jobs skipped because a run of the same id was in flight."""
    dropped_results_total: int
    """Tick results dropped (oldest first) because no one read them in time."""
    capacity: int = 0
    """``max_queued``: how many due jobs may wait for a slot before the oldest is dropped."""
    limit: int = 0
    """``limit``: how many jobs run at once."""
    crashed_total: int = 0
    """Runs that raised (reported with `JobCrashed`)."""
    not_started_total: int = 0
    """Due jobs never run: dropped past ``max_queued``, or waiting at shutdown."""
    clock_errors_total: int = 0
    """Times the clock raised in the ticker (the ticker waited and asked again)."""


class _Tick:
    """A tick in progress: its results fill in as its jobs end.

    ``pending`` counts its jobs not ended yet, plus one while the ticker is still asking
    jobs ``is_due`` (it yields meanwhile), so the tick cannot finish half-asked. ``reply`` is
    where a `Scheduler.run_now` caller waits for the `TickResult` (the core's one reply slot).
    """

    __slots__ = ("finished", "order", "pending", "reply", "results", "time")

    def __init__(self, time: datetime, reply: Reply[TickResult] | None) -> None:
        self.time = time
        self.reply = reply
        self.order: list[str] = []
        self.results: dict[str, JobResult] = {}
        self.pending = 1
        self.finished = False


class _Results:
    """The async iterator `Scheduler.results` returns."""

    __slots__ = ("_receive",)

    def __init__(self, receive: trio.MemoryReceiveChannel[TickResult]) -> None:
        self._receive = receive

    def __aiter__(self) -> _Results:
        return self

    async def __anext__(self) -> TickResult:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


def _check_job(job: object) -> ScheduledJob:
    job_id = getattr(job, "id", None)
    is_due = getattr(job, "is_due", None)
    if job_id is None or not callable(is_due):
        raise TypeError(
            f"a scheduled job needs `id`, `is_due(now)` and `async run()`, got {job!r}; "
            "for a plain async function use Cron(expr, fn) or Every(seconds, fn)"
        )
    check_key(job_id, "job id")
    if inspect.iscoroutinefunction(is_due) or inspect.isasyncgenfunction(is_due):
        raise TypeError(
            f"is_due of job {job_id!r} must be a plain (sync) method returning a bool, "
            "not `async def`: the ticker asks every job at once and cannot wait for it"
        )
    check_async_fn(getattr(job, "run", None), f"run of job {job_id!r}")
    return job  # type: ignore[return-value]  # checked member by member above


class Scheduler:
    """Runs registered jobs when due, at most ``limit`` at once. Made by `open_scheduler`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        limit: int,
        dedupe: bool,
        interval: float,
        clock: Callable[[], datetime],
        results_buffer: int,
        max_queued: int,
        on_crash: Callable[[str, JobCrashed], object] | None,
        on_skip: Callable[[str, ActorsError], object] | None,
    ) -> None:
        self._nursery = nursery
        self._limit = limit
        self._dedupe = dedupe
        self._interval_us = round(interval * 1_000_000)
        self._clock = clock
        self._max_queued = max_queued
        self._on_crash = on_crash
        self._on_skip = on_skip
        self._jobs: dict[str, ScheduledJob] = {}
        self._in_flight_ids: set[str] = set()  # with dedupe: running or waiting
        self._running: dict[str, int] = {}  # job id -> runs of it in flight now
        self._queue: deque[tuple[_Tick, str, ScheduledJob]] = deque()
        self._send, self._receive = trio.open_memory_channel[TickResult](results_buffer)
        self._last_tick_us: int | None = None
        self._in_flight = 0
        self._ticks_total = 0
        self._dedupe_skips_total = 0
        self._dropped_results_total = 0
        self._crashed_total = 0
        self._not_started_total = 0
        self._clock_errors_total = 0
        self._open_ticks: set[_Tick] = set()  # ticks with jobs not yet ended
        self._closing = False
        self._closed = False

    # ---------------------------------------------------------------- public

    def add(self, job: ScheduledJob) -> None:
        """Register ``job``; from the next tick on it is asked ``is_due(now)``.

        Raises `TypeError` for an object that is not a job, `ValueError` if a job with the same
        id is registered already.
        """
        self._check_open()
        job = _check_job(job)
        if job.id in self._jobs:
            raise ValueError(
                f"a job with id {job.id!r} is already scheduled: remove it first, "
                "or give this one another id"
            )
        self._jobs[job.id] = job

    def remove(self, job_id: str) -> None:
        """Unregister a job; a run of it in flight finishes. Unknown id: `KeyError`."""
        self._check_open()
        try:
            del self._jobs[job_id]
        except KeyError:
            raise KeyError(f"no job with id {job_id!r} is scheduled") from None

    async def run_now(self, jobs: Iterable[ScheduledJob] | None = None) -> TickResult:
        """Ask ``jobs`` (default: the registered ones) ``is_due`` now and run the due ones.

        Returns this tick's result once all its jobs ended; it is not published to
        `results`. Its jobs queue with the ticks' jobs under the same ``limit`` and ``dedupe``
        and run in the scheduler: cancelling the call abandons the wait, not the jobs.
        """
        self._check_open()
        if jobs is None:
            batch = list(self._jobs.items())
        else:
            if isinstance(jobs, str) or not isinstance(jobs, Iterable):
                raise TypeError(f"run_now() takes a list of jobs, got {jobs!r}")
            checked = [_check_job(job) for job in jobs]
            ids = [job.id for job in checked]
            if len(set(ids)) != len(ids):
                raise ValueError(f"run_now() got two jobs with the same id: {ids}")
            batch = list(zip(ids, checked, strict=True))
        reply: Reply[TickResult] = Reply()
        await self._start_tick(self._now(), batch, reply)
        return await reply.wait()  # answered by _finish, at the latest when the scheduler goes

    def results(self) -> AsyncIterator[TickResult]:
        """Iterate over the published ticks as they complete; ends after the scheduler closed.

        The buffer holds ``results_buffer`` ticks; when it is full the oldest is dropped (and
        counted in ``stats().dropped_results_total``). Several readers share the ticks.
        """
        return _Results(self._receive)

    def stats(self) -> SchedulerStats:
        """A snapshot of running and waiting jobs, the queue's capacity and the totals so far."""
        return SchedulerStats(
            in_flight=self._in_flight,
            queued=len(self._queue),
            ticks_total=self._ticks_total,
            dedupe_skips_total=self._dedupe_skips_total,
            dropped_results_total=self._dropped_results_total,
            capacity=self._max_queued,
            limit=self._limit,
            crashed_total=self._crashed_total,
            not_started_total=self._not_started_total,
            clock_errors_total=self._clock_errors_total,
        )

    def in_flight_ids(self) -> frozenset[str]:
        """The ids of the jobs running right now (not those waiting for a slot)."""
        return frozenset(self._running)

    # ---------------------------------------------------------------- the ticker

    async def _ticker(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The long-lived service: sleep to the next interval boundary, start a tick, repeat.

        A clock that raises skips ticks, never kills the ticker: it waits (0.1 s, doubling,
        at most ``interval``) and asks again. The first start reads the clock plainly, so a
        clock that is broken from the start fails `open_scheduler`.
        """
        interval = self._interval_us
        if self._last_tick_us is None:
            now_us = self._micros(self._now())
        else:  # restarted by the supervisor: resume after the last tick
            now_us = await self._read_clock()
        task_status.started()
        while True:
            next_us = (now_us // interval + 1) * interval
            if self._last_tick_us is not None and next_us <= self._last_tick_us:
                next_us = self._last_tick_us + interval
            await trio.sleep((next_us - now_us) / 1_000_000)
            self._last_tick_us = next_us
            if not self._closing:  # shutting down: the supervisor stops this task next
                tick_time = _EPOCH + timedelta(microseconds=next_us)
                await self._start_tick(tick_time, list(self._jobs.items()), None)
            now_us = await self._read_clock()

    async def _read_clock(self) -> int:
        """The clock in microseconds; while it raises, log, count, wait and ask again."""
        failures = 0
        while True:
            try:
                return self._micros(self._now())
            except Exception as exc:
                failures += 1
                self._clock_errors_total += 1
                wait = min(self._interval_us / 1_000_000, 0.1 * 2.0 ** min(failures - 1, 30))
                log.warning(
                    "scheduler: the clock raised %s; asking again in %gs", safe_repr(exc), wait
                )
                del exc
            await trio.sleep(wait)

    # ---------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closing or self._closed:
            raise ComponentClosed("the scheduler is closed: use it inside its `async with` block")

    def _now(self) -> datetime:
        now = self._clock()
        if not isinstance(now, datetime) or now.tzinfo is None:
            raise TypeError(f"the scheduler's clock must return an aware datetime, got {now!r}")
        return now

    def _stamp(self) -> datetime | None:
        """The clock for a result's timestamp, or `None` if it raises (never fails a job)."""
        try:
            return self._now()
        except Exception:
            return None

    @staticmethod
    def _micros(now: datetime) -> int:
        return (now - _EPOCH) // _MICROSECOND

    async def _start_tick(
        self,
        time: datetime,
        jobs: list[tuple[str, ScheduledJob]],
        reply: Reply[TickResult] | None,
    ) -> None:
        """Ask each job ``is_due(time)`` and queue the due ones (dedupe decides here).

        Yields every `_ASK_CHUNK` jobs, so ten thousand jobs never hold the event loop. A
        job whose ``is_due`` raises (whatever its exception) is reported for itself alone.
        """
        tick = _Tick(time, reply)
        self._ticks_total += 1
        self._open_ticks.add(tick)
        try:
            for n, (job_id, job) in enumerate(jobs, 1):
                if n % _ASK_CHUNK == 0:
                    await trio.lowlevel.checkpoint()
                try:
                    due = _ask(job_id, job, time)
                except Exception as exc:
                    tick.order.append(job_id)
                    self._crash(tick, job_id, exc, None)
                    continue
                if not due:
                    continue
                tick.order.append(job_id)
                if self._dedupe:
                    if job_id in self._in_flight_ids:
                        self._dedupe_skips_total += 1
                        skipped = SkippedDuplicate(job_id)
                        tick.results[job_id] = JobResult(error=skipped, ended_at=self._stamp())
                        self._hook(self._on_skip, job_id, skipped)
                        continue
                    self._in_flight_ids.add(job_id)
                tick.pending += 1
                self._queue.append((tick, job_id, job))
                self._dispatch()
                if len(self._queue) > self._max_queued:
                    self._drop_oldest()
        finally:
            self._record(tick, None, None)  # asking is over (also when cancelled meanwhile)
        if not tick.finished:
            await trio.lowlevel.checkpoint()

    def _dispatch(self) -> None:
        """Start queued jobs, oldest first, while slots are free."""
        if self._closing:
            self._drop_queue()
            return
        while self._queue and self._in_flight < self._limit:
            tick, job_id, job = self._queue.popleft()
            self._in_flight += 1
            self._nursery.start_soon(self._run_job, tick, job_id, job)

    def _drop_oldest(self) -> None:
        tick, job_id, _ = self._queue.popleft()
        self._not_run(
            tick,
            job_id,
            f"more than max_queued={self._max_queued} due jobs were waiting for a slot and it "
            "was the oldest; raise limit or max_queued, or make the jobs faster",
        )

    def _not_run(self, tick: _Tick, job_id: str, reason: str) -> None:
        self._in_flight_ids.discard(job_id)
        self._not_started_total += 1
        error = NotStarted(job_id, reason)
        self._hook(self._on_skip, job_id, error)
        self._record(tick, job_id, JobResult(error=error, ended_at=self._stamp()))

    async def _run_job(self, tick: _Tick, job_id: str, job: ScheduledJob) -> None:
        result: JobResult | None = None
        started = self._stamp()
        running = self._running
        running[job_id] = running.get(job_id, 0) + 1
        try:
            value = await job.run()
        except Exception as exc:
            result = self._crash(tick, job_id, exc, started, record=False)
        else:
            result = JobResult(value=value, started_at=started, ended_at=self._stamp())
        finally:
            self._in_flight -= 1
            if running[job_id] == 1:
                del running[job_id]
            else:
                running[job_id] -= 1
            if self._dedupe:
                self._in_flight_ids.discard(job_id)
            if result is None:
                # Cancelled (the scheduler is going away) or a BaseException on its way out:
                # the tick still gets this job's result, so no `run_now` caller waits forever.
                cut = JobResult(error=_cut_off(job_id), started_at=started, ended_at=self._stamp())
                self._record(tick, job_id, cut)
        self._record(tick, job_id, result)
        self._dispatch()

    def _crash(
        self,
        tick: _Tick,
        job_id: str,
        exc: Exception,
        started: datetime | None,
        *,
        record: bool = True,
    ) -> JobResult:
        """A job raised (from ``run`` or ``is_due``): report it as `JobCrashed`, hear the hook."""
        self._crashed_total += 1
        crash = JobCrashed(job_id, exc)
        self._hook(self._on_crash, job_id, crash)
        result = JobResult(error=crash, started_at=started, ended_at=self._stamp())
        if record:
            tick.results[job_id] = result
        return result

    def _hook(self, hook: Callable[[str, Any], object] | None, job_id: str, error: Any) -> None:
        if hook is None:
            return
        try:
            hook(job_id, error)
        except Exception as exc:
            log.error("scheduler: a hook failed for job %r: %s", job_id, safe_repr(exc))

    def _record(self, tick: _Tick, job_id: str | None, result: JobResult | None) -> None:
        """One of the tick's jobs ended (``job_id`` None: the asking did); finish it if last."""
        if tick.finished:
            return
        if job_id is not None and result is not None:
            tick.results[job_id] = result
        tick.pending -= 1
        if not tick.pending:
            self._finish(tick)

    def _finish(self, tick: _Tick) -> None:
        tick.finished = True
        self._open_ticks.discard(tick)
        results = {job_id: tick.results[job_id] for job_id in tick.order}
        result = TickResult(tick.time, results)
        if tick.reply is not None:
            tick.reply.succeed(result)
        else:
            self._publish(result)

    def _publish(self, result: TickResult) -> None:
        """Buffer ``result`` for `results`; when the buffer is full drop the oldest. Never waits."""
        try:
            self._send.send_nowait(result)
            return
        except trio.WouldBlock:
            pass
        self._dropped_results_total += 1
        try:
            self._receive.receive_nowait()
        except trio.WouldBlock:
            return  # no buffer at all (results_buffer=0) and no reader waiting: drop this one
        self._send.send_nowait(result)

    def _begin_close(self) -> None:
        """Graceful shutdown: no new ticks; waiting jobs end `NotStarted`; running ones finish."""
        self._closing = True
        self._drop_queue()

    def _drop_queue(self) -> None:
        queue, self._queue = self._queue, deque()
        for tick, job_id, _ in queue:
            self._not_run(tick, job_id, "the scheduler shut down first")

    def _finish_all(self) -> None:
        """The scheduler is gone: finish every tick still open, whatever way it ended.

        Waiting jobs are `NotStarted`; a job without a result by now was cut off. After this
        no `run_now` caller (possibly outside the block) is left waiting.
        """
        self._begin_close()
        for tick in list(self._open_ticks):
            for job_id in tick.order:
                if job_id not in tick.results:
                    tick.results[job_id] = JobResult(error=_cut_off(job_id))
            self._finish(tick)


def _ask(job_id: str, job: ScheduledJob, time: datetime) -> bool:
    answer = job.is_due(time)
    if inspect.isawaitable(answer):
        if inspect.iscoroutine(answer):
            answer.close()  # never awaited, on purpose: no RuntimeWarning
        raise TypeError(
            f"is_due of job {job_id!r} returned an awaitable; "
            "it must be a plain (sync) method returning a bool"
        )
    return bool(answer)


def _cut_off(job_id: str) -> ComponentClosed:
    return ComponentClosed(f"the scheduler was cancelled while job {job_id!r} ran")


@asynccontextmanager
async def open_scheduler(
    limit: int = 50,
    dedupe: bool = False,
    interval: float = 60.0,
    clock: Callable[[], datetime] | None = None,
    *,
    results_buffer: int = 100,
    max_queued: int | None = None,
    on_crash: Callable[[str, JobCrashed], object] | None = None,
    on_skip: Callable[[str, ActorsError], object] | None = None,
) -> AsyncIterator[Scheduler]:
    """Open a scheduler that ticks every ``interval`` seconds of ``clock``.

    ``limit``: jobs running at once. ``dedupe``: skip a due job whose id is still in flight
    (running or waiting for a slot). ``clock``: returns aware UTC datetimes; the default is
    `trio_clock` (the wall clock at open, advanced by Trio's clock). ``results_buffer``: tick
    results kept for `Scheduler.results` before the oldest are dropped.

    Leaving the block stops the ticks, reports the jobs still waiting for a slot as
    `NotStarted`, waits for the running ones, and publishes the last ticks; cancelling the
    enclosing scope stops everything at once: the running jobs are reported with a
    `ComponentClosed` error, the waiting ones `NotStarted`, and their ticks are still
    published (and returned to `Scheduler.run_now` callers).
    """
    check_positive_int(limit, "limit")
    if not isinstance(dedupe, bool):
        raise TypeError(f"dedupe must be True or False, got {dedupe!r}")
    interval = check_duration(interval, "interval", allow_zero=False)
    if interval == float("inf") or round(interval * 1_000_000) < 1:
        raise ValueError(f"interval must be a finite number of seconds >= 1e-6, got {interval!r}")
    check_positive_int(results_buffer, "results_buffer", minimum=0)
    if max_queued is None:
        max_queued = 10 * limit
    check_positive_int(max_queued, "max_queued")
    for hook, what in ((on_crash, "on_crash"), (on_skip, "on_skip")):
        if hook is not None and not callable(hook):
            raise TypeError(f"{what} must be a function (job_id, error) -> None, got {hook!r}")
    if clock is None:
        clock = trio_clock()
    elif not callable(clock):
        raise TypeError(f"clock must be a callable returning an aware datetime, got {clock!r}")
    sched: Scheduler | None = None
    try:
        async with open_component_nursery() as nursery:
            sched = Scheduler(
                nursery,
                limit=limit,
                dedupe=dedupe,
                interval=interval,
                clock=clock,
                results_buffer=results_buffer,
                max_queued=max_queued,
                on_crash=on_crash,
                on_skip=on_skip,
            )
            # The ticker is a permanent child of a supervisor: a crash restarts it after a
            # backoff (no tick is repeated: it resumes after the last one); repeated crashes
            # escalate to the caller. A raising clock does not crash it (see _read_clock).
            async with supervisors.open_supervisor(
                "one_for_one", max_restarts=3, max_seconds=60.0, name="scheduler"
            ) as sup:
                await sup.start_child(
                    "ticker",
                    sched._ticker,
                    restart="permanent",
                    shutdown=0,
                    backoff=supervisors.RestartBackoff(min=0.1, max=max(0.1, interval)),
                )
                try:
                    yield sched
                except BaseException:
                    sched._begin_close()  # the supervisor stops the ticker on its way out
                    raise
                await sup.shutdown()  # shutdown=0: the ticker stops at once
                sched._begin_close()
    finally:
        if sched is not None:
            sched._finish_all()
            sched._closed = True
            sched._send.close()
