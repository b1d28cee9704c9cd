"""The Scheduler with 10k due jobs per tick, and 10k Cron jobs per tick.

Run: ``python -m bench.scheduler`` (``--jobs``, ``--ticks``, ``--pairs``). Each figure
alternates ours and a baseline pair by pair in this one process, on Trio's MockClock (ticks
come at once; only CPU is measured), and prints medians and ratios.

1. 10k due jobs per tick under ``limit=50``: ``Every(60, noop)`` jobs, a minute interval,
   ``max_queued`` raised to hold them all; the time per tick until its `TickResult` is
   published (asking, queueing, running every job). Baseline: the same no-op calls started
   by hand under a ``trio.CapacityLimiter(50)``.
2. 10k `Cron` jobs per tick, ``* * * * *`` (all due): (a) asking them ``is_due`` for one
   tick, must be <= 100 ms, against a baseline that builds a croniter per due job (what
   Cron did before); (b) a whole scheduler tick of them, as in 1.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import trio
import trio.testing
from croniter import croniter

import actors

from .pool import limiter_loop

START = datetime(2025, 1, 1, tzinfo=UTC)


async def _noop() -> None:
    pass


def _mock_run(fn: Callable[..., Awaitable[float]], *args: Any) -> float:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


async def scheduler_ticks(jobs: list[actors.ScheduledJob], ticks: int) -> float:
    """Seconds per tick, from its start to its published result, with every job run."""
    per_tick: list[float] = []
    async with actors.open_scheduler(
        limit=50, max_queued=len(jobs), clock=actors.trio_clock(START)
    ) as sched:
        for job in jobs:
            sched.add(job)
        results = sched.results()
        for _ in range(ticks):
            await trio.sleep_until(_next_minute())  # just before the tick
            start = time.perf_counter()
            tick = await results.__anext__()
            per_tick.append(time.perf_counter() - start)
            assert len(tick) == len(jobs)
            assert not tick.errors, next(iter(tick.errors.values()))
    return statistics.median(per_tick)


def _next_minute() -> float:
    now = trio.current_time()
    return (now // 60 + 1) * 60 - 1e-3


async def limiter_ticks(n: int, ticks: int) -> float:
    """The baseline tick: ``n`` no-op calls started by hand under a limiter of 50."""
    return statistics.median([await limiter_loop(n, 50) for _ in range(ticks)])


class CronPerCall:
    """Cron as it was: a new croniter for every due job, compared in the job's zone."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._next: datetime | None = None

    def is_due(self, now: datetime) -> bool:
        if self._next is None:
            self._next = croniter(self.expression, now - timedelta(microseconds=1)).get_next(
                datetime
            )
        if now < self._next:
            return False
        self._next = croniter(self.expression, now).get_next(datetime)
        return True


def ask_seconds(jobs: list[actors.Cron] | list[CronPerCall], ticks: int) -> float:
    """Median seconds to ask every job ``is_due`` at a minute tick (all of them due).

    The first ask (minute 0) only sets each job's first cron time and is not counted.
    """
    times = []
    for minute in range(ticks + 1):
        now = START + timedelta(minutes=minute)
        start = time.perf_counter()
        due = sum(1 for job in jobs if job.is_due(now))
        if minute:
            times.append(time.perf_counter() - start)
        assert due == len(jobs)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=3, help="ticks per run, median kept (3)")
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs (5)")
    args = parser.parse_args()
    n, pairs = args.jobs, args.pairs

    ours: list[float] = []
    base: list[float] = []
    for _ in range(pairs):
        gc.collect()
        every = [actors.Every(60, _noop, id=f"every-{i}") for i in range(n)]
        ours.append(_mock_run(scheduler_ticks, every, args.ticks))
        gc.collect()
        base.append(_mock_run(limiter_ticks, n, args.ticks))
    t_ours, t_base = statistics.median(ours), statistics.median(base)
    print(f"1. {n:,} due jobs per tick, limit 50, medians of {pairs} pairs")
    print(f"   CapacityLimiter loop   {t_base * 1e3:7.1f} ms per tick")
    print(
        f"   Scheduler tick         {t_ours * 1e3:7.1f} ms per tick  ratio {t_base / t_ours:.2f}x"
    )

    asks: list[float] = []
    asks_old: list[float] = []
    for _ in range(pairs):
        gc.collect()
        crons = [actors.Cron("* * * * *", _noop, id=f"cron-{i}") for i in range(n)]
        asks.append(ask_seconds(crons, args.ticks))
        gc.collect()
        old = [CronPerCall("* * * * *") for _ in range(n)]
        asks_old.append(ask_seconds(old, args.ticks))
    t_ask, t_old = statistics.median(asks), statistics.median(asks_old)
    ok = t_ask <= 0.100
    print(f"2a. asking {n:,} Cron jobs is_due at one tick (all due), medians of {pairs} pairs")
    print(f"   a croniter per due job {t_old * 1e3:7.1f} ms per tick")
    print(f"   Cron (cached)          {t_ask * 1e3:7.1f} ms per tick  ratio {t_old / t_ask:.1f}x"
          f"  (<= 100 ms: {ok})")  # fmt: skip

    ticks: list[float] = []
    for _ in range(pairs):
        gc.collect()
        crons = [actors.Cron("* * * * *", _noop, id=f"cron-{i}") for i in range(n)]
        ticks.append(_mock_run(scheduler_ticks, crons, args.ticks))
    print(f"2b. a whole scheduler tick of {n:,} due Cron jobs, limit 50, median of {pairs}")
    print(f"   Scheduler tick         {statistics.median(ticks) * 1e3:7.1f} ms per tick")
    if not ok:
        raise SystemExit("asking 10k Cron jobs took more than 100 ms per tick")


if __name__ == "__main__":
    main()
