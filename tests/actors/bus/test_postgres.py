"""PostgresStore against a real server: schema on first use (concurrent openers), group
commit, exactly-once across buses, clear errors, and a server restart under a running bus.

The shared server comes from ``scripts/services.sh`` (``TRIO_LANES_TEST_POSTGRES_DSN``); the
restart test starts a server of its own. Real clock throughout (threads carry the calls);
the waits on real time are bounded.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
import trio
import trio.lowlevel

from actors.bus import (
    DuplicateJob,
    Job,
    JobContext,
    PostgresStore,
    Store,
    StoreError,
    open_bus,
)
from actors.bus import _postgres_ops as ops
from actors.bus._postgres import _CommitLost, redact
from actors.bus._postgres_schema import MIGRATIONS

from .stores import T0, PostgresServer, drop_schema, own_postgres, pg_schema
from .test_store_contract import opened

__all__ = ["own_postgres", "pg_schema"]  # the fixtures, imported for pytest


def _tables(dsn: str, schema: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {name for (name,) in rows}


async def test_the_schema_is_created_once_on_first_use(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema
    store = PostgresStore(dsn, schema=schema)
    assert isinstance(store, Store)
    await store.open()
    await store.open()  # idempotent
    await store.close()
    await store.close()
    assert store.schema_version() == len(MIGRATIONS)
    again = PostgresStore(dsn, schema=schema)
    await again.open()
    await again.close()
    assert {"schema_version", "chains", "batches", "batch_jobs", "failed_jobs"} <= _tables(
        dsn, schema
    )
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall()
    assert rows == [(len(MIGRATIONS),)]


async def test_concurrent_first_opens_all_succeed(pg_schema: tuple[str, str]) -> None:
    """Many stores (each its own connection, as processes would) create one new schema at
    once; the advisory lock makes them take turns (real threads, so several trials)."""
    dsn, _ = pg_schema
    for _trial in range(5):
        schema = f"test_new_{uuid.uuid4().hex[:10]}"
        stores = [PostgresStore(dsn, schema=schema, min_size=0) for _ in range(6)]
        try:
            async with trio.open_nursery() as nursery:
                for store in stores:
                    nursery.start_soon(store.open)
            for store in stores:
                await store.close()
            assert stores[0].schema_version() == len(MIGRATIONS)
        finally:
            drop_schema(dsn, schema)


async def test_concurrent_calls_share_thread_hops(
    pg_schema: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served, 60 concurrent claims go through a few transactions, not 60."""
    dsn, schema = pg_schema
    store = PostgresStore(dsn, schema=schema)
    hops: list[int] = []
    real_hop = store._hop

    async def counting_hop(calls: Any) -> Any:
        hops.append(len(calls))
        return await real_hop(calls)

    monkeypatch.setattr(store, "_hop", counting_hop)
    results: list[bool] = []

    async def claim(i: int) -> None:
        results.append(await store.claim_callback(f"batch:b{i % 30}", "then", T0))

    async with opened(store):
        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(claim, i)
    assert sorted(results) == [False] * 30 + [True] * 30
    assert sum(hops) == 60
    assert len(hops) <= 4, hops


