"""Cron in a zone with daylight saving: once per cron time, in the repeated and the skipped hour.

Real zone data (`zoneinfo`), New York: on 2025-11-02 the clocks go back from 02:00 EDT to
01:00 EST (01:00-01:59 happens twice); on 2025-03-09 they jump from 02:00 EST to 03:00 EDT.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import trio
import trio.testing

from actors import Cron, open_scheduler, trio_clock

NEW_YORK = ZoneInfo("America/New_York")


async def job() -> None:
    pass


def fires(expression: str, start: datetime, hours: int) -> list[str]:
    """Ask a Cron every minute for ``hours`` from ``start`` (UTC); the local times it fired."""
    cron = Cron(expression, job, id="j", tz=NEW_YORK)
    fired = []
    for minute in range(hours * 60):
        now = start + timedelta(minutes=minute)
        if cron.is_due(now):
            local = now.astimezone(NEW_YORK)
            fired.append(f"{local:%H:%M}{local.tzname()}")
    return fired


FALL_BACK = datetime(2025, 11, 2, 4, 0, tzinfo=UTC)  # 00:00 EDT
SPRING_FORWARD = datetime(2025, 3, 9, 5, 0, tzinfo=UTC)  # 00:00 EST


def test_a_daily_time_in_the_repeated_hour_fires_once() -> None:
    assert fires("30 1 * * *", FALL_BACK, 24) == ["01:30EDT"]


def test_hourly_fires_once_in_each_real_hour_at_fall_back() -> None:
    assert fires("0 * * * *", FALL_BACK, 5) == [
        "00:00EDT",
        "01:00EDT",
        "01:00EST",
        "02:00EST",
        "03:00EST",
    ]


def test_every_minute_fires_every_real_minute_at_fall_back() -> None:
    assert len(fires("* * * * *", FALL_BACK, 4)) == 4 * 60


def test_a_time_in_the_skipped_hour_fires_once_when_the_clocks_jump() -> None:
    assert fires("30 2 * * *", SPRING_FORWARD, 48) == ["03:00EDT", "02:30EDT"]


def test_hourly_at_spring_forward_fires_once_per_real_hour() -> None:
    assert fires("0 * * * *", SPRING_FORWARD, 4) == [
        "00:00EST",
        "01:00EST",
        "03:00EDT",
        "04:00EDT",
    ]


async def test_the_scheduler_runs_a_new_york_cron_once_at_fall_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[datetime] = []
    clock = trio_clock(FALL_BACK - timedelta(seconds=30))

    async def nightly() -> None:
        runs.append(clock())

    async with open_scheduler(clock=clock) as sched:
        sched.add(Cron("30 1 * * *", nightly, id="nightly", tz=NEW_YORK))
        await trio.sleep(4 * 3600)
    assert runs == [datetime(2025, 11, 2, 5, 30, tzinfo=UTC)]


def test_many_jobs_of_one_expression_share_the_next_time() -> None:
    jobs = [Cron("*/5 * * * *", job, id=f"j{i}", tz=NEW_YORK) for i in range(3)]
    now = FALL_BACK
    assert [j.is_due(now) for j in jobs] == [True] * 3
    later = now + timedelta(minutes=5)
    assert [j.is_due(later) for j in jobs] == [True] * 3
