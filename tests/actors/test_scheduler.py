from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import actors
from actors import (
    ComponentClosed,
    Cron,
    Every,
    JobCrashed,
    JobResult,
    NotStarted,
    Scheduler,
    SkippedDuplicate,
    TickResult,
    open_scheduler,
)
from tests.helpers import Gauge

START = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2024, 1, 1, 0, minute, second, tzinfo=UTC)


def always(now: datetime) -> bool:
    return True


@attrs.define(eq=False)
class FakeJob:
    """A job that records when it is asked and run, sleeps ``duration``, then returns or raises."""

    id: str
    duration: float = 0.0
    due: Callable[[datetime], bool] = always
    value: Any = None
    error: Exception | None = None
    gauge: Gauge | None = None
    asked: list[tuple[datetime, float]] = attrs.Factory(list)
    started: list[float] = attrs.Factory(list)

    def is_due(self, now: datetime) -> bool:
        self.asked.append((now, trio.current_time()))
        return self.due(now)

    async def run(self) -> Any:
        self.started.append(trio.current_time())
        if self.gauge is not None:
            with self.gauge:
                await trio.sleep(self.duration)
        else:
            await trio.sleep(self.duration)
        if self.error is not None:
            raise self.error
        return self.value


def only_at(*times: datetime) -> Callable[[datetime], bool]:
    return lambda now: now in times


async def collect(sched: Scheduler, into: list[tuple[float, TickResult]]) -> None:
    async for tick in sched.results():
        into.append((trio.current_time(), tick))


# ------------------------------------------------------------------ ticks


async def test_ticks_fall_on_minute_boundaries_of_the_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    job = FakeJob("a", value=1)
    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        sched.add(job)
        await trio.sleep(175)
    assert [(now, t - t0) for now, t in job.asked] == [
        (at(1), 30.0),
        (at(2), 90.0),
        (at(3), 150.0),
    ]
    assert all(now.tzinfo is not None for now, _ in job.asked)
    assert sched.stats().ticks_total == 3


async def test_ticks_on_a_shorter_interval(autojump_clock: trio.testing.MockClock) -> None:
    job = FakeJob("a")
    async with open_scheduler(interval=20.0, clock=actors.trio_clock(START)) as sched:
        sched.add(job)
        await trio.sleep(75)
    assert [now for now, _ in job.asked] == [at(0, 40), at(1, 0), at(1, 20), at(1, 40)]


async def test_default_clock_is_the_wall_clock_advanced_by_trio(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = datetime.now(UTC)
    t0 = trio.current_time()
    job = FakeJob("a")
    async with open_scheduler() as sched:
        sched.add(job)
        await trio.sleep(130)
    times = [now for now, _ in job.asked]
    # the first tick falls within the first minute; a third one too if it came by second 10
    first_tick_at = job.asked[0][1] - t0
    assert 0 < first_tick_at <= 60
    assert len(times) == (3 if first_tick_at <= 10 else 2)
    assert times[0] > before
    assert times[0] - before <= timedelta(seconds=61)
    assert (times[0].second, times[0].microsecond) == (0, 0)
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(times))


async def test_tick_results_are_published_when_all_their_jobs_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    slow = FakeJob("slow", duration=90, due=only_at(at(1)), value="s")
    fast = FakeJob("fast", duration=10, due=only_at(at(2)), value="f")
    got: list[tuple[float, TickResult]] = []
    async with trio.open_nursery() as nursery:
        async with open_scheduler(clock=actors.trio_clock(START)) as sched:
            nursery.start_soon(collect, sched, got)
            sched.add(slow)
            sched.add(fast)
            await trio.sleep(145)
    # tick 00:02 (fast, done at 00:02:10) comes before tick 00:01 (slow, done at 00:02:30)
    assert [(t - t0, tick.time, dict(tick)) for t, tick in got] == [
        (100.0, at(2), {"fast": JobResult("f")}),
        (120.0, at(1), {"slow": JobResult("s")}),
    ]


