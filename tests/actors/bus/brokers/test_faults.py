"""Real worker processes, killed at random moments, and a Redis server restarted under one.

Nothing accepted may be lost: every job put runs (at least once) and is acknowledged. The
tests count how many ran twice (redelivered after a kill) and print it (``pytest -s``).
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.bus._broker import Broker, Delivery
from actors.bus._leased import CLAIM_SHIELD, LeasedQueue
from actors.bus._model import QueuedJob
from tests.polling import until
from tests.services import RedisServer

from .conftest import make_broker

ROOT = Path(__file__).resolve().parents[4]

#: The longest a fault test waits for the queue to drain.
DRAIN_WITHIN = 60.0


def jobs(n: int) -> list[QueuedJob]:
    return [
        QueuedJob(job_id=f"j{i:04}", dispatch_id="d", job_type="t", payload="1", queue="q")
        for i in range(n)
    ]


class Workers:
    """Worker processes on one queue, each recording its runs to its own file."""

    def __init__(self, kind: str, place: str, folder: Path, **options: Any) -> None:
        self.kind, self.place, self.folder = kind, place, folder
        self.queue = f"q-{secrets.token_hex(4)}"
        self.prefix = f"fault-{secrets.token_hex(4)}"
        self.options = options
        self.processes: list[trio.Process] = []

    def broker(self, **options: Any) -> Broker:
        if self.kind == "redis":
            options["prefix"] = self.prefix
        return make_broker(self.kind, self.place, **options)

    async def start(self) -> trio.Process:
        out = self.folder / f"runs-{len(self.processes)}.txt"
        argv = [sys.executable, "-m", "tests.actors.bus.brokers.worker"]
        argv += [self.kind, self.place, self.queue, str(out), "--prefix", self.prefix]
        for name, value in self.options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        process = await trio.lowlevel.open_process(argv, cwd=ROOT)
        self.processes.append(process)
        await until(lambda: out.exists() and out.read_text().startswith("ready"), 20.0, every=0.02)
        return process

    def redelivered(self) -> int:
        """Runs of a job handed out again after a kill (its delivery count above 1)."""
        return sum(
            1
            for out in self.folder.glob("runs-*.txt")
            for line in out.read_text().splitlines()
            if line != "ready" and int(line.split()[1]) > 1
        )

    def runs(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for out in self.folder.glob("runs-*.txt"):
            for line in out.read_text().splitlines():
                if line != "ready":
                    counts[line.split()[0]] += 1
        return counts

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
            await process.wait()


@asynccontextmanager
async def opened(broker: Broker) -> AsyncIterator[Broker]:
    await broker.open()
    try:
        yield broker
    finally:
        await broker.close()


async def pending(broker: Broker, queue: str) -> bool:
    stats = await broker.queue(queue).stats()
    return stats.ready + stats.running > 0


async def drained(broker: Broker, queue: str, within: float = DRAIN_WITHIN) -> None:
    """Wait (bounded) until the queue holds nothing: every job acknowledged."""
    with trio.fail_after(within):
        while True:
            stats = await broker.queue(queue).stats()
            if stats.ready == stats.delayed == stats.running == 0:
                return
            await trio.sleep(0.05)


async def test_sigkilled_workers_lose_nothing(kind: str, place: str, tmp_path: Path) -> None:
    workers = Workers(kind, place, tmp_path, visibility_timeout=0.5, run_min=0.02, run_max=0.08)
    total = 400
    try:
        async with opened(workers.broker()) as broker:
            for _ in range(3):
                await workers.start()
            await broker.queue(workers.queue).put(jobs(total))
            kills = 0
            rng = random.Random()
            while kills < 4 and await pending(broker, workers.queue):
                await trio.sleep(rng.uniform(0.1, 0.4))
                victim = rng.choice([p for p in workers.processes if p.returncode is None])
                victim.send_signal(signal.SIGKILL)
                await victim.wait()
                kills += 1
                await workers.start()
            await drained(broker, workers.queue)
        runs = workers.runs()
        lost = {job.job_id for job in jobs(total)} - set(runs)
        twice = sum(1 for count in runs.values() if count > 1)
        print(
            f"\n{kind}: {total} jobs, {kills} SIGKILLs: {len(lost)} lost, {twice} ran twice, "
            f"{workers.redelivered()} redelivered after a kill"
        )
        assert kills >= 1
        assert lost == set()
    finally:
        await workers.stop()


async def test_a_redis_restart_under_a_worker_loses_nothing(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    workers = Workers(
        "redis", own_redis.url, tmp_path, visibility_timeout=2.0, run_min=0.005, run_max=0.02
    )
    total = 300
    try:
        async with opened(workers.broker()) as broker:
            await workers.start()
            queue = broker.queue(workers.queue)
            await queue.put(jobs(total)[:200])
            await until(lambda: sum(workers.runs().values()) >= 20, 20.0, every=0.02)
            own_redis.stop()
            await trio.sleep(0.3)
            own_redis.start()
            # The client reconnects too: the rest is put after the restart.
            with trio.fail_after(10):
                while True:
                    try:
                        await queue.put(jobs(total)[200:])
                        break
                    except (ConnectionError, OSError):
                        await trio.sleep(0.1)
            await drained(broker, workers.queue)
        runs = workers.runs()
        lost = {job.job_id for job in jobs(total)} - set(runs)
        twice = sum(1 for count in runs.values() if count > 1)
        print(f"\nredis restart: {total} jobs: {len(lost)} lost, {twice} ran twice")
        assert lost == set()
        assert workers.processes[0].returncode is None  # the worker rode it out
    finally:
        await workers.stop()


async def test_sigterm_releases_running_jobs_at_once(kind: str, place: str, tmp_path: Path) -> None:
    # Leases far longer than the test: only the release can hand the jobs on this fast.
    workers = Workers(kind, place, tmp_path, visibility_timeout=60, run_min=30, run_max=30)
    try:
        async with opened(workers.broker(visibility_timeout=60, poll_interval=0.05)) as broker:
            process = await workers.start()
            queue = broker.queue(workers.queue)
            await queue.put(jobs(3))

            async def running() -> int:
                return (await queue.stats()).running

            with trio.fail_after(10):
                while True:
                    if await running() == 3:
                        break
                    await trio.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await process.wait() == 0
            with trio.fail_after(5):
                again = [await queue.get() for _ in range(3)]
            assert sorted(d.job.job_id for d in again) == ["j0000", "j0001", "j0002"]
            assert {d.delivery for d in again} == {2}
            for delivery in again:
                await queue.ack(delivery)
        assert workers.runs() == Counter()  # none of them ran to the end in the worker
    finally:
        await workers.stop()


class SlowReply(LeasedQueue):
    """A queue whose backend leases a job at once but answers only when told to."""

    def __init__(self) -> None:
        super().__init__("q", claim_batch=1)
        self.leased: list[Delivery] = []
        self.answer = trio.Event()

    async def _claim(self, n: int) -> tuple[list[Delivery], float]:
        self.leased.append(Delivery(jobs(1)[0], 1, "r1", 0))
        await self.answer.wait()
        return self.leased, 0.0


async def test_a_get_cancelled_while_its_claim_is_answered_keeps_what_was_leased() -> None:
    # A SIGTERM landing while a Redis claim's reply is on its way: the released jobs must
    # include it, else it waits out its lease (the flake of the test above, under load).
    queue = SlowReply()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.get)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
        queue.answer.set()
    assert queue.held() == queue.leased


async def test_a_claim_that_never_answers_holds_up_a_cancelled_get_for_claim_shield_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A claim stuck reconnecting to a server that is down: the shield ends at CLAIM_SHIELD,
    # so a graceful stop is not held up for the broker's whole reconnect timeout.
    queue = SlowReply()  # never told to answer
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.get)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert trio.current_time() == CLAIM_SHIELD
    assert queue.held() == []  # what it leased lapses with its lease


def test_the_worker_script_is_importable() -> None:
    from . import worker

    args = worker.parse(["sqlite", "x.db", "q", "out"])
    assert (args.kind, args.concurrency, args.visibility_timeout) == ("sqlite", 4, 0.5)
    assert os.path.basename(worker.__file__) == "worker.py"


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
