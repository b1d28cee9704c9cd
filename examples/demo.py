"""`make demo`: the main job of trio-lanes, end to end, on embedded defaults (no server).

Run: python -m examples.demo  (``--quick`` for a smaller run)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import trio
from rich.console import Console

from examples import demo_bank, demo_bus, demo_crash, demo_lanes, demo_logging, demo_workers


async def main(quick: bool = False) -> None:
    console = Console()
    console.rule("[bold]trio-lanes demo")
    if quick:
        report = await demo_bank.run_bank(accounts=500, tellers=10, jobs_per_teller=100)
    else:
        report = await demo_bank.run_bank()
    demo_bank.show(console, report)
    if not report.conserved:
        raise SystemExit("the bank lost money: this is a bug")

    console.rule("Batcher, Scheduler and Pool")
    workers = await demo_workers.run_workers(console, lines=100 if quick else 400)
    demo_workers.show(console, workers)
    if workers.total_in_db != workers.total_expected:
        raise SystemExit("the import lost a balance update: this is a bug")

    console.rule("The Bus: a nightly-report batch and an order chain on embedded SQLite")
    with tempfile.TemporaryDirectory(prefix="trio-lanes-demo-") as tmp:
        await demo_bus.run(console, str(Path(tmp) / "bus.sqlite3"))

    console.rule("The Bus across processes: a worker killed mid-batch, the batch completes")
    with tempfile.TemporaryDirectory(prefix="trio-lanes-demo-") as tmp:
        await demo_crash.run(console, str(Path(tmp) / "jobs.sqlite3"))

    console.rule("Lane jobs across processes: accounts in order, a worker killed mid-way")
    with tempfile.TemporaryDirectory(prefix="trio-lanes-demo-") as tmp:
        lanes = await demo_lanes.run(console, tmp)
    if not (lanes.conserved and lanes.in_order):
        raise SystemExit("the lane jobs lost money or order: this is a bug")


if __name__ == "__main__":
    demo_logging.configure()  # the injected fault's crash report, on one line
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    trio.run(main, parser.parse_args().quick)
