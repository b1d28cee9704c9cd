"""The Batcher: many small updates to one account, one load and one save per batch.

A payment terminal sends a hundred deposits to the same account in a burst. Applied one by
one, each would cost a load and a save on a slow database. The Batcher opens a batch on the
first deposit, loads the account once, applies every deposit arriving within the window (in
arrival order, a deposit that raises fails only itself), saves once, and only then answers
each caller with the balance its deposit produced. Each batch's figures (ops, load, save and
total time) come to an ``on_batch`` observer, and the last few are in ``stats()`` too.

The program runs on Trio's MockClock (``autojump_threshold=0``), so the database's 50 ms
round trips take no real time. On a real clock, drop the ``clock=`` argument of ``trio.run``.

Run: python -m examples.batcher_balance
"""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

import actors


class SlowDatabase:
    def __init__(self) -> None:
        self.balances = {"account:42": 1_000}
        self.calls: list[str] = []

    async def load(self, key: str) -> int:
        self.calls.append(f"load {key} at t={trio.current_time():.2f}")
        await trio.sleep(0.05)
        return self.balances[key]

    async def save(self, key: str, balance: int) -> None:
        self.calls.append(f"save {key}={balance} at t={trio.current_time():.2f}")
        await trio.sleep(0.05)
        self.balances[key] = balance


def deposit(cents: int) -> Callable[[int], int]:
    """An op for the Batcher: sync and fast, old balance in, new balance out."""

    def apply(balance: int) -> int:
        if cents <= 0:
            raise ValueError(f"a deposit must be positive, got {cents}")
        return balance + cents

    return apply


async def main() -> None:
    db = SlowDatabase()
    answers: dict[int, object] = {}

    async def customer(batcher: actors.Batcher[int], n: int, cents: int) -> None:
        await trio.sleep(n * 0.001)  # the burst arrives over 100 ms
        try:
            answers[n] = await batcher.run("account:42", deposit(cents))
        except ValueError as exc:
            answers[n] = f"refused: {exc}"

    def report(batch: actors.BatchReport) -> None:
        print(
            f"  batch of {batch.ops} ops ({batch.failed_ops} refused) at t={batch.started_at:.2f}:"
            f" load {batch.load_duration:.2f}s, save {batch.save_duration:.2f}s,"
            f" {batch.total_duration:.2f}s in all"
        )

    async with actors.open_batcher(db.load, db.save, min_duration=0.06, on_batch=report) as batcher:
        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(customer, batcher, n, -5 if n == 7 else 10)
        stats = batcher.stats()

    print(f"{stats.ops_total} deposits in {stats.batches_total} batches:")
    for call in db.calls:
        print("  ", call)
    print(
        "deposit 0 saw balance",
        answers[0],
        "| deposit 7:",
        answers[7],
        "| deposit 99 saw",
        answers[99],
    )
    print("final balance:", db.balances["account:42"], "(1,000 + 99 deposits of 10)")


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