async def test_empty_ticks_are_published_too(autojump_clock: trio.testing.MockClock) -> None:
    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        await trio.sleep(100)
    ticks = [tick async for tick in sched.results()]
    assert [(tick.time, len(tick)) for tick in ticks] == [(at(1), 0), (at(2), 0)]


# ------------------------------------------------------------------ limit and dedupe


async def test_never_more_than_limit_jobs_at_once(autojump_clock: trio.testing.MockClock) -> None:
    t0 = trio.current_time()
    gauge = Gauge()
    jobs = [
        FakeJob(f"j{i}", duration=25, due=only_at(at(1)), gauge=gauge, value=i) for i in range(10)
    ]
    got: list[tuple[float, TickResult]] = []
    async with trio.open_nursery() as nursery:
        async with open_scheduler(limit=3, clock=actors.trio_clock(START)) as sched:
            nursery.start_soon(collect, sched, got)
            for job in jobs:
                sched.add(job)
            await trio.sleep(31)
            stats = sched.stats()
            assert (stats.in_flight, stats.queued) == (3, 7)
            await trio.sleep(124)
    assert gauge.most == 3
    assert [job.started[0] - t0 for job in jobs] == [30, 30, 30, 55, 55, 55, 80, 80, 80, 105]
    # one tick (00:01) done at 30 + 4 * 25 s, plus the empty ticks 00:02 and 00:03
    assert [(t - t0, tick.time) for t, tick in got] == [
        (90.0, at(2)),
        (130.0, at(1)),
        (150.0, at(3)),
    ]
    assert [r.value for r in got[1][1].values()] == list(range(10))


async def test_without_dedupe_the_same_id_runs_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gauge = Gauge()
    job = FakeJob("long", duration=100, gauge=gauge)
    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        sched.add(job)
        await trio.sleep(100)
        assert gauge.now == 2
    assert sched.stats().dedupe_skips_total == 0


async def test_dedupe_skips_running_and_waiting_ids_and_shutdown_reports_not_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    a = FakeJob("a", duration=150, value="A")
    b = FakeJob("b", duration=10, value="B")
    async with open_scheduler(limit=1, dedupe=True, clock=actors.trio_clock(START)) as sched:
        sched.add(a)
        sched.add(b)
        await trio.sleep(175)  # ticks at 30, 90, 150 (trio time); a runs 30..180, b waits
        assert sched.stats().dedupe_skips_total == 4
        assert sched.stats().queued == 1
    # leaving the block: b never got a slot -> NotStarted; a runs to the end
    assert trio.current_time() - t0 == 180.0
    assert a.started == [t0 + 30]
    assert b.started == []
    ticks = [tick async for tick in sched.results()]
    assert [tick.time for tick in ticks] == [at(2), at(3), at(1)]
    for skipped in ticks[:2]:
        assert isinstance(skipped["a"].error, SkippedDuplicate)
        assert isinstance(skipped["b"].error, SkippedDuplicate)
        assert skipped["a"].error.job_id == "a"
    first = ticks[2]
    assert first["a"] == JobResult("A")
    assert isinstance(first["b"].error, NotStarted)
    assert first.errors.keys() == {"b"}
    assert sched.stats() == actors.SchedulerStats(
        in_flight=0,
        queued=0,
        ticks_total=3,
        dedupe_skips_total=4,
        dropped_results_total=0,
        capacity=10,
        limit=1,
        not_started_total=1,
    )


async def test_dedupe_frees_the_id_when_the_job_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    job = FakeJob("j", duration=70)
    async with open_scheduler(dedupe=True, clock=actors.trio_clock(START)) as sched:
        sched.add(job)
        await trio.sleep(215)  # ticks 00:01 (runs), 00:02 (skipped), 00:03 (runs again), 00:04
    ticks = [tick async for tick in sched.results()]
    assert [(tick.time, tick["j"].ok) for tick in sorted(ticks, key=lambda t: t.time)] == [
        (at(1), True),
        (at(2), False),
        (at(3), True),
        (at(4), False),
    ]


# ------------------------------------------------------------------ failures


async def boom() -> None:
    raise ValueError("boom")


