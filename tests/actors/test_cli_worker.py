"""`trio-lanes worker` as a real process on an SQLite broker and store file: it runs jobs
dispatched from this process, and SIGTERM/SIGINT stop it gracefully (exit 0, nothing lost).

Waits are bounded real-time polls of the handlers' log file (tests/actors/cli_app.py).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import trio

from actors._cli import main
from actors.bus import Job, open_bus

from ..services import redis_url
from .cli_app import handlers

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.actors.cli_app:handlers"


class Fleet:
    """Worker processes on one SQLite file, and the lines their handlers logged."""

    def __init__(self, folder: Path, broker: str | None = None) -> None:
        self.folder = folder
        self.db = folder / "jobs.db"
        self.log = folder / "runs.log"
        self.log.touch()
        self.url = f"sqlite:///{self.db}"
        self.broker = broker or f"{self.url}?poll_interval=0.05"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopped: set[str] = set()

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Poll ``check`` until true; fail early if a worker not stopped by us has exited."""
        deadline = time.monotonic() + timeout
        while not check():
            for name, proc in self.procs.items():
                if name not in self.stopped and proc.poll() is not None:
                    raise AssertionError(f"worker {name} exited: {self.stderr(name)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)

    def start(self, name: str, *options: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "CLI_TEST_LOG": str(self.log), "CLI_TEST_WORKER": name}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        with (self.folder / f"{name}.err").open("wb") as err:
            proc = self._popen(options, env, err)
        self.procs[name] = proc
        return proc

    def _popen(
        self, options: tuple[str, ...], env: dict[str, str], err: BinaryIO
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "actors",
                "worker",
                TARGET,
                "--store",
                self.url,
                "--broker",
                self.broker,
                "--visibility-timeout",
                "5",  # short, yet no lease lapses on a loaded machine: nothing here needs one
                *options,
            ],
            cwd=self.folder,
            env=env,
            stderr=err,
        )

    def stderr(self, name: str) -> str:
        return (self.folder / f"{name}.err").read_text()

    def lines(self) -> list[tuple[str, str, int, int]]:
        out = []
        for line in self.log.read_text().splitlines():
            worker, event, n, delivery = line.split()
            out.append((worker, event, int(n), int(delivery)))
        return out

    def events(self, event: str, worker: str | None = None) -> list[tuple[str, str, int, int]]:
        return [line for line in self.lines() if line[1] == event and worker in (None, line[0])]

    def done(self) -> set[int]:
        return {n for _, _, n, _ in self.events("done")}

    def dispatch(self, jobs: list[Job]) -> None:
        async def go() -> None:
            async with open_bus(
                store=self.url,
                broker=self.broker,
                handlers=handlers,
                workers=False,
            ) as bus:
                for job in jobs:
                    await bus.dispatch(job)

        trio.run(go)

    def stop(self, name: str, signum: int, within: float) -> float:
        """Signal worker ``name``; return how long it took to exit (it must exit 0)."""
        proc = self.procs[name]
        self.stopped.add(name)
        start = time.monotonic()
        proc.send_signal(signum)
        code = proc.wait(timeout=within)
        took = time.monotonic() - start
        assert code == 0, f"worker exited {code}"
        return took


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    yield from _fleet(Fleet(tmp_path))


@pytest.fixture(params=["sqlite", "redis"])
def any_fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    """A fleet on an SQLite broker, or on Redis (the store an SQLite file either way)."""
    if request.param == "sqlite":
        yield from _fleet(Fleet(tmp_path))
    else:
        prefix = f"cli-{secrets.token_hex(4)}"
        yield from _fleet(Fleet(tmp_path, f"{redis_url()}?prefix={prefix}&poll_interval=0.05"))


def _fleet(made: Fleet) -> Iterator[Fleet]:
    yield made
    for proc in made.procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def slow_jobs(n: int, seconds: float, then: float | None = None) -> list[Job]:
    payload: dict[str, float] = {"seconds": seconds}
    if then is not None:
        payload["then"] = then
    return [Job("cli:slow", {"n": i, **payload}) for i in range(n)]


def test_worker_runs_jobs_dispatched_by_another_process(any_fleet: Fleet) -> None:
    fleet = any_fleet
    fleet.start("A", "--queues", "default=4")
    fleet.dispatch([Job("cli:record", {"n": i}) for i in range(30)])
    fleet.wait_for(lambda: fleet.done() == set(range(30)), "30 jobs done")
    assert fleet.stop("A", signal.SIGTERM, within=15) < 15
    assert "worker ready" in fleet.stderr("A")
    assert {line[3] for line in fleet.lines()} == {1}  # each delivered once


