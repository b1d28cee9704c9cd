"""trio-lanes' Bus against the Redis job queues people would otherwise pick: arq, saq, taskiq
(taskiq-redis's stream broker) and streaq, on one local Redis, in one run.

Run: ``python -m bench.peers`` (``pip install -e '.[bench]'``; ``make bench`` starts Redis for
it; else pass ``--redis-url`` or set ``TRIO_LANES_TEST_REDIS_URL``).

Each round, for each system in turn (the order alternates round by round; the machine is
noisy): ``--jobs`` no-op jobs are enqueued (timed: "enqueue"), then one worker with
``--concurrency`` slots is started in this process and runs them all (timed from its start
until the last job ran: "process"). Figures are medians over ``--rounds`` rounds, with each
peer's ratio to ours. Enqueueing is each system's fastest way to put many jobs:

* ours: the full Bus (``open_bus(broker=RedisBroker(url), workers=False)``) and
  ``bus.dispatch`` from ``--concurrency`` tasks at once; processed by a bus with
  ``workers=True`` and ``queues={"default": concurrency}`` (acknowledged after the handler);
* ours/batch: the same, the jobs dispatched as batches of 1000 (``bus.batch(*jobs).dispatch()``:
  one put per batch; each outcome then counted by the batch's coordinator in a MemoryStore
  the two buses share);
* ours/many: plain jobs 1000 at a time (``bus.dispatch_many(jobs)``: one put per call, no
  store record), processed as plain dispatches are;
* arq: ``enqueue_job`` gathered; its worker with ``max_jobs=concurrency``;
* saq: ``queue.enqueue`` gathered; its worker with ``concurrency``;
* taskiq: ``kiq()`` gathered, ``RedisStreamBroker``; ``run_receiver_task`` with
  ``max_async_tasks=concurrency``;
* streaq: ``worker.enqueue_many`` (pipelined); its worker on Trio with ``concurrency``
  (in burst mode, so it stops by itself).

The peers run on asyncio (streaq on Trio), each in a fresh event loop; every system gets its
own keys (a random queue name or prefix).

A row in which no job finishes for ``--stall`` seconds stops the run with an error saying how
many jobs were left, instead of waiting forever: a worker (ours or a peer's) keeps retrying
while its Redis is gone (a server stopped under the run: ``scripts/services.sh stop``, or
two runs sharing one ``TRIO_LANES_SERVICES_DIR``). The ``actors`` loggers' warnings go to
stderr (the broker's retries show there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any, ClassVar

import trio

from actors.bus import Handlers, Job, JobContext, MemoryStore, RedisBroker, open_bus

Result = tuple[float, float]
"""(enqueue seconds, process seconds)"""


class Stalled(Exception):
    """No job of a row finished for `Countdown.stall` seconds."""


class Countdown:
    """Counts finished jobs; ``done`` once all ran."""

    #: Seconds without a finished job after which a row is given up (``--stall``).
    stall: ClassVar[float] = 120.0

    def __init__(self, n: int, event: Any) -> None:
        self.n = n
        self.left = n
        self.done = event

    def tick(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()

    def stalled(self, left: int) -> bool:
        """Nothing finished since ``left`` was read (else keep waiting)."""
        if self.left != left:
            return False
        raise Stalled(
            f"no job finished for {self.stall:g}s with {left} of {self.n} left: is the Redis "
            "server still up? See the warnings above"
        )

    async def watch_trio(self) -> None:
        """Raise `Stalled` once no job finished for `stall` seconds (beside a Trio row's
        processing, its bus's start and stop included)."""
        while True:
            left = self.left
            await trio.sleep(self.stall)
            self.stalled(left)

    async def wait_asyncio(self) -> None:
        """``done.wait()`` (an `asyncio.Event`), or `Stalled`."""
        while True:
            left = self.left
            try:
                await asyncio.wait_for(self.done.wait(), self.stall)
                return
            except TimeoutError:
                self.stalled(left)


# ------------------------------------------------------------------------------ ours


async def _ours(url: str, n: int, concurrency: int, batched: str = "") -> Result:
    countdown = Countdown(n, trio.Event())
    store = MemoryStore()  # shared by the two buses (one process): a batch's record
    handlers = Handlers()

    @handlers.handler("noop")
    async def noop(ctx: JobContext) -> None:
        countdown.tick()

    prefix = f"bench-{secrets.token_hex(4)}"
    async with open_bus(
        store=store, broker=RedisBroker(url, prefix=prefix), handlers=handlers, workers=False
    ) as bus:

        async def dispatcher(count: int) -> None:
            if batched == "batch":
                for i in range(0, count, 1000):
                    await bus.batch(*(Job("noop") for _ in range(min(1000, count - i)))).dispatch()
                return
            if batched == "many":
                for i in range(0, count, 1000):
                    await bus.dispatch_many([Job("noop") for _ in range(min(1000, count - i))])
                return
            for _ in range(count):
                await bus.dispatch(Job("noop"))

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            if batched:
                nursery.start_soon(dispatcher, n)
            else:
                for i in range(concurrency):
                    nursery.start_soon(dispatcher, n // concurrency + (i < n % concurrency))
        put = time.perf_counter() - start
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(countdown.watch_trio)
        async with open_bus(
            store=store,
            broker=RedisBroker(url, prefix=prefix),
            handlers=handlers,
            queues={"default": concurrency},
        ):
            await countdown.done.wait()
            took = time.perf_counter() - start
        # (leaving waits for the deliveries in this bus's hands: the last acks)
        nursery.cancel_scope.cancel()
    return put, took


def ours(url: str, n: int, concurrency: int) -> Result:
    result: Result = trio.run(_ours, url, n, concurrency)
    return result


def ours_batched(url: str, n: int, concurrency: int) -> Result:
    result: Result = trio.run(_ours, url, n, concurrency, "batch")
    return result


def ours_many(url: str, n: int, concurrency: int) -> Result:
    result: Result = trio.run(_ours, url, n, concurrency, "many")
    return result


# ------------------------------------------------------------------------------ peers


async def _gathered(make: Callable[[], Any], n: int, chunk: int = 1000) -> float:
    start = time.perf_counter()
    for i in range(0, n, chunk):
        await asyncio.gather(*(make() for _ in range(min(chunk, n - i))))
    return time.perf_counter() - start


async def _arq(url: str, n: int, concurrency: int) -> Result:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    countdown = Countdown(n, asyncio.Event())

    async def noop(ctx: dict[str, Any]) -> None:
        countdown.tick()

    settings = RedisSettings.from_dsn(url)
    queue = f"bench-arq-{secrets.token_hex(4)}"
    pool = await create_pool(settings, default_queue_name=queue)
    put = await _gathered(lambda: pool.enqueue_job("noop"), n)
    worker = Worker(
        functions=[func(noop, name="noop")],
        redis_settings=settings,
        queue_name=queue,
        max_jobs=concurrency,
        handle_signals=False,
    )
    start = time.perf_counter()
    task = asyncio.create_task(worker.async_run())
    await countdown.wait_asyncio()
    took = time.perf_counter() - start
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await pool.delete(queue)
    await pool.aclose()
    return put, took


async def _saq(url: str, n: int, concurrency: int) -> Result:
    from saq import Queue, Worker

    countdown = Countdown(n, asyncio.Event())

    async def noop(ctx: Any) -> None:
        countdown.tick()

    queue = Queue.from_url(url, name=f"bench-saq-{secrets.token_hex(4)}")
    await queue.connect()
    put = await _gathered(lambda: queue.enqueue("noop"), n)
    worker = Worker(queue, functions=[("noop", noop)], concurrency=concurrency)
    start = time.perf_counter()
    task = asyncio.create_task(worker.start())
    await countdown.wait_asyncio()
    took = time.perf_counter() - start
    await worker.stop()
    task.cancel()
    await queue.disconnect()
    return put, took


async def _taskiq(url: str, n: int, concurrency: int) -> Result:
    from taskiq.api import run_receiver_task
    from taskiq_redis import RedisStreamBroker

    countdown = Countdown(n, asyncio.Event())
    broker = RedisStreamBroker(url, queue_name=f"bench-taskiq-{secrets.token_hex(4)}")

    async def noop() -> None:
        countdown.tick()

    task_ = broker.register_task(noop, task_name="noop")
    await broker.startup()
    put = await _gathered(task_.kiq, n)
    start = time.perf_counter()
    receiver = asyncio.create_task(run_receiver_task(broker, max_async_tasks=concurrency))
    await countdown.wait_asyncio()
    took = time.perf_counter() - start
    receiver.cancel()
    await broker.shutdown()
    return put, took


async def _streaq(url: str, n: int, concurrency: int) -> Result:
    from streaq import Worker

    countdown = Countdown(n, trio.Event())
    worker = Worker(
        redis_url=url,
        queue_name=f"bench-streaq-{secrets.token_hex(4)}",
        concurrency=concurrency,
        anyio_backend="trio",
        handle_signals=False,
    )

    async def noop() -> None:
        countdown.tick()

    task_ = worker.task(noop)
    async with worker:
        start = time.perf_counter()
        for i in range(0, n, 1000):
            await worker.enqueue_many([task_.enqueue() for _ in range(min(1000, n - i))])
        put = time.perf_counter() - start
    worker.burst = True  # its own way to stop once the queue is empty (cancelling it errs)
    async with trio.open_nursery() as watching:
        watching.start_soon(countdown.watch_trio)
        async with trio.open_nursery() as nursery:
            start = time.perf_counter()
            nursery.start_soon(worker.run_async)
            await countdown.done.wait()
            took = time.perf_counter() - start
        watching.cancel_scope.cancel()
    return put, took


def _on_asyncio(fn: Callable[..., Any]) -> Callable[[str, int, int], Result]:
    def run(url: str, n: int, concurrency: int) -> Result:
        result: Result = asyncio.run(fn(url, n, concurrency))
        return result

    return run


def streaq(url: str, n: int, concurrency: int) -> Result:
    result: Result = trio.run(_streaq, url, n, concurrency)
    return result


SYSTEMS: dict[str, Callable[[str, int, int], Result]] = {
    "trio-lanes": ours,
    "trio-lanes/batch": ours_batched,
    "trio-lanes/many": ours_many,
    "arq": _on_asyncio(_arq),
    "saq": _on_asyncio(_saq),
    "taskiq": _on_asyncio(_taskiq),
    "streaq": streaq,
}


def _stalled(exc: BaseException) -> Stalled | None:
    """The `Stalled` in ``exc`` (a nursery wraps it in exception groups), if any."""
    if isinstance(exc, Stalled):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _stalled(sub)
            if found is not None:
                return found
    return None


def main(args: argparse.Namespace) -> None:
    url = args.redis_url or os.environ.get("TRIO_LANES_TEST_REDIS_URL")
    if not url:
        raise SystemExit("no Redis: pass --redis-url or set TRIO_LANES_TEST_REDIS_URL")
    names = args.only.split(",") if args.only else list(SYSTEMS)
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown systems {unknown}: --only takes some of {list(SYSTEMS)}")
    Countdown.stall = args.stall
    n = args.jobs
    print(f"{n} no-op jobs, concurrency {args.concurrency}, {args.rounds} rounds, Redis {url}")
    results: dict[str, list[Result]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        order = names if round_ % 2 == 0 else list(reversed(names))
        for name in order:
            try:
                results[name].append(SYSTEMS[name](url, n, args.concurrency))
            except BaseException as exc:  # a Stalled inside the nurseries' groups, maybe
                stalled = _stalled(exc)
                if stalled is None:
                    raise
                raise SystemExit(f"{name}: {stalled}") from None
        print(f"round {round_ + 1} done", flush=True)
    rates = {
        name: tuple(n / statistics.median(r[i] for r in found) for i in (0, 1))
        for name, found in results.items()
    }
    mine = rates.get("trio-lanes")
    for name, (put, took) in rates.items():
        ratio = "" if mine is None else f"   ours/them: {mine[0] / put:5.2f} {mine[1] / took:5.2f}"
        print(f"{name:16} enqueue {put:9,.0f} jobs/s   process {took:9,.0f} jobs/s{ratio}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="systems to run: trio-lanes,arq,...")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument(
        "--stall",
        type=float,
        default=120.0,
        help="give a row up after this many seconds without a finished job",
    )
    return parser.parse_args()


if __name__ == "__main__":
    # The broker's warnings (a Redis that went away: its retries) on stderr; the peers log
    # on their own.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger("actors").addHandler(handler)
    main(parse())
