"""Step 9: lane jobs across worker processes; one is killed mid-way and nothing goes wrong.

Every account is a lane: its deposits and transfers are lane jobs, so they run one at a time
and in the order they were dispatched, whichever of the three worker processes runs them. A
transfer withdraws on its account's lane, then dispatches the deposit on the other account's
lane. One worker is SIGKILLed while it runs jobs: its lanes pass to the others once its lease
lapses, and the jobs it held run again (at least once), so every handler is idempotent (an
operation id applied once, in the same transaction as the balance).

At the end: money is conserved (the total is the initial total plus the deposits), every
operation was applied exactly once, and each account's operations were applied in order.

Run: python -m examples.lanes_fleet
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
import trio

from actors.bus import Bus, Job, JobContext, SQLiteBroker, open_bus

ACCOUNTS = 12
OPS_PER_ACCOUNT = 12
START_BALANCE = 100
LEASE = 1.0  # the broker's visibility_timeout: how soon a dead worker's lanes pass on


# ------------------------------------------------------------------ the accounts' database


def create(db: str) -> None:
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER, last INTEGER)")
        conn.execute("CREATE TABLE applied (op TEXT PRIMARY KEY, account INTEGER, n INTEGER)")
        conn.executemany(
            "INSERT INTO account VALUES (?, ?, 0)", [(i, START_BALANCE) for i in range(ACCOUNTS)]
        )


def apply(db: str, account: int, amount: int, op: str, n: int | None) -> bool:
    """Add ``amount`` to the account once per ``op``; False if it was applied already.

    ``n`` numbers the operations dispatched for one account (1, 2, ...): each must come
    right after the one before, which the lane guarantees.
    """
    with sqlite3.connect(db, timeout=30, isolation_level=None) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM applied WHERE op = ?", (op,)).fetchone():
                conn.execute("ROLLBACK")
                return False  # a redelivery after the kill: done already
            if n is not None:
                (last,) = conn.execute(
                    "SELECT last FROM account WHERE id = ?", (account,)
                ).fetchone()
                assert n == last + 1, f"account {account}: op {n} applied after op {last}"
                conn.execute("UPDATE account SET last = ? WHERE id = ?", (n, account))
            conn.execute("UPDATE account SET balance = balance + ? WHERE id = ?", (amount, account))
            conn.execute("INSERT INTO applied VALUES (?, ?, ?)", (op, account, n))
            conn.execute("COMMIT")
            return True
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def applied_so_far(db: str) -> int:
    with sqlite3.connect(db) as conn:
        count: int = conn.execute("SELECT COUNT(*) FROM applied").fetchone()[0]
        return count


def lane(account: int) -> str:
    return f"account:{account}"


# ------------------------------------------------------------------ a worker process


def register(bus: Bus, db: str) -> None:
    """The handlers (the dispatching process registers them too: it checks job types)."""

    async def deposit(ctx: JobContext) -> None:
        p = ctx.payload
        await trio.to_thread.run_sync(apply, db, p["account"], p["amount"], p["op"], p["n"])
        await trio.sleep(random.uniform(0.005, 0.02))  # some work: a kill can land here

    async def transfer(ctx: JobContext) -> None:
        p = ctx.payload
        await trio.to_thread.run_sync(apply, db, p["account"], -p["amount"], p["op"], p["n"])
        await trio.sleep(random.uniform(0.005, 0.02))
        # Dispatched again on a redelivery: the deposit's own op id makes that harmless.
        incoming = {"account": p["to"], "amount": p["amount"], "op": p["op"] + "-in", "n": None}
        await bus.dispatch(Job("deposit", incoming).lane(lane(p["to"])))

    bus.register("deposit", deposit)
    bus.register("transfer", transfer)


async def worker(broker_path: str, db: str) -> None:
    broker = SQLiteBroker(broker_path, visibility_timeout=LEASE, poll_interval=0.05)
    async with open_bus(broker=broker, queues={"default": 8}) as bus:
        register(bus, db)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            print("ready", flush=True)
            async for _ in signals:
                break  # a graceful stop: leaving the block lets running jobs finish


# ------------------------------------------------------------------ the driver


def start_worker(broker_path: str, db: str) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.lanes_fleet", "--worker", broker_path, db],
        cwd=root,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    return process


def plan(rng: random.Random) -> tuple[list[Job], int]:
    """Every account's operations, numbered per account; and the money deposited."""
    jobs, deposited = [], 0
    for n in range(1, OPS_PER_ACCOUNT + 1):
        for account in range(ACCOUNTS):
            op = f"a{account}-{n}"
            if rng.random() < 0.5:
                amount = rng.randint(1, 20)
                deposited += amount
                payload = {"account": account, "amount": amount, "op": op, "n": n}
                jobs.append(Job("deposit", payload).lane(lane(account)))
            else:
                to = rng.choice([a for a in range(ACCOUNTS) if a != account])
                payload = {"account": account, "to": to, "amount": 5, "op": op, "n": n}
                jobs.append(Job("transfer", payload).lane(lane(account)))
    return jobs, deposited


