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
from actors.bus import Job, JobContext, MemoryBroker, MemoryStore, UnknownJobType, open_bus

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
