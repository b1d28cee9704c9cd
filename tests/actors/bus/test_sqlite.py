"""SQLiteStore: schema on first use, state that survives a reopen, exactly-once across buses.

Threads carry the SQLite calls, and the autojump clock would race ahead while a thread works
(any timer, such as the coordinators' reaper, is due "next"). So these tests run on the real
clock without waiting on timers, and move wall-clock time by hand (`stores.ManualClock`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import trio_clock
from actors.bus import (
    BatchRecord,
    BatchState,
    ChainState,
    DuplicateJob,
    Event,
    EventKind,
    Job,
    JobContext,
    JobRecord,
    NotFound,
    SQLiteStore,
    Store,
    StoreError,
    open_bus,
)
from actors.bus._sqlite_schema import MIGRATIONS

from .helpers import Recorder
from .stores import T0


async def _ok(ctx: JobContext) -> None:
    if ctx.payload == "fail":
        raise ValueError("failed")


async def test_the_schema_is_created_once_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    store = SQLiteStore(path)
    assert isinstance(store, Store)
    await store.open()
    await store.open()  # idempotent
    await store.close()
    assert store.schema_version() == len(MIGRATIONS)
    again = SQLiteStore(str(path))
    await again.open()
    await again.close()
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (1,)
    finally:
        conn.close()
    assert {"schema_version", "chains", "chain_nodes", "batches", "batch_jobs"} <= tables
    assert {"callbacks", "uniques"} <= tables


async def test_a_store_must_be_open() -> None:
    store = SQLiteStore(":memory:")
    with pytest.raises(RuntimeError, match="not open"):
        await store.get_batch("x")
    with pytest.raises(TypeError):
        SQLiteStore(42)  # type: ignore[arg-type]


async def test_state_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    finals: list[BatchState] = []
    chain_finals: list[ChainState] = []
    async with open_bus(store=SQLiteStore(path), clock=trio_clock(T0)) as bus:
        bus.register("work", _ok)
        batch_id = await (
            bus.batch(Job("work", 1), Job("work", "fail"), Job("work", {"k": [1, 2]}))
            .name("nightly")
            .allow_failures()
            .finally_(finals.append)
            .dispatch()
        )
        chain_id = await (
            bus.chain(Job("work", "a"), Job("work", "b").retry(2).timeout(5))
            .finally_(chain_finals.append)
            .dispatch()
        )
        await bus.wait_idle()
        batch = await bus.find_batch(batch_id)
        chain = await bus.find_chain(chain_id)
    assert finals == [batch]
    assert chain_finals == [chain]
    assert (batch.processed, batch.failed, batch.completed, batch.name) == (3, 1, True, "nightly")
    assert chain.completed
    assert chain.nodes[1].job.options.retry == 2

    async with open_bus(store=SQLiteStore(path)) as reopened:
        assert await reopened.find_batch(batch_id) == batch
        assert await reopened.find_chain(chain_id) == chain
        with pytest.raises(NotFound):
            await reopened.find_batch(chain_id)


async def test_unfinished_state_survives_a_stop(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    stuck_now = 0
    with trio.CancelScope() as scope:
        async with open_bus(store=SQLiteStore(path)) as bus:

            @bus.handler("stuck")
            async def stuck(ctx: JobContext) -> None:
                nonlocal stuck_now
                if ctx.payload:
                    stuck_now += 1
                    if stuck_now == 2:
                        scope.cancel()  # stop the bus the hard way, mid-work
                    await trio.sleep_forever()

            batch_id = await bus.batch(Job("stuck", 0), Job("stuck", 1)).dispatch()
            chain_id = await bus.chain(Job("stuck", 0), Job("stuck", 1)).dispatch()
            await trio.sleep_forever()
    async with open_bus(store=SQLiteStore(path)) as reopened:
        batch = await reopened.find_batch(batch_id)
        chain = await reopened.find_chain(chain_id)
    assert (batch.processed, batch.pending, batch.completed) == (1, 1, False)
    assert (chain.next_index, chain.completed, chain.failed) == (1, False, False)


async def test_callbacks_run_once_across_two_buses_on_one_file(tmp_path: Path) -> None:
    """Bus B cancels a batch that bus A runs; A finishes it and runs its finally once."""
    path = tmp_path / "bus.db"
    release = trio.Event()
    first_ran = trio.Event()
    coordinator_saw_cancel = trio.Event()
    finals: list[BatchState] = []
    thens: list[BatchState] = []
    ran: list[int] = []
    events_a, events_b = Recorder(), Recorder()

    def on_progress(event: Event) -> None:
        # A's coordinator reads B's cancel when job 0's outcome reaches it (its progress event);
        # only then may the job that started meanwhile finish
        if event.kind == EventKind.BATCH_PROGRESSED:
            coordinator_saw_cancel.set()

    async with (
        open_bus(
            store=SQLiteStore(path), queues={"default": 1}, observers=[events_a, on_progress]
        ) as a,
        open_bus(store=SQLiteStore(path), observers=[events_b]) as b,
    ):

        @a.handler("work")
        async def work(ctx: JobContext) -> None:
            ran.append(ctx.payload)
            first_ran.set()
            await release.wait()
            if ctx.payload > 0:
                await coordinator_saw_cancel.wait()

        b.register("work", work)
        batch_id = await (
            a.batch(*[Job("work", i) for i in range(4)])
            .then(thens.append)
            .finally_(finals.append)
            .dispatch()
        )
        await first_ran.wait()
        at_cancel = await b.cancel_batch(batch_id)
        assert at_cancel.cancelled
        assert not at_cancel.completed
        release.set()
        await a.wait_idle()
        await b.wait_idle()
        state = await a.find_batch(batch_id)
        # B cancelling again, or A's coordinator seeing a duplicate, changes nothing.
        assert await b.cancel_batch(batch_id) == state
    # A's worker may start one more job before A's coordinator reads the cancel in the store
    # (cross-process cancels are noticed at the coordinator's next message); none is lost.
    assert ran in ([0], [0, 1])
    assert (state.processed, state.pending, state.cancelled, state.completed) == (
        len(ran),
        0,
        True,
        True,
    )
    assert finals == [state]
    assert thens == []  # jobs were cancelled: not every job succeeded
    assert events_a.count()[EventKind.BATCH_CANCELLED] == 1
    assert events_b.count()[EventKind.BATCH_CANCELLED] == 0
    conn = sqlite3.connect(path)
    try:
        claims = conn.execute("SELECT key FROM callbacks").fetchall()
    finally:
        conn.close()
    assert claims == [(f"batch:{batch_id}:finally",)]


async def test_unique_for_holds_across_buses_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    async with (
        open_bus(store=SQLiteStore(path)) as a,
        open_bus(store=SQLiteStore(path)) as b,
    ):
        a.register("report", _ok)
        b.register("report", _ok)
        await a.dispatch(Job("report", {"day": 1}).unique_for(3600))
        with pytest.raises(DuplicateJob):
            await b.dispatch(Job("report", {"day": 1}).unique_for(3600))
        await b.dispatch(Job("report", {"day": 2}).unique_for(3600))


async def test_group_commit_isolates_each_call(tmp_path: Path) -> None:
    """Concurrent calls share one transaction; a failing call rolls back only itself."""
    store = SQLiteStore(tmp_path / "bus.db")
    await store.open()
    jobs = (JobRecord("j1", "work", "null", "default"),)
    record = BatchRecord("b1", "d1", None, "default", False, jobs, T0)
    await store.create_batch(record)
    claims: dict[int, bool] = {}
    failures: list[BaseException] = []

    async def claim(i: int) -> None:
        claims[i] = await store.claim_callback(f"batch:b{i}", "finally", T0)

    async def fail(call: Any) -> None:
        try:
            await call
        except (NotFound, StoreError) as exc:
            failures.append(exc)

    async with trio.open_nursery() as served:
        await served.start(store.serve)  # the group-committing writer, as a bus runs it
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(claim, i)
                if i % 10 == 0:
                    nursery.start_soon(fail, store.get_batch(f"missing-{i}"))
                    nursery.start_soon(fail, store.create_batch(record))  # duplicate id
        served.cancel_scope.cancel()
    assert all(
        isinstance(e.__cause__, sqlite3.IntegrityError)
        for e in failures
        if isinstance(e, StoreError)
    )
    state = await store.get_batch("b1")
    await store.close()
    assert claims == dict.fromkeys(range(30), True)
    assert sorted(type(e).__name__ for e in failures) == ["NotFound"] * 3 + ["StoreError"] * 3
    assert state.total == 1


async def _store_with_a_gated_call(
    tmp_path: Path,
) -> tuple[SQLiteStore, threading.Event, Callable[[sqlite3.Connection], str]]:
    """An open store, and an operation that holds the store's thread until ``gate`` is set."""
    store = SQLiteStore(tmp_path / "bus.db")
    await store.open()
    gate = threading.Event()

    def slow(conn: sqlite3.Connection) -> str:
        gate.wait(10)
        return "slow"

    return store, gate, slow


