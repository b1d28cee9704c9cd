"""`in_context`: a coroutine stepped in a context of our choosing, in the current task."""

from __future__ import annotations

import contextvars

import pytest
import trio
import trio.testing

from actors._contexts import in_context

V: contextvars.ContextVar[str] = contextvars.ContextVar("V", default="unset")


async def _writes(value: str) -> str:
    seen = V.get()
    V.set(value)
    await trio.sleep(1)
    assert V.get() == value  # its own write survives its own checkpoints
    return seen


async def test_writes_stay_in_the_given_context_and_the_result_comes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    V.set("task")
    base = contextvars.copy_context()
    first = base.copy()
    assert await in_context(first, _writes("job 1")) == "task"
    assert await in_context(base.copy(), _writes("job 2")) == "task"  # no leak from job 1
    assert V.get() == "task"
    assert first[V] == "job 1"
    assert trio.current_time() == 2


async def test_exceptions_and_cancellation_are_the_tasks_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def boom() -> None:
        await trio.sleep(1)
        raise KeyError("x")

    with pytest.raises(KeyError):
        await in_context(contextvars.copy_context(), boom())

    cleaned: list[str] = []

    async def forever() -> None:
        V.set("inside")
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append(V.get())

    with trio.move_on_after(5) as scope:
        await in_context(contextvars.copy_context(), forever())
    assert scope.cancelled_caught
    assert cleaned == ["inside"]  # the Cancelled was thrown in under the given context
    assert trio.current_time() == 6
    assert V.get() == "unset"


async def test_tasks_and_threads_started_inside_see_the_given_context() -> None:
    async def spawn() -> list[str]:
        V.set("job")
        got: list[str] = []

        async def child() -> None:
            got.append(V.get())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
        got.append(await trio.to_thread.run_sync(V.get))
        return got

    assert await in_context(contextvars.copy_context(), spawn()) == ["job", "job"]
    assert V.get() == "unset"
