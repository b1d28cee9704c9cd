"""Lanes against a hand-rolled ``dict[str, trio.Lock]``; ActorRef.ask against Pykka; lane memory.

Run: ``python -m bench.lanes`` (``--quick`` for a smaller run). Everything runs in this one
process, so the figures that matter are the ratios (the machine is noisy, see PERF.md).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Awaitable, Callable

import trio

import actors


async def _job(i: int) -> int:
    return i + 1


def _key_plan(callers: int, jobs: int, keys: int, seed: int = 7) -> list[list[str]]:
    rng = random.Random(seed)
    names = [f"key:{i}" for i in range(keys)]
    per = jobs // callers
    return [[names[rng.randrange(keys)] for _ in range(per)] for _ in range(callers)]


async def _drive(plan: list[list[str]], run: Callable[[str], Awaitable[int]]) -> float:
    async def caller(keys: list[str]) -> None:
        for key in keys:
            await run(key)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for keys in plan:
            nursery.start_soon(caller, keys)
    return time.perf_counter() - start


async def lock_dict(plan: list[list[str]]) -> float:
    locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)

    async def run(key: str) -> int:
        async with locks[key]:
            return await _job(1)

    return await _drive(plan, run)


async def lanes_run(plan: list[list[str]]) -> float:
    async with actors.open_lanes(idle_timeout=600.0) as lanes:

        async def run(key: str) -> int:
            return await lanes.run(key, _job, 1)

        return await _drive(plan, run)


def _best_of(repeat: int, fn: Callable[[], Awaitable[float]]) -> float:
    times = [trio.run(fn) for _ in range(repeat)]
    return statistics.median(times)


def bench_throughput(jobs: int, callers: int, keys: int, repeat: int) -> None:
    plan = _key_plan(callers, jobs, keys)
    done = callers * len(plan[0])
    t_lock = _best_of(repeat, lambda: lock_dict(plan))
    t_lanes = _best_of(repeat, lambda: lanes_run(plan))
    print(
        f"throughput  {done:>7} jobs  {keys:>6} keys  {callers:>5} callers | "
        f"lock dict {done / t_lock:>9,.0f}/s  lanes {done / t_lanes:>9,.0f}/s  "
        f"ratio {t_lock / t_lanes:5.2f}x"
    )


class _Echo(actors.Actor[int, int]):
    async def receive(self, message: int) -> int:
        return message


async def _ask_rounds(n: int) -> float:
    async with trio.open_nursery() as nursery:
        ref = await actors.spawn(nursery, _Echo())
        start = time.perf_counter()
        for i in range(n):
            await ref.ask(i)
        elapsed = time.perf_counter() - start
        await ref.stop()
    return elapsed


async def _ask_concurrent(n: int, askers: int) -> float:
    async def asker(ref: actors.ActorRef[int, int]) -> None:
        for i in range(n // askers):
            await ref.ask(i)

    async with trio.open_nursery() as nursery:
        ref = await actors.spawn(nursery, _Echo(), mailbox_size=askers)
        start = time.perf_counter()
        async with trio.open_nursery() as inner:
            for _ in range(askers):
                inner.start_soon(asker, ref)
        elapsed = time.perf_counter() - start
        await ref.stop()
    return elapsed


def _pykka_rounds(n: int) -> float | None:
    try:
        import pykka
    except ImportError:
        return None

    class Echo(pykka.ThreadingActor):
        def on_receive(self, message: object) -> object:
            return message

    ref = Echo.start()
    try:
        start = time.perf_counter()
        for i in range(n):
            ref.ask(i)
        return time.perf_counter() - start
    finally:
        ref.stop()


def bench_ask(n: int) -> None:
    ours = statistics.median(trio.run(_ask_rounds, n) for _ in range(3))
    theirs = _pykka_rounds(n)
    line = f"ask         ActorRef.ask {n / ours:>9,.0f} round trips/s"
    if theirs is not None:
        line += f"  pykka ask {n / theirs:>9,.0f}/s  ratio {theirs / ours:5.2f}x"
    print(line + "  (one caller: the idle actor runs each ask in the caller's task)")
    busy = statistics.median(trio.run(_ask_concurrent, n, 100) for _ in range(3))
    print(f"ask         ActorRef.ask {n / busy:>9,.0f} round trips/s from 100 concurrent callers")


async def _idle_memory(n: int) -> tuple[float, float, int]:
    names = [f"idle:{i}" for i in range(n)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    async with actors.open_lanes(idle_timeout=60.0) as lanes:
        for name in names:
            await lanes.run(name, _job, 1)
        assert lanes.stats().live == n
        gc.collect()
        live = tracemalloc.get_traced_memory()[0] - base
        await trio.sleep(61)
        reaped = await lanes.reap_idle()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return live / n, after, reaped


def bench_memory(n: int) -> None:
    import trio.testing

    per_lane, after, reaped = trio.run(
        _idle_memory, n, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    print(
        f"memory      {n:,} idle lanes: {per_lane:,.0f} B each; "
        f"after reaping {reaped:,}: {after / 1024:,.1f} KiB still held"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    args = parser.parse_args()
    jobs, repeat = (40_000, 1) if args.quick else (200_000, 3)
    print(f"trio {trio.__version__}; medians of {repeat}; ratio = lanes / lock dict jobs/s")
    for keys in (1, 100, 10_000, 100_000):
        bench_throughput(jobs, 1_000, keys, repeat)
    bench_ask(20_000 if args.quick else 100_000)
    bench_memory(20_000 if args.quick else 100_000)


if __name__ == "__main__":
    main()
