"""A worker process running a whole bus, for the durable fault tests.

``python -m tests.actors.bus.bus_worker STORE_URL BROKER_URL OUT [--concurrency N]``: a bus
with ``workers=True`` on the given store and broker, running `HANDLERS` (or `LIMITED` with
``--limited``). Every run of a job appends ``kind key delivery pid`` to OUT (one small
``O_APPEND`` write, whole even if the process is killed right after) when its handler ends,
before its outcome is recorded; `LIMITED`'s handlers add their start and end (wall clock).
SIGTERM (or SIGINT) stops the bus: running jobs are given back to the broker, and the process
exits 0. ``--dispatch-unique N --go FILE``: once FILE exists, dispatch ``N`` plain jobs with
``unique_for`` (keys ``u0``...) and record ``accepted KEY pid`` or ``duplicate KEY pid``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import trio

from actors.bus import (
    Bus,
    DuplicateJob,
    Handlers,
    Job,
    JobContext,
    RateLimit,
    WithoutOverlapping,
    open_bus,
)

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


def _rate_key(ctx: JobContext) -> str:
    return "rated" if ctx.job_type == "rated" else f"free:{ctx.job_id}"


def _overlap_key(ctx: JobContext) -> str:
    return "exclusive" if ctx.job_type == "exclusive" else f"free:{ctx.job_id}"


#: The limits shared through the broker (no limiter or locker given: the broker's). The lock's
#: ttl is shorter than an "exclusive" job, so only its renewal keeps the next one out.
RATE, PERIOD, BURST = 10, 1.0, 3
LOCK_TTL, EXCLUSIVE_RUN = 0.9, 1.2
LIMITED = Handlers(
    middleware=[
        RateLimit(_rate_key, limit=RATE, period=PERIOD, burst=BURST),
        WithoutOverlapping(_overlap_key, ttl=LOCK_TTL, release_after=0.05),
    ]
)
for _kind, _handler in HANDLERS.table().items():
    LIMITED.register(_kind, _handler)


async def _timed(kind: str, ctx: JobContext, run: float) -> None:
    start = time.time()
    if _OUT:
        os.write(_OUT[0], f"started {_key(ctx)} {ctx.delivery} {os.getpid()} {start}\n".encode())
    await trio.sleep(run)
    if _OUT:
        line = f"{kind} {_key(ctx)} {ctx.delivery} {os.getpid()} {start} {time.time()}\n"
        os.write(_OUT[0], line.encode())


@LIMITED.handler("rated")
async def rated(ctx: JobContext) -> None:
    await _timed("rated", ctx, 0.0)


@LIMITED.handler("exclusive")
async def exclusive(ctx: JobContext) -> None:
    await _timed("exclusive", ctx, EXCLUSIVE_RUN)


@LIMITED.handler("slow")
async def slow(ctx: JobContext) -> None:
    await _timed("slow", ctx, 0.2)


async def dispatch_unique(bus: Bus, n: int, go: Path) -> None:
    """Wait (bounded) for ``go``, then race the other processes to dispatch ``u0``..."""
    with trio.fail_after(30):
        while True:  # another process makes it: no event crosses processes
            if await trio.Path(go).exists():
                break
            await trio.sleep(0.01)
    for i in range(n):
        try:
            await bus.dispatch(Job("plain", {"key": f"u{i}"}).unique_for(60))
            outcome = "accepted"
        except DuplicateJob:
            outcome = "duplicate"
        os.write(_OUT[0], f"{outcome} u{i} {os.getpid()}\n".encode())


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
                        handlers=LIMITED if args.limited else HANDLERS,
                    ) as bus:
                        task_status.started()
                        if args.dispatch_unique:
                            await dispatch_unique(bus, args.dispatch_unique, Path(args.go))
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
    parser.add_argument("--limited", action="store_true")
    parser.add_argument("--dispatch-unique", type=int, default=0)
    parser.add_argument("--go", default="")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    trio.run(main, parse())
