"""`unique_for`, `RateLimit`, `WithoutOverlapping` and `cancel_batch` across real worker
processes, through the bus, on Redis and on SQLite.

Three worker processes (``tests.actors.bus.bus_worker --limited``) run a bus whose
`RateLimit` and `WithoutOverlapping` were given no limiter or locker: each takes its
broker's (`RedisRateLimiter` / `RedisLocker`, `SQLiteRateLimiter` / `SQLiteLocker`), so the
limits hold across the processes. Runs are recorded with their wall-clock start and end.
"""

from __future__ import annotations

import itertools
import secrets
from pathlib import Path

import pytest
import trio

from actors.bus import Job, open_bus
from tests.polling import until
from tests.services import redis_url

from .bus_worker import BURST, LIMITED, PERIOD, RATE
from .test_durable_faults import FINISH_WITHIN, LEASE, Fleet


@pytest.fixture(params=["sqlite", "redis"])
def services(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(store URL, broker URL): SQLite for both (one file), or a Redis broker."""
    sqlite = f"sqlite:///{tmp_path}/jobs.db"
    if request.param == "sqlite":
        return sqlite, f"{sqlite}?{LEASE}"
    return sqlite, f"{redis_url()}?{LEASE}&prefix=limits-{secrets.token_hex(4)}"


def runs_of(fleet: Fleet, kind: str) -> list[tuple[str, int, float, float]]:
    """(key, pid, start, end) of each finished run of ``kind``."""
    return [
        (key, int(pid), float(start), float(end))
        for k, key, _, pid, start, end in (line for line in fleet.lines() if len(line) == 6)
        if k == kind
    ]


async def test_rate_limit_and_without_overlapping_hold_across_processes(
    services: tuple[str, str], tmp_path: Path
) -> None:
    fleet = Fleet(*services, tmp_path, "--limited", "--concurrency", "4")
    try:
        async with open_bus(*services, handlers=LIMITED, workers=False) as bus:
            for _ in range(3):
                await fleet.start()
            for i in range(24):
                await bus.dispatch(Job("rated", {"key": f"r{i}"}))
            for i in range(4):
                await bus.dispatch(Job("exclusive", {"key": f"x{i}"}))
            await until(
                lambda: (
                    len(runs_of(fleet, "rated")) >= 24 and len(runs_of(fleet, "exclusive")) >= 4
                ),
                FINISH_WITHIN,
            )
        rated = sorted(start for _, _, start, _ in runs_of(fleet, "rated"))
        # A token bucket: never more than the burst plus what the rate refilled meanwhile (one
        # token of slack for the time between taking a token and recording the start).
        for i in range(len(rated)):
            for j in range(i + 1, len(rated)):
                refilled = RATE / PERIOD * (rated[j] - rated[i])
                assert j - i + 1 <= BURST + refilled + 1, (i, j, rated[j] - rated[i])
        assert len({pid for _, pid, _, _ in runs_of(fleet, "rated")}) >= 2  # shared, not local
        spans = sorted((start, end, pid) for _, pid, start, end in runs_of(fleet, "exclusive"))
        for (_, end, _), (start, _, _) in itertools.pairwise(spans):
            assert start >= end, spans  # one at a time, although each outlived the lock's ttl
        print(f"\nexclusive runs by process: {[pid for _, _, pid in spans]}")
    finally:
        await fleet.stop()


async def test_unique_for_holds_across_processes(services: tuple[str, str], tmp_path: Path) -> None:
    go = tmp_path / "go"
    race = ("--dispatch-unique", "20", "--go", str(go))
    fleet = Fleet(*services, tmp_path, "--limited", *race)
    try:
        for _ in range(3):
            await fleet.start()
        go.touch()  # the three dispatch the same 20 unique jobs at once

        def outcomes() -> list[list[str]]:
            return [line for line in fleet.lines() if line[0] in ("accepted", "duplicate")]

        await until(lambda: len(outcomes()) == 60, FINISH_WITHIN)
        accepted = sorted(key for outcome, key, _ in outcomes() if outcome == "accepted")
        assert accepted == sorted(f"u{i}" for i in range(20))  # each key once, by one process
        await until(lambda: all(fleet.runs()[f"plain:u{i}"] >= 1 for i in range(20)), 30)
        assert all(fleet.runs()[f"plain:u{i}"] == 1 for i in range(20))
    finally:
        await fleet.stop()


async def test_cancel_batch_from_one_process_stops_it_on_every_worker(
    services: tuple[str, str], tmp_path: Path
) -> None:
    fleet = Fleet(*services, tmp_path, "--limited", "--concurrency", "2")
    try:
        async with open_bus(*services, handlers=LIMITED, workers=False) as bus:
            for _ in range(3):
                await fleet.start()
            members = [Job("slow", {"key": f"m{i}"}) for i in range(90)]
            batch_id = await bus.batch(*members).dispatch()

            def started() -> list[list[str]]:
                return [line for line in fleet.lines() if line[0] == "started"]

            await until(lambda: len(started()) >= 9, FINISH_WITHIN)
            await bus.cancel_batch(batch_id)
            before = len(started())
            await trio.sleep(1.5)  # real time: what the workers do after the cancel
            state = await bus.find_batch(batch_id)
        after = started()
        assert state.cancelled
        # Jobs past the store's check when the cancel committed may still start; no others.
        assert len(after) - before <= 6, (before, len(after))
        assert len(after) < 30
        assert len({line[3] for line in after}) >= 2  # it ran on several workers before
    finally:
        await fleet.stop()


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
