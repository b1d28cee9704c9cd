"""`Bus.in_flight` (the store's `in_flight`): batches and chains not over yet, oldest first."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.bus import Handlers, Job, JobContext, MemoryStore, SQLiteStore, Store, open_bus

handlers = Handlers()


@handlers.handler("noop")
async def noop(ctx: JobContext) -> None:
    pass


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")


async def test_in_flight_lists_what_is_not_over(store: Store) -> None:
    async with open_bus(store=store, handlers=handlers) as bus:
        await bus.batch(Job("noop")).name("finished").dispatch()
        await bus.chain(Job("noop"), Job("noop")).dispatch()
        await bus.wait_idle()
        assert await bus.in_flight() == ([], [])
    async with open_bus(store=store, handlers=handlers, workers=False) as bus:
        first = await bus.batch(Job("noop"), Job("noop")).name("a").dispatch()
        second = await bus.batch(Job("noop")).name("b").dispatch()
        chain = await bus.chain(Job("noop"), Job("noop")).dispatch()
        batches, chains = await bus.in_flight()
        assert [b.batch_id for b in batches] == [first, second]
        assert [(b.total, b.pending, b.completed) for b in batches] == [
            (2, 2, False),
            (1, 1, False),
        ]
        assert [(c.chain_id, c.next_index, len(c.nodes)) for c in chains] == [(chain, 0, 2)]
        assert await bus.in_flight(limit=1) == ([batches[0]], chains)
        with pytest.raises(ValueError, match="limit must be >= 1"):
            await bus.in_flight(limit=0)
