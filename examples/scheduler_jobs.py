"""The Scheduler: a job every minute and a cron job, with their results as they complete.

A heartbeat runs on every tick (a hand-written job: ``id``, ``is_due(now)``, ``async run()``);
a report runs at ``*/5 * * * *`` (a `Cron` job made of a plain async function); a flaky sync
every two minutes crashes now and then, which the scheduler reports and survives; and a
backup that takes 90 s is skipped on the ticks that find it still running (``dedupe=True``).
A reader prints each tick's results as they are published: a tick waits for its slowest job,
so ticks can complete out of order.

The program runs on Trio's MockClock (``autojump_threshold=0``): whenever every task is
waiting, the clock jumps to the next deadline, so the twelve minutes below pass in a few
milliseconds of real time. On a real clock, drop the ``clock=`` argument of ``trio.run``.

Run: python -m examples.scheduler_jobs
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import trio
import trio.testing

import actors
from actors import Cron, Every


class Heartbeat:
    """A job written by hand: due on every tick."""

    id = "heartbeat"

    def __init__(self) -> None:
        self.beats = 0

    def is_due(self, now: datetime) -> bool:
        return True

    async def run(self) -> int:
        await trio.sleep(2)  # pretend to ping something
        self.beats += 1
        return self.beats


async def five_minute_report() -> str:
    await trio.sleep(45)  # a slow query
    return "report written"


async def flaky_sync(calls: list[int]) -> str:
    calls.append(1)
    if len(calls) % 3 == 0:
        raise ConnectionError("upstream went away")
    return "synced"


async def backup() -> str:
    await trio.sleep(90)  # longer than a minute: with dedupe, the next tick skips it
    return "backed up"


def describe(result: actors.JobResult) -> str:
    if result.ok:
        return repr(result.value)
    if isinstance(result.error, actors.SkippedDuplicate):
        return "(skipped: still running)"
    if isinstance(result.error, actors.JobCrashed):
        return f"CRASHED {result.error.exception!r}"
    return f"{type(result.error).__name__}"


def alert(job_id: str, crash: actors.JobCrashed) -> None:
    """``on_crash``: hears of a job that raised at once, before its tick is published."""
    print(f"  on_crash: {job_id} raised {crash.exception!r}")


async def print_ticks(sched: actors.Scheduler, clock: Callable[[], datetime]) -> None:
    async for tick in sched.results():
        jobs = "  ".join(f"{job_id}={describe(result)}" for job_id, result in tick.items())
        print(f"tick {tick.time:%H:%M} done {clock():%H:%M:%S}  {jobs}")


async def main() -> None:
    # the wall clock of this story starts at 09:00:30 UTC and advances with Trio's clock
    clock = actors.trio_clock(datetime(2024, 5, 1, 9, 0, 30, tzinfo=UTC))
    calls: list[int] = []
    async with trio.open_nursery() as nursery:
        async with actors.open_scheduler(
            limit=10,
            dedupe=True,
            clock=clock,
            on_crash=lambda job_id, crash: print(
                f"  on_crash: {job_id} raised {crash.exception!r}"
            ),
        ) as sched:
            nursery.start_soon(print_ticks, sched, clock)
            sched.add(Heartbeat())
            sched.add(Cron("*/5 * * * *", five_minute_report, id="report"))
            sched.add(Every(120, flaky_sync, calls, id="sync"))
            sched.add(Every(60, backup, id="backup"))
            await trio.sleep(12 * 60)
        # leaving the block: no more ticks, running jobs finish, the last ticks are published
        # and the reader ends once it has read them
    print("stats:", sched.stats())


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