async def test_unique_for_holds_across_buses_on_one_database(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema

    async def ok(ctx: JobContext) -> None:
        pass

    async with (
        open_bus(store=PostgresStore(dsn, schema=schema)) as a,
        open_bus(store=PostgresStore(dsn, schema=schema)) as b,
    ):
        a.register("report", ok)
        b.register("report", ok)
        await a.dispatch(Job("report", {"day": 1}).unique_for(3600))
        with pytest.raises(DuplicateJob):
            await b.dispatch(Job("report", {"day": 1}).unique_for(3600))
        await b.dispatch(Job("report", {"day": 2}).unique_for(3600))


async def test_failed_jobs_and_state_survive_a_new_bus(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema

    async def bad(ctx: JobContext) -> None:
        raise ValueError(f"bad {ctx.payload}")

    async with open_bus(store=PostgresStore(dsn, schema=schema)) as bus:
        bus.register("bad", bad)
        result = await bus.dispatch(Job("bad", 7).retry(1))
        chain_id = await bus.chain(Job("bad", 8)).dispatch()
        await bus.wait_idle()
        chain = await bus.find_chain(chain_id)
    async with open_bus(store=PostgresStore(dsn, schema=schema)) as bus:
        bus.register("bad", bad)
        assert await bus.find_chain(chain_id) == chain
        assert chain.failed
        failed = {f.id: f for f in await bus.failed_jobs()}
        first = failed[result.job_id]
        assert (first.attempts, first.error) == (2, "ValueError: bad 7")
        assert "Traceback" in first.traceback
        await bus.retry_failed(first.id)
        await bus.wait_idle()
        again = [f for f in await bus.failed_jobs() if f.error == "ValueError: bad 7"]
        assert [f.id != first.id for f in again] == [True]


def test_bad_dsns_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL DSN"):
        PostgresStore("nonsense")
    with pytest.raises(TypeError, match="str"):
        PostgresStore(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pool sizes"):
        PostgresStore("postgresql://h/db", min_size=5, max_size=2)
    with pytest.raises(ValueError, match="connect_timeout"):
        PostgresStore("postgresql://h/db", connect_timeout=0)


def test_messages_never_show_the_password() -> None:
    assert redact("postgresql://app:s3cret@db:5432/app?sslmode=require") == (
        "postgresql://app@db:5432/app?sslmode=require"
    )
    assert "s3cret" not in redact("host=db user=app password=s3cret dbname=app")
    store = PostgresStore("postgresql://app:s3cret@db/app")
    assert "s3cret" not in repr(store)


async def test_an_unreachable_server_is_named_at_open() -> None:
    from tests.services import free_port

    port = free_port()  # nothing listens there
    store = PostgresStore(f"postgresql://app:s3cret@127.0.0.1:{port}/app", connect_timeout=2)
    with trio.fail_after(10):
        with pytest.raises(StoreError, match="unreachable") as caught:
            async with open_bus(store=store):
                pass  # pragma: no cover
    message = str(caught.value)
    assert f"postgresql://app@127.0.0.1:{port}/app" in message
    assert "s3cret" not in message
    assert "is the server running" in message
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


async def test_a_store_must_be_open() -> None:
    store = PostgresStore("postgresql://h/db")
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_batch("x")


async def test_a_server_restart_under_a_running_bus_loses_no_outcome(
    own_postgres: PostgresServer,
) -> None:
    """The server goes down while jobs finish and comes back; the bus retries its writes,
    the pool reconnects, and every outcome is recorded: 0 lost."""
    server = own_postgres
    batch_size, chains = 300, 20
    ran: set[int] = set()
    some_ran = trio.Event()

    async def work(ctx: JobContext) -> None:
        await trio.sleep(0.005)  # real time: jobs go on finishing while the server is down
        if isinstance(ctx.payload, int):
            ran.add(ctx.payload)
            if len(ran) == 30:
                some_ran.set()

    store = PostgresStore(server.dsn, connect_timeout=0.5)
    async with open_bus(store=store, queues={"default": 8}) as bus:
        bus.register("work", work)
        batch_id = await bus.batch(*(Job("work", i) for i in range(batch_size))).dispatch()
        chain_ids = [
            await bus.chain(*(Job("work", f"c{c}-{k}") for k in range(3))).dispatch()
            for c in range(chains)
        ]
        with trio.fail_after(30):
            await some_ran.wait()
        # Down (every connection terminated, as an admin shutdown does) until the bus has
        # seen its writes fail, then up again.
        await trio.to_thread.run_sync(server.stop_fast)
        for _ in range(3000):  # a bounded poll: 30 s at most
            if bus.stats().store_errors > 0:
                break
            await trio.sleep(0.01)
        else:
            pytest.fail("the bus saw no store error while the server was down")
        await trio.to_thread.run_sync(server.start_again)
        with trio.fail_after(60):
            await bus.wait_idle()
        batch = await bus.find_batch(batch_id)
        ended = [await bus.find_chain(chain_id) for chain_id in chain_ids]
        stats = bus.stats()
    lost = batch_size - batch.processed
    assert lost == 0
    assert (batch.pending, batch.failed, batch.completed) == (0, 0, True)
    assert ran == set(range(batch_size))
    assert all(chain.completed for chain in ended)
    assert stats.unrecorded == 0


def _xids(dsn: str) -> tuple[int, int]:
    """A committed and an aborted transaction id, from a connection of our own."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            committed = conn.execute("SELECT txid_current()").fetchone()
        conn.execute("BEGIN")
        aborted = conn.execute("SELECT txid_current()").fetchone()
        conn.execute("ROLLBACK")
    assert committed is not None
    assert aborted is not None
    return int(committed[0]), int(aborted[0])


async def test_a_commit_whose_answer_was_lost_is_asked_about(pg_schema: tuple[str, str]) -> None:
    """After the connection broke during COMMIT, the server says what became of it: the
    results stand if it committed, the error if it did not."""
    dsn, schema = pg_schema
    store = PostgresStore(dsn, schema=schema)
    committed, aborted = _xids(dsn)
    broken = psycopg.OperationalError("server closed the connection unexpectedly")
    async with opened(store, serve=False):
        assert await trio.to_thread.run_sync(store.commit_status, committed) == "committed"
        assert await trio.to_thread.run_sync(store.commit_status, aborted) == "aborted"
        results = [(True, "ran")]
        kept = await trio.to_thread.run_sync(
            store._after_lost_commit, committed, _CommitLost(broken, results)
        )
        assert kept == results
        with pytest.raises(psycopg.OperationalError, match="closed"):
            await trio.to_thread.run_sync(
                store._after_lost_commit, aborted, _CommitLost(broken, results)
            )


async def test_a_backend_killed_during_commit_rolls_back_and_says_so(
    pg_schema: tuple[str, str],
) -> None:
    """A deferred trigger ends the server process at COMMIT (the connection breaks after
    COMMIT was sent): the store asks the server, learns it aborted, and raises; the claim
    made in that transaction was not kept, so the bus's retry is its first effect."""
    dsn, schema = pg_schema
    store = PostgresStore(dsn, schema=schema)

    def claim_and_die(conn: Any) -> bool:
        conn.execute("INSERT INTO boom VALUES (1)")
        return ops.claim_callback(conn, "batch:b1", "then", 0)

    async with opened(store, serve=False):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute("CREATE TABLE boom (x INTEGER)")
            conn.execute(
                "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$"
            )
            conn.execute(
                "CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON boom "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die()"
            )
        with pytest.raises(StoreError, match=r"PostgreSQL store '\S+'") as caught:
            await store._run(claim_and_die)
        assert isinstance(caught.value.__cause__, psycopg.OperationalError)
        assert await store.claim_callback("batch:b1", "then", T0)  # the first was undone


@pytest.mark.parametrize("serve", [True, False])
async def test_an_operation_that_raises_leaves_nothing_written(
    pg_schema: tuple[str, str], serve: bool
) -> None:
    """A call that wrote and then raised is rolled back, alone or in a group, never
    committed with the connection going back to the pool."""
    dsn, schema = pg_schema

    def claim_then_fail(conn: Any, name: str) -> None:
        ops.claim_callback(conn, "batch:b1", name, 0)
        raise ValueError("failed after writing")

    store = PostgresStore(dsn, schema=schema)
    async with opened(store, serve=serve):
        with pytest.raises(ValueError, match="after writing"):
            await store._run(claim_then_fail, "alone")
        async with trio.open_nursery() as nursery:  # a group: the others' writes stay
            nursery.start_soon(store.claim_callback, "batch:b1", "other", T0)
            with pytest.raises(ValueError, match="after writing"):
                await store._run(claim_then_fail, "grouped")
        assert await store.claim_callback("batch:b1", "alone", T0)
        assert await store.claim_callback("batch:b1", "grouped", T0)
        assert not await store.claim_callback("batch:b1", "other", T0)


async def test_a_store_url_opens_a_postgres_store(pg_schema: tuple[str, str]) -> None:
    dsn, schema = pg_schema
    url = f"{dsn}?schema={schema}&max_size=2&connect_timeout=5"
    async with open_bus(store=url) as bus:
        bus.register("work", _nothing)
        batch_id = await bus.batch(Job("work", 1), Job("work", 2)).dispatch()
        await bus.wait_idle()
        assert (await bus.find_batch(batch_id)).completed
    assert "batches" in _tables(dsn, schema)
    with pytest.raises(ValueError, match="unknown option 'sslmod'"):
        async with open_bus(store=f"{dsn}?sslmod=require"):
            pass  # pragma: no cover


async def _nothing(ctx: JobContext) -> None:
    pass
