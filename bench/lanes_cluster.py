"""Lanes across the fleet on Redis: the cost of ordering, and cluster Lanes' latency.

Run: ``python -m bench.lanes_cluster`` (``scripts/services.sh run`` starts a Redis server;
otherwise pass ``--redis-url`` or set ``TRIO_LANES_TEST_REDIS_URL``).

* **lane jobs vs plain jobs**, at the broker level (`RedisBroker` get+ack with ``--consumers``
  loops in one process, as a worker runs them): ``--jobs`` jobs spread round-robin over 10,
  1,000 and 100,000 lanes (at 100,000 lanes and fewer jobs, each job is alone in its lane)
  against the same jobs without lanes on the same broker. Measured after the put, so it is the
  processing rate. Pairs alternate (lanes, plain / plain, lanes); medians of ``--rounds``.
* **cluster Lanes** ``run`` latency (``open_lanes(cluster=...)``): a no-op job on one key,
  one caller (acquire + release: two script calls), and two managers (two connections, as two
  processes would be) taking turns on one key (each run waits for the other's release).

At the Bus level (``Job(...).lane(key)``), lane jobs go through these same broker paths.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time

import trio

import actors
from actors.bus import QueuedJob, RedisBroker

from .brokers import process


def make_jobs(n: int, lanes: int | None) -> list[QueuedJob]:
    return [
        QueuedJob(
            job_id=f"j{i}",
            dispatch_id="d",
            job_type="bench:noop",
            payload="{}",
            queue="q",
            lane=None if lanes is None else f"account:{i % lanes}",
        )
        for i in range(n)
    ]


async def run_broker(url: str, jobs: list[QueuedJob], consumers: int) -> float:
    """Put ``jobs``, then get+ack them all; the seconds the processing took."""
    prefix = f"bench-{secrets.token_hex(4)}"
    broker = RedisBroker(url, prefix=prefix, poll_interval=0.05)
    await broker.open()
    try:
        queue = broker.queue("q")
        for i in range(0, len(jobs), 1000):
            await queue.put(jobs[i : i + 1000])
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.serve)
            took = await process(queue, len(jobs), consumers)
            nursery.cancel_scope.cancel()
        keys = [key async for key in broker.client.scan_iter(match=f"{prefix}:*")]
        for i in range(0, len(keys), 1000):
            await broker.client.delete(keys[i : i + 1000])
    finally:
        await broker.close()
    return took


async def cluster_latency(url: str, runs: int) -> tuple[list[float], list[float]]:
    prefix = f"bench-{secrets.token_hex(4)}"

    async def nop() -> None:
        await trio.lowlevel.checkpoint()

    alone: list[float] = []
    turns: list[float] = []
    async with (
        actors.open_lanes(cluster=url, prefix=prefix) as a,
        actors.open_lanes(cluster=url, prefix=prefix) as b,
    ):
        for _ in range(runs):
            start = time.perf_counter()
            await a.run("account:1", nop)
            alone.append(time.perf_counter() - start)

        async def caller(lanes: actors.Lanes) -> None:
            for _ in range(runs // 2):
                start = time.perf_counter()
                await lanes.run("account:2", nop)
                turns.append(time.perf_counter() - start)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, a)
            nursery.start_soon(caller, b)
    return alone, turns


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main(args: argparse.Namespace) -> None:
    url = args.redis_url or os.environ.get("TRIO_LANES_TEST_REDIS_URL")
    if not url:
        print("no Redis server: pass --redis-url or set TRIO_LANES_TEST_REDIS_URL")
        return
    n = args.jobs
    print(f"RedisBroker, {n} jobs, {args.consumers} consumers, {args.rounds} pairs (medians)")
    plain = make_jobs(n, None)
    for lanes in args.lanes:
        laned = make_jobs(n, lanes)
        ours: list[float] = []
        base: list[float] = []
        for round_ in range(args.rounds):
            order = [(ours, laned), (base, plain)]
            for results, jobs in order if round_ % 2 == 0 else reversed(order):
                results.append(await run_broker(url, jobs, args.consumers))
        mine, theirs = n / statistics.median(ours), n / statistics.median(base)
        print(
            f"{lanes:>7,} lanes: lane jobs {mine:8,.0f} jobs/s   plain jobs {theirs:8,.0f} "
            f"jobs/s   ratio {mine / theirs:.2f}"
        )
    alone, turns = await cluster_latency(url, args.runs)
    print(
        f"cluster Lanes run, one caller:     p50 {pct(alone, 0.5):.2f} ms   "
        f"p99 {pct(alone, 0.99):.2f} ms   ({len(alone)} runs)"
    )
    print(
        f"cluster Lanes run, two processes:  p50 {pct(turns, 0.5):.2f} ms   "
        f"p99 {pct(turns, 0.99):.2f} ms   ({len(turns)} runs, taking turns on one key)"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--lanes", type=int, nargs="+", default=[10, 1_000, 100_000])
    parser.add_argument("--consumers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--redis-url", default=None)
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse())