def test_sigterm_lets_running_jobs_finish_and_leaves_the_rest(any_fleet: Fleet) -> None:
    fleet = any_fleet
    fleet.start("A", "--queues", "default=2", "--grace", "20")
    fleet.dispatch(slow_jobs(6, seconds=2.5))
    fleet.wait_for(lambda: len(fleet.events("start", "A")) == 2, "A starting two jobs")
    took = fleet.stop("A", signal.SIGTERM, within=20)
    started = {n for _, _, n, _ in fleet.events("start", "A")}
    # The two running jobs finished within the grace, and A took no other.
    assert {n for _, _, n, _ in fleet.events("done", "A")} == started
    assert len(started) == 2
    assert took < 20
    fleet.start("B", "--queues", "default=4")
    fleet.wait_for(lambda: fleet.done() == set(range(6)), "all 6 jobs done")
    assert {n for _, _, n, _ in fleet.events("done", "B")} == set(range(6)) - started
    # B ran each of the others once. One that A's stopping worker had just claimed went
    # back counted as delivered (ctx.delivery 2 on B: conservative, it never ran on A).
    assert len(fleet.events("done", "B")) == 4
    assert {d for _, _, _, d in fleet.events("done", "B")} <= {1, 2}


def test_sigterm_after_the_grace_gives_running_jobs_back(fleet: Fleet) -> None:
    fleet.start("A", "--queues", "default=2", "--grace", "0.5")
    fleet.dispatch(slow_jobs(2, seconds=60, then=0))
    fleet.wait_for(lambda: len(fleet.events("start", "A")) == 2, "A starting two jobs")
    took = fleet.stop("A", signal.SIGTERM, within=15)
    assert took < 15
    assert fleet.events("done", "A") == []
    started = {n for _, _, n, _ in fleet.events("start", "A")}
    assert "go back to the broker" in fleet.stderr("A")
    fleet.start("B", "--queues", "default=4")
    # Released at once, not after a lease: B runs them long before 60 s.
    fleet.wait_for(lambda: fleet.done() == {0, 1}, "both jobs done", timeout=20)
    assert started == {0, 1}
    # The interrupted ones count a second delivery.
    assert sorted((n, d) for _, _, n, d in fleet.events("done", "B")) == [(0, 2), (1, 2)]


def test_a_second_sigint_stops_at_once(fleet: Fleet) -> None:
    fleet.start("A", "--queues", "default=2", "--grace", "120")
    fleet.dispatch(slow_jobs(2, seconds=60, then=0))
    fleet.wait_for(lambda: len(fleet.events("start", "A")) == 2, "A starting two jobs")
    fleet.procs["A"].send_signal(signal.SIGINT)
    fleet.wait_for(lambda: "taking no more jobs" in fleet.stderr("A"), "A to start stopping")
    took = fleet.stop("A", signal.SIGINT, within=15)
    assert took < 15
    assert "stopping at once" in fleet.stderr("A")
    fleet.start("B")
    fleet.wait_for(lambda: fleet.done() == {0, 1}, "both jobs done", timeout=20)
    assert fleet.events("done", "A") == []


def test_status_lists_the_running_workers(
    any_fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = any_fleet
    a = fleet.start("A", "--queues", "default=3")
    b = fleet.start("B", "--queues", "default=1")

    def workers() -> list[dict[str, Any]]:
        code = main(["status", TARGET, "--store", fleet.url, "--broker", fleet.broker, "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        found: list[dict[str, Any]] = json.loads(out)["workers"]
        return found

    fleet.wait_for(lambda: len(workers()) == 2, "two workers registered")
    seen = sorted(workers(), key=lambda w: w["pid"])
    assert [w["pid"] for w in seen] == sorted([a.pid, b.pid])
    by_pid = {w["pid"]: w for w in seen}
    assert by_pid[a.pid]["queues"] == {"default": 3}
    assert by_pid[b.pid]["queues"] == {"default": 1}
    assert {w["host"] for w in seen} == {socket.gethostname()}
    assert all(w["started_at"] <= w["last_seen"] + 1 for w in seen)
    # The table form names them too.
    code = main(["status", TARGET, "--store", fleet.url, "--broker", fleet.broker])
    table, _ = capsys.readouterr()
    assert code == 0
    assert "workers" in table
    assert str(a.pid) in table
    assert "default=3" in table
    # A worker that stops cleanly removes its entry.
    fleet.stop("A", signal.SIGTERM, within=15)
    assert [w["pid"] for w in workers()] == [b.pid]
