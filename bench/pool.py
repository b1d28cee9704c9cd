"""The Pool against a bare ``trio.CapacityLimiter`` loop: 100k no-op tasks, same limit.

Run: ``python -m bench.pool`` (``--n 20000`` for a quicker run, ``--limit`` to change the
concurrency). Both run in this one process and alternate run by run, so the figure that
matters is the ratio (the machine is noisy). The baseline is what users write by hand:
``start_soon`` under a limiter, the task releasing its token when done.

Then memory under failure: ``--failing`` tasks (100k) that fail their first attempt and
succeed on the retry, 1 s later (on Trio's MockClock, so no real waiting), ``limit=5``:
the traced peak with the default ``max_pending`` (50), and for contrast with the bound
lifted on a tenth as many tasks. The peak includes ``pool.outputs`` (one entry per task).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable

import trio
import trio.testing

import actors

_RETRY = actors.RetryPolicy.linear(max_attempts=2, initial_delay=1.0)


async def _noop() -> None:
    pass


async def limiter_loop(n: int, limit: int) -> float:
    limiter = trio.CapacityLimiter(limit)

    async def task(token: object) -> None:
        try:
            await _noop()
        finally:
            limiter.release_on_behalf_of(token)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            token = object()
            await limiter.acquire_on_behalf_of(token)
            nursery.start_soon(task, token)
    return time.perf_counter() - start


async def pool_submit(n: int, limit: int) -> float:
    start = time.perf_counter()
    async with actors.open_pool(limit=limit) as pool:
        for _ in range(n):
            await pool.submit(_noop)
    elapsed = time.perf_counter() - start
    assert len(pool.outputs) == n
    return elapsed


async def pool_map(n: int, limit: int) -> float:
    async def noop_item(i: int) -> int:
        return i

    start = time.perf_counter()
    async with actors.open_pool(limit=limit) as pool:
        count = 0
        async for _ in pool.map(noop_item, range(n)):
            count += 1
    assert count == n
    return time.perf_counter() - start


async def _fails_once(tried: list[bool]) -> None:
    if not tried:
        tried.append(True)  # per task, so it goes with the task: only the pool's memory counts
        raise ConnectionError("flaky")


async def failing_then_succeeding(n: int, max_pending: int | None) -> int:
    async with actors.open_pool(limit=5, max_pending=max_pending) as pool:
        for _ in range(n):
            await pool.submit(_fails_once, [], retry=_RETRY)
    assert len(pool.outputs) == n
    assert not pool.errors
    return n


def traced_peak(n: int, max_pending: int | None) -> tuple[float, float]:
    """Traced peak (MiB) and real seconds of one run of ``failing_then_succeeding``."""
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        trio.run(
            failing_then_succeeding,
            n,
            max_pending,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / 2**20, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="tasks per run (100000)")
    parser.add_argument("--limit", type=int, default=100, help="pool limit (100)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each, median kept (5)")
    parser.add_argument("--failing", type=int, default=100_000, help="failing tasks (100000)")
    args = parser.parse_args()
    n, limit = args.n, args.limit

    contenders: dict[str, Callable[[int, int], Awaitable[float]]] = {
        "CapacityLimiter loop": limiter_loop,
        "Pool.submit": pool_submit,
        "Pool.map": pool_map,
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeat):  # alternate, so drift on a noisy machine hits all alike
        for name, fn in contenders.items():
            gc.collect()
            times[name].append(trio.run(fn, n, limit))

    base = statistics.median(times["CapacityLimiter loop"])
    print(f"{n:,} no-op tasks, limit {limit}, median of {args.repeat} runs (python -m bench.pool)")
    for name, runs in times.items():
        t = statistics.median(runs)
        print(f"  {name:<22} {n / t:>10,.0f} tasks/s  {t / n * 1e6:6.1f} µs/task  "
              f"ratio {base / t:5.2f}x")  # fmt: skip

    bounded, took = traced_peak(args.failing, None)
    unbounded, took_unbounded = traced_peak(args.failing // 10, args.failing)
    print(f"{args.failing:,} tasks failing once then succeeding, limit 5, traced peak:")
    print(f"  max_pending=50 (default) {bounded:6.2f} MiB  ({took:.1f} s)")
    print(
        f"  no bound, {args.failing // 10:,} tasks {unbounded:6.2f} MiB  ({took_unbounded:.1f} s)"
    )


if __name__ == "__main__":
    main()
