"""A worker process for the lane fault tests: runs lane jobs against a fenced store.

``python -m tests.actors.bus.brokers.lane_worker KIND PLACE QUEUE OUT STORE [options]``

Each delivery: record ``start lane seq fence pid t``, "work" a random while, apply its effect
to STORE (an SQLite file) in one transaction that refuses a fence older than the lane's last
one (``stale``) and skips an effect already applied (``dup``, a redelivery after a kill),
record ``end lane seq fence pid t result``, then ack; an ack refused records ``refused``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sqlite3
import time
from typing import Any

import trio

from actors import LeaseLost
from actors.bus._broker import BrokerQueue, Delivery

from .conftest import make_broker

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS lane_state (lane TEXT PRIMARY KEY, fence INTEGER, next INTEGER)",
    "CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY, lane TEXT, seq INTEGER, "
    "fence INTEGER, pid INTEGER, t REAL)",
)


def create_store(path: str) -> None:
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in SCHEMA:
            conn.execute(statement)


def apply(conn: sqlite3.Connection, lane: str, seq: int, fence: int) -> str:
    """The fenced write: what a handler guarded by `Delivery.fence` does to its store.

    An applied effect records its process and the time, read while the transaction holds
    the file's write lock: no other effect can commit between that instant and this one's
    commit, so it orders effects as their commits do (a run's ``end`` line, written after,
    may come much later: its process may be paused in between).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT fence, next FROM lane_state WHERE lane = ?", (lane,)).fetchone()
        last_fence, expected = row if row is not None else (0, 0)
        if fence < last_fence:
            result = "stale"
        elif seq < expected:
            result = "dup"
        else:
            result = "applied" if seq == expected else f"gap{expected}"
            conn.execute(
                "INSERT INTO effects (lane, seq, fence, pid, t) VALUES (?, ?, ?, ?, ?)",
                (lane, seq, fence, os.getpid(), time.time()),
            )
        if result != "stale":
            conn.execute(
                "INSERT INTO lane_state (lane, fence, next) VALUES (?, ?, ?) ON CONFLICT (lane) "
                "DO UPDATE SET fence = excluded.fence, next = MAX(next, excluded.next)",
                (lane, fence, seq + 1),
            )
        conn.execute("COMMIT")
        return result
    except BaseException:
        conn.execute("ROLLBACK")
        raise


async def run(
    queue: BrokerQueue, delivery: Delivery, out: int, store: sqlite3.Connection, times: Any
) -> None:
    lane, seq, fence, pid = (
        delivery.job.lane,
        int(delivery.job.payload),
        delivery.fence,
        os.getpid(),
    )
    assert lane is not None
    os.write(out, f"start {lane} {seq} {fence} {pid} {time.time()}\n".encode())
    await trio.sleep(random.uniform(*times))
    result = apply(store, lane, seq, fence)
    os.write(out, f"end {lane} {seq} {fence} {pid} {time.time()} {result}\n".encode())
    try:
        await queue.ack(delivery)
    except LeaseLost:
        os.write(out, f"refused {lane} {seq} {fence} {pid}\n".encode())


async def main(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {"visibility_timeout": args.visibility_timeout, "poll_interval": 0.05}
    if args.kind == "redis":
        options["prefix"] = args.prefix
    broker = make_broker(args.kind, args.place, **options)
    await broker.open()
    out = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    store = sqlite3.connect(args.store, timeout=30, isolation_level=None)
    queue = broker.queue(args.queue)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(queue.serve)

            async def work() -> None:
                while True:
                    delivery = await queue.get()
                    await run(queue, delivery, out, store, (args.run_min, args.run_max))

            for _ in range(args.concurrency):
                nursery.start_soon(work)
            os.write(out, b"ready\n")
    finally:
        os.close(out)
        await broker.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser()
    for name in ("kind", "place", "queue", "out", "store"):
        parser.add_argument(name)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--visibility-timeout", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--run-min", type=float, default=0.002)
    parser.add_argument("--run-max", type=float, default=0.01)
    trio.run(main, parser.parse_args())
