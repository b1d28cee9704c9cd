"""The bus examples run (and say what they teach); the server answers over loopback."""

from __future__ import annotations

import io
import runpy
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from rich.console import Console

EXAMPLES = Path(__file__).parents[3] / "examples"


def load(name: str) -> Any:
    """An example's namespace, loaded without putting it in sys.modules (so that running it
    as ``__main__`` later, here or in tests/test_examples.py, stays clean)."""
    return SimpleNamespace(**runpy.run_path(str(EXAMPLES / f"{name}.py")))


EXPECTED = {
    "bus_dispatch": ["welcome mail to late@example.com", "all done at t=11s"],
    "bus_retry": ["t= 4.0s  charged 1250 cents", "attempt 2 failed: TimeoutError"],
    "bus_chain": ["shipped order 1", "catch: stopped at step 1: lamp is out of stock"],
    "bus_batch": ["[#####] 5/5 done, 1 failed", "finally: cancelled, 2 not run"],
    "bus_middleware": [
        "blocked@x.org  attempt 1 failed",
        "attempts: {'a@x.org': 1, 'b@x.org': 1, 'blocked@x.org': 1, 'c@x.org': 1, 'd@x.org': 1}",
        "2 mails a second",
    ],
    "bus_server": ["serving on 127.0.0.1:", "'completed': True", "(404, {'error'"],
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_bus_example_runs(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_module(f"examples.{module}", run_name="__main__")
    out = capsys.readouterr().out
    for line in EXPECTED[module]:
        assert line in out, f"examples/{module}.py did not print {line!r}:\n{out}"


def test_every_bus_example_is_checked() -> None:
    assert {p.stem for p in EXAMPLES.glob("bus_*.py")} == set(EXPECTED)


async def test_the_server_dispatches_jobs_from_requests_over_loopback() -> None:
    bus_server = load("bus_server")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(bus_server.serve, 0)
        status, job = await bus_server.request(port, "POST", "/jobs/emails:send", {"to": "a@b"})
        assert status == 202
        assert set(job) == {"dispatch_id", "job_id"}
        status, batch = await bus_server.request(
            port, "POST", "/batches/thumbs:make", [{"image": i} for i in range(7)]
        )
        assert status == 202
        status, waited = await bus_server.request(port, "POST", "/wait")
        assert (status, waited) == (200, {"handled": 8})
        status, state = await bus_server.request(port, "GET", f"/batches/{batch['batch_id']}")
        assert status == 200
        assert (state["total"], state["processed"], state["completed"]) == (7, 7, True)
        assert (await bus_server.request(port, "POST", "/jobs/nope", {}))[0] == 404
        assert (await bus_server.request(port, "GET", "/batches/missing"))[0] == 404
        assert (await bus_server.request(port, "POST", "/batches/thumbs:make", {}))[0] == 400
        assert (await bus_server.request(port, "DELETE", "/jobs"))[0] == 404
        status, _ = await bus_server.request(port, "POST", "/jobs/emails:send", None)
        assert status == 202  # a null payload is fine; the handler's failure is the job's
        # A request that is not HTTP at all gets a 400, and the server goes on.
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"garbage\r\n\r\n")
            raw.shutdown(socket.SHUT_WR)
            reply = await trio.to_thread.run_sync(raw.recv, 4096)
        assert reply.startswith(b"HTTP/1.1 400")
        assert (await bus_server.request(port, "POST", "/wait"))[0] == 200
        nursery.cancel_scope.cancel()


async def test_the_demo_runs_and_reads_its_state_back(tmp_path: Path) -> None:
    demo_bus = load("demo_bus")
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    with trio.fail_after(20):
        await demo_bus.run(console, str(tmp_path / "demo.db"))
    text = out.getvalue()
    assert "24/24 processed, 1 failed, completed=True" in text
    assert "5/5 steps, completed=True" in text
    assert "finally ran for the batch: True, for the chain: True" in text