async def test_crashing_job_is_reported_and_the_scheduler_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = ValueError("boom")
    bad = FakeJob("bad", error=error)
    good = FakeJob("good", value=7)
    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        sched.add(bad)
        sched.add(good)
        await trio.sleep(100)
    ticks = [tick async for tick in sched.results()]
    assert len(ticks) == 2
    for tick in ticks:
        crash = tick["bad"].error
        assert isinstance(crash, JobCrashed)
        assert isinstance(crash, RuntimeError)
        assert crash.exception is error
        assert crash.__cause__ is error
        assert crash.job_id == "bad"
        assert "ValueError: boom" in crash.traceback
        assert "in run" in crash.traceback
        assert tick["good"] == JobResult(7)


async def test_crash_in_is_due_is_reported_too(autojump_clock: trio.testing.MockClock) -> None:
    def broken(now: datetime) -> bool:
        raise KeyError("no idea")

    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        sched.add(FakeJob("broken", due=broken))
        tick = await sched.run_now()
    crash = tick["broken"].error
    assert isinstance(crash, JobCrashed)
    assert isinstance(crash.exception, KeyError)
    assert "broken" in crash.traceback


async def test_leaving_waits_for_running_jobs_and_reports_waiting_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    jobs = [FakeJob(f"j{i}", duration=100, due=only_at(at(1)), value=i) for i in range(4)]
    async with open_scheduler(limit=2, clock=actors.trio_clock(START)) as sched:
        for job in jobs:
            sched.add(job)
        await trio.sleep(40)
    assert trio.current_time() - t0 == 130.0
    [tick] = [tick async for tick in sched.results()]
    assert [r.value for r in tick.values()] == [0, 1, None, None]
    assert [type(r.error) for r in tick.values()] == [
        type(None),
        type(None),
        NotStarted,
        NotStarted,
    ]


async def test_cancelling_the_enclosing_scope_stops_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    job = FakeJob("j", duration=1000)
    with trio.move_on_after(45):
        async with open_scheduler(clock=actors.trio_clock(START)) as sched:
            sched.add(job)
            await trio.sleep_forever()
    assert trio.current_time() - t0 == 45
    assert job.started == [t0 + 30]
    # the 00:01 tick is still reported once, its cut-off job with a clear error
    [tick] = [tick async for tick in sched.results()]
    assert tick.time == at(1)
    error = tick["j"].error
    assert isinstance(error, ComponentClosed)
    assert "cancelled while job 'j' ran" in str(error)


async def test_run_now_from_outside_returns_when_the_scheduler_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    running = FakeJob("running", duration=10, value="never")
    waiting = FakeJob("waiting", duration=10, value="never")
    got: list[tuple[float, TickResult]] = []

    async def caller(sched: Scheduler) -> None:
        tick = await sched.run_now([running, waiting])
        got.append((trio.current_time() - t0, tick))

    with trio.fail_after(100):  # a run_now left waiting forever fails here, not hangs
        async with trio.open_nursery() as outer:
            with trio.move_on_after(3):
                async with open_scheduler(limit=1, clock=actors.trio_clock(START)) as sched:
                    outer.start_soon(caller, sched)  # waits outside the scheduler's block
                    await trio.sleep_forever()
    assert trio.current_time() - t0 == 3
    [(returned_at, tick)] = got
    assert returned_at == 3
    assert running.started == [t0]
    assert waiting.started == []
    cut_off = tick["running"].error
    assert isinstance(cut_off, ComponentClosed)
    assert str(cut_off) == "the scheduler was cancelled while job 'running' ran"
    assert isinstance(tick["waiting"].error, NotStarted)
    assert sched.stats().in_flight == 0
    assert [t async for t in sched.results()] == []  # run_now ticks are never published


async def test_body_exception_is_not_wrapped(autojump_clock: trio.testing.MockClock) -> None:
    async def body() -> None:
        async with open_scheduler(clock=actors.trio_clock(START)):
            await trio.sleep(61)
            _ = 1 / 0

    with pytest.raises(ZeroDivisionError):
        await body()


# ------------------------------------------------------------------ results buffer


