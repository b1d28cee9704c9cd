"""Step 3: a transfer needs two accounts at once. `run_multi` holds both lanes.

Lanes are taken in sorted order, so transfers A->B and B->A running at the same time cannot
deadlock, and no deposit to A or B runs in the middle of a transfer.

Run: python -m examples.lanes_transfer
"""

from __future__ import annotations

import random

import trio

import actors


class InsufficientFunds(Exception):
    pass


async def transfer(balances: dict[str, int], source: str, target: str, amount: int) -> None:
    if balances[source] < amount:
        raise InsufficientFunds(f"{source} has {balances[source]}, needs {amount}")
    balances[source] -= amount
    # money is in flight: nobody may look at these two accounts now
    await trio.lowlevel.checkpoint()
    balances[target] += amount


async def main() -> None:
    rng = random.Random(1)
    balances = {f"account:{i}": 100 for i in range(5)}
    refused = 0

    async def one_transfer(lanes: actors.Lanes) -> None:
        nonlocal refused
        source, target = rng.sample(sorted(balances), 2)
        try:
            await lanes.run_multi([source, target], transfer, balances, source, target, 30)
        except InsufficientFunds:
            refused += 1

    async with actors.open_lanes() as lanes, trio.open_nursery() as nursery:
        for _ in range(500):
            nursery.start_soon(one_transfer, lanes)

    print(f"500 transfers, {refused} refused for insufficient funds")
    print(f"total money: {sum(balances.values())} (it was {100 * len(balances)})")
    print("no balance below zero:", all(b >= 0 for b in balances.values()))


if __name__ == "__main__":
    trio.run(main)
