"""DESIGN rule 6: the bus's fast paths (a plain MemoryStore recorded without a scheduling
point, the memory broker's puts and acks without yielding, a worker taking the next ready job
after telling its coordinator) are invisible: the same workload on subclasses, which take the
slow paths, ends the same way."""

from __future__ import annotations

import sqlite3
from collections import Counter
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import trio_clock
from actors.bus import (
    Job,
    JobContext,
    MemoryBroker,
    MemoryQueue,
    MemoryStore,
    SQLiteStore,
    Store,
    _recording,
    _sqlite_ops,
    open_bus,
)
from actors.bus._parts import INSIDE

from .helpers import Recorder, noop

request: ContextVar[str] = ContextVar("request", default="none")


class SlowStore(MemoryStore):
    """A subclass: the bus records through its async methods."""


class SlowQueue(MemoryQueue):
    """A subclass: the bus awaits its put and ack."""


class SlowBroker(MemoryBroker):
    def queue(self, name: str) -> MemoryQueue:
        return self.__dict__.setdefault(name, SlowQueue(name))  # type: ignore[no-any-return]


async def _workload(store: MemoryStore, broker: MemoryBroker) -> tuple[Any, ...]:
    events = Recorder()
    seen: list[tuple[Any, int, str]] = []
    ends: list[Any] = []

    async def work(ctx: JobContext) -> None:
        seen.append((ctx.payload, ctx.attempt, request.get()))
        await trio.sleep(0.1)
        if ctx.payload == "flaky" and ctx.attempt == 1:
            raise ValueError("once")
        if ctx.payload == "bad":
            raise KeyError("bad")

    request.set("outer")
    async with open_bus(store=store, broker=broker, observers=[events]) as bus:
        bus.register("w", work)
        await bus.dispatch(Job("w", "plain"))
        await bus.dispatch(Job("w", "flaky").retry(1).backoff(1))
        chain_id = (
            await bus.chain(Job("w", 1), Job("w", 2), Job("w", 3))
            .finally_(lambda s: ends.append(("chain", s.completed, s.next_index)))
            .dispatch()
        )
        batch_id = await (
            bus.batch(*(Job("w", i) for i in range(5)), Job("w", "bad"))
            .allow_failures()
            .finally_(lambda s: ends.append(("batch", s.processed, s.failed)))
            .dispatch()
        )
        await bus.wait_idle()
        chain = await bus.find_chain(chain_id)
        batch = await bus.find_batch(batch_id)
        failed = [(f.job_type, f.error) for f in await bus.failed_jobs()]
    return (
        sorted(seen, key=str),
        sorted(ends),
        Counter(events.kinds()),
        (chain.completed, chain.next_index),
        (batch.processed, batch.failed, batch.completed),
        failed,
        trio.current_time(),
    )


async def test_the_fast_paths_end_as_the_slow_ones(autojump_clock: Any) -> None:
    fast = await _workload(MemoryStore(), MemoryBroker())
    start = trio.current_time()
    slow = await _workload(SlowStore(), SlowBroker())
    assert slow[:-1] == fast[:-1]
    assert slow[-1] - start == fast[-1]  # and take the same (Trio) time


async def _chains(store: Store, broker: MemoryBroker, pause: float = 0.1) -> tuple[Any, ...]:
    """Chains with no observer (so a step may be settled without its coordinator): what
    handlers see, how the chains and their callbacks end, the stats, and when."""
    seen: list[tuple[Any, str, bool, float]] = []
    ends: list[Any] = []

    async def work(ctx: JobContext) -> None:
        seen.append((ctx.payload, request.get(), INSIDE.get(), trio.current_effective_deadline()))
        await trio.sleep(pause)
        if ctx.payload == "bad":
            raise KeyError("bad")

    def end(kind: str) -> Any:
        def callback(state: Any, *error: BaseException) -> None:
            ends.append((kind, state.completed, state.next_index, request.get(), INSIDE.get()))

        return callback

    request.set("outer")
    async with open_bus(store=store, broker=broker, queues={"default": 2}) as bus:
        bus.register("w", work)
        ids = [
            await bus.chain(Job("w", (c, 0)), Job("w", (c, 1)), Job("w", (c, 2)))
            .finally_(end(f"chain {c}"))
            .dispatch()
            for c in range(3)
        ]
        ids.append(
            await bus.chain(Job("w", "ok"), Job("w", "bad"), Job("w", "never"))
            .catch(end("catch"))
            .finally_(end("finally"))
            .dispatch()
        )
        ids.append(await bus.chain(Job("w", "quiet 0"), Job("w", "quiet 1")).dispatch())
        await bus.wait_idle()
        states = [await bus.find_chain(chain_id) for chain_id in ids]
        stats = bus.stats()
        inline = bus._chains.handled_inline
    return (
        sorted(seen, key=str),
        sorted(ends),
        [(s.completed, s.failed, s.next_index, s.failure) for s in states],
        (stats.outstanding, stats.coordinators.messages_total, stats.coordinators.busy),
        trio.current_time(),
        inline,
    )


