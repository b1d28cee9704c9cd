"""The full Bus on a durable broker: enqueue and processing rates of no-op jobs.

Run: ``python -m bench.durable --broker redis://localhost:6379/0`` (or ``sqlite:///b.db``;
``--jobs 20000``, ``--rounds 5``). Each round, in this one process:

* enqueue: a bus with ``workers=False`` dispatches ``--jobs`` plain jobs from
  ``--dispatchers`` concurrent tasks (the broker coalesces what they put at once: SQLite in
  one transaction per group, Redis one script call per put);
  with ``--many N``, each dispatcher puts its jobs N at a time with ``bus.dispatch_many``;
* process: a bus with ``workers=True`` and ``--workers`` workers runs them all (leased, each
  acknowledged after its outcome), timed from its opening to the last handler's return and
  every acknowledgement in.

`full_bus_rates` is the function to reuse for "our full-bus rate" (bench/brokers.py may).
Figures go to docs/performance.md; the machine is noisy, so read the medians.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import trio

from actors.bus import Bus, Handlers, Job, JobContext, open_bus


def _handlers(n: int, done: trio.Event) -> Handlers:
    handlers = Handlers()
    count = [0]

    @handlers.handler("noop")
    async def noop(ctx: JobContext) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    return handlers


async def full_bus_rates(
    broker: str, store: str, n: int, *, dispatchers: int = 50, workers: int = 100, many: int = 0
) -> tuple[float, float]:
    """Jobs per second: (enqueue, process) of ``n`` no-op jobs through the whole bus
    (``many`` > 0: each dispatcher puts them ``many`` at a time with `Bus.dispatch_many`)."""
    done = trio.Event()
    handlers = _handlers(n, done)
    per_task = [n // dispatchers + (1 if i < n % dispatchers else 0) for i in range(dispatchers)]

    async def dispatch_some(bus: Bus, count: int) -> None:
        if many:
            for i in range(0, count, many):
                await bus.dispatch_many([Job("noop") for _ in range(min(many, count - i))])
            return
        for _ in range(count):
            await bus.dispatch(Job("noop"))

    start = time.perf_counter()
    async with (
        open_bus(store=store, broker=broker, handlers=handlers, workers=False) as sender,
        trio.open_nursery() as nursery,
    ):
        for count in per_task:
            nursery.start_soon(dispatch_some, sender, count)
    enqueued = time.perf_counter() - start
    start = time.perf_counter()
    async with open_bus(
        store=store, broker=broker, handlers=handlers, queues={"default": workers}
    ) as bus:
        await done.wait()
        while (await bus.queue_stats())["default"].running:  # noqa: ASYNC110 - the last acks: a count no event signals
            await trio.sleep(0.001)
    processed = time.perf_counter() - start
    return n / enqueued, n / processed


async def main(args: argparse.Namespace) -> None:
    enq: list[float] = []
    proc: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-durable-") as tmp:
        for i in range(args.rounds):
            broker = args.broker
            if broker.startswith("redis"):
                sep = "&" if "?" in broker else "?"
                broker = f"{broker}{sep}prefix=bench-{secrets.token_hex(4)}"
            elif broker == "sqlite":
                broker = f"sqlite:///{Path(tmp) / f'broker-{i}.db'}"
            store = f"sqlite:///{Path(tmp) / f'store-{i}.db'}"
            e, p = await full_bus_rates(
                broker,
                store,
                args.jobs,
                dispatchers=args.dispatchers,
                workers=args.workers,
                many=args.many,
            )
            enq.append(e)
            proc.append(p)
            print(f"round {i + 1}: enqueue {e:,.0f} jobs/s, process {p:,.0f} jobs/s")
    print(
        f"median of {args.rounds}: enqueue {statistics.median(enq):,.0f} jobs/s, "
        f"process {statistics.median(proc):,.0f} jobs/s ({args.jobs} no-op jobs)"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", default="sqlite", help="a broker URL, or sqlite (a temp file)")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dispatchers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument(
        "--many", type=int, default=0, help="dispatch_many this many at a time (0: dispatch)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse())
