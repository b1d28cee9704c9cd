"""Supervisors: the cost of a child's exit beside 10, 1k and 10k siblings, and stop times.

Run: ``python -m bench.supervisors`` (``--rounds 7``, ``--cycles 2000``).

1. Exit cost: one permanent child crashes and is restarted ``cycles`` times beside N plain
   siblings; the figure is the time per crash-and-restart. The sizes alternate round by
   round in this one process (the machine is noisy), and the ratios to the 10-sibling cost
   are what matter: supervision should cost the same whatever the number of siblings.
2. Stops, on the real clock and on Trio's autojump clock (``MockClock(autojump_threshold=0)``,
   where the trio time shows any grace that was waited for): 10,000 plain children
   stopped by ``shutdown()``; 100 plain children under ``move_on_after(1)``; escalation
   through 5 nested supervisors, each with a plain child; giving up after too many
   restarts beside plain children.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Awaitable, Callable

import trio
import trio.testing

import supervisors

SIZES = (10, 1_000, 10_000)


async def plain(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


async def exit_cost(siblings: int, cycles: int) -> float:
    """Seconds per crash-and-restart of one child beside ``siblings`` plain ones."""
    runs = 0
    done = trio.Event()
    marks: list[float] = []

    async def crashy(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        if runs == 1:
            marks.append(time.perf_counter())
        if runs > cycles:
            marks.append(time.perf_counter())
            done.set()
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        raise ConnectionError("down")

    async with supervisors.open_supervisor(max_restarts=10**9, max_seconds=1e-6) as sup:
        for n in range(siblings):
            await sup.start_child(f"s{n}", plain)
        gc.collect()
        await sup.start_child("crashy", crashy)
        await done.wait()
        await sup.shutdown()
    return (marks[1] - marks[0]) / cycles


async def stop_10k() -> tuple[float, float]:
    """(real seconds, trio seconds) that ``shutdown()`` takes for 10,000 plain children."""
    async with supervisors.open_supervisor() as sup:
        for n in range(10_000):
            await sup.start_child(f"c{n}", plain)
        t0, real0 = trio.current_time(), time.perf_counter()
        await sup.shutdown()
        return time.perf_counter() - real0, trio.current_time() - t0


async def move_on_100() -> tuple[float, float]:
    """(real, trio) seconds from the deadline of ``move_on_after(1)`` to the block's end."""
    t0, real0 = trio.current_time(), time.perf_counter()
    with trio.move_on_after(1):
        async with supervisors.open_supervisor() as sup:
            for n in range(100):
                await sup.start_child(f"c{n}", plain)
            await trio.sleep_forever()
    return time.perf_counter() - real0 - 1.0, trio.current_time() - t0 - 1.0


async def _crash_after(
    seconds: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    task_status.started()
    await trio.sleep(seconds)
    raise ConnectionError("down")


async def _level(depth: int, *, task_status: trio.TaskStatus[None]) -> None:
    async with supervisors.open_supervisor(max_restarts=0, name=f"level{depth}") as sup:
        await sup.start_child("plain", plain)
        if depth > 1:
            await sup.start_child("below", _level, depth - 1)
        else:
            await sup.start_child("bottom", _crash_after, 1.0)
        task_status.started()


async def escalate_5() -> tuple[float, float]:
    """(real, trio) seconds beyond the bottom crash (at t=1) until the root gives up."""
    t0, real0 = trio.current_time(), time.perf_counter()
    try:
        async with supervisors.open_supervisor(max_restarts=0) as root:
            await root.start_child("level5", _level, 5)
            await trio.sleep_forever()
    except supervisors.RestartIntensityExceeded:
        pass
    return time.perf_counter() - real0 - 1.0, trio.current_time() - t0 - 1.0


async def give_up() -> tuple[float, float]:
    """(real, trio) seconds beyond the third crash (at t=0.3) until the block raises."""
    t0, real0 = trio.current_time(), time.perf_counter()
    try:
        async with supervisors.open_supervisor(max_restarts=2, max_seconds=10) as sup:
            for n in range(10):
                await sup.start_child(f"p{n}", plain)
            await sup.start_child("crashy", _crash_after, 0.1)
            await trio.sleep_forever()
    except supervisors.RestartIntensityExceeded:
        pass
    return time.perf_counter() - real0 - 0.3, trio.current_time() - t0 - 0.3


def on_both_clocks(fn: Callable[[], Awaitable[tuple[float, float]]]) -> tuple[float, float]:
    """(real seconds on the real clock, trio seconds on the autojump clock) of ``fn``."""
    real, _ = trio.run(fn)
    _, trio_time = trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))
    return real, trio_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=2000)
    args = parser.parse_args()

    costs: dict[int, list[float]] = {size: [] for size in SIZES}
    for _ in range(args.rounds):
        for size in SIZES:  # alternate the sizes round by round
            costs[size].append(trio.run(exit_cost, size, args.cycles))
    base = statistics.median(costs[SIZES[0]])
    print(f"crash + restart of one child, median of {args.rounds} rounds:")
    for size in SIZES:
        cost = statistics.median(costs[size])
        print(f"  beside {size:>6,} siblings: {cost * 1e6:7.1f} us   ({cost / base:.2f}x of 10)")

    print("stops (real time on the real clock; trio time on the autojump clock):")
    for label, fn in [
        ("shutdown() of 10,000 plain children", stop_10k),
        ("move_on_after(1) around 100 plain children, after the 1 s", move_on_100),
        ("escalation through 5 levels, after the crash", escalate_5),
        ("giving up beside 10 plain children, after the crash", give_up),
    ]:
        real, trio_time = on_both_clocks(fn)
        print(f"  {label}: {real:.3f} s real, {trio_time:.3f} s trio time")


if __name__ == "__main__":
    main()