async def test_a_chain_step_recorded_by_its_worker_ends_as_the_coordinators(
    autojump_clock: Any,
) -> None:
    """`Chains.finish`'s fast path (a plain MemoryStore, the memory broker, no observer): the
    worker records a step that queues the next one. Handlers, callbacks, chain states, stats
    and timing are the same as when the coordinator records every step."""
    fast = await _chains(MemoryStore(), MemoryBroker())
    start = trio.current_time()
    slow = await _chains(SlowStore(), SlowBroker())
    # The steps that queued a next one, or ended a chain without callbacks, took the fast
    # path; none did on the subclasses.
    assert fast[-1] == 9
    assert slow[-1] == 0
    assert slow[:-2] == fast[:-2]
    assert slow[-2] - start == pytest.approx(fast[-2], abs=1e-9)
    assert {value for _, value, _, _ in fast[0]} == {"outer"}
    assert fast[2] == [(True, False, 3, None)] * 3 + [
        (False, True, 1, "KeyError: 'bad'"),
        (True, False, 2, None),
    ]


class SlowSQLiteStore(SQLiteStore):
    """A subclass: every chain step goes through its coordinator."""


async def test_a_chain_step_settled_by_the_sqlite_writer_ends_as_the_coordinators(
    tmp_path: Path,
) -> None:
    """`Chains.finish`'s fast path on a served `SQLiteStore`: the step goes to the writer with
    no caller waiting, and the writer's task settles it once its group commits. Handlers,
    callbacks, chain states and stats are the same as through the coordinator. (The real
    clock, as every SQLite test: the handlers do not sleep.)"""
    fast = await _chains(SQLiteStore(tmp_path / "fast.db"), MemoryBroker(), pause=0)
    slow = await _chains(SlowSQLiteStore(tmp_path / "slow.db"), MemoryBroker(), pause=0)
    assert (fast[-1], slow[-1]) == (9, 0)
    assert slow[:-2] == fast[:-2]
    assert fast[2] == [(True, False, 3, None)] * 3 + [
        (False, True, 1, "KeyError: 'bad'"),
        (True, False, 2, None),
    ]


async def test_a_failed_write_on_the_fast_path_is_retried_as_the_coordinators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer's first try of a step fails ("database is locked", twice): the coordinator
    retries it from that failure, logged and counted as its own first try would be."""
    monkeypatch.setattr(_recording, "FIRST_PAUSE", 0.0)
    real = _sqlite_ops.record_chain_step
    failures = [0]

    def locked(conn: Any, *args: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        return real(conn, *args)

    monkeypatch.setattr(_sqlite_ops, "record_chain_step", locked)
    seen = []
    for store in (SQLiteStore(tmp_path / "fast.db"), SlowSQLiteStore(tmp_path / "slow.db")):
        caplog.clear()
        async with open_bus(store=store) as bus:
            bus.register("w", noop)
            failures[0] = 2
            chain_id = await bus.chain(Job("w"), Job("w")).dispatch()
            await bus.wait_idle()
            state = await bus.find_chain(chain_id)
            stats = bus.stats()
            retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
            seen.append((state.completed, stats.store_errors, stats.unrecorded, len(retried)))
            inline = bus._chains.handled_inline
        assert all("recording step 0 " in m and "database is locked" in m for m in retried)
        assert inline == (1 if type(store) is SQLiteStore else 0)  # step 1 took the fast path
    assert seen == [(True, 2, 0, 2)] * 2


async def test_a_step_of_a_chain_gone_from_sqlite_is_dropped_as_by_the_coordinator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The chain's row goes (pruned by another process) while its first step runs: on the
    fast path the writer's answer is `NotFound`, and the step is dropped, logged and
    acknowledged as the coordinator drops it (the same log, stats and handler runs)."""
    seen = []
    for store in (SQLiteStore(tmp_path / "fast.db"), SlowSQLiteStore(tmp_path / "slow.db")):
        caplog.clear()
        ran: list[int] = []

        async def work(ctx: JobContext, path: str = store.path, ran: list[int] = ran) -> None:
            ran.append(ctx.payload)
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("DELETE FROM chain_nodes WHERE chain_id = ?", (ctx.chain_id,))
                other.execute("DELETE FROM chains WHERE chain_id = ?", (ctx.chain_id,))
            finally:
                other.close()

        async with open_bus(store=store) as bus:
            bus.register("w", work)
            chain_id = await bus.chain(Job("w", 0), Job("w", 1)).dispatch()
            await bus.wait_idle()
            stats = bus.stats()
            inline = bus._chains.handled_inline
        dropped = [
            r.getMessage().replace(chain_id.rsplit("-", 1)[0], "ID")  # (the bus's id prefix)
            for r in caplog.records
            if "cannot record" in r.getMessage()
        ]
        seen.append((ran, stats.outstanding, stats.store_errors, stats.unrecorded, dropped))
        assert inline == 0  # the step was handed on to the coordinator, recorded as gone
        # Who dropped it: the writer's answer on the fast path, the coordinator's write else.
        where = {r.module for r in caplog.records if "cannot record" in r.getMessage()}
        assert where == ({"_chains"} if type(store) is SQLiteStore else {"_recording"})
    assert seen[0] == seen[1]
    assert seen[0][0] == [0]
    assert len(seen[0][-1]) == 1


