"""`in_context`: a coroutine stepped in a context of our choosing, in the current task."""

from __future__ import annotations

import contextvars
from collections.abc import Generator
from typing import Any

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


class _Yields:
    """An awaitable that yields ``None`` up to its driver and returns what is sent back."""

    def __await__(self) -> Generator[None, Any, Any]:
        return (yield None)


async def _steps(n: int) -> list[Any]:
    got: list[Any] = []
    for _ in range(n):
        V.set(f"step {len(got)}")
        got.append(await _Yields())
    return got


def test_a_coroutine_that_returns_at_once_runs_in_the_context_in_one_step() -> None:
    async def quick() -> str:
        V.set("quick")
        return V.get()

    context = contextvars.copy_context()
    driver = in_context(context, quick()).__await__()
    with pytest.raises(StopIteration) as stop:
        next(driver)
    assert stop.value.value == "quick"
    assert context[V] == "quick"
    assert V.get() == "unset"


def test_every_resumption_is_a_step_in_the_context_whatever_is_sent() -> None:
    # Resumptions with None come through ``next``, others through ``send``: each is one step.
    context = contextvars.copy_context()
    driver = in_context(context, _steps(3)).__await__()
    assert next(driver) is None
    assert context[V] == "step 0"
    assert next(driver) is None  # resumed with None
    assert context[V] == "step 1"
    assert driver.send("b") is None
    assert context[V] == "step 2"
    with pytest.raises(StopIteration) as stop:
        driver.send("c")
    assert stop.value.value == [None, "b", "c"]
    assert V.get() == "unset"


def test_closing_a_suspended_one_closes_it_in_the_context() -> None:
    seen: list[str] = []

    async def suspended() -> None:
        V.set("inside")
        try:
            await _Yields()
        finally:
            seen.append(V.get())

    context = contextvars.copy_context()
    driver = in_context(context, suspended()).__await__()
    next(driver)
    driver.close()
    assert seen == ["inside"]
