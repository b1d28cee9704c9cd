"""Lanes against a ``dict[str, trio.Lock]``; ActorRef.ask against a bare Trio actor and Pykka.

Run: ``python -m bench.lanes`` (``--quick`` for a smaller run). The machine is noisy, so ours
and each baseline run alternately, pair by pair, in this one process; the figures printed are
medians over the pairs, and the ratios (ours / baseline, in jobs or round trips per second;
above 1.0 means ours is faster) are what to read. See docs/performance.md.
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
from typing import Any

import outcome
import trio
import trio.testing

import actors

Job = Callable[[], Awaitable[None]]


async def _noop() -> None:
    pass


async def _sleep_1ms() -> None:
    await trio.sleep(0.001)


def _key_plan(callers: int, per_caller: int, keys: int, seed: int = 7) -> list[list[str]]:
    rng = random.Random(seed)
    names = [f"key:{i}" for i in range(keys)]
    return [[names[rng.randrange(keys)] for _ in range(per_caller)] for _ in range(callers)]


async def _drive(plan: list[list[str]], run: Callable[[str], Awaitable[None]]) -> float:
    async def caller(keys: list[str]) -> None:
        for key in keys:
            await run(key)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for keys in plan:
            nursery.start_soon(caller, keys)
    return time.perf_counter() - start


async def lock_dict(plan: list[list[str]], job: Job) -> float:
    """The baseline users write by hand: one `trio.Lock` per key, never forgotten."""
    locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)

    async def run(key: str) -> None:
        async with locks[key]:
            await job()

    return await _drive(plan, run)


async def lanes_run(plan: list[list[str]], job: Job) -> float:
    async with actors.open_lanes(idle_timeout=600.0) as lanes:

        async def run(key: str) -> None:
            await lanes.run(key, job)

        return await _drive(plan, run)


def _pairs(
    pairs: int, ours: Callable[[], float], theirs: Callable[[], float]
) -> tuple[float, float]:
    """Run ours and theirs alternately (who goes first alternates too); median seconds each."""
    mine: list[float] = []
    base: list[float] = []
    for i in range(pairs):
        gc.collect()
        if i % 2:
            base.append(theirs())
            gc.collect()
            mine.append(ours())
        else:
            mine.append(ours())
            gc.collect()
            base.append(theirs())
    return statistics.median(mine), statistics.median(base)


def bench_lanes(keys: int, job: Job, per_caller: int, pairs: int, callers: int = 1_000) -> float:
    plan = _key_plan(callers, per_caller, keys)
    jobs = callers * per_caller
    t_lanes, t_lock = _pairs(
        pairs, lambda: trio.run(lanes_run, plan, job), lambda: trio.run(lock_dict, plan, job)
    )
    ratio = t_lock / t_lanes
    print(
        f"lanes  {job.__name__:>10} {keys:>7,} keys {jobs:>7,} jobs | lock dict "
        f"{jobs / t_lock:>9,.0f}/s  lanes {jobs / t_lanes:>9,.0f}/s  ratio {ratio:5.2f}x"
    )
    return ratio


class _Echo(actors.Actor[int, int]):
    async def receive(self, message: int) -> int:
        return message


async def ours_ask(n: int) -> float:
    async with trio.open_nursery() as nursery:
        ref = await actors.spawn(nursery, _Echo())
        start = time.perf_counter()
        for i in range(n):
            await ref.ask(i)
        elapsed = time.perf_counter() - start
        await ref.stop()
    return elapsed


async def ours_ask_concurrent(n: int, askers: int = 100) -> float:
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


class _BareAsk:
    """A reply slot: the Event the asker waits on and the outcome it reads."""

    __slots__ = ("done", "message", "result")

    def __init__(self, message: int) -> None:
        self.message = message
        self.done = trio.Event()
        self.result: outcome.Outcome[int] | None = None


async def bare_trio_ask(n: int, askers: int = 1) -> float:
    """The bare Trio actor: a task looping on a memory channel, replying via Event + slot."""
    send, receive = trio.open_memory_channel[_BareAsk](max(64, askers))

    async def actor() -> None:
        async with receive:
            async for ask in receive:
                ask.result = outcome.Value(ask.message)
                ask.done.set()

    async def asker(count: int) -> None:
        for i in range(count):
            ask = _BareAsk(i)
            await send.send(ask)
            await ask.done.wait()
            assert ask.result is not None
            ask.result.unwrap()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)
        async with send:
            start = time.perf_counter()
            async with trio.open_nursery() as inner:
                for _ in range(askers):
                    inner.start_soon(asker, n // askers)
            elapsed = time.perf_counter() - start
    return elapsed


def pykka_ask(n: int) -> float:
    import pykka

    class Echo(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> Any:
            return message

    ref = Echo.start()
    try:
        start = time.perf_counter()
        for i in range(n):
            ref.ask(i)
        return time.perf_counter() - start
    finally:
        ref.stop()


def bench_ask(n: int, pairs: int) -> tuple[float, float | None]:
    t_ours, t_bare = _pairs(
        pairs, lambda: trio.run(ours_ask, n), lambda: trio.run(bare_trio_ask, n)
    )
    vs_bare = t_bare / t_ours
    print(
        f"ask    one asker        {n:>7,} asks | bare Trio actor {n / t_bare:>9,.0f}/s  "
        f"ActorRef.ask {n / t_ours:>9,.0f}/s  ratio {vs_bare:5.2f}x"
    )
    t_ours, t_bare = _pairs(
        pairs,
        lambda: trio.run(ours_ask_concurrent, n),
        lambda: trio.run(bare_trio_ask, n, 100),
    )
    print(
        f"ask    100 askers       {n:>7,} asks | bare Trio actor {n / t_bare:>9,.0f}/s  "
        f"ActorRef.ask {n / t_ours:>9,.0f}/s  ratio {t_bare / t_ours:5.2f}x"
    )
    try:
        import pykka  # noqa: F401
    except ImportError:
        print("ask    pykka is not installed (pip install -e '.[dev]'): no Pykka figure")
        return vs_bare, None
    t_ours, t_pykka = _pairs(pairs, lambda: trio.run(ours_ask, n), lambda: pykka_ask(n))
    vs_pykka = t_pykka / t_ours
    print(
        f"ask    one asker        {n:>7,} asks | pykka ask       {n / t_pykka:>9,.0f}/s  "
        f"ActorRef.ask {n / t_ours:>9,.0f}/s  ratio {vs_pykka:5.2f}x"
    )
    return vs_bare, vs_pykka


async def _idle_memory(n: int) -> tuple[float, float, int]:
    names = [f"idle:{i}" for i in range(n)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    async with actors.open_lanes(idle_timeout=60.0) as lanes:
        for name in names:
            await lanes.run(name, _noop)
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
    per_lane, after, reaped = trio.run(
        _idle_memory, n, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    print(
        f"memory {n:,} idle lanes: {per_lane:,.0f} B each (key strings included); "
        f"after reaping {reaped:,}: {after / 1024:,.1f} KiB still held"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    parser.add_argument("--pairs", type=int, default=7, help="alternating pairs per figure")
    args = parser.parse_args()
    scale = 5 if args.quick else 1
    pairs = args.pairs
    print(
        f"trio {trio.__version__}; 1,000 concurrent callers; medians of {pairs} alternating "
        "pairs; ratio = ours / baseline throughput"
    )
    for keys in (1, 100, 10_000, 100_000):
        bench_lanes(keys, _noop, 50 // scale, pairs)
    for keys in (1, 100, 10_000, 100_000):
        # one key serializes 1 ms sleeps: fewer jobs there, or it would take minutes
        bench_lanes(keys, _sleep_1ms, 1 if keys == 1 else 20 // scale, pairs)
    bench_ask(100_000 // scale, pairs)
    bench_memory(100_000 // scale)


if __name__ == "__main__":
    main()
