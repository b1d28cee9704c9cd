"""The Scheduler under failure: broken exceptions, broken clocks, overlapping ticks; its hooks."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import actors
from actors import JobCrashed, NotStarted, SkippedDuplicate, open_scheduler

from .test_scheduler import START, FakeJob, at, collect


class BrokenRepr(Exception):
    def __repr__(self) -> str:
        raise AttributeError("no repr for you")

    def __str__(self) -> str:
        raise AttributeError("no str either")


class BrokenRun:
    id = "broken"

    def is_due(self, now: datetime) -> bool:
        return True

    async def run(self) -> None:
        raise BrokenRepr


class BrokenIsDue:
    id = "broken"

    def is_due(self, now: datetime) -> bool:
        raise BrokenRepr

    async def run(self) -> None:
        raise AssertionError("never run")


@pytest.mark.parametrize("broken", [BrokenRun, BrokenIsDue])
async def test_an_exception_with_a_broken_repr_is_reported_for_its_job_alone(
    autojump_clock: trio.testing.MockClock, broken: type
) -> None:
    """Defect 7: from ``run`` and from ``is_due``."""
    good = FakeJob("good", value=1)
    ticks: list[Any] = []
    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        sched.add(broken())
        sched.add(good)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sched, ticks)
            await trio.sleep(31 + 60 * 2)  # ticks at 00:01, 00:02, 00:03
            nursery.cancel_scope.cancel()
    assert [tick.time for _, tick in ticks] == [at(1), at(2), at(3)]
    for _, tick in ticks:
        error = tick["broken"].error
        assert isinstance(error, JobCrashed)
        assert isinstance(error.exception, BrokenRepr)
        assert "BrokenRepr object; its repr() raised AttributeError" in str(error)
        assert tick["good"].value == 1
    assert len(good.started) == 3


async def test_a_clock_that_raises_a_few_times_skips_ticks_not_the_scheduler(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 8: the ticker waits (0.1 s doubling) and asks again; no restart is used up."""
    base = actors.trio_clock(START)
    origin = trio.current_time()
    asked_while_broken: list[float] = []

    def clock() -> datetime:
        elapsed = trio.current_time() - origin
        if 30 <= elapsed < 33:
            asked_while_broken.append(round(elapsed, 6))
            raise OSError("clock source gone")
        return base()

    ticks: list[Any] = []
    async with open_scheduler(clock=clock) as sched:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sched, ticks)
            await trio.sleep(31 + 60 * 3)
            nursery.cancel_scope.cancel()
        assert sched.stats().clock_errors_total == 5
    assert asked_while_broken == [30.0, 30.1, 30.3, 30.7, 31.5]
    assert [tick.time for _, tick in ticks] == [at(1), at(2), at(3), at(4)]
    warnings = [r for r in caplog.records if r.name == "actors.scheduler"]
    assert len(warnings) == 5
    assert all(r.levelno == logging.WARNING for r in warnings)


