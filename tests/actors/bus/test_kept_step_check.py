"""A chain step kept by its worker (`MemoryQueue.put_kept`): the worker skips the cancel
check before it, as `Chains.finish` made one just before, with nothing in between that
yields or runs user code (so the second could only find what the first found). Chains on
the fast and slow paths are compared in test_chain_fast_paths.py."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.bus import Job, JobContext, MemoryBroker, MemoryStore, open_bus


async def test_a_kept_step_is_checked_once(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One cancel check per step after the first: `Chains.finish`'s (the worker's own one
    would find the same)."""
    checks = 0
    check = trio.lowlevel.checkpoint_if_cancelled

    async def counted() -> None:
        nonlocal checks
        checks += 1
        await check()

    broker = MemoryBroker()
    async with open_bus(broker=broker, store=MemoryStore(), queues={"default": 1}) as bus:

        async def work(ctx: JobContext) -> None:
            pass

        bus.register("w", work)
        await bus.wait_idle()
        monkeypatch.setattr(trio.lowlevel, "checkpoint_if_cancelled", counted)
        await bus.chain(*[Job("w", n) for n in range(6)]).dispatch()
        await bus.wait_idle()
        monkeypatch.undo()
        assert not broker.queue("default").checked
    during = checks
    # Each step's `Chains.finish`, and the dispatch's and wait_idle's; each of the five kept
    # steps' workers checked once more before (13).
    assert during == 6 + 2