async def test_unread_results_drop_the_oldest_and_never_delay_ticks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    job = FakeJob("a")
    async with open_scheduler(clock=actors.trio_clock(START), results_buffer=2) as sched:
        sched.add(job)
        await trio.sleep(60 * 4 + 40)  # five ticks, nobody reading
        assert sched.stats().dropped_results_total == 3
    assert [now for now, _ in job.asked] == [at(m) for m in range(1, 6)]
    assert [tick.time for tick in [t async for t in sched.results()]] == [at(4), at(5)]


async def test_results_buffer_zero_keeps_nothing_for_absent_readers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[tuple[float, TickResult]] = []
    async with open_scheduler(clock=actors.trio_clock(START), results_buffer=0) as sched:
        await trio.sleep(100)  # two ticks, no reader
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, sched, got)
            await trio.sleep(60)  # one tick with a reader waiting
            nursery.cancel_scope.cancel()
    assert sched.stats().dropped_results_total == 2
    assert [tick.time for _, tick in got] == [at(3)]


async def test_results_end_when_the_scheduler_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[tuple[float, TickResult]] = []
    async with trio.open_nursery() as nursery:
        async with open_scheduler(clock=actors.trio_clock(START)) as sched:
            nursery.start_soon(collect, sched, got)
            await trio.sleep(35)
    # the reader ended by itself, so the outer nursery closed
    assert [tick.time for _, tick in got] == [at(1)]


# ------------------------------------------------------------------ run_now


async def test_run_now_runs_the_due_jobs_and_returns_without_publishing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    due = FakeJob("due", duration=5, value="yes")
    not_due = FakeJob("not-due", due=lambda now: False)
    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        await trio.sleep(10)
        tick = await sched.run_now([due, not_due])
        assert trio.current_time() - t0 == 15
        assert tick.time == at(0, 40)
        assert dict(tick) == {"due": JobResult("yes")}
        assert "not-due" not in tick
        assert [now for now, _ in not_due.asked] == [at(0, 40)]
        assert sched.stats().ticks_total == 1
    assert [t async for t in sched.results()] == []


async def test_run_now_defaults_to_the_registered_jobs_and_shares_dedupe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    long = FakeJob("long", duration=100, value="L")
    async with open_scheduler(dedupe=True, clock=actors.trio_clock(START)) as sched:
        sched.add(long)
        await trio.sleep(40)  # the 00:01 tick started `long`
        tick = await sched.run_now()
        assert isinstance(tick["long"].error, SkippedDuplicate)
        assert sched.stats().dedupe_skips_total == 1


async def test_run_now_checkpoints_even_with_nothing_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        with trio.testing.assert_checkpoints():
            tick = await sched.run_now([])
        assert len(tick) == 0


# ------------------------------------------------------------------ Cron and Every


async def test_cron_job_fires_once_at_each_cron_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[datetime] = []
    clock = actors.trio_clock(START)

    async def report(tag: str) -> str:
        runs.append(clock())
        return tag

    async with open_scheduler(interval=20.0, clock=clock) as sched:
        sched.add(Cron("*/5 * * * *", report, "r", id="report"))
        await trio.sleep(11 * 60)
    assert runs == [at(5), at(10)]
    ticks = [t async for t in sched.results() if "report" in t]
    assert [(t.time, t["report"].value) for t in ticks] == [(at(5), "r"), (at(10), "r")]


async def test_cron_id_defaults_to_the_function_name_and_tz_is_honoured() -> None:
    async def nightly() -> None:
        pass

    job = Cron("0 9 * * *", nightly)
    assert job.id.endswith("nightly")
    assert not job.is_due(datetime(2024, 1, 1, 8, 59, tzinfo=UTC))
    assert job.is_due(datetime(2024, 1, 1, 9, 0, tzinfo=UTC))
    assert not job.is_due(datetime(2024, 1, 1, 9, 0, 50, tzinfo=UTC))  # once per cron time
    assert job.is_due(datetime(2024, 1, 2, 9, 0, tzinfo=UTC))
    tokyo = Cron("0 9 * * *", nightly, id="tokyo", tz=timezone(timedelta(hours=9)))
    assert not tokyo.is_due(datetime(2023, 12, 31, 23, 59, tzinfo=UTC))
    assert tokyo.is_due(datetime(2024, 1, 1, 0, 0, tzinfo=UTC))  # 09:00 in Tokyo
    assert not tokyo.is_due(datetime(2024, 1, 1, 9, 0, tzinfo=UTC))
    assert Cron("@hourly", nightly).is_due(datetime(2024, 1, 1, 3, 0, tzinfo=UTC))


