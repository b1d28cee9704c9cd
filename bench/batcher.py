"""The Batcher against applying each op with its own load and save.

Run: ``python -m bench.batcher`` (``--ops``, ``--keys``, ``--latency`` to vary). Both sides
talk to the same fake database: every load and save is one round trip of ``--latency``
seconds, at most 64 at once (a connection pool). Prints database calls and ops/s of each, and
the ratios.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Awaitable, Callable

import trio

import actors


class FakeDb:
    def __init__(self, latency: float, connections: int = 64) -> None:
        self.latency = latency
        self.pool = trio.CapacityLimiter(connections)
        self.rows: dict[str, int] = {}
        self.calls = 0

    async def load(self, key: str) -> int:
        async with self.pool:
            self.calls += 1
            await trio.sleep(self.latency)
            return self.rows.get(key, 0)

    async def save(self, key: str, value: int) -> None:
        async with self.pool:
            self.calls += 1
            await trio.sleep(self.latency)
            self.rows[key] = value


def _increment(value: int) -> int:
    return value + 1


async def _drive(plan: list[list[str]], apply: Callable[[str], Awaitable[object]]) -> float:
    async def caller(keys: list[str]) -> None:
        for key in keys:
            await apply(key)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for keys in plan:
            nursery.start_soon(caller, keys)
    return time.perf_counter() - start


async def naive(plan: list[list[str]], db: FakeDb) -> float:
    locks: dict[str, trio.Lock] = {}

    async def apply(key: str) -> None:
        # each op: its own load and save (under a per-key lock, or increments would be lost)
        async with locks.setdefault(key, trio.Lock()):
            await db.save(key, _increment(await db.load(key)))

    return await _drive(plan, apply)


async def batched(plan: list[list[str]], db: FakeDb, min_duration: float) -> float:
    async with actors.open_batcher(
        db.load, db.save, min_duration=min_duration, max_duration=5.0
    ) as batcher:

        async def apply(key: str) -> None:
            await batcher.run(key, _increment)

        return await _drive(plan, apply)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--callers", type=int, default=5_000)
    parser.add_argument("--latency", type=float, default=0.001, help="seconds per round trip")
    parser.add_argument("--min-duration", type=float, default=0.02)
    args = parser.parse_args()

    rng = random.Random(3)
    keys = [f"account:{i}" for i in range(args.keys)]
    per = args.ops // args.callers
    plan = [[rng.choice(keys) for _ in range(per)] for _ in range(args.callers)]
    ops = per * args.callers

    naive_db = FakeDb(args.latency)
    t_naive = trio.run(naive, plan, naive_db)
    batch_db = FakeDb(args.latency)
    t_batch = trio.run(batched, plan, batch_db, args.min_duration)
    assert sum(naive_db.rows.values()) == sum(batch_db.rows.values()) == ops

    print(
        f"{ops:,} ops over {args.keys:,} keys from {args.callers:,} callers; "
        f"db round trip {args.latency * 1e3:g} ms, 64 connections; "
        f"batch window {args.min_duration * 1e3:g} ms"
    )
    print(f"load+save per op : {naive_db.calls:>9,} db calls  {ops / t_naive:>9,.0f} ops/s")
    print(f"batcher          : {batch_db.calls:>9,} db calls  {ops / t_batch:>9,.0f} ops/s")
    print(
        f"ratio            : {naive_db.calls / batch_db.calls:.1f}x fewer db calls, "
        f"{t_naive / t_batch:.2f}x the ops/s"
    )


if __name__ == "__main__":
    main()
