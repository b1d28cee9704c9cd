"""Chains: jobs in order; a failure stops the chain; catch and finally run once."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.bus import ChainState, EventKind, Job, JobContext, MemoryStore, NotFound, open_bus

from .helpers import Recorder


async def test_a_chain_runs_its_jobs_in_order(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []
    finals: list[ChainState] = []
    contexts: list[JobContext] = []
    async with open_bus(queues={"default": 4, "slow": 1}) as bus:

        @bus.handler("step")
        async def step(ctx: JobContext) -> None:
            contexts.append(ctx)
            await trio.sleep(ctx.payload)
            log.append((ctx.queue, ctx.payload, trio.current_time()))

        chain_id = await (
            bus.chain(Job("step", 3), Job("step", 1).on_queue("default"), Job("step", 2).delay(1))
            .on_queue("slow")
            .finally_(finals.append)
            .dispatch()
        )
        await bus.wait_idle()
        state = await bus.find_chain(chain_id)
    assert log == [("slow", 3, 3.0), ("default", 1, 4.0), ("slow", 2, 7.0)]
    assert {ctx.chain_id for ctx in contexts} == {chain_id}
    assert len({ctx.dispatch_id for ctx in contexts}) == 1
    assert [ctx.job_id for ctx in contexts] == [node.node_id for node in state.nodes]
    assert state.completed
    assert not state.failed
    assert state.next_index == 3
    assert [node.job.payload for node in state.nodes] == [3, 1, 2]
    assert finals == [state]


async def test_a_failure_stops_the_chain_and_catch_and_finally_run_once(
    autojump_clock: Any,
) -> None:
    ran: list[int] = []
    caught: list[tuple[ChainState, BaseException]] = []
    finals: list[ChainState] = []
    async with open_bus() as bus:

        @bus.handler("step")
        async def step(ctx: JobContext) -> None:
            ran.append(ctx.payload)
            if ctx.payload == 2:
                raise KeyError("no stock")

        async def on_catch(state: ChainState, error: BaseException) -> None:
            await trio.sleep(1)
            caught.append((state, error))

        chain_id = await (
            bus.chain(Job("step", 1), Job("step", 2).retry(2).backoff(1), Job("step", 3))
            .catch(on_catch)
            .finally_(finals.append)
            .dispatch()
        )
        await bus.wait_idle()
        state = await bus.find_chain(chain_id)
    assert ran == [1, 2, 2, 2]
    assert trio.current_time() == 3  # two backoffs of 1s, then catch's own 1s
    assert state.failed
    assert not state.completed
    assert state.next_index == 1
    assert state.failure == "KeyError: 'no stock'"
    [(caught_state, error)] = caught
    assert caught_state == state
    assert isinstance(error, KeyError)
    assert finals == [state]


async def test_chain_events(autojump_clock: Any) -> None:
    events = Recorder()
    async with open_bus(observers=[events]) as bus:

        @bus.handler("ok")
        async def ok(ctx: JobContext) -> None:
            pass

        @bus.handler("bad")
        async def bad(ctx: JobContext) -> None:
            raise ValueError("bad")

        good = await bus.chain(Job("ok"), Job("ok"), Job("ok")).dispatch()
        broken = await bus.chain(Job("ok"), Job("bad"), Job("ok")).dispatch()
        await bus.wait_idle()

    def kinds(chain_id: str) -> list[EventKind]:
        return [
            e.kind
            for e in events.events
            if e.chain_id == chain_id and e.kind.value.startswith("chain")
        ]

    assert kinds(good) == [
        EventKind.CHAIN_STARTED,
        EventKind.CHAIN_ADVANCED,
        EventKind.CHAIN_ADVANCED,
        EventKind.CHAIN_COMPLETED,
    ]
    assert kinds(broken) == [
        EventKind.CHAIN_STARTED,
        EventKind.CHAIN_ADVANCED,
        EventKind.CHAIN_FAILED,
    ]
    [failed] = [e for e in events.of(EventKind.CHAIN_FAILED)]
    assert isinstance(failed.error, ValueError)
    assert failed.job_type == "bad"


async def test_a_reaped_coordinator_picks_up_where_it_was(autojump_clock: Any) -> None:
    class Store(MemoryStore):
        """A subclass: every step goes to the coordinator (a plain MemoryStore's workers
        record the steps that need no callback themselves, and no coordinator is made)."""

    ran: list[float] = []
    async with open_bus(store=Store(), idle_timeout=10) as bus:

        @bus.handler("step")
        async def step(ctx: JobContext) -> None:
            ran.append(trio.current_time())

        chain_id = await bus.chain(Job("step"), Job("step").delay(60), Job("step")).dispatch()
        await bus.wait_idle()
        stats = bus.stats().coordinators
        state = await bus.find_chain(chain_id)
    assert ran == [0, 60, 60]
    assert stats.reaped_total >= 1  # its coordinator was forgotten while the delay ran
    assert state.completed


async def test_a_callback_that_raises_is_an_event_and_the_bus_goes_on(
    autojump_clock: Any,
) -> None:
    events = Recorder()
    ran: list[int] = []

    def broken(state: ChainState) -> None:
        raise RuntimeError("callback bug")

    async with open_bus(observers=[events]) as bus:

        @bus.handler("step")
        async def step(ctx: JobContext) -> None:
            ran.append(ctx.payload)

        await bus.chain(Job("step", 1)).finally_(broken).dispatch()
        await bus.wait_idle()
        await bus.chain(Job("step", 2)).dispatch()
        await bus.wait_idle()
    assert ran == [1, 2]
    [failed] = events.of(EventKind.CALLBACK_FAILED)
    assert failed.job_type == "finally"
    assert str(failed.error) == "callback bug"


async def test_bad_chains_fail_at_build_or_dispatch(autojump_clock: Any) -> None:
    async with open_bus() as bus:

        @bus.handler("a")
        async def a(ctx: JobContext) -> None:
            pass

        with pytest.raises(ValueError, match="at least one Job"):
            bus.chain()
        with pytest.raises(TypeError, match="Job objects"):
            bus.chain("a")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="catch callback"):
            bus.chain(Job("a")).catch(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="finally_ callback"):
            bus.chain(Job("a")).finally_(None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unique_for"):
            bus.chain(Job("a").unique_for(5))
        with pytest.raises(LookupError):
            await bus.chain(Job("a"), Job("missing")).dispatch()
        with pytest.raises(TypeError, match="JSON"):
            await bus.chain(Job("a"), Job("a", object())).dispatch()
        with pytest.raises(NotFound):
            await bus.find_chain("no-such-chain")
        assert bus.stats().outstanding == 0
