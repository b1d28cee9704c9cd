"""The Batcher against applying each op with its own load and save; a burst; the apply cost.

Run: ``python -m bench.batcher`` (``--pairs`` to change how many alternating pairs). Each
figure alternates ours and the baseline pair by pair in this one process and prints medians
and ratios (the machine is noisy: only the ratios and the pass/fail lines matter).

1. Throughput: ``--ops`` increments over ``--keys`` keys from ``--callers`` callers, against
   a fake database where every load and save is one round trip of ``--latency`` seconds, at
   most 64 at once (a connection pool). Baseline: a load and a save per op under a per-key
   lock. Prints database calls, ops/s and the ratios.
2. Burst: 2,000 keys x 10 ops, all at once, 10 ms loads and saves, default windows
   (``min_duration=0.1``, ``max_duration=0.2``) and ``max_concurrent_io=64``: every op must
   succeed. Baseline: the same burst, a load and a save per op. Also the batcher with
   ``max_duration=0.5``, and for each run the longest garbage-collector pause: a pause
   stops the whole process, so it counts against every deadline running at the time.
3. Apply cost: 1,000 ops in one batch on a 10k-entry dict with ``journal=True`` (an op that
   raises is undone), CPU time of the whole run on Trio's MockClock (no real waiting), must
   be <= 50 ms. Baseline: the same 1,000 callers applying their op to the dict directly,
   unprotected.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

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


async def _drive(plan: list[list[str]], apply: Callable[[str], Awaitable[object]]) -> int:
    """Run every caller's keys in order, callers at once; return how many ops failed."""
    failed = 0

    async def caller(keys: list[str]) -> None:
        nonlocal failed
        for key in keys:
            try:
                await apply(key)
            except Exception:
                failed += 1

    async with trio.open_nursery() as nursery:
        for keys in plan:
            nursery.start_soon(caller, keys)
    return failed


async def naive(plan: list[list[str]], db: FakeDb, **_: Any) -> int:
    locks: dict[str, trio.Lock] = {}

    async def apply(key: str) -> None:
        # each op: its own load and save (under a per-key lock, or increments would be lost)
        async with locks.setdefault(key, trio.Lock()):
            await db.save(key, _increment(await db.load(key)))

    return await _drive(plan, apply)


async def batched(plan: list[list[str]], db: FakeDb, **options: Any) -> int:
    async with actors.open_batcher(db.load, db.save, **options) as batcher:

        async def apply(key: str) -> None:
            await batcher.run(key, _increment)

        return await _drive(plan, apply)


Side = Callable[..., Awaitable[int]]