def test_cron_runs_a_missed_time_once_at_the_next_ask_but_not_before_the_first() -> None:
    job = Cron("*/5 * * * *", boom, id="five")
    asks = [at(4, 30), at(6), at(7, 30), at(9), at(10, 30), at(12), at(14, 59), at(25)]
    assert [job.is_due(now) for now in asks] == [
        False,
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    late = Cron("*/5 * * * *", boom, id="late")
    assert not late.is_due(at(5, 1))  # 00:05 passed before it was first asked
    assert not late.is_due(at(9, 59))
    assert late.is_due(at(10))


@pytest.mark.parametrize(
    "expression", ["", "* * * *", "61 * * * *", "*/5 * * * * *", "@sometimes", "a b c d e"]
)
def test_invalid_cron_expressions_fail_at_once(expression: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        Cron(expression, boom)


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *", "0 12 31 4,6,9,11 *"])
def test_cron_expressions_that_never_fire_fail_at_once(expression: str) -> None:
    with pytest.raises(ValueError, match="never fires"):
        Cron(expression, boom)


def test_cron_that_fires_only_in_leap_years_is_accepted() -> None:
    leap = Cron("0 0 29 2 *", boom, id="leap")
    assert not leap.is_due(at(0))
    assert leap.is_due(datetime(2024, 2, 29, tzinfo=UTC))


async def test_every_job_fires_first_then_after_each_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def poll() -> str:
        return "polled"

    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        sched.add(Every(150, poll, id="poll"))
        sched.add(Every(timedelta(minutes=5), poll, id="five"))
        await trio.sleep(7 * 60)
    ticks = [t async for t in sched.results()]
    assert [t.time for t in ticks if "poll" in t] == [at(1), at(4), at(7)]
    assert [t.time for t in ticks if "five" in t] == [at(1), at(6)]


@pytest.mark.parametrize(
    ("period", "error"),
    [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
     (timedelta(0), ValueError), ("5", TypeError), (True, TypeError)],
)  # fmt: skip
def test_bad_every_periods(period: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="period"):
        Every(period, boom)


def test_schedule_helpers_need_an_async_function() -> None:
    def sync() -> None:
        pass

    with pytest.raises(TypeError, match="async"):
        Cron("* * * * *", sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async"):
        Every(60, sync)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="job id"):
        Every(60, boom, id="")


# ------------------------------------------------------------------ registry and bad input


async def test_add_remove_and_bad_jobs(autojump_clock: trio.testing.MockClock) -> None:
    job = FakeJob("a")
    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        sched.add(job)
        with pytest.raises(ValueError, match="already scheduled"):
            sched.add(FakeJob("a"))
        await trio.sleep(31)
        sched.remove("a")
        with pytest.raises(KeyError, match="no job"):
            sched.remove("a")
        await trio.sleep(120)
        assert len(job.asked) == 1
        with pytest.raises(TypeError, match="Cron"):
            sched.add(boom)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="job id"):
            sched.add(FakeJob(""))
        with pytest.raises(TypeError, match="job id"):
            sched.add(FakeJob(7))  # type: ignore[arg-type]

        class SyncRun:
            id = "sync"

            def is_due(self, now: datetime) -> bool:
                return True

            def run(self) -> None:
                pass

        with pytest.raises(TypeError, match="async"):
            sched.add(SyncRun())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="same id"):
            await sched.run_now([FakeJob("x"), FakeJob("x")])


