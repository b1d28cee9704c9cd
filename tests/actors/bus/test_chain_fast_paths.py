"""DESIGN rule 6 for chains on a plain MemoryStore and the memory broker: a chain stored and
its first job queued with no scheduling point in between (`Admission._admit_chain`), and its
steps settled by their workers (`Chains.finish`), end exactly as on subclasses of the store
and queue, which take the awaited, shielded paths through the coordinators."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from actors import trio_clock
from actors.bus import (
    ChainRecord,
    ChainStep,
    Job,
    JobContext,
    JobRecord,
    MemoryBroker,
    MemoryStore,
    QueuedJob,
    UnknownJobType,
    _memory_worker,
    open_bus,
)

from .helpers import Recorder
from .test_fast_paths import SlowBroker, SlowStore, request

T0 = datetime(2026, 1, 1, tzinfo=UTC)


_DISPATCH = {"dispatch_started", "dispatch_succeeded", "dispatch_failed", "chain_started"}


def _by_dispatch(events: list[Any]) -> dict[tuple[int, bool], list[tuple[Any, ...]]]:
    """Each dispatch's own events, and then its chain's, in order, their ids numbered in
    order of appearance (each bus makes its own ids). Between the two the order may differ:
    a put that yields lets a worker start the job before the dispatch reports, as any
    broker's may, and Trio runs the tasks ready at once in any order."""
    out: dict[tuple[int, bool], list[tuple[Any, ...]]] = {}
    dispatches: dict[str, int] = {}
    numbered: dict[tuple[int, bool], dict[str, str]] = {}
    for event in events:
        number = dispatches.setdefault(event.dispatch_id, len(dispatches))
        key = (number, event.kind in _DISPATCH)
        ids = numbered.setdefault(key, {})

        def named(value: str | None, ids: dict[str, str] = ids) -> str | None:
            return None if value is None else ids.setdefault(value, f"#{len(ids)}")

        out.setdefault(key, []).append(
            (
                event.kind,
                event.chain_id is None,
                named(event.job_id),
                event.job_type,
                event.queue,
                event.duration,
                event.time,
                None if event.error is None else repr(event.error),
            )
        )
    return out


async def _admissions(store: MemoryStore, broker: MemoryBroker) -> tuple[Any, ...]:
    """Chains dispatched with an observer: accepted, refused, cancelled before acceptance
    and cancelled while waiting for room; what the handlers, the observer and the store saw."""
    events = Recorder()
    seen: list[tuple[Any, str, float]] = []
    outcomes: list[str] = []
    t0 = trio.current_time()

    async def work(ctx: JobContext) -> None:
        seen.append((ctx.payload, request.get(), trio.current_time() - t0))
        await trio.sleep(1)

    request.set("outer")
    async with open_bus(
        store=store,
        broker=broker,
        observers=[events],
        clock=trio_clock(T0),
        queues={"default": 1},
        max_pending=2,
    ) as bus:
        bus.register("w", work)
        ids = [await bus.chain(Job("w", "a0"), Job("w", "a1")).dispatch()]
        with pytest.raises(UnknownJobType):
            await bus.chain(Job("w", "b0"), Job("nobody")).dispatch()
        with trio.CancelScope() as scope:
            scope.cancel()
            await bus.chain(Job("w", "c0")).dispatch()
        outcomes.append(f"cancelled first: {scope.cancelled_caught}")
        ids.append(await bus.chain(Job("w", "d0"), Job("w", "d1")).on_queue("default").dispatch())
        # Full (two jobs out): this one waits for room, and its deadline passes meanwhile.
        with trio.move_on_after(0.5) as scope:
            await bus.chain(Job("w", "e0")).dispatch()
        outcomes.append(f"cancelled waiting: {scope.cancelled_caught}")
        ids.append(await bus.chain(Job("w", "f0")).dispatch())  # waits, then goes in
        await bus.wait_idle()
        states = [await bus.find_chain(chain_id) for chain_id in ids]
        stats = bus.stats()
    return (
        seen,
        outcomes,
        _by_dispatch(events.events),
        [
            (s.completed, s.failed, s.next_index, len(s.nodes), s.created_at, s.updated_at)
            for s in states
        ],
        (stats.outstanding, stats.coordinators.busy),
        trio.current_time() - t0,
    )