@attrs.frozen
class FleetReport:
    """What the run shows (``make demo``'s lanes act prints it as a table)."""

    operations: int
    transfers: int
    at_kill: int
    """Operations applied when the worker was killed."""
    total: int
    expected: int
    applied: int
    in_order: bool
    seconds: float

    @property
    def conserved(self) -> bool:
        return self.total == self.expected

    def lines(self) -> list[str]:
        ops = self.operations + self.transfers
        return [
            f"{self.operations} operations on {ACCOUNTS} accounts by 3 workers, "
            "one SIGKILLed mid-way",
            f"(the kill came after {self.at_kill} of {ops} operations were applied)",
            f"total balance {self.total} (expected {self.expected}): conserved = {self.conserved}",
            f"operations applied once each: {self.applied} "
            f"(= {self.operations} + {self.transfers} deposits in)",
            f"every account applied its {OPS_PER_ACCOUNT} operations in order: {self.in_order}",
        ]


async def drive(folder: Path) -> FleetReport:
    started = time.monotonic()
    broker_path, db = str(folder / "jobs.db"), str(folder / "accounts.db")
    create(db)
    jobs, deposited = plan(random.Random(7))
    transfers = sum(job.type == "transfer" for job in jobs)
    broker = SQLiteBroker(broker_path, visibility_timeout=LEASE, poll_interval=0.05)
    workers = [start_worker(broker_path, db) for _ in range(3)]
    try:
        async with open_bus(broker=broker, queues={"default": 1}, workers=False) as bus:
            register(bus, db)
            for job in jobs:
                await bus.dispatch(job)
        # Kill one worker while it runs jobs (a third of the way); the other two take its
        # lanes over once its lease lapses.
        while applied_so_far(db) < (len(jobs) + transfers) // 3:  # noqa: ASYNC110 (another process)
            await trio.sleep(0.01)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        at_kill = applied_so_far(db)
        await broker.open()
        try:
            deadline = time.monotonic() + 60
            while True:
                stats = await broker.queue("default").stats()
                if stats.ready == stats.delayed == stats.running == 0:
                    break
                assert time.monotonic() < deadline, f"jobs still waiting: {stats}"
                await trio.sleep(0.1)
        finally:
            await broker.close()
    finally:
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
            assert process.stdout is not None
            process.stdout.close()
    with sqlite3.connect(db) as conn:
        total = conn.execute("SELECT SUM(balance) FROM account").fetchone()[0]
        applied = conn.execute("SELECT COUNT(*) FROM applied").fetchone()[0]
        last = {n for (n,) in conn.execute("SELECT last FROM account")}
    expected = ACCOUNTS * START_BALANCE + deposited
    report = FleetReport(
        len(jobs),
        transfers,
        at_kill,
        total,
        expected,
        applied,
        last == {OPS_PER_ACCOUNT},
        time.monotonic() - started,
    )
    assert report.conserved
    assert applied == len(jobs) + transfers
    assert report.in_order
    return report


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        trio.run(worker, sys.argv[2], sys.argv[3])
        return
    with tempfile.TemporaryDirectory() as folder:
        report = trio.run(drive, Path(folder))
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