async def test_async_is_due_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    class AsyncDue:
        id = "async-due"

        async def is_due(self, now: datetime) -> bool:
            return False

        async def run(self) -> str:
            return "ran"

    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        with pytest.raises(TypeError, match=r"is_due .* must be a plain \(sync\) method"):
            sched.add(AsyncDue())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"plain \(sync\)"):
            await sched.run_now([AsyncDue()])  # type: ignore[list-item]
        assert sched.stats().ticks_total == 0


async def test_is_due_returning_an_awaitable_is_reported_not_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def answer() -> bool:
        return False

    job = FakeJob("sneaky", due=lambda now: answer())  # type: ignore[arg-type,return-value]
    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        tick = await sched.run_now([job])
    assert job.started == []
    crash = tick["sneaky"].error
    assert isinstance(crash, JobCrashed)
    assert isinstance(crash.exception, TypeError)
    assert "plain (sync) method" in str(crash.exception)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"limit": 0}, ValueError),
        ({"limit": 1.5}, TypeError),
        ({"dedupe": "yes"}, TypeError),
        ({"interval": 0}, ValueError),
        ({"interval": -60}, ValueError),
        ({"interval": float("nan")}, ValueError),
        ({"interval": float("inf")}, ValueError),
        ({"interval": 1e-9}, ValueError),
        ({"clock": "now"}, TypeError),
        ({"clock": datetime.now}, TypeError),  # naive datetimes
        ({"results_buffer": -1}, ValueError),
    ],
)
async def test_bad_arguments_fail_at_open(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        async with open_scheduler(**kwargs):
            pass  # pragma: no cover


async def test_closed_scheduler_refuses_use(autojump_clock: trio.testing.MockClock) -> None:
    async with open_scheduler(clock=actors.trio_clock(START)) as sched:
        pass
    with pytest.raises(ComponentClosed, match="scheduler"):
        sched.add(FakeJob("late"))
    with pytest.raises(trio.ClosedResourceError):
        await sched.run_now([])
    with pytest.raises(ComponentClosed):
        sched.remove("late")


# ------------------------------------------------------------------ invariants


@settings(deadline=None, max_examples=30)
@given(
    limit=st.integers(min_value=1, max_value=4),
    dedupe=st.booleans(),
    jobs=st.lists(
        st.tuples(st.integers(min_value=0, max_value=200), st.booleans(), st.booleans()),
        min_size=1,
        max_size=8,
    ),
    run_for=st.integers(min_value=0, max_value=200).map(lambda k: 2 * k + 1),  # never on a tick
)
def test_limit_holds_and_every_due_job_is_reported_once_per_tick(
    limit: int, dedupe: bool, jobs: list[tuple[int, bool, bool]], run_for: int
) -> None:
    gauge = Gauge()
    fakes = [
        FakeJob(f"j{i}", duration=d, gauge=gauge, error=RuntimeError() if fails else None,
                due=(lambda now: now.minute % 2 == 0) if even else always)
        for i, (d, fails, even) in enumerate(jobs)
    ]  # fmt: skip

    async def main() -> tuple[list[TickResult], Scheduler]:
        async with open_scheduler(limit=limit, dedupe=dedupe, clock=actors.trio_clock(START)) as s:
            for job in fakes:
                s.add(job)
            await trio.sleep(run_for)
        return [t async for t in s.results()], s

    ticks, sched = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert gauge.most <= limit
    stats = sched.stats()
    assert len(ticks) == stats.ticks_total == (run_for + 29) // 60
    assert len({t.time for t in ticks}) == len(ticks)
    skips = 0
    for tick in ticks:
        due = [job.id for job, (_, _, even) in zip(fakes, jobs, strict=True)
               if not even or tick.time.minute % 2 == 0]  # fmt: skip
        assert list(tick) == due
        for job_id in due:
            error = tick[job_id].error
            skips += isinstance(error, SkippedDuplicate)
            assert error is None or isinstance(error, JobCrashed | SkippedDuplicate | NotStarted)
    assert skips == stats.dedupe_skips_total
    assert dedupe or skips == 0
    started = sum(len(job.started) for job in fakes)
    ran = sum(
        1
        for t in ticks
        for r in t.values()
        if not isinstance(r.error, SkippedDuplicate | NotStarted)
    )
    assert started == ran
