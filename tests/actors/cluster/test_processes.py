"""Cluster Lanes across real processes: no overlap, growing tokens, a stale holder fenced."""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.services import redis_url

LEASE = 0.5


def resource(tmp_path: Path) -> str:
    db = str(tmp_path / "resource.db")
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE resource (id INTEGER PRIMARY KEY, value INTEGER, fence INTEGER)")
        conn.execute("INSERT INTO resource VALUES (1, 0, 0)")
    return db


def start(
    url: str, prefix: str, out: Path, db: str, mode: str, runs: int = 1
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "tests.actors.cluster.worker",
            url, prefix, "acct:1", str(out), db, mode,
            "--runs", str(runs), "--lease", str(LEASE),
        ]
    )  # fmt: skip


def lines(out: Path) -> list[list[str]]:
    return [line.split() for line in out.read_text().splitlines()] if out.exists() else []


def wait_for(predicate: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {seconds}s")
        time.sleep(0.02)


def test_two_processes_on_one_key_never_overlap_and_tokens_grow(tmp_path: Path) -> None:
    url, prefix, out, db = (
        redis_url(),
        f"t-{secrets.token_hex(4)}",
        tmp_path / "out",
        resource(tmp_path),
    )
    workers = [start(url, prefix, out, db, "runs", runs=30) for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=60) == 0
    runs = sorted((float(r[3]), float(r[4]), int(r[2]), int(r[5]), r[1]) for r in lines(out))
    assert len(runs) == 60
    assert len({r[4] for r in runs}) == 2
    for before, after in itertools.pairwise(runs):
        assert before[1] <= after[0], f"two runs overlap: {before} and {after}"
        assert before[2] < after[2], "fencing tokens must grow in the order the key was held"
    assert all(applied == 1 for *_, applied, _ in runs)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value, fence FROM resource").fetchone() == (60, runs[-1][2])


def test_a_holder_paused_past_its_lease_is_fenced_out(tmp_path: Path) -> None:
    url, prefix, out, db = (
        redis_url(),
        f"t-{secrets.token_hex(4)}",
        tmp_path / "out",
        resource(tmp_path),
    )
    stale = start(url, prefix, out, db, "stale")
    try:
        wait_for(lambda: any(r[0] == "holding" for r in lines(out)), 30)
        os.kill(stale.pid, signal.SIGSTOP)  # a GC pause, a frozen VM
        time.sleep(LEASE * 2)
        other = start(url, prefix, out, db, "runs", runs=1)
        assert other.wait(timeout=30) == 0  # it got the key: the paused lease lapsed
    finally:
        os.kill(stale.pid, signal.SIGCONT)
    (tmp_path / "out.go").touch()
    assert stale.wait(timeout=30) == 0
    records = lines(out)
    holding = next(r for r in records if r[0] == "holding")
    run = next(r for r in records if r[0] == "run")
    write = next(r for r in records if r[0] == "write")
    assert int(run[2]) > int(holding[2])  # the new holder's token is larger
    assert write == ["write", holding[1], holding[2], "0"]  # the stale write was refused
    assert ["lease-lost", holding[1]] in records  # and its run() said so
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value, fence FROM resource").fetchone() == (1, int(run[2]))
