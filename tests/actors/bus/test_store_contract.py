"""The `Store` contract, on every store: MemoryStore, SQLiteStore and PostgresStore.

Each test runs once per store (the ``stores`` fixture of `stores.py`), on the real clock
(threads carry the SQL stores' calls; see test_sqlite.py), with wall-clock time moved by
hand. Where a test uses two stores, they share one backing, as two processes would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
import trio

from actors.bus import (
    BatchRecord,
    BatchState,
    ChainRecord,
    FailedJob,
    Job,
    JobContext,
    JobOutcome,
    JobRecord,
    MemoryStore,
    NotFound,
    QueuedJob,
    Store,
    StoreError,
    open_bus,
)

from .stores import T0, ManualClock, StoreFactory, pg_schema, stores

__all__ = ["pg_schema", "stores"]  # the fixtures, imported for pytest


def _jobs(n: int, prefix: str = "j") -> tuple[JobRecord, ...]:
    return tuple(JobRecord(f"{prefix}{i}", "work", "null", "default") for i in range(n))


def _batch(batch_id: str, n: int, *, allow_failures: bool = True, **kw: Any) -> BatchRecord:
    return BatchRecord(
        batch_id, f"d-{batch_id}", None, "default", allow_failures, _jobs(n), T0, **kw
    )


@asynccontextmanager
async def opened(store: Store, *, serve: bool = True) -> AsyncIterator[Store]:
    """The store open (and served, as a bus serves it: group commit) for the block."""
    await store.open()
    try:
        async with trio.open_nursery() as nursery:
            if serve:
                await nursery.start(store.serve)
            yield store
            nursery.cancel_scope.cancel()
    finally:
        await store.close()


@pytest.mark.parametrize("serve", [True, False])
async def test_outcomes_count_once_whatever_arrives_twice(
    stores: StoreFactory, serve: bool
) -> None:
    async with opened(stores(), serve=serve) as store:
        state = await store.create_batch(_batch("b1", 3))
        assert (state.total, state.pending, state.completed) == (3, 3, False)
        first = await store.record_batch(
            "b1", [JobOutcome("j0", "succeeded"), JobOutcome("j0", "failed")], T0
        )
        assert first.progressed_jobs == ("j0",)
        assert (first.state.processed, first.state.failed) == (1, 0)
        again = await store.record_batch(
            "b1", [JobOutcome("j0", "failed"), JobOutcome("j1", "failed")], T0 + timedelta(1)
        )
        assert again.progressed_jobs == ("j1",)
        assert again.first_failure == "j1"
        last = await store.record_batch("b1", [JobOutcome("j2", "succeeded")], T0, progress=False)
        assert last.progressed == ()
        assert last.finished_now
        assert (last.state.processed, last.state.failed, last.state.pending) == (3, 1, 0)
        late = await store.record_batch("b1", [JobOutcome("j2", "failed")], T0)
        assert not late.finished_now
        assert late.state == await store.get_batch("b1")
        assert late.state.failed == 1


async def test_chain_steps_count_once(stores: StoreFactory) -> None:
    nodes = _jobs(3, "n")
    callbacks = (("finally", JobRecord("cb", "report", '{"x": 1}', "default")),)
    async with opened(stores()) as store:
        await store.create_chain(ChainRecord("c1", "d1", "default", nodes, T0, callbacks))
        step = await store.record_chain_step("c1", 0, None, T0)
        assert step is not None
        assert (step.next_index, step.completed, step.next_node) == (1, False, nodes[1])
        assert await store.record_chain_step("c1", 0, None, T0) is None  # a duplicate
        assert await store.record_chain_step("c1", 2, None, T0) is None  # not its turn
        state = await store.get_chain("c1")
        assert (state.next_index, state.completed, state.failed) == (1, False, False)
        assert await store.fail_chain("c1", "cancelled", T0)
        assert not await store.fail_chain("c1", "again", T0)
        ended = await store.get_chain("c1")
        assert (ended.failed, ended.failure) == (True, "cancelled")
        assert await store.job_callbacks("chain:c1") == dict(callbacks)
        assert await store.job_callbacks("chain:other") == {}


async def test_unknown_ids_raise_not_found(stores: StoreFactory) -> None:
    async with opened(stores()) as store:
        for call in (
            store.get_batch("nope"),
            store.get_chain("nope"),
            store.record_batch("nope", [JobOutcome("j", "succeeded")], T0),
            store.record_chain_step("nope", 0, None, T0),
            store.cancel_batch("nope", T0),
            store.abandon_batch("nope", T0),
            store.fail_chain("nope", "x", T0),
            store.take_failed("nope"),
        ):
            with pytest.raises(NotFound, match="nope"):
                await call
        assert not await store.batch_cancelled("nope")


async def test_cancel_and_abandon(stores: StoreFactory) -> None:
    async with opened(stores()) as store:
        await store.create_batch(_batch("b1", 3))
        await store.record_batch("b1", [JobOutcome("j0", "succeeded")], T0)
        assert not await store.batch_cancelled("b1")
        cancelled = await store.cancel_batch("b1", T0)
        assert cancelled.cancelled_now
        assert (await store.cancel_batch("b1", T0)).cancelled_now is False
        assert await store.batch_cancelled("b1")
        abandoned = await store.abandon_batch("b1", T0)
        assert abandoned.finished_now
        assert abandoned.state.pending == 0
        assert (abandoned.state.processed, abandoned.state.completed) == (1, True)


async def test_unique_keys_are_held_until_they_expire(stores: StoreFactory) -> None:
    hour = T0 + timedelta(hours=1)
    async with opened(stores()) as a, opened(stores()) as b:
        assert await a.claim_unique("k", T0, hour)
        assert not await b.claim_unique("k", T0 + timedelta(minutes=59), hour)
        assert await b.claim_unique("k", hour, hour + timedelta(hours=1))  # expired: taken
        assert not await a.claim_unique("k", hour, hour)


async def test_failed_jobs_are_kept_replaced_and_taken(stores: StoreFactory) -> None:
    def failed(job_id: str, minutes: int, error: str) -> FailedJob:
        record = QueuedJob(job_id, "d1", "work", '{"n": 1}', "default", retry=2, attempt=3)
        return FailedJob(
            id=job_id,
            job_type="work",
            payload='{"n": 1}',
            queue="default",
            error=error,
            traceback="Traceback ...",
            attempts=3,
            failed_at=T0 + timedelta(minutes=minutes),
            job=record,
        )

    async with opened(stores()) as store:
        await store.record_failed(failed("a", 1, "E: 1"))
        await store.record_failed(failed("b", 0, "E: 2"))
        await store.record_failed(failed("a", 2, "E: 3"))  # a new failure replaces the old
        assert [(f.id, f.error) for f in await store.failed_jobs()] == [
            ("b", "E: 2"),
            ("a", "E: 3"),
        ]
        taken = await store.take_failed("a")
        assert taken == failed("a", 2, "E: 3")
        with pytest.raises(NotFound):
            await store.take_failed("a")
        assert [f.id for f in await store.failed_jobs()] == ["b"]


async def test_state_survives_a_new_store_on_the_same_backing(stores: StoreFactory) -> None:
    async with opened(stores()) as store:
        await store.create_batch(_batch("b1", 2))
        before = (await store.record_batch("b1", [JobOutcome("j1", "failed")], T0)).state
        await store.claim_callback("batch:b1", "progress", T0)
    async with opened(stores()) as again:
        assert await again.get_batch("b1") == before
        assert not await again.claim_callback("batch:b1", "progress", T0)


async def test_claims_and_outcomes_count_once_under_concurrent_stores(
    stores: StoreFactory,
) -> None:
    """Two stores (as two processes would) race on one backing from many tasks."""
    async with opened(stores()) as a, opened(stores()) as b:
        pair = [a, b]
        await a.create_batch(_batch("b1", 20))
        claims: list[bool] = []
        finished: list[bool] = []

        async def claim(store: Store) -> None:
            claims.append(await store.claim_callback("batch:b1", "finally", T0))

        async def report(store: Store, job_ids: list[str]) -> None:
            outcomes = [JobOutcome(job_id, "succeeded") for job_id in job_ids]
            update = await store.record_batch("b1", outcomes, T0)
            finished.append(update.finished_now)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(claim, pair[i % 2])
                # Every job is reported twice, by both stores, in overlapping groups.
                ids = [f"j{k}" for k in range(20) if k % 10 in (i, (i + 1) % 10)]
                nursery.start_soon(report, pair[i % 2], ids)
                nursery.start_soon(report, pair[(i + 1) % 2], ids)
        state = await b.get_batch("b1")
    assert claims.count(True) == 1
    assert len(claims) == 10
    assert finished.count(True) == 1
    assert (state.processed, state.pending, state.completed) == (20, 0, True)


async def test_group_commit_isolates_each_call(stores: StoreFactory) -> None:
    """Concurrent calls share one transaction; a failing call touches only itself."""
    failures: list[BaseException] = []
    claims: dict[int, bool] = {}
    async with opened(stores()) as store:
        record = _batch("b1", 1)
        await store.create_batch(record)

        async def claim(i: int) -> None:
            claims[i] = await store.claim_callback(f"batch:b{i}", "finally", T0)

        async def fail(call: Any) -> None:
            try:
                await call
            except (NotFound, StoreError, KeyError) as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(claim, i)
                if i % 10 == 0:
                    nursery.start_soon(fail, store.get_batch(f"missing-{i}"))
                    nursery.start_soon(fail, store.create_batch(record))  # duplicate id
        state = await store.get_batch("b1")
    assert claims == dict.fromkeys(range(30), True)
    assert [type(e).__name__ for e in failures].count("NotFound") == 3
    assert state.total == 1


async def test_prune_removes_finished_records_before_a_time(stores: StoreFactory) -> None:
    clock = ManualClock()
    async with open_bus(store=stores(), clock=clock) as bus:

        async def work(ctx: JobContext) -> None:
            if ctx.payload == "fail":
                raise ValueError("failed")

        bus.register("work", work)
        unstick = trio.Event()

        @bus.handler("stuck")
        async def stuck(ctx: JobContext) -> None:
            await unstick.wait()

        old_batch = await bus.batch(Job("work", 1)).finally_(lambda s: None).dispatch()
        old_chain = await bus.chain(Job("work", "fail")).dispatch()
        await bus.dispatch(Job("work", 9).unique_for(60))
        await bus.wait_idle()
        assert len(await bus.failed_jobs()) == 1
        running = await bus.batch(Job("stuck")).dispatch()
        clock.advance(3600)
        new_done = trio.Event()
        new_batch = await bus.batch(Job("work", 2)).finally_(lambda s: new_done.set()).dispatch()
        await new_done.wait()
        with pytest.raises(TypeError):
            await bus.prune("yesterday")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="aware"):
            await bus.prune(T0.replace(tzinfo=None))
        assert await bus.prune(T0 + timedelta(minutes=30)) == 2
        with pytest.raises(NotFound):
            await bus.find_batch(old_batch)
        with pytest.raises(NotFound):
            await bus.find_chain(old_chain)
        assert await bus.failed_jobs() == []
        assert not (await bus.find_batch(running)).completed
        assert (await bus.find_batch(new_batch)).completed
        # The unique key expired (and was pruned): a repeat is accepted.
        await bus.dispatch(Job("work", 9).unique_for(60))
        unstick.set()


class _FlakyStore(MemoryStore):
    """A MemoryStore whose reads fail a few times, as a store whose server restarts."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("the store is restarting")

    async def batch_cancelled(self, batch_id: str) -> bool:
        self._maybe_fail()
        return await super().batch_cancelled(batch_id)

    async def get_batch(self, batch_id: str) -> BatchState:
        self._maybe_fail()
        return await super().get_batch(batch_id)


async def test_a_store_error_before_a_job_starts_loses_no_job(autojump_clock: object) -> None:
    """The worker's reads before a batch job (is the batch cancelled? the state for a
    `Job` callback) are retried like outcomes, not counted out with the job unrun."""
    store = _FlakyStore(failures=0)
    ran: list[object] = []

    async def work(ctx: JobContext) -> None:
        ran.append(ctx.payload if ctx.state is None else "then")

    async with open_bus(store=store, queues={"default": 2}) as bus:
        bus.register("work", work)
        batch_id = await bus.batch(*(Job("work", i) for i in range(3))).then(Job("work")).dispatch()
        store.failures = 4
        await bus.wait_idle()
        state = await bus.find_batch(batch_id)
        stats = bus.stats()
    assert sorted(map(str, ran)) == ["0", "1", "2", "then"]
    assert (state.processed, state.completed) == (3, True)
    assert stats.store_errors >= 4
