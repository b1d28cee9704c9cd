"""Lane jobs inside chains, batches and `Job` callbacks: per lane, one at a time and in the
order they reach the broker, whichever broker and store hold them; a chain step on a busy
lane waits for its turn."""

from __future__ import annotations

import itertools
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.bus import (
    Broker,
    Job,
    MemoryBroker,
    MemoryStore,
    PostgresStore,
    SQLiteBroker,
    SQLiteStore,
    Store,
    open_bus,
)
from tests.services import redis_url

from .stores import pg_schema
from .test_lanes import Recorder, lane_job

__all__ = ["pg_schema"]  # the fixture, imported for pytest

Setup = tuple[Callable[[], Store], Callable[[], Broker | str]]


@pytest.fixture(params=["memory", "sqlite", "redis+postgres", "redis+sqlite"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    """(store, broker) factories: each broker with a store it is used with."""
    kind: str = request.param
    sqlite_store = lambda: SQLiteStore(tmp_path / "bus.db")  # noqa: E731
    if kind == "memory":
        return MemoryStore, MemoryBroker
    if kind == "sqlite":
        return sqlite_store, lambda: SQLiteBroker(tmp_path / "jobs.db", poll_interval=0.02)
    url = f"{redis_url()}?poll_interval=0.02&prefix=lanes-{secrets.token_hex(4)}"
    if kind == "redis+sqlite":
        return sqlite_store, lambda: url
    dsn, schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(dsn, schema=schema, connect_timeout=5), lambda: url


async def test_lane_jobs_from_chains_batches_and_callbacks_keep_order(setup: Setup) -> None:
    store, broker = setup
    record = Recorder(sleep=0.002)
    async with open_bus(store=store(), broker=broker(), queues={"default": 8}) as bus:
        bus.register("t", record)
        # A batch's members reach the broker in the batch's order: a0 b0 a1 b1 ...
        members = [lane_job(lane, i) for i in range(5) for lane in "ab"]
        # ... its Job callback (on lane a) only when the batch is over: a's last.
        await bus.batch(*members).then(Job("t", {"lane": "a", "i": 9}).lane("a")).dispatch()
        for i in range(5, 8):  # dispatched after the batch: behind its members on lane b
            await bus.dispatch(lane_job("b", i))
        # A chain's steps reach lane c one after the other; its finally_ Job comes last.
        steps = [lane_job("c", i) for i in range(6)]
        await bus.chain(*steps).finally_(Job("t", {"lane": "c", "i": 6}).lane("c")).dispatch()
        # Two chains taking turns on one lane d: each chain's steps stay in its order.
        await bus.chain(*[lane_job("d", 10 + i) for i in range(4)]).dispatch()
        await bus.chain(*[lane_job("d", 20 + i) for i in range(4)]).dispatch()
        with trio.fail_after(60):
            await bus.wait_idle()
    assert record.order("a") == [0, 1, 2, 3, 4, 9]
    assert record.order("b") == list(range(8))
    assert record.order("c") == list(range(7))
    d = record.order("d")
    assert [i for i in d if i < 20] == [10, 11, 12, 13]
    assert [i for i in d if i >= 20] == [20, 21, 22, 23]
    assert_no_overlap(record.runs)


def assert_no_overlap(runs: list[tuple[str, int, float, float]]) -> None:
    """No two runs of one lane overlap in time (the recorder also checks it as they run)."""
    by_lane: dict[str, list[tuple[float, float]]] = {}
    for lane, _, start, end in runs:
        by_lane.setdefault(lane, []).append((start, end))
    for spans in by_lane.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end


async def test_a_chain_step_on_a_busy_lane_waits_its_turn_exactly(autojump_clock: Any) -> None:
    record = Recorder(sleep=0)
    slow = Recorder(sleep=5)
    async with open_bus(queues={"default": 4}) as bus:
        bus.register("t", record)
        bus.register("slow", slow)
        start = trio.current_time()
        await bus.dispatch(Job("slow", {"lane": "x", "i": 0}).lane("x"))  # x busy for 5 s
        # The chain's first step (lane y) runs at once; its second (lane x) waits for x.
        await bus.chain(lane_job("y", 0), lane_job("x", 1), lane_job("y", 1)).dispatch()
        await bus.wait_idle()
    assert [(lane, i, at - start) for lane, i, at, _ in record.runs] == [
        ("y", 0, 0.0),
        ("x", 1, 5.0),
        ("y", 1, 5.0),
    ]


async def test_a_chain_step_on_a_busy_lane_waits_its_turn(setup: Setup) -> None:
    store, broker = setup
    record = Recorder(sleep=0)
    slow = Recorder(sleep=0.3)
    async with open_bus(store=store(), broker=broker(), queues={"default": 4}) as bus:
        bus.register("t", record)
        bus.register("slow", slow)
        await bus.dispatch(Job("slow", {"lane": "x", "i": 0}).lane("x"))
        await bus.chain(lane_job("y", 0), lane_job("x", 1)).dispatch()
        with trio.fail_after(60):
            await bus.wait_idle()
    ((_, _, _, slow_end),) = slow.runs
    (y0, x1) = record.runs
    assert y0[:2] == ("y", 0)
    assert y0[2] < slow_end
    assert x1[:2] == ("x", 1)
    assert x1[2] >= slow_end


_OLD_CHAIN = (
    "INSERT INTO chains VALUES ('old', 'd1', 'default', 1, 0, {f}, {f}, NULL, 0, 0)",
    "INSERT INTO chain_nodes VALUES ('old', 0, 'n1', 't', 'null', 'default', 0, NULL, 0, 0)",
)


def _sqlite_before_lanes(path: Path) -> None:
    """An SQLite store file as the version before lane columns left it, with a chain."""
    from actors.bus._sql_store import apply_migrations
    from actors.bus._sqlite_schema import MIGRATIONS

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        apply_migrations(conn, MIGRATIONS[:-1], "?")
        for statement in _OLD_CHAIN:
            conn.execute(statement.format(f=0))
    finally:
        conn.close()


def _postgres_before_lanes(dsn: str, schema: str) -> None:
    import psycopg

    from actors.bus._postgres_schema import MIGRATIONS, use_schema
    from actors.bus._sql_store import apply_migrations

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        use_schema(conn, schema)
        apply_migrations(conn, MIGRATIONS[:-1], "%s")
        for statement in _OLD_CHAIN:
            conn.execute(statement.format(f="false"))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_an_existing_store_is_upgraded_to_keep_lanes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        _sqlite_before_lanes(tmp_path / "bus.db")
        store: Store = SQLiteStore(tmp_path / "bus.db")
    else:
        dsn, schema = request.getfixturevalue("pg_schema")
        _postgres_before_lanes(dsn, schema)
        store = PostgresStore(dsn, schema=schema, connect_timeout=5)
    record = Recorder(sleep=0)
    async with open_bus(store=store, queues={"default": 2}) as bus:
        bus.register("t", record)
        old = await bus.find_chain("old")  # written before the upgrade: on no lane
        assert old.nodes[0].job.options.lane is None
        chain_id = await bus.chain(lane_job("a", 0), lane_job("a", 1)).dispatch()
        batch_id = await bus.batch(lane_job("b", 0)).dispatch()
        await bus.wait_idle()
        chain = await bus.find_chain(chain_id)
        assert await bus.find_batch(batch_id)
    assert [node.job.options.lane for node in chain.nodes] == ["a", "a"]
    assert record.order("a") == [0, 1]
    assert record.order("b") == [0]
