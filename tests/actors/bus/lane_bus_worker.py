"""A worker process running a whole bus on lane jobs, for the bus-level lane fault tests.

``python -m tests.actors.bus.lane_bus_worker STORE_URL BROKER_URL OUT EFFECTS [options]``:
a bus (``workers=True``) whose handler ``lane`` records ``start lane seq fence pid t``,
"works" a random while, applies its effect to EFFECTS (an SQLite file) with the fenced write
of `tests.actors.bus.brokers.lane_worker.apply` (``ctx.fence``), and records
``end lane seq fence pid t result``; the bus then acknowledges it. An ack the broker refuses
(the lease lapsed: `LeaseLost`, which the bus logs and lets go) records ``refused``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sqlite3
import time

import trio

from actors.bus import Handlers, JobContext, open_bus

from .brokers.lane_worker import apply

HANDLERS = Handlers()
_OUT: list[int] = []
_EFFECTS: list[sqlite3.Connection] = []
_RUN: list[float] = [0.002, 0.01]


@HANDLERS.handler("lane")
async def lane(ctx: JobContext) -> None:
    key, seq, pid = ctx.payload["lane"], ctx.payload["seq"], os.getpid()
    os.write(_OUT[0], f"start {key} {seq} {ctx.fence} {pid} {time.time()}\n".encode())
    await trio.sleep(random.uniform(*_RUN))
    result = apply(_EFFECTS[0], key, seq, ctx.fence)
    os.write(_OUT[0], f"end {key} {seq} {ctx.fence} {pid} {time.time()} {result}\n".encode())


class _Refused(logging.Handler):
    """Turns the bus's "lane job ... lapsed" warning (a refused ack) into a ``refused`` line."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("bus lane job ") and _OUT:
            os.write(_OUT[0], f"refused {record.getMessage()[13:].split(':')[0]}\n".encode())


async def main(args: argparse.Namespace) -> None:
    _RUN[:] = [args.run_min, args.run_max]
    _OUT.append(os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    _EFFECTS.append(sqlite3.connect(args.effects, timeout=30, isolation_level=None))
    logging.getLogger("actors.bus").addHandler(_Refused())
    try:
        async with open_bus(
            store=args.store,
            broker=args.broker,
            queues={"default": args.concurrency},
            handlers=HANDLERS,
        ):
            os.write(_OUT[0], b"ready\n")
            await trio.sleep_forever()
    finally:
        os.close(_OUT.pop())


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser()
    for name in ("store", "broker", "out", "effects"):
        parser.add_argument(name)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--run-min", type=float, default=0.002)
    parser.add_argument("--run-max", type=float, default=0.01)
    trio.run(main, parser.parse_args())
