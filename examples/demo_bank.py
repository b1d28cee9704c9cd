"""The bank simulation of `make demo`: thousands of deposits and transfers through Lanes.

Tellers are children of a supervisor. Each makes deposits and transfers between random
accounts: a deposit runs on the account's lane, a transfer holds both lanes with `run_multi`.
One teller trips over an injected fault halfway; the supervisor restarts it and it carries on
where it stopped. Lanes idle for a moment are reaped while the run goes on. At the end the
money must add up to the opening balances plus the deposits, to the cent.
"""

from __future__ import annotations

import random
import time

import attrs
import trio
from rich.console import Console
from rich.table import Table

import actors
import supervisors
from actors import Key


class InjectedFault(RuntimeError):
    """The fault the demo injects into one teller."""


class InsufficientFunds(Exception):
    pass


@attrs.define
class Bank:
    balances: dict[str, int]
    deposited: int = 0
    transfers: int = 0
    refused: int = 0

    async def deposit(self, account: str, cents: int) -> None:
        balance = self.balances[account]
        await trio.lowlevel.checkpoint()  # a round trip to the ledger: other jobs run meanwhile
        self.balances[account] = balance + cents
        self.deposited += cents

    async def transfer(self, source: str, target: str, cents: int) -> None:
        if self.balances[source] < cents:
            raise InsufficientFunds(source)
        self.balances[source] -= cents
        await trio.lowlevel.checkpoint()
        self.balances[target] += cents
        self.transfers += 1


@attrs.frozen
class BankReport:
    accounts: int
    jobs: int
    seconds: float
    opening_total: int
    closing_total: int
    deposited: int
    transfers: int
    refused: int
    lanes_spawned: int
    lanes_reaped: int
    restarts: int

    @property
    def conserved(self) -> bool:
        return self.closing_total == self.opening_total + self.deposited


async def run_bank(
    *, accounts: int = 5_000, tellers: int = 1_000, jobs_per_teller: int = 30, seed: int = 1
) -> BankReport:
    rng = random.Random(seed)
    names = [Key.namespace("account", str(i)) for i in range(accounts)]
    bank = Bank(balances=dict.fromkeys(names, 10_000))
    opening = sum(bank.balances.values())
    done = [0] * tellers  # survives a teller's restart: it resumes where it stopped

    async def teller(
        n: int,
        lanes: actors.Lanes,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        while done[n] < jobs_per_teller:
            if n == 3 and done[n] == jobs_per_teller // 2 and not tripped:
                tripped.append(n)
                raise InjectedFault(f"teller {n} tripped over an injected fault")
            if rng.random() < 0.5:
                account = rng.choice(names)
                await lanes.run(account, bank.deposit, account, rng.randrange(1, 500))
            else:
                source, target = rng.sample(names, 2)
                try:
                    await lanes.run_multi(
                        [source, target], bank.transfer, source, target, rng.randrange(1, 5_000)
                    )
                except InsufficientFunds:
                    bank.refused += 1
            done[n] += 1

    tripped: list[int] = []
    start = time.perf_counter()
    async with actors.open_lanes(idle_timeout=0.05) as lanes:
        async with supervisors.open_supervisor(
            "one_for_one", max_restarts=3, max_seconds=5.0
        ) as sup:
            for n in range(tellers):
                await sup.start_child(f"teller-{n}", teller, n, lanes, restart="transient")
        restarts = sum(child.restarts for child in sup.which_children())
        seconds = time.perf_counter() - start
        stats = lanes.stats()
    return BankReport(
        accounts=accounts,
        jobs=stats.jobs_total,
        seconds=seconds,
        opening_total=opening,
        closing_total=sum(bank.balances.values()),
        deposited=bank.deposited,
        transfers=bank.transfers,
        refused=bank.refused,
        lanes_spawned=stats.live + stats.reaped_total,
        lanes_reaped=stats.reaped_total,
        restarts=restarts,
    )


def show(console: Console, report: BankReport) -> None:
    table = Table(title="Bank: deposits and transfers through Lanes, tellers under a supervisor")
    table.add_column("what")
    table.add_column("figure", justify="right")
    table.add_row("accounts", f"{report.accounts:,}")
    table.add_row("lane jobs (a transfer holds two lanes)", f"{report.jobs:,}")
    table.add_row("jobs/s", f"{report.jobs / report.seconds:,.0f}")
    table.add_row(
        "transfers made / refused (insufficient funds)",
        f"{report.transfers:,} / {report.refused:,}",
    )
    table.add_row(
        "lanes spawned / reaped while running",
        f"{report.lanes_spawned:,} / {report.lanes_reaped:,}",
    )
    table.add_row("teller restarts by the supervisor", str(report.restarts))
    table.add_row("opening total + deposits", f"{report.opening_total + report.deposited:,}")
    table.add_row("closing total", f"{report.closing_total:,}")
    verdict = "[green]conserved[/green]" if report.conserved else "[red]NOT conserved[/red]"
    table.add_row("money", verdict)
    console.print(table)