async def _batches(store: Store, broker: MemoryBroker) -> tuple[Any, ...]:
    """Batches with no observer (so a success may be counted by its worker): what handlers
    see (the context, the batch's state from the store), how the batches and their
    callbacks end, the stats, and when."""
    seen: list[tuple[Any, ...]] = []
    ends: list[Any] = []

    names = ["quiet", "ends", "allowed", "failing", "cancelled", "progress"]

    async def work(ctx: JobContext) -> None:
        name, index = ctx.payload
        # No two jobs end at one instant: the order of tasks woken together is Trio's
        # (shuffled), and a job reading the store then could see either order on any path.
        await trio.sleep(0.1 + 0.0137 * index + 0.00101 * names.index(name))
        assert ctx.batch_id is not None
        state = await bus.find_batch(ctx.batch_id)
        seen.append(
            (
                name,
                index,
                request.get(),
                INSIDE.get(),
                state.processed,
                state.pending,
                state.updated_at,
            )
        )
        request.set("leaked")  # never seen by the next job
        # The failing batch's last job but one fails, with nothing of it left queued: which of its
        # queued jobs a worker would take (and find cancelled) before the coordinator took
        # them off the queue is down to the order of tasks at that instant, on any path.
        if (name, index) in (("failing", 5), ("allowed", 3)):
            raise KeyError("bad")

    def end(kind: str) -> Any:
        def callback(state: Any, *error: BaseException) -> None:
            ends.append((kind, state.processed, state.failed, state.pending, request.get()))

        return callback

    request.set("outer")
    # (a clock of our own, so both runs stamp the same times; a `trio_clock`'s readings may
    # be kept and made datetimes only when read: `MemoryBatch.count_success`)
    clock = trio_clock(datetime(2026, 1, 1, tzinfo=UTC))
    async with open_bus(store=store, broker=broker, queues={"default": 2}, clock=clock) as bus:
        bus.register("w", work)
        ids = []
        for name in names:
            builder = bus.batch(*(Job("w", (name, i)) for i in range(7)))
            if name != "quiet":
                builder = builder.then(end(f"{name} then")).finally_(end(f"{name} finally"))
            if name in ("allowed", "failing"):
                builder = builder.catch(end(f"{name} catch"))
            if name == "allowed":
                builder = builder.allow_failures()
            if name == "progress":
                builder = builder.progress(end("progress"))
            ids.append(await builder.dispatch())
        await trio.sleep(2.1)  # while the fifth batch runs
        await bus.cancel_batch(ids[4])
        await bus.wait_idle()
        states = [await bus.find_batch(batch_id) for batch_id in ids]
        stats = bus.stats()
        inline = bus._batches.handled_inline
    return (
        sorted(seen, key=str),
        sorted(ends),
        [
            (s.processed, s.failed, s.pending, s.cancelled, s.completed, s.updated_at)
            for s in states
        ],
        (stats.outstanding, stats.coordinators.messages_total, stats.coordinators.busy),
        trio.current_time(),
        inline,
    )


async def test_a_batch_success_counted_by_its_worker_ends_as_the_coordinators(
    autojump_clock: Any,
) -> None:
    """`Batches.settle_now` (a plain MemoryStore, the memory broker, no observer, no
    progress callback): the worker counts a success that does not end its batch. Handlers
    (their context, the batch state they read), callbacks, batch states, stats and timing
    are the same as when the coordinator records every outcome."""
    fast = await _batches(MemoryStore(), MemoryBroker())
    start = trio.current_time()
    slow = await _batches(SlowStore(), SlowBroker())
    assert fast[-1] > 10  # most successes took the fast path; none did on the subclasses
    assert slow[-1] == 0
    assert slow[:-2] == fast[:-2]
    assert slow[-2] - start == pytest.approx(fast[-2], abs=1e-9)
    assert {(value, inside) for _, _, value, inside, _, _, _ in fast[0]} == {("outer", True)}
    done = (7, 0, 0, False, True)
    assert [state[:5] for state in fast[2]] == [
        done,
        done,
        (7, 1, 0, False, True),
        (7, 1, 0, True, True),
        (3, 0, 0, True, True),  # cancel_batch: the jobs not started never ran
        done,
    ]
    # Stamped with each outcome: the last comes after every read the handlers made.
    quiet = [s[6] for s in fast[0] if s[0] == "quiet"]
    assert fast[2][0][5] > max(quiet) > min(quiet)
    assert ("failing catch", 6, 1, 1, "outer") in fast[1]  # the last job was running
    assert ("failing then", 7, 1, 0, "outer") not in fast[1]
    assert fast[3] == (0, len(fast[0]) + 1, 0)  # every outcome and the cancel, handled