class GcPauses:
    """The longest garbage-collector pause while it is installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._start)


Run = tuple[float, int, int, int, float]  # seconds, db calls, failed ops, rows sum, GC pause


def _pairs(
    pairs: int, plan: list[list[str]], latency: float, sides: dict[str, tuple[Side, dict[str, Any]]]
) -> dict[str, list[Run]]:
    """Run the sides one after another, ``pairs`` rounds, each in its own ``trio.run``."""
    runs: dict[str, list[Run]] = {name: [] for name in sides}
    for _ in range(pairs):
        for name, (side, options) in sides.items():
            db = FakeDb(latency)
            gc.collect()
            pauses = GcPauses()
            gc.callbacks.append(pauses)
            start = time.perf_counter()
            try:
                failed = trio.run(functools.partial(side, plan, db, **options))
            finally:
                gc.callbacks.remove(pauses)
            took = time.perf_counter() - start
            runs[name].append((took, db.calls, failed, sum(db.rows.values()), pauses.longest))
    return runs


def throughput(args: argparse.Namespace) -> None:
    rng = random.Random(3)
    keys = [f"account:{i}" for i in range(args.keys)]
    per = args.ops // args.callers
    plan = [[rng.choice(keys) for _ in range(per)] for _ in range(args.callers)]
    ops = per * args.callers
    options = {"min_duration": args.min_duration, "max_duration": 5.0}
    runs = _pairs(
        args.pairs, plan, args.latency, {"naive": (naive, {}), "batcher": (batched, options)}
    )
    for name, results in runs.items():
        assert all(r[2] == 0 and r[3] == ops for r in results), f"{name} lost ops"
    t_naive = statistics.median(r[0] for r in runs["naive"])
    t_batch = statistics.median(r[0] for r in runs["batcher"])
    calls_naive = statistics.median(r[1] for r in runs["naive"])
    calls_batch = statistics.median(r[1] for r in runs["batcher"])
    print(
        f"1. {ops:,} ops over {args.keys:,} keys from {args.callers:,} callers; "
        f"db round trip {args.latency * 1e3:g} ms, 64 connections; "
        f"batch window {args.min_duration * 1e3:g} ms; medians of {args.pairs} pairs"
    )
    print(f"   load+save per op : {calls_naive:>9,.0f} db calls  {ops / t_naive:>9,.0f} ops/s")
    print(f"   batcher          : {calls_batch:>9,.0f} db calls  {ops / t_batch:>9,.0f} ops/s")
    print(
        f"   ratio            : {calls_naive / calls_batch:.1f}x fewer db calls, "
        f"{t_naive / t_batch:.2f}x the ops/s"
    )


def burst(args: argparse.Namespace) -> bool:
    keys, per = 2_000, 10
    plan = [[f"k{i}"] for i in range(keys) for _ in range(per)]  # 20,000 callers at once
    sides: dict[str, tuple[Side, dict[str, Any]]] = {
        "naive": (naive, {}),
        "batcher": (batched, {}),
        "batcher, max_duration=0.5": (batched, {"max_duration": 0.5}),
    }
    runs = _pairs(args.pairs, plan, 0.010, sides)
    print(
        f"2. burst: {keys:,} keys x {per} ops at once, 10 ms loads and saves, "
        f"min_duration=0.1 (max_duration 0.2 by default), medians of {args.pairs} rounds"
    )
    for name, results in runs.items():
        took = statistics.median(r[0] for r in results)
        calls = statistics.median(r[1] for r in results)
        failed = ", ".join(f"{r[2]:,}" for r in results)
        pauses = ", ".join(f"{r[4] * 1e3:.0f}" for r in results)
        print(f"   {name:<26} {took:6.2f} s  {calls:>7,.0f} db calls")
        print(f"   {'':<26} ops failed per round: {failed}; longest GC pause (ms): {pauses}")
    t_naive = statistics.median(r[0] for r in runs["naive"])
    t_batch = statistics.median(r[0] for r in runs["batcher"])
    ok = all(r[2] == 0 and r[3] == keys * per for r in runs["batcher"])
    print(f"   ratio    {t_naive / t_batch:.2f}x faster; every op succeeded in every round: {ok}")
    return ok


def _entries() -> dict[str, int]:
    return {f"k{i}": i for i in range(10_000)}


def _op(i: int) -> Callable[[Any], Any]:
    def op(d: Any) -> Any:
        d[f"k{i * 7 % 10_000}"] += 1
        if i % 100 == 99:
            raise ValueError("every hundredth op fails and is undone")
        return d

    return op


async def _apply_journal(ops: list[Callable[[Any], Any]]) -> None:
    data = _entries()

    async def load(key: str) -> dict[str, int]:
        return data

    async def call(op: Callable[[Any], Any]) -> None:
        with contextlib.suppress(ValueError):
            await batcher.run("k", op)

    async with actors.open_batcher(load, journal=True, min_duration=1.0) as batcher:
        async with trio.open_nursery() as nursery:
            for op in ops:
                nursery.start_soon(call, op)
    assert batcher.stats().batches_total == 1


async def _apply_bare(ops: list[Callable[[Any], Any]]) -> None:
    data = _entries()

    async def call(op: Callable[[Any], Any]) -> None:
        with contextlib.suppress(ValueError):
            op(data)
        await trio.sleep(1.0)

    async with trio.open_nursery() as nursery:
        for op in ops:
            nursery.start_soon(call, op)


def apply_cost(args: argparse.Namespace) -> bool:
    ops = [_op(i) for i in range(1_000)]
    cpu: dict[str, list[float]] = {"bare dict": [], "journal": []}
    sides = {"bare dict": _apply_bare, "journal": _apply_journal}
    for _ in range(args.pairs):
        for name, side in sides.items():
            gc.collect()
            start = time.process_time()
            trio.run(side, ops, clock=trio.testing.MockClock(autojump_threshold=0))
            cpu[name].append(time.process_time() - start)
    bare, ours = (statistics.median(cpu[name]) for name in ("bare dict", "journal"))
    ok = ours <= 0.050
    print(
        "3. apply: 1,000 ops (1% raising) in one batch on a 10k-entry dict, CPU of the whole "
        f"run, medians of {args.pairs} pairs"
    )
    print(f"   1,000 tasks, bare dict, unprotected : {bare * 1e3:6.1f} ms")
    print(f"   batcher, journal=True                : {ours * 1e3:6.1f} ms  (<= 50 ms: {ok})")
    print(f"   ratio                                : {ours / bare:.2f}x the bare CPU")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=50_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--callers", type=int, default=5_000)
    parser.add_argument("--latency", type=float, default=0.001, help="seconds per round trip")
    parser.add_argument("--min-duration", type=float, default=0.02)
    parser.add_argument("--pairs", type=int, default=5, help="alternating pairs (5)")
    args = parser.parse_args()
    throughput(args)
    ok = burst(args)
    ok = apply_cost(args) and ok
    if not ok:
        raise SystemExit("a required figure was missed (see above)")


if __name__ == "__main__":
    main()
