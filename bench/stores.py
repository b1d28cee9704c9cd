"""A chain step on `PostgresStore` through the bus, against the store's own SQL for it.

Run: ``python -m bench.stores --dsn postgresql://postgres@127.0.0.1:5432/postgres`` (the
DSN defaults to ``$TRIO_LANES_TEST_POSTGRES_DSN``, which ``scripts/services.sh`` sets).

The bus runs chains of ``--chain-length`` no-op jobs dispatched by ``--producers`` tasks at
once (a server handling that many requests), so the store's writes can share group commits.
The baseline is the store's own SQL for the same chains (create, then every step), called
directly on one connection in one thread, ``--group`` operations per transaction: a group
commit at its best, with no Trio, no thread hops and no bus. Both alternate pair by pair in
this process, each run in a fresh PostgreSQL schema; the figures are medians.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import trio

from actors.bus import ChainRecord, Job, JobContext, JobRecord, PostgresStore, open_bus
from actors.bus._postgres_ops import create_chain, record_chain_step
from actors.bus._postgres_schema import migrate


async def _noop(ctx: JobContext) -> None:
    pass


def _drop(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def bus_chains(dsn: str, chains: int, length: int, producers: int, workers: int) -> float:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store = PostgresStore(dsn, schema=schema)
    try:
        start = time.perf_counter()
        async with open_bus(store=store, queues={"default": workers}) as bus:
            bus.register("noop", _noop)

            async def produce(count: int) -> None:
                for _ in range(count):
                    await bus.chain(*[Job("noop")] * length).dispatch()

            async with trio.open_nursery() as nursery:
                for p in range(producers):
                    nursery.start_soon(produce, chains // producers + (p < chains % producers))
            await bus.wait_idle()
        return time.perf_counter() - start
    finally:
        _drop(dsn, schema)


def sql_chain_steps(dsn: str, chains: int, length: int, group: int) -> float:
    """The store's SQL for the same chains, ``group`` operations per transaction."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC)
    nodes = tuple(JobRecord(f"n{i}", "noop", "null", "default") for i in range(length))
    ops: list[tuple[Callable[..., object], tuple[object, ...]]] = [
        (create_chain, (ChainRecord(f"c{c}", f"d{c}", "default", nodes, now),))
        for c in range(chains)
    ]
    for step in range(length):
        ops.extend((record_chain_step, (f"c{c}", step, None, now)) for c in range(chains))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, schema)
            start = time.perf_counter()
            for first in range(0, len(ops), group):
                with conn.transaction():
                    for fn, args in ops[first : first + group]:
                        fn(conn, *args)
            return time.perf_counter() - start
    finally:
        _drop(dsn, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("TRIO_LANES_TEST_POSTGRES_DSN"))
    parser.add_argument("--chains", type=int, default=2000)
    parser.add_argument("--chain-length", type=int, default=3)
    parser.add_argument("--producers", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--group", type=int, default=64, help="operations per SQL transaction")
    parser.add_argument("--runs", type=int, default=5, help="pairs per figure (median)")
    args = parser.parse_args()
    if not args.dsn:
        parser.error("no PostgreSQL: give --dsn or set TRIO_LANES_TEST_POSTGRES_DSN")
    chains, length = args.chains, args.chain_length
    # Each step: create (once per chain) and record; the same operations on both sides.
    steps = chains * length
    bus_times, sql_times, alone_times = [], [], []
    for _ in range(args.runs):
        gc.collect()
        sql_times.append(sql_chain_steps(args.dsn, chains, length, args.group))
        gc.collect()
        alone_times.append(sql_chain_steps(args.dsn, chains, length, 1))
        gc.collect()
        bus_times.append(
            trio.run(bus_chains, args.dsn, chains, length, args.producers, args.workers)
        )
    bus_us = statistics.median(bus_times) / steps * 1e6
    sql_us = statistics.median(sql_times) / steps * 1e6
    alone_us = statistics.median(alone_times) / steps * 1e6
    ratios = [b / s for b, s in zip(bus_times, sql_times, strict=True)]
    print(
        f"postgres chain step ({chains} chains of {length}, {args.producers} producers, "
        f"{args.workers} workers, median of {args.runs} alternating runs):"
    )
    print(f"  bus on PostgresStore        {bus_us:8.1f} us/step")
    print(
        f"  the store's SQL, {args.group:>3} per txn  {sql_us:8.1f} us/step "
        f"(bus/sql {statistics.median(ratios):.2f}x)"
    )
    print(f"  the store's SQL, 1 per txn    {alone_us:8.1f} us/step")


if __name__ == "__main__":
    main()
