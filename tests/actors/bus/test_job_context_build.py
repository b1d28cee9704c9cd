"""DESIGN rule 6 for the worker's `JobContext`: built as one attribute dict (no __init__
frame), it is the object its constructor would make, for handlers and middleware alike."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from actors.bus import CallNext, Job, JobContext, MemoryBroker, MemoryStore, open_bus
from actors.bus._model import NO_FLAGS


def _made(ctx: JobContext) -> JobContext:
    """The same fields through the constructor."""
    return JobContext(
        ctx.payload,
        ctx.attempt,
        ctx.job_type,
        ctx.dispatch_id,
        ctx.job_id,
        ctx.chain_id,
        ctx.batch_id,
        ctx.queue,
        ctx.state,
        ctx.error,
        ctx.delivery,
        ctx.fence,
    )


@pytest.mark.parametrize("with_middleware", [False, True])
async def test_a_worker_built_context_is_the_constructed_one(
    autojump_clock: Any, with_middleware: bool
) -> None:
    seen: list[JobContext] = []
    in_middleware: list[JobContext] = []

    async def work(ctx: JobContext) -> None:
        seen.append(ctx)

    async def watch(ctx: JobContext, call_next: CallNext) -> None:
        in_middleware.append(ctx)
        await call_next(ctx)

    middleware = [watch] if with_middleware else []
    async with open_bus(
        broker=MemoryBroker(), store=MemoryStore(), queues={"default": 2}, middleware=middleware
    ) as bus:
        bus.register("w", work)
        await bus.chain(Job("w", {"c": 1}), Job("w", [2]).timeout(5), Job("w", "c3")).dispatch()
        await bus.batch(*[Job("w", {"b": n}) for n in range(5)]).dispatch()
        await bus.dispatch_many([Job("w", n) for n in range(5)] + [Job("w", 9).timeout(3)])
        await bus.wait_idle()
    assert len(seen) == 14
    assert {ctx.chain_id is None for ctx in seen} == {True, False}
    assert {ctx.batch_id is None for ctx in seen} == {True, False}
    if with_middleware:
        assert [id(ctx) for ctx in in_middleware] == [id(ctx) for ctx in seen]
    for ctx in seen:
        made = _made(ctx)
        assert type(ctx) is JobContext
        assert ctx == made
        assert repr(ctx) == repr(made)
        assert list(vars(ctx)) == list(vars(made))  # same attributes, in the same order
        public = attrs.filters.exclude(attrs.fields(JobContext)._flags)
        assert attrs.asdict(ctx, filter=public) == attrs.asdict(made, filter=public)
        assert attrs.evolve(ctx, attempt=7) == attrs.evolve(made, attempt=7)
        assert attrs.evolve(ctx)._flags is ctx._flags
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            ctx.attempt = 2  # type: ignore[misc]
        # Flags of their own where middleware or a timeout may set them, else the shared,
        # read-only ones (nothing can set them).
        bare = not with_middleware and ctx.payload not in ([2], 9)
        if not bare:
            assert ctx._flags is not NO_FLAGS
            assert not ctx._flags.no_retry
        assert len({id(ctx._flags) for ctx in seen if ctx._flags is not NO_FLAGS}) == len(
            [ctx for ctx in seen if ctx._flags is not NO_FLAGS]
        )
