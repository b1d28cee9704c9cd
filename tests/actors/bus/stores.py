"""Every store behind one fixture: the store contract runs on each.

``stores`` is a factory of stores that share one backing, as processes would: the same
`MemoryStore` object (a process has one), the same SQLite file, or the same PostgreSQL
schema (a fresh one per test, dropped after it, on the server that ``scripts/services.sh``
started; the Postgres cases skip locally, and fail under CI=true, without one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actors.bus import MemoryStore, PostgresStore, SQLiteStore, Store
from tests.services import free_port, missing, postgres_dsn

T0 = datetime(2030, 1, 1, tzinfo=UTC)

StoreFactory = Callable[[], Store]


class ManualClock:
    """A wall clock that moves only when told."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """A PostgreSQL DSN and a schema name of this test's own (dropped afterwards)."""
    dsn = postgres_dsn()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield dsn, schema
    drop_schema(dsn, schema)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes stores on one backing (see the module doc)."""
    kind: str = request.param
    if kind == "memory":
        shared = MemoryStore()
        return lambda: shared
    if kind == "sqlite":
        return lambda: SQLiteStore(tmp_path / "bus.db")
    dsn, schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(dsn, schema=schema, connect_timeout=5)


class PostgresServer:
    """A PostgreSQL server of the test's own (to restart under a running bus): ``initdb`` in
    ``folder``, on a free loopback port. Never the shared one of ``scripts/services.sh``."""

    def __init__(self, folder: Path) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
        found = shutil.which("pg_ctl") or (str(binaries[0]) if binaries else None)
        if found is None:
            missing("PostgreSQL's server binaries (pg_ctl, initdb)")
        assert found is not None
        self.bin = Path(found).parent
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as `postgres`
            shutil.chown(folder, "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _pg(self, *args: str) -> None:
        subprocess.run([*self._as_owner, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._pg(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip
        self.start_again()

    def _ctl(self, action: str) -> list[str]:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        log = str(self.folder / "log")
        return [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-w", "-o", options,
                "-m", "fast", action]  # fmt: skip

    def stop_fast(self) -> None:
        """Stop, terminating every connection (as an admin shutdown does)."""
        self._pg(*self._ctl("stop"))

    def start_again(self) -> None:
        self._pg(*self._ctl("start"))

    def stop(self) -> None:
        self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    # Not under pytest's tmp_path: its folders are private to root, and the server runs as
    # `postgres` when the tests run as root.
    folder = Path(tempfile.mkdtemp(prefix="trio-lanes-pg-"))
    try:
        server = PostgresServer(folder)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