async def test_a_call_cancelled_before_its_group_starts_never_runs(tmp_path: Path) -> None:
    store, gate, slow = await _store_with_a_gated_call(tmp_path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._run, slow)  # leads a group, held in its thread by `gate`
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:

            async def cancel_once_queued() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            nursery.start_soon(cancel_once_queued)
            await store.claim_callback("batch:x", "then", T0)  # queued behind, then cancelled
        assert scope.cancelled_caught
        gate.set()
    assert await store.claim_callback("batch:x", "then", T0)  # the cancelled claim never ran
    await store.close()


async def test_two_buses_creating_one_new_file_at_once_both_open(tmp_path: Path) -> None:
    """Switching a new file to WAL takes a lock the busy handler does not wait for; both
    openers must still succeed (real threads, so many trials)."""
    for trial in range(40):
        stores = [SQLiteStore(tmp_path / f"new-{trial}.db") for _ in range(2)]
        async with trio.open_nursery() as nursery:
            for store in stores:
                nursery.start_soon(store.open)
        for store in stores:
            await store.close()


async def test_sqlite_errors_name_the_file(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)  # a directory: SQLite cannot open it
    with pytest.raises(StoreError, match=str(tmp_path)) as caught:
        await store.open()
    assert isinstance(caught.value.__cause__, sqlite3.Error)