async def test_waiting_jobs_are_bounded_by_max_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 8: overlapping ticks cannot grow the queue; the oldest waiting job goes."""
    jobs = [FakeJob(f"j{i}", duration=1000) for i in range(5)]
    skipped: list[tuple[str, str]] = []
    async with open_scheduler(
        limit=1,
        max_queued=2,
        clock=actors.trio_clock(START),
        on_skip=lambda job_id, error: skipped.append((job_id, type(error).__name__)),
    ) as sched:
        tick = await sched.run_now(jobs)  # j0 runs, j1 and j2 wait, j3 and j4 push them out
        stats = sched.stats()
        assert (stats.queued, stats.capacity, stats.not_started_total) == (0, 2, 2)
    assert [len(job.started) for job in jobs] == [1, 0, 0, 1, 1]
    error = tick["j1"].error
    assert isinstance(error, NotStarted)
    assert "more than max_queued=2 due jobs were waiting" in str(error)
    assert skipped == [("j1", "NotStarted"), ("j2", "NotStarted")]


async def test_overlapping_ticks_keep_the_queue_under_max_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = [FakeJob(f"j{i}", duration=600) for i in range(20)]
    depths: list[int] = []
    async with open_scheduler(limit=2, clock=actors.trio_clock(START)) as sched:
        for job in jobs:
            sched.add(job)
        for _ in range(30):
            await trio.sleep(60)
            depths.append(sched.stats().queued)
        assert sched.stats().not_started_total > 0
    assert max(depths) == 20  # 10 x limit


async def test_asking_ten_thousand_jobs_yields_to_other_tasks() -> None:
    """Defect 8: the ask loop checkpoints, so a tick of many jobs never holds the event loop."""
    progress = 0
    seen: list[int] = []

    async def spin() -> None:
        nonlocal progress
        while True:
            await trio.lowlevel.checkpoint()
            progress += 1

    class Job:
        def __init__(self, n: int) -> None:
            self.id = f"j{n}"

        def is_due(self, now: datetime) -> bool:
            seen.append(progress)
            return False

        async def run(self) -> None:
            pass

    async with open_scheduler(clock=actors.trio_clock(START)) as sched, trio.open_nursery() as n:
        n.start_soon(spin)
        await sched.run_now([Job(i) for i in range(2_000)])
        n.cancel_scope.cancel()
    assert seen[0] < seen[-1]


async def test_results_carry_start_and_end_times_and_hooks_hear_crashes(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    crashed: list[tuple[str, JobCrashed]] = []

    def on_crash(job_id: str, error: JobCrashed) -> None:
        crashed.append((job_id, error))
        raise RuntimeError("hook bug")

    clock = actors.trio_clock(datetime(2024, 1, 1, tzinfo=UTC))
    ok = FakeJob("ok", duration=5, value="v")
    bad = FakeJob("bad", duration=2, error=ValueError("x"))
    seen_running: list[frozenset[str]] = []
    async with open_scheduler(clock=clock, dedupe=True, on_crash=on_crash) as sched:

        async def watch() -> None:
            await trio.sleep(1)
            seen_running.append(sched.in_flight_ids())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            tick = await sched.run_now([ok, bad])
        stats = sched.stats()
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    assert tick["ok"].started_at == t0
    assert tick["ok"].ended_at == t0 + timedelta(seconds=5)
    assert tick["bad"].ended_at == t0 + timedelta(seconds=2)
    assert tick["bad"].crashed
    assert not tick["ok"].crashed
    assert seen_running == [frozenset({"ok", "bad"})]
    assert [job_id for job_id, _ in crashed] == ["bad"]
    assert stats.crashed_total == 1
    assert any("hook failed" in r.getMessage() for r in caplog.records)


async def test_on_skip_hears_dedupe_skips(autojump_clock: trio.testing.MockClock) -> None:
    skipped: list[tuple[str, str]] = []
    slow = FakeJob("slow", duration=90)
    async with open_scheduler(
        dedupe=True,
        clock=actors.trio_clock(START),
        on_skip=lambda job_id, error: skipped.append((job_id, type(error).__name__)),
    ) as sched:
        sched.add(slow)
        await trio.sleep(100)
    assert skipped == [("slow", SkippedDuplicate.__name__)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_queued": 0}, "max_queued"),
        ({"on_crash": 3}, "on_crash must be a function"),
        ({"on_skip": "x"}, "on_skip must be a function"),
    ],
)
async def test_bad_new_arguments_fail_at_open(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        async with open_scheduler(**kwargs):
            pass


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(1, 3),
    max_queued=st.integers(1, 4),
    durations=st.lists(st.sampled_from([10, 70, 200]), min_size=1, max_size=8),
    broken=st.sets(st.integers(0, 7)),
)
def test_every_due_job_is_reported_once_and_the_queue_stays_bounded(
    limit: int, max_queued: int, durations: list[int], broken: set[int]
) -> None:
    jobs: list[Any] = [
        BrokenIsDue() if i in broken else FakeJob(f"j{i}", duration=d)
        for i, d in enumerate(durations)
    ]
    for i, job in enumerate(jobs):
        if isinstance(job, BrokenIsDue):
            job.id = f"j{i}"
    depths: list[int] = []

    async def main() -> tuple[list[Any], actors.SchedulerStats]:
        async with open_scheduler(
            limit=limit, max_queued=max_queued, clock=actors.trio_clock(START)
        ) as sched:
            for job in jobs:
                sched.add(job)
            for _ in range(5):
                await trio.sleep(60)
                depths.append(sched.stats().queued)
        return [tick async for tick in sched.results()], sched.stats()

    ticks, stats = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert max(depths) <= max_queued
    assert len(ticks) == 5
    not_started = 0
    for tick in ticks:
        assert list(tick) == [job.id for job in jobs]  # each due job once, in order
        for job_id, result in tick.items():
            error = result.error
            if int(job_id[1:]) in broken:
                assert isinstance(error, JobCrashed)
            else:
                assert error is None or isinstance(error, NotStarted)
            not_started += isinstance(error, NotStarted)
    assert not_started == stats.not_started_total
    started = sum(len(job.started) for job in jobs if isinstance(job, FakeJob))
    assert started == sum(1 for t in ticks for r in t.values() if r.ok)
