"""A process using cluster Lanes, for the real-process tests.

``python -m tests.actors.cluster.worker URL PREFIX KEY OUT DB MODE [--runs N] [--lease S]``

Every job writes to a fenced resource: an SQLite row that accepts a write only with a larger
token than the last it took (``UPDATE ... WHERE fence < ?``), and appends a line to OUT.

- ``runs``: N jobs on KEY, each recording ``run pid fence start end applied``.
- ``stale``: one job that records ``holding pid fence``, then (shielded, like code that
  ignores cancellation) waits for the file OUT.go, then tries its write and records
  ``write pid fence applied``; its `run` then ends in ``lease-lost`` (or ``returned``).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time

import trio

import actors


def fenced_write(db: str, fence: int) -> int:
    """Apply one write if ``fence`` is newer than the last one applied; 1 if it was."""
    with sqlite3.connect(db, timeout=10, isolation_level=None) as conn:
        cursor = conn.execute(
            "UPDATE resource SET value = value + 1, fence = ? WHERE id = 1 AND fence < ?",
            (fence, fence),
        )
        return cursor.rowcount


def record(out: int, *fields: object) -> None:
    os.write(out, (" ".join(map(str, fields)) + "\n").encode())


async def main(args: argparse.Namespace) -> None:
    out = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    async def run_job() -> None:
        fence = actors.current_fence()
        start = time.time()
        await trio.sleep(0.005)
        applied = fenced_write(args.db, fence)
        record(out, "run", pid, fence, start, time.time(), applied)

    async def stale_job() -> None:
        fence = actors.current_fence()
        record(out, "holding", pid, fence)
        with trio.CancelScope(shield=True):
            go = trio.Path(args.out + ".go")
            while not await go.exists():  # noqa: ASYNC110 (another process makes it)
                await trio.sleep(0.01)
            record(out, "write", pid, fence, fenced_write(args.db, fence))
        await trio.lowlevel.checkpoint()

    async with actors.open_lanes(cluster=args.url, lease=args.lease, prefix=args.prefix) as lanes:
        if args.mode == "runs":
            for _ in range(args.runs):
                await lanes.run(args.key, run_job)
        else:
            try:
                await lanes.run(args.key, stale_job)
                record(out, "returned", pid)
            except actors.LeaseLost:
                record(out, "lease-lost", pid)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("url", "prefix", "key", "out", "db", "mode"):
        parser.add_argument(name)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--lease", type=float, default=0.5)
    trio.run(main, parser.parse_args())
