"""Step 2: lanes serialize the jobs of one key, so a read-modify-write cannot interleave.

Each deposit reads a balance, awaits (a database round trip, say), and writes it back. Run
concurrently on a plain dict, deposits overwrite each other; through a lane per account, they
run one at a time per account while different accounts run in parallel.

Run: python -m examples.lanes_accounts
"""

from __future__ import annotations

import trio

import actors
from actors import Key

ACCOUNTS = 10
DEPOSITS_PER_ACCOUNT = 50


async def deposit(balances: dict[str, int], account: str, amount: int) -> int:
    balance = balances[account]
    await trio.lowlevel.checkpoint()  # the round trip where another deposit can slip in
    balances[account] = balance + amount
    return balances[account]


async def main() -> None:
    names: list[str] = [Key.namespace("account", str(i)) for i in range(ACCOUNTS)]

    racy = dict.fromkeys(names, 0)
    async with trio.open_nursery() as nursery:
        for name in names * DEPOSITS_PER_ACCOUNT:
            nursery.start_soon(deposit, racy, name, 1)
    total = ACCOUNTS * DEPOSITS_PER_ACCOUNT
    print(f"without lanes: {sum(racy.values())} of {total} deposits kept")

    safe = dict.fromkeys(names, 0)
    async with actors.open_lanes(idle_timeout=60.0) as lanes:
        async with trio.open_nursery() as nursery:
            for name in names * DEPOSITS_PER_ACCOUNT:
                nursery.start_soon(lanes.run, name, deposit, safe, name, 1)
        print(f"with lanes:    {sum(safe.values())} of {total} deposits kept")
        print("lane stats:", lanes.stats())


if __name__ == "__main__":
    trio.run(main)
