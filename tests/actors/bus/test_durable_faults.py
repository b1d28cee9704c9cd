"""The whole bus on durable brokers, in real worker processes killed at random moments.

Three worker processes (``tests.actors.bus.bus_worker``) run a bus with ``workers=True`` on
an SQLite or PostgreSQL store and an SQLite or Redis broker; this process dispatches plain
jobs, chains and batches with `Job` callbacks through a ``workers=False`` bus on the same
store and broker.
Nothing accepted may be lost: every job runs, every chain and batch completes, every `Job`
callback runs. The tests print how many runs were repeats (``pytest -s``).
"""

from __future__ import annotations

import random
import secrets
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
import trio

from actors.bus import Bus, Job, open_bus
from tests.polling import until
from tests.services import postgres_dsn, redis_url

from .bus_worker import HANDLERS

ROOT = Path(__file__).resolve().parents[3]

#: The longest a fault test waits for the work to finish (real time, other processes).
FINISH_WITHIN = 90.0
LEASE = "visibility_timeout=0.75&poll_interval=0.05"


class Fleet:
    """Worker processes on one store and broker, each recording its runs to its own file."""

    def __init__(self, store: str, broker: str, folder: Path, *options: str) -> None:
        self.store, self.broker, self.folder = store, broker, folder
        self.options = options
        self.processes: list[trio.Process] = []

    async def start(self) -> trio.Process:
        out = self.folder / f"runs-{len(self.processes)}.txt"
        argv = [sys.executable, "-m", "tests.actors.bus.bus_worker", self.store, self.broker]
        process = await trio.lowlevel.open_process([*argv, str(out), *self.options], cwd=ROOT)
        self.processes.append(process)
        # Not the file's first line: the bus serves jobs as soon as it is open, so a worker
        # started with jobs waiting may record a run before it writes "ready".
        await until(lambda: out.exists() and "ready" in out.read_text().splitlines(), 30.0)
        return process

    def lines(self) -> list[list[str]]:
        return [
            line.split()
            for out in sorted(self.folder.glob("runs-*.txt"))
            for line in out.read_text().splitlines()
            if line != "ready"
        ]

    def runs(self) -> Counter[str]:
        return Counter(f"{kind}:{key}" for kind, key, *_ in self.lines())

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def dispatch_work(bus: Bus) -> tuple[set[str], list[str], list[str]]:
    """200 plain jobs, 20 chains of 3, 20 batches of 5, with `Job` callbacks; returns the
    runs expected and the chain and batch ids."""
    expected: set[str] = set()
    for i in range(200):
        await bus.dispatch(Job("plain", {"key": f"p{i}"}))
        expected.add(f"plain:p{i}")
    chains, batches = [], []
    for n in range(20):
        steps = [Job("step", {"key": f"c{n}.{k}"}) for k in range(3)]
        chains.append(
            await bus.chain(*steps).finally_(Job("callback", {"key": f"cf{n}"})).dispatch()
        )
        expected |= {f"step:c{n}.{k}" for k in range(3)} | {f"callback:cf{n}"}
        members = [Job("member", {"key": f"b{n}.{k}"}) for k in range(5)]
        builder = bus.batch(*members).then(Job("callback", {"key": f"bt{n}"}))
        batches.append(await builder.finally_(Job("callback", {"key": f"bf{n}"})).dispatch())
        expected |= {f"member:b{n}.{k}" for k in range(5)}
        expected |= {f"callback:bt{n}", f"callback:bf{n}"}
    return expected, chains, batches


async def run_with_kills(fleet: Fleet, kills: int) -> tuple[set[str], int]:
    """Dispatch the work, kill ``kills`` workers at random moments (starting a replacement
    each time), wait until it is all done; return what was lost and how many were killed."""
    async with open_bus(
        store=fleet.store, broker=fleet.broker, handlers=HANDLERS, workers=False
    ) as bus:
        for _ in range(3):
            await fleet.start()
        expected, chains, batches = await dispatch_work(bus)
        rng = random.Random()
        killed = 0
        while killed < kills and not expected <= set(fleet.runs()):
            await trio.sleep(rng.uniform(0.1, 0.4))
            victim = rng.choice([p for p in fleet.processes if p.returncode is None])
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
            killed += 1
            await fleet.start()
        await finished(bus, fleet, expected, chains, batches)
    return expected - set(fleet.runs()), killed


async def finished(
    bus: Bus, fleet: Fleet, expected: set[str], chains: list[str], batches: list[str]
) -> None:
    """Wait (bounded) for every expected run, then check every chain and batch completed
    and the broker holds nothing."""
    await until(lambda: expected <= set(fleet.runs()), FINISH_WITHIN)
    for chain_id in chains:
        assert (await bus.find_chain(chain_id)).completed
    for batch_id in batches:
        state = await bus.find_batch(batch_id)
        assert (state.completed, state.processed, state.failed) == (True, 5, 0)
    await drained(bus)


async def drained(bus: Bus) -> None:
    """Wait (bounded) until the broker holds nothing: every delivery acknowledged."""
    with trio.fail_after(FINISH_WITHIN):
        while True:
            stats = (await bus.queue_stats())["default"]
            if stats.ready == stats.delayed == stats.running == 0:
                return
            await trio.sleep(0.05)


def report(name: str, fleet: Fleet, expected: int, killed: int) -> None:
    runs = fleet.runs()
    twice = sum(1 for count in runs.values() if count > 1)
    redelivered = sum(1 for _, _, delivery, _ in fleet.lines() if int(delivery) > 1)
    print(
        f"\n{name}: {expected} runs expected, {killed} SIGKILLs: {twice} ran more than once, "
        f"{redelivered} runs were redeliveries"
    )


@pytest.fixture(params=["sqlite", "redis", "redis+postgres"])
def services(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(store URL, broker URL): SQLite for both (one file), a Redis broker with an SQLite
    store, or a Redis broker with a PostgreSQL store."""
    sqlite = f"sqlite:///{tmp_path}/jobs.db"
    if request.param == "sqlite":
        return sqlite, f"{sqlite}?{LEASE}"  # the store's own file
    broker = f"{redis_url()}?{LEASE}&prefix=faults-{secrets.token_hex(4)}"
    return (postgres_dsn() if request.param == "redis+postgres" else sqlite), broker


async def test_sigkilled_bus_workers_lose_nothing(
    services: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    slow = ("--concurrency", "4", "--run-min", "0.03", "--run-max", "0.1")
    fleet = Fleet(*services, tmp_path, *slow)
    try:
        lost, killed = await run_with_kills(fleet, kills=4)
        report(request.node.callspec.id, fleet, 200 + 20 * 4 + 20 * 7, killed)
        assert killed >= 1
        assert lost == set()
    finally:
        await fleet.stop()


async def test_sigterm_stops_a_bus_worker_with_nothing_lost(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/jobs.db"
    # Leases far longer than the test: only the graceful stop can hand the jobs on this fast.
    broker = f"{store}?visibility_timeout=60&poll_interval=0.05"
    fleet = Fleet(store, broker, tmp_path)
    try:
        async with open_bus(store=store, broker=broker, handlers=HANDLERS, workers=False) as bus:
            expected, _, _ = await dispatch_work(bus)
            first = await fleet.start()
            await until(lambda: len(fleet.runs()) >= 20, 30.0)
            first.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await first.wait() == 0
            await fleet.start()
            await until(lambda: expected <= set(fleet.runs()), FINISH_WITHIN)
        report("sigterm", fleet, len(expected), 0)
    finally:
        await fleet.stop()


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
