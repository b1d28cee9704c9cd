"""The durable brokers on their own: enqueue and get+ack rates, against a bare coredis loop.

Run: ``python -m bench.brokers`` (``make bench`` starts a Redis server for it; otherwise pass
``--redis-url`` or set ``TRIO_LANES_TEST_REDIS_URL``; without one only SQLite runs).

* enqueue: ``--jobs`` jobs put in batches of ``--batch`` (one ``put`` per batch);
* process: ``--jobs`` no-op jobs taken and acknowledged by ``--consumers`` concurrent
  ``get``/``ack`` loops in this one process.

The Redis baseline is the least a hand-written coredis worker does for the same guarantees:
XADD pipelined per batch to enqueue; one loop of XREADGROUP COUNT 100 and one XACK + XDEL
per batch to process (no leases renewed, no delivery counts, no delays). Ours and the
baseline alternate pair by pair in one process (the machine is noisy); the figures are
medians, and the ratio is ours / baseline. SQLite has no baseline here: its rates are shown
on their own.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from actors.bus import QueuedJob, RedisBroker, SQLiteBroker
from actors.bus._broker import BrokerQueue, encode_job


def make_jobs(n: int) -> list[QueuedJob]:
    return [
        QueuedJob(
            job_id=f"j{i}", dispatch_id=f"d{i}", job_type="bench:noop", payload="{}", queue="q"
        )
        for i in range(n)
    ]


async def enqueue(queue: BrokerQueue, jobs: list[QueuedJob], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(jobs), batch):
        await queue.put(jobs[i : i + batch])
    return time.perf_counter() - start


async def process(queue: BrokerQueue, n: int, consumers: int) -> float:
    left = n
    done = trio.Event()

    async def consume() -> None:
        nonlocal left
        while left > 0:
            delivery = await queue.get()
            await queue.ack(delivery)
            left -= 1
            if left == 0:
                done.set()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(consumers):
            nursery.start_soon(consume)
        await done.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed


async def run_ours(
    broker: RedisBroker | SQLiteBroker, jobs: list[QueuedJob], batch: int, consumers: int
) -> tuple[float, float]:
    """Enqueue ``jobs`` in batches, then get+ack them all with ``consumers`` loops."""
    await broker.open()
    try:
        queue = broker.queue("q")
        put = await enqueue(queue, jobs, batch)
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.serve)
            took = await process(queue, len(jobs), consumers)
            nursery.cancel_scope.cancel()
        if isinstance(broker, RedisBroker):
            await broker.client.delete(
                [f"{broker.prefix}:{{q}}:stream", f"{broker.prefix}:{{q}}:delayed"]
            )
    finally:
        await broker.close()
    return put, took


async def baseline_redis(url: str, jobs: list[QueuedJob], batch: int) -> tuple[float, float]:
    import coredis

    stream = f"bench-base-{secrets.token_hex(4)}"
    bodies = [encode_job(job) for job in jobs]
    client: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)
    async with client:
        await client.xgroup_create(stream, "g", "0", mkstream=True)
        start = time.perf_counter()
        for i in range(0, len(bodies), batch):
            async with client.pipeline(transaction=False) as pipe:
                for body in bodies[i : i + batch]:
                    pipe.xadd(stream, {"j": body})
        put = time.perf_counter() - start
        left = len(bodies)
        start = time.perf_counter()
        while left > 0:
            found = await client.xreadgroup("g", "c", {stream: ">"}, count=100, block=1000)
            entries = found[stream] if found else ()
            ids = [entry.identifier for entry in entries]
            async with client.pipeline(transaction=False) as pipe:
                pipe.xack(stream, "g", ids)
                pipe.xdel(stream, ids)
            left -= len(ids)
        took = time.perf_counter() - start
        await client.delete([stream])
    return put, took


def rate(n: int, seconds: list[float]) -> float:
    return n / statistics.median(seconds)


async def main(args: argparse.Namespace) -> None:
    jobs = make_jobs(args.jobs)
    n = len(jobs)
    url = args.redis_url or os.environ.get("TRIO_LANES_TEST_REDIS_URL")
    print(
        f"{n} jobs, put in batches of {args.batch}, {args.consumers} consumers, {args.rounds} pairs"
    )
    if url:
        ours: list[tuple[float, float]] = []
        base: list[tuple[float, float]] = []
        runs: list[
            tuple[list[tuple[float, float]], Callable[[], Awaitable[tuple[float, float]]]]
        ] = [
            (
                ours,
                lambda: run_ours(
                    RedisBroker(url, prefix=f"bench-{secrets.token_hex(4)}"),
                    jobs,
                    args.batch,
                    args.consumers,
                ),
            ),
            (base, lambda: baseline_redis(url, jobs, args.batch)),
        ]
        for round_ in range(args.rounds):
            for results, run in runs if round_ % 2 == 0 else reversed(runs):
                results.append(await run())
        for what, index in (("enqueue", 0), ("process", 1)):
            mine = rate(n, [r[index] for r in ours])
            theirs = rate(n, [r[index] for r in base])
            print(
                f"redis {what:8} RedisBroker {mine:9,.0f} jobs/s   coredis loop {theirs:9,.0f} "
                f"jobs/s   ratio {mine / theirs:.2f}"
            )
    else:
        print("redis: no server (pass --redis-url or set TRIO_LANES_TEST_REDIS_URL); skipped")
    with tempfile.TemporaryDirectory() as folder:
        results = [
            await run_ours(
                SQLiteBroker(Path(folder) / f"{secrets.token_hex(4)}.db"),
                jobs,
                args.batch,
                args.consumers,
            )
            for _ in range(args.rounds)
        ]
    print(f"sqlite enqueue SQLiteBroker {rate(n, [r[0] for r in results]):9,.0f} jobs/s")
    print(f"sqlite process SQLiteBroker {rate(n, [r[1] for r in results]):9,.0f} jobs/s")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--consumers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url", default=None)
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse())
