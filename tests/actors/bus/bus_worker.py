"""A worker process running a whole bus, for the durable fault tests.

``python -m tests.actors.bus.bus_worker STORE_URL BROKER_URL OUT [--concurrency N]``: a bus
with ``workers=True`` on the given store and broker, running `HANDLERS`. Every run of a job
appends ``kind key delivery pid`` to OUT (one small ``O_APPEND`` write, whole even if the
process is killed right after) when its handler ends, before its outcome is recorded. SIGTERM
(or SIGINT) stops the bus: running jobs are given back to the broker, and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
from typing import Any

import trio

from actors.bus import Handlers, JobContext, open_bus

HANDLERS = Handlers()
#: The file descriptor runs are recorded to (set by `main`).
_OUT: list[int] = []
#: Seconds a job's handler sleeps, drawn uniformly (set by `main`).
_RUN: list[float] = [0.005, 0.03]


def _key(ctx: JobContext) -> str:
    payload: dict[str, Any] = ctx.payload
    return str(payload["key"])


async def _run(kind: str, ctx: JobContext) -> None:
    await trio.sleep(random.uniform(*_RUN))
    if _OUT:
        os.write(_OUT[0], f"{kind} {_key(ctx)} {ctx.delivery} {os.getpid()}\n".encode())


@HANDLERS.handler("plain")
async def plain(ctx: JobContext) -> None:
    await _run("plain", ctx)


@HANDLERS.handler("step")
async def step(ctx: JobContext) -> None:
    await _run("step", ctx)


@HANDLERS.handler("member")
async def member(ctx: JobContext) -> None:
    await _run("member", ctx)


@HANDLERS.handler("callback")
async def callback(ctx: JobContext) -> None:
    assert ctx.state is not None, "a Job callback reads its chain's or batch's state"
    await _run("callback", ctx)


async def main(args: argparse.Namespace) -> None:
    _RUN[:] = [args.run_min, args.run_max]
    _OUT.append(os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def run_bus(task_status: trio.TaskStatus[None]) -> None:
                    async with open_bus(
                        store=args.store,
                        broker=args.broker,
                        queues={"default": args.concurrency},
                        handlers=HANDLERS,
                    ):
                        task_status.started()
                        await trio.sleep_forever()

                await nursery.start(run_bus)
                os.write(_OUT[0], b"ready\n")
                async for _ in signals:
                    break
                # A graceful stop: the bus's running jobs go back to the broker at once, its
                # prefetched ones too, and the process exits 0.
                nursery.cancel_scope.cancel()
    finally:
        os.close(_OUT.pop())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("broker")
    parser.add_argument("out")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--run-min", type=float, default=0.005)
    parser.add_argument("--run-max", type=float, default=0.03)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    trio.run(main, parse())