async def test_a_chain_admitted_at_once_ends_as_an_awaited_one(autojump_clock: Any) -> None:
    fast = await _admissions(MemoryStore(), MemoryBroker())
    slow = await _admissions(SlowStore(), SlowBroker())
    assert slow == fast
    seen, outcomes = fast[0], fast[1]
    assert [payload for payload, _, _ in seen] == ["a0", "d0", "a1", "d1", "f0"]
    assert {value for _, value, _ in seen} == {"outer"}
    assert outcomes == ["cancelled first: True", "cancelled waiting: True"]
    # Nothing of the refused or cancelled chains reached the observer but their refusal.
    kinds = {key: [event[0] for event in events] for key, events in fast[2].items()}
    assert kinds[1, True] == ["dispatch_started", "dispatch_failed"]  # refused
    assert kinds[3, True] == ["dispatch_started", "dispatch_failed"]  # cancelled waiting
    assert kinds[0, True] == ["dispatch_started", "chain_started", "dispatch_succeeded"]
    assert kinds[0, False][-1] == "chain_completed"
    # The chain cancelled before it was checked reported nothing.
    assert sorted({number for number, _ in kinds}) == [0, 1, 2, 3, 4]


async def _quiet_chains(store: MemoryStore, broker: MemoryBroker) -> tuple[Any, ...]:
    """Chains with no observer (their steps may be settled by their workers): the stored
    states, timestamps included, and when each step ran."""
    seen: list[tuple[Any, float]] = []
    t0 = trio.current_time()

    async def work(ctx: JobContext) -> None:
        seen.append((ctx.payload, trio.current_time() - t0))
        await trio.sleep(0.25)

    async with open_bus(store=store, broker=broker, clock=trio_clock(T0)) as bus:
        bus.register("w", work)
        ids = [await bus.chain(*(Job("w", (c, i)) for i in range(3))).dispatch() for c in range(4)]
        await bus.wait_idle()
        states = [await bus.find_chain(chain_id) for chain_id in ids]
        stats = bus.stats()
    return (
        sorted(seen),
        [(s.completed, s.next_index, s.created_at, s.updated_at) for s in states],
        (stats.outstanding, stats.coordinators.messages_total, stats.coordinators.busy),
    )


async def test_steps_settled_by_their_workers_are_stamped_as_by_the_coordinator(
    autojump_clock: Any,
) -> None:
    fast = await _quiet_chains(MemoryStore(), MemoryBroker())
    slow = await _quiet_chains(SlowStore(), SlowBroker())
    assert fast == slow
    assert fast[1][0] == (True, 3, T0, datetime(2026, 1, 1, 0, 0, 0, 750000, tzinfo=UTC))


