"""`make demo`'s lanes act: accounts whose deposits and transfers are lane jobs, run by three
worker processes; one is killed (SIGKILL) mid-way. Money is conserved, every operation is
applied once, and each account's operations land in dispatch order: its lane runs them one
at a time, whichever process holds it. The machinery is `examples.lanes_fleet` (the teaching
example); this act runs it and shows the outcome as a table.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _fleet() -> dict[str, Any]:
    """`examples.lanes_fleet`'s names, loaded without putting it in ``sys.modules`` (so that
    running it as ``__main__`` later, as tests/test_examples.py does, stays clean)."""
    return runpy.run_path(str(Path(__file__).with_name("lanes_fleet.py")))


async def run(console: Console, folder: str) -> Any:
    """Run the fleet in ``folder``; show and return its `FleetReport`."""
    fleet = _fleet()
    report = await fleet["drive"](Path(folder))
    show(console, report, fleet["ACCOUNTS"], fleet["OPS_PER_ACCOUNT"])
    return report


def show(console: Console, report: Any, accounts: int, per_account: int) -> None:
    table = Table(show_header=False, box=None)
    ops = report.operations + report.transfers
    table.add_row(
        "operations",
        f"{report.operations} on {accounts} lanes (accounts), 3 workers, and the "
        f"{report.transfers} deposits their transfers make on the receiving lanes",
    )
    table.add_row("SIGKILL", f"a worker, after {report.at_kill} of {ops} were applied")
    table.add_row("total balance", f"{report.total} (expected {report.expected})")
    table.add_row("applied once each", f"{report.applied} of {ops}")
    table.add_row("in order", f"every account's {per_account} operations: {report.in_order}")
    table.add_row("took", f"{report.seconds:.1f} s")
    console.print(table)
    verdict = "conserved" if report.conserved and report.in_order else "NOT conserved"
    console.print(f"[bold]money {verdict}, each account's operations in order")
