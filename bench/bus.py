"""The Bus against a bare Trio worker pool: no-op jobs dispatched and handled.

Run: ``python -m bench.bus`` (``--jobs 20000`` for a quicker run; ``--sqlite-scale`` sets the
share of each workload that runs on SQLite, whose every chain step or batch outcome is a
transaction in a thread). Everything runs in this one process, the bus and its baseline
alternating pair by pair, and the figure that matters is the median ratio (the machine is
noisy).

The baseline is what users write by hand: a memory channel and ``workers`` tasks that
receive a job and ``await`` a no-op handler, doing the same sequencing and counting as the
bus (a chain's worker re-queues its next step; a batch counts down and finishes). The bus
runs the same no-op handler with the same number of workers, for:

* plain ``dispatch`` of every job (no store traffic: plain jobs never touch the store);
* batches of ``--batch-size`` jobs (each outcome counted by the batch's coordinator);
* chains of ``--chain-length`` jobs (each step recorded before the next is queued).
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import trio

from actors.bus import Job, JobContext, MemoryStore, SQLiteStore, Store, open_bus


async def _noop(ctx: object) -> None:
    pass


async def baseline(n: int, workers: int, shape: str = "plain", size: int = 1) -> float:
    """A bare memory-channel worker pool doing the same work: plain jobs; chains whose
    worker re-queues the next step; batches counted down to their end."""
    send, receive = trio.open_memory_channel[tuple[int, int]](math.inf)
    left: dict[int, int] = {}
    done = trio.Event()
    remaining = [n // size if shape == "chain" else n]

    async def worker() -> None:
        async for group, step in receive:
            await _noop(step)
            if shape == "chain" and step + 1 < size:
                send.send_nowait((group, step + 1))
                continue
            if shape == "batch":
                left[group] -= 1
                if not left[group]:
                    del left[group]
            remaining[0] -= 1
            if not remaining[0]:
                done.set()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
        groups = n // size if shape != "plain" else n
        for g in range(groups):
            if shape == "batch":
                left[g] = size
                for i in range(size):
                    send.send_nowait((g, i))
            else:
                send.send_nowait((g, 0))
            await trio.lowlevel.checkpoint()
        await done.wait()
        nursery.cancel_scope.cancel()
    return time.perf_counter() - start


async def _handler(ctx: JobContext) -> None:
    pass


def _store(kind: str, tmp: str) -> Store:
    if kind == "memory":
        return MemoryStore()
    path = Path(tmp) / f"bench-{time.monotonic_ns()}.db"
    return SQLiteStore(path)


async def bus_dispatch(n: int, workers: int, kind: str, tmp: str) -> float:
    store = _store(kind, tmp)
    start = time.perf_counter()
    async with open_bus(store=store, queues={"default": workers}) as bus:
        bus.register("noop", _handler)
        job = Job("noop")
        for _ in range(n):
            await bus.dispatch(job)
        await bus.wait_idle()
    return time.perf_counter() - start


async def bus_batches(n: int, workers: int, kind: str, tmp: str, size: int) -> float:
    store = _store(kind, tmp)
    batches = max(1, n // size)
    start = time.perf_counter()
    async with open_bus(store=store, queues={"default": workers}, max_pending=2 * size) as bus:
        bus.register("noop", _handler)
        for _ in range(batches):
            await bus.batch(*[Job("noop")] * size).dispatch()
        await bus.wait_idle()
    return time.perf_counter() - start


async def bus_chains(
    n: int, workers: int, kind: str, tmp: str, length: int, producers: int = 1
) -> float:
    """Chains of ``length`` no-op jobs, dispatched by ``producers`` tasks at once (a server
    handling that many requests; on SQLite their writes share group commits)."""
    store = _store(kind, tmp)
    chains = max(1, n // length)
    start = time.perf_counter()
    async with open_bus(store=store, queues={"default": workers}) as bus:
        bus.register("noop", _handler)

        async def produce(count: int) -> None:
            for _ in range(count):
                await bus.chain(*[Job("noop")] * length).dispatch()

        async with trio.open_nursery() as nursery:
            for p in range(producers):
                nursery.start_soon(produce, chains // producers + (p < chains % producers))
        await bus.wait_idle()
    return time.perf_counter() - start


def sql_chain_steps(chains: int, length: int, tmp: str, group: int = 64) -> float:
    """The store's own SQL for the same chains, called directly in one thread, ``group``
    operations per transaction (a group commit at its best): seconds for every step."""
    from actors.bus import ChainRecord, JobRecord
    from actors.bus._sqlite_ops import create_chain, record_chain_step
    from actors.bus._sqlite_schema import connect

    conn = connect(str(Path(tmp) / f"sql-{time.monotonic_ns()}.db"), 10.0)
    now = datetime.now(UTC)
    nodes = [JobRecord(f"n{i}", "noop", "null", "default") for i in range(length)]
    records = [ChainRecord(f"c{c}", f"d{c}", "default", tuple(nodes), now) for c in range(chains)]
    ops: list[tuple[Callable[..., object], tuple[object, ...]]] = [
        (create_chain, (record,)) for record in records
    ]
    for step in range(length):
        ops.extend((record_chain_step, (f"c{c}", step, None, now)) for c in range(chains))
    start = time.perf_counter()
    for first in range(0, len(ops), group):
        conn.execute("BEGIN IMMEDIATE")
        for fn, args in ops[first : first + group]:
            conn.execute("SAVEPOINT op")
            fn(conn, *args)
            conn.execute("RELEASE op")
        conn.execute("COMMIT")
    took = time.perf_counter() - start
    conn.close()
    return took


def _pairs(
    runs: int, ours: Callable[[], Awaitable[float]], base: Callable[[], Awaitable[float]]
) -> tuple[float, float, float]:
    """Alternate ours and the baseline ``runs`` times: medians of each and of the ratios."""
    mine, theirs, ratios = [], [], []
    for _ in range(runs):
        gc.collect()
        b = trio.run(base)
        gc.collect()
        o = trio.run(ours)
        mine.append(o)
        theirs.append(b)
        ratios.append(b / o)
    return statistics.median(mine), statistics.median(theirs), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per workload")
    parser.add_argument("--workers", type=int, default=4, help="workers (bus: of one queue)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--chain-length", type=int, default=3)
    parser.add_argument(
        "--sqlite-scale",
        type=float,
        default=0.2,
        help="share of --jobs run on SQLite (1.0: the same number)",
    )
    parser.add_argument("--runs", type=int, default=5, help="pairs per figure (median)")
    parser.add_argument(
        "--only", choices=["memory", "sqlite"], help="run the workloads of one store only"
    )
    parser.add_argument(
        "--shape",
        choices=["plain", "batch", "chain", "step"],
        action="append",
        help="run only these workloads (repeatable; step: the SQLite chain step's cost)",
    )
    args = parser.parse_args()
    shapes = set(args.shape or ["plain", "batch", "chain", "step"])
    n, w = args.jobs, args.workers
    n_sql = max(args.chain_length, int(n * args.sqlite_scale))

    print(f"bus bench: no-op jobs, {w} workers, median of {args.runs} alternating pairs")
    print(f"{'workload':<40} {'jobs':>8} {'jobs/s':>10} {'baseline/s':>11} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, jobs in (("memory", n), ("sqlite", n_sql)):
            if args.only not in (None, kind):
                continue
            batches = max(1, jobs // args.batch_size) * args.batch_size
            chains = max(1, jobs // args.chain_length) * args.chain_length
            bs, cl = args.batch_size, args.chain_length
            workloads: list[tuple[str, str, int, Callable[[], Awaitable[float]], Any]] = [
                (
                    "plain",
                    f"dispatch, {kind} store",
                    jobs,
                    partial(bus_dispatch, jobs, w, kind, tmp),
                    partial(baseline, jobs, w),
                ),
                (
                    "batch",
                    f"batches of {bs}, {kind}",
                    batches,
                    partial(bus_batches, batches, w, kind, tmp, bs),
                    partial(baseline, batches, w, "batch", bs),
                ),
                (
                    "chain",
                    f"chains of {cl}, {kind}",
                    chains,
                    partial(bus_chains, chains, w, kind, tmp, cl),
                    partial(baseline, chains, w, "chain", cl),
                ),
            ]
            for shape, name, count, run, base_run in workloads:
                if shape not in shapes:
                    continue
                took, base, ratio = _pairs(args.runs, run, base_run)
                rate, base_rate = count / took, count / base
                print(f"{name:<40} {count:>8} {rate:>10,.0f} {base_rate:>11,.0f} {ratio:>6.2f}x")
        if args.only != "memory" and "step" in shapes:
            _chain_step_cost(args.runs, n_sql, w, tmp, args.chain_length)
    if n_sql < n:
        print(f"(SQLite workloads use {n_sql} jobs: --sqlite-scale {args.sqlite_scale:g})")


def _chain_step_cost(runs: int, n: int, workers: int, tmp: str, length: int) -> None:
    """A chain step on SQLite through the bus (64 producers, so writes can be grouped)
    against the store's own SQL for it, 64 operations per transaction."""
    chains = max(1, n // length)
    bus_times, sql_times = [], []
    for _ in range(runs):
        gc.collect()
        sql_times.append(sql_chain_steps(chains, length, tmp))
        gc.collect()
        bus_times.append(
            trio.run(partial(bus_chains, chains * length, workers, "sqlite", tmp, length, 64))
        )
    steps = chains * length
    bus_us = statistics.median(bus_times) / steps * 1e6
    sql_us = statistics.median(sql_times) / steps * 1e6
    print(
        f"sqlite chain step: bus {bus_us:.1f} us, the store's SQL {sql_us:.1f} us "
        f"(group commits of 64): {bus_us / sql_us:.2f}x"
    )


if __name__ == "__main__":
    main()
