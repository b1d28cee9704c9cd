"""A worker process for the fault tests: claims jobs, "runs" them, records each run, acks.

``python -m tests.actors.bus.brokers.worker KIND PLACE QUEUE OUT [options]``: every run
appends ``job_id delivery pid`` to OUT (one small ``O_APPEND`` write, whole even if the
process is killed right after) before the ack. SIGTERM (or SIGINT) stops taking jobs,
cancels the running ones, releases them to the broker and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
from typing import Any

import trio

from actors.bus._broker import BrokerQueue, Delivery
from actors.bus._leased import LeasedQueue

from .conftest import make_broker

log = logging.getLogger("actors.tests.worker")


async def work(queue: BrokerQueue, out: int, run_time: tuple[float, float]) -> None:
    while True:
        delivery = await queue.get()
        await run(queue, delivery, out, run_time)


async def run(
    queue: BrokerQueue, delivery: Delivery, out: int, run_time: tuple[float, float]
) -> None:
    await trio.sleep(random.uniform(*run_time))
    os.write(out, f"{delivery.job.job_id} {delivery.delivery} {os.getpid()}\n".encode())
    while True:
        try:
            await queue.ack(delivery)
            return
        except (ConnectionError, OSError) as exc:  # the server is restarting: try again
            log.warning("ack failed (%s); retrying", exc)
            await trio.sleep(0.1)


async def main(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {"visibility_timeout": args.visibility_timeout, "poll_interval": 0.05}
    if args.kind == "redis" and args.prefix:
        options["prefix"] = args.prefix
    broker = make_broker(args.kind, args.place, **options)
    await broker.open()
    out = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    queue = broker.queue(args.queue)
    assert isinstance(queue, LeasedQueue)
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(queue.serve)
                workers = trio.CancelScope()
                stopped = trio.Event()

                async def workers_run() -> None:
                    try:
                        with workers:
                            async with trio.open_nursery() as inner:
                                for _ in range(args.concurrency):
                                    inner.start_soon(work, queue, out, (args.run_min, args.run_max))
                    finally:
                        stopped.set()

                nursery.start_soon(workers_run)
                os.write(out, b"ready\n")
                async for _ in signals:
                    break
                workers.cancel()
                await stopped.wait()  # a claim under way ends first: what it leased is held
                # Graceful stop: what this process holds goes back at once, for any worker.
                await queue.release(queue.held())
                nursery.cancel_scope.cancel()
    finally:
        os.close(out)
        await broker.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["sqlite", "redis"])
    parser.add_argument("place")
    parser.add_argument("queue")
    parser.add_argument("out")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--visibility-timeout", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--run-min", type=float, default=0.01)
    parser.add_argument("--run-max", type=float, default=0.05)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    trio.run(main, parse())