async def _kept_chains(store: MemoryStore, broker: MemoryBroker) -> tuple[Any, ...]:
    """Chains whose next step a worker may run itself, with no one woken for it: what the
    handlers saw (and a context variable each wrote), the stored states, the stats, Trio
    time; and which worker tasks ran each chain's steps (apart: it may differ)."""
    seen: list[tuple[Any, str, float]] = []
    tasks: dict[str, list[object]] = {}
    t0 = trio.current_time()

    async def work(ctx: JobContext) -> None:
        seen.append((ctx.payload, request.get(), trio.current_time() - t0))
        request.set(f"job {ctx.payload}")  # seen by no other job
        assert ctx.chain_id is not None
        tasks.setdefault(ctx.chain_id, []).append(trio.lowlevel.current_task())
        if ctx.payload[1] == 1:
            await trio.sleep(0.5)

    request.set("outer")
    queues = {"default": 6, "other": 1}  # a worker for every job at once, and some parked
    async with open_bus(store=store, broker=broker, clock=trio_clock(T0), queues=queues) as bus:
        bus.register("w", work)
        ids = [await bus.chain(*(Job("w", (c, i)) for i in range(3))).dispatch() for c in range(3)]
        # Next steps on another queue, delayed, on a lane: each queued the usual way.
        odd = (
            Job("w", ("o", 1)).on_queue("other").timeout(5).retry(2).backoff(0.5),
            Job("w", ("o", 2)).delay(1),
        )
        lane = (Job("w", ("l", 0)).lane("k"), Job("w", ("l", 2)).lane("k"))
        ids += [
            await bus.chain(Job("w", ("o", 0)), *odd).dispatch(),
            await bus.chain(*lane).dispatch(),
        ]
        await bus.wait_idle()
        # Alone: one whose second step sleeps, and one longer than a worker runs back to
        # back (it yields after `DRAIN` jobs).
        ids.append(await bus.chain(*(Job("w", ("s", i)) for i in range(3))).dispatch())
        await bus.wait_idle()
        long = [Job("w", ("d", i)) for i in range(2, _memory_worker.DRAIN + 4)]
        ids.append(await bus.chain(*long).dispatch())
        await bus.wait_idle()
        states = [await bus.find_chain(chain_id) for chain_id in ids]
        stats = bus.stats()
    return (
        sorted(seen, key=str),
        [(s.completed, s.next_index, s.created_at, s.updated_at) for s in states],
        # The nodes as stored (kept as first attempts on the fast path, `JobRecord`s else).
        [[node.job for node in s.nodes] for s in states],
        (stats.outstanding, stats.coordinators.messages_total, stats.coordinators.busy),
        trio.current_time() - t0,
        [len(set(tasks[chain_id])) for chain_id in ids[-2:]],
    )


async def test_a_next_step_left_to_its_worker_ends_as_one_woken_for(autojump_clock: Any) -> None:
    """`Chains.finish` with ``keep``: a next step due now on the worker's own queue is left
    to that worker, which runs it next without a yield and with nobody woken; everything a
    user sees is as when a parked worker is woken for it (the subclasses' path)."""
    fast = await _kept_chains(MemoryStore(), MemoryBroker())
    slow = await _kept_chains(SlowStore(), SlowBroker())
    assert fast[:-1] == slow[:-1]
    assert {value for _, value, _ in fast[0]} == {"outer"}
    assert [state[:2] for state in fast[1]] == [(True, 3)] * 4 + [(True, 2), (True, 3), (True, 18)]
    # A chain alone ran in the one worker that took its first step (with others parked;
    # the subclasses' workers wake one for each next step); the long one passed to another
    # worker once, after `DRAIN` steps.
    assert fast[-1] == [1, 2]
    assert slow[-1][0] > 1


async def test_a_chain_kept_as_its_attempts_reads_as_one_stored_as_records() -> None:
    """`MemoryStore.start_queued_chain_now` (the admission's fast path) against
    `create_chain`: the same state, nodes, steps and in-flight listing."""
    nodes = (
        JobRecord("n0", "w", '{"a": 1}', "default", 0.0, 5.0, 2, 0.5, "k"),
        JobRecord("n1", "w", "null", "other", 1.5),
    )
    jobs = tuple(
        QueuedJob(
            n.job_id,
            "d",
            n.job_type,
            n.payload,
            n.queue,
            n.timeout,
            n.retry,
            n.backoff,
            chain_id="c",
            chain_index=i,
            lane=n.lane,
        )
        for i, n in enumerate(nodes)
    )
    kept, stored = MemoryStore(), MemoryStore()
    kept.start_queued_chain_now("c", "d", "default", jobs, (0.0, 1.5), T0)
    await stored.create_chain(ChainRecord("c", "d", "default", nodes, T0))
    assert await kept.get_chain("c") == await stored.get_chain("c")
    assert await kept.in_flight(5) == await stored.in_flight(5)
    later = datetime(2026, 1, 2, tzinfo=UTC)
    assert kept.advance_chain_now("c", 0, later) == (jobs[1], 1.5)
    assert stored.advance_chain_now("c", 0, later) == ChainStep(1, False, False, nodes[1])
    assert await kept.get_chain("c") == await stored.get_chain("c")
    assert kept.advance_chain_now("c", 0, later) is None  # a duplicate
    step = kept.advance_chain_now("c", 1, later)
    assert step == stored.record_chain_step_now("c", 1, None, later)
    assert await kept.get_chain("c") == await stored.get_chain("c")