async def test_failed_jobs_are_kept_in_the_file(tmp_path: Path) -> None:
    async def bad(ctx: JobContext) -> None:
        raise ValueError(f"bad {ctx.payload}")

    path = tmp_path / "bus.db"
    async with open_bus(store=SQLiteStore(path)) as bus:
        bus.register("bad", bad)
        result = await bus.dispatch(Job("bad", 7).retry(1))
    async with open_bus(store=SQLiteStore(path)) as bus:  # a restart still has it
        bus.register("bad", bad)
        [failed] = await bus.failed_jobs()
        assert (failed.id, failed.attempts, failed.error) == (result.job_id, 2, "ValueError: bad 7")
        assert "Traceback" in failed.traceback
        assert failed.job.retry == 1
        await bus.retry_failed(failed.id)
        await bus.wait_idle()
        [again] = await bus.failed_jobs()  # it failed again: a new record
        assert again.id != failed.id


async def test_cancel_batch_through_the_file_stops_another_bus(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "bus.db"
    ran: list[int] = []

    async def work(ctx: JobContext) -> None:
        ran.append(ctx.payload)

    async with open_bus(store=SQLiteStore(path)) as bus:
        bus.register("work", work)
        batch_id = await bus.batch(*(Job("work", i).delay(5) for i in range(3))).dispatch()
        other = SQLiteStore(path)  # another process's store on the same file
        await other.open()
        await other.cancel_batch(batch_id, T0)
        await other.close()
        mock_clock.jump(5)
        with trio.fail_after(5):
            await bus.wait_idle()
        state = await bus.find_batch(batch_id)
    assert ran == []
    assert state.completed
    assert state.cancelled


async def test_a_sent_call_completes_and_returns_though_cancelled(tmp_path: Path) -> None:
    """An operation sent to the writer (without a checkpoint), cancelled while its group
    runs: it completes, returns its result, and the cancel lands at the next checkpoint."""
    store, gate, slow = await _store_with_a_gated_call(tmp_path)
    seen: list[object] = []
    async with trio.open_nursery() as served:
        await served.start(store.serve)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._run, slow)  # holds the writer's thread until `gate`
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:

                async def cancel_then_release() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
                    await trio.sleep(0.01)  # the cancel has had its chance to interrupt
                    gate.set()

                nursery.start_soon(cancel_then_release)
                seen.append(await store.claim_callback("batch:x", "then", T0))
                seen.append("returned")
                await trio.lowlevel.checkpoint()
                seen.append("not reached")  # pragma: no cover
        served.cancel_scope.cancel()
    assert scope.cancelled_caught
    assert seen == [True, "returned"]
    assert not await store.claim_callback("batch:x", "then", T0)  # the claim was recorded
    await store.close()


class _Heard:
    """An answer for `record_chain_step_to` that notes whether it succeeded."""

    def __init__(self, heard: list[bool]) -> None:
        self.heard = heard

    def succeed(self, value: object) -> None:
        self.heard.append(True)

    def fail(self, exc: BaseException) -> None:
        self.heard.append(False)


async def test_operations_waiting_when_the_writer_stops_fail_with_its_cancellation(
    tmp_path: Path,
) -> None:
    """None is left waiting for an answer that cannot come: the group in flight completes
    (its thread call cannot be abandoned) and the operations queued behind it hear the
    writer's cancellation."""
    store, gate, slow = await _store_with_a_gated_call(tmp_path)
    heard: list[object] = []
    then: list[bool] = []

    async def call(op: Callable[[sqlite3.Connection], str]) -> None:
        try:
            heard.append(await store._run(op))
        except trio.Cancelled:
            heard.append("cancelled")
            raise

    async def release() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the writer has been cancelled meanwhile
        gate.set()

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as served:
            await served.start(store.serve)
            outer.start_soon(call, slow)  # the group in flight, held by `gate`
            await trio.testing.wait_all_tasks_blocked()
            outer.start_soon(call, lambda conn: "queued")
            await trio.testing.wait_all_tasks_blocked()
            assert store.record_chain_step_to("c", 0, None, T0, _Heard(then))
            outer.start_soon(release)
            served.cancel_scope.cancel()
    assert heard == ["slow", "cancelled"]
    assert then == [False]
    assert not store.record_chain_step_to("c", 0, None, T0, _Heard([]))  # not served
    await store.close()
