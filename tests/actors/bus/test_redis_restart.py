"""The whole bus on Redis with the server restarted (append-only file on) under running work.

Three worker processes (``tests.actors.bus.bus_worker``) and this process's dispatching bus
share a redis-server of the test's own, which is stopped and started again while jobs,
chain steps and batch members run and while this process is still dispatching. Every
RedisBroker call retries while the server is away, so nothing fails: no job is lost, every
chain and batch completes, every `Job` callback runs, and no process dies. The test prints
how many runs were repeats (``pytest -s``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.bus import open_bus
from tests.polling import until
from tests.services import RedisServer

from .bus_worker import HANDLERS
from .test_durable_faults import Fleet, dispatch_work, finished, report


async def test_a_redis_restart_under_bus_workers_loses_nothing(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    broker = f"{own_redis.url}?visibility_timeout=2&poll_interval=0.05"
    slow = ("--concurrency", "4", "--run-min", "0.01", "--run-max", "0.05")
    fleet = Fleet(f"sqlite:///{tmp_path}/jobs.db", broker, tmp_path, *slow)
    restarted = trio.Event()

    async def restart_mid_run() -> None:
        await until(lambda: len(fleet.runs()) >= 40, 60.0)
        await trio.to_thread.run_sync(own_redis.stop)  # SIGTERM: it writes its AOF and exits
        await trio.sleep(0.5)
        await trio.to_thread.run_sync(own_redis.start)
        restarted.set()

    try:
        async with open_bus(
            store=fleet.store, broker=fleet.broker, handlers=HANDLERS, workers=False
        ) as bus:
            for _ in range(3):
                await fleet.start()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(restart_mid_run)
                # Still dispatching while the server goes away: those calls wait for it.
                expected, chains, batches = await dispatch_work(bus)
            assert restarted.is_set()
            await finished(bus, fleet, expected, chains, batches)
        lost = expected - set(fleet.runs())
        report("redis restart", fleet, len(expected), 0)
        assert lost == set()
        assert [p.returncode for p in fleet.processes] == [None] * 3  # they rode it out
    finally:
        await fleet.stop()


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
