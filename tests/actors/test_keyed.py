"""The keyed-actor registry's own surface: tell, on_error, take_pending, backpressure."""

from __future__ import annotations

import contextvars
import math
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.lowlevel import current_task

from actors import ActorCrashed, ComponentClosed, KeyedStats, open_keyed


async def test_told_messages_are_handled_in_order_per_key(autojump_clock: Any) -> None:
    seen: list[tuple[str, int, float]] = []

    async def handler(key: str, message: int) -> None:
        await trio.sleep(1)
        seen.append((key, message, trio.current_time()))

    async with open_keyed(handler) as keyed:
        for i in range(3):
            await keyed.tell("a", i)
            await keyed.tell("b", i)
        assert trio.current_time() == 0.0  # tell does not wait for the handler
    assert [m for k, m, _ in seen if k == "a"] == [0, 1, 2]
    assert [t for k, _, t in seen if k == "b"] == [1.0, 2.0, 3.0]


async def test_handler_error_on_a_told_message_goes_to_on_error_and_key_goes_on() -> None:
    errors: list[tuple[str, int, str]] = []
    handled: list[int] = []

    async def handler(key: str, message: int) -> None:
        if message == 1:
            raise RuntimeError("bad message")
        handled.append(message)

    def on_error(key: str, message: int, exc: BaseException) -> None:
        errors.append((key, message, str(exc)))

    async with open_keyed(handler, on_error=on_error) as keyed:
        for i in range(3):
            await keyed.tell("k", i)
    assert errors == [("k", 1, "bad message")]
    assert handled == [0, 2]


async def test_handler_error_without_on_error_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(key: str, message: int) -> None:
        raise RuntimeError("nobody listens")

    async with open_keyed(handler, name="widgets") as keyed:
        await keyed.tell("k", 1)
    assert "widgets: handler failed for key 'k'" in caplog.text


async def test_take_pending_gathers_the_told_messages_waiting(autojump_clock: Any) -> None:
    batches: list[list[int]] = []

    async def handler(key: str, first: int) -> None:
        await trio.sleep(1)  # a window: messages told meanwhile wait in the mailbox
        batches.append([first, *keyed.take_pending(key)])

    async with open_keyed(handler) as keyed:
        for i in range(4):
            await keyed.tell("k", i)
        await trio.sleep(1.5)
        await keyed.tell("k", 4)
    assert batches == [[0, 1, 2, 3], [4]]


async def test_take_pending_outside_the_handler_is_an_error() -> None:
    async def handler(key: str, message: int) -> None:
        pass

    async with open_keyed(handler) as keyed:
        with pytest.raises(RuntimeError, match="only inside that key's handler"):
            keyed.take_pending("k")


async def test_full_mailbox_makes_senders_wait(autojump_clock: Any) -> None:
    async def handler(key: str, message: int) -> None:
        await trio.sleep(1)

    async with open_keyed(handler, mailbox_size=2) as keyed:
        for i in range(4):
            await keyed.tell("k", i)
        # two fill the mailbox; the key task takes one at t=0, making room for the third;
        # the fourth waits until the next one is taken at t=1
        assert trio.current_time() == 1.0
        assert keyed.stats().queued == 2


async def test_stats_and_closing() -> None:
    async def handler(key: str, message: int) -> int:
        return message * 2

    async with open_keyed(handler) as keyed:
        assert await keyed.ask("a", 2) == 4
        await keyed.tell("b", 1)
    assert keyed.stats() == KeyedStats(
        live=2, busy=0, queued=0, messages_total=2, reaped_total=0, restarts_total=0
    )
    with pytest.raises(ComponentClosed):
        await keyed.tell("a", 1)
    with pytest.raises(ComponentClosed):
        await keyed.ask("a", 1)


async def test_handlers_may_send_while_the_block_shuts_down(autojump_clock: Any) -> None:
    """Leaving the block is graceful: queued work may still tell other keys."""
    seen: list[str] = []

    async def handler(key: str, message: str) -> None:
        await trio.sleep(1)
        seen.append(key)
        if key == "first":
            await keyed.tell("second", "from first")

    async with open_keyed(handler) as keyed:
        await keyed.tell("first", "go")
    assert seen == ["first", "second"]
    assert trio.current_time() == 2.0


async def test_bad_arguments() -> None:
    async def handler(key: str, message: int) -> None:
        pass

    with pytest.raises(TypeError, match="handler"):
        async with open_keyed(42):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="mailbox_size"):
        async with open_keyed(handler, mailbox_size=0):
            pass
    async with open_keyed(handler) as keyed:
        with pytest.raises(ValueError, match="empty"):
            await keyed.tell("", 1)
        with pytest.raises(TypeError, match="must be a str"):
            await keyed.ask(3, 1)  # type: ignore[arg-type]


async def test_key_task_machinery_crash_is_restarted_not_lost(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in our own key task (not a handler's exception) fails that message, restarts."""
    from actors import _reply

    real_run = _reply.Reply.run
    calls = 0

    async def flaky_run(self: Any, fn: Any, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug in the keyed machinery")
        await real_run(self, fn, *args)

    monkeypatch.setattr(_reply.Reply, "run", flaky_run)
    results: list[object] = []

    async def handler(key: str, message: float) -> float:
        await trio.sleep(message)
        return message

    async def call() -> None:
        try:
            results.append(await keyed.ask("k", 0))
        except ActorCrashed as exc:
            results.append(exc)

    async with open_keyed(handler) as keyed, trio.open_nursery() as nursery:
        await keyed.tell("k", 0.01)
        for _ in range(3):
            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
    assert isinstance(results[0], ActorCrashed)
    assert isinstance(results[0].__cause__, RuntimeError)
    assert results[1:] == [0, 0]
    assert "crashed (RuntimeError: bug in the keyed machinery); restarting it" in caplog.text
    assert keyed.stats().restarts_total == 1


# ---------------------------------------------------------------- rule 6: a handler is the actor's

ORIGIN: contextvars.ContextVar[str] = contextvars.ContextVar("origin", default="none")


@attrs.frozen
class Ask:
    key: str
    arrive: int  # tenths of a second
    duration: int  # tenths of a second the handler takes
    fails: bool
    cancel_after: int | None  # tenths (plus a half) after arriving, or never


asks = st.builds(
    Ask,
    key=st.sampled_from(["a", "b"]),
    arrive=st.integers(0, 10),
    duration=st.integers(0, 5),
    fails=st.booleans(),
    cancel_after=st.one_of(st.none(), st.integers(0, 15)),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(asks, min_size=1, max_size=12))
def test_every_handler_runs_as_the_actors_work(schedule: list[Ask]) -> None:
    """Idle or busy key, asker cancelled or not: the handler sees the registry's context, no
    asker's deadline, runs to its end, and only an asker still waiting hears its result."""
    handled: dict[int, tuple[str, float, bool]] = {}
    finished: set[int] = set()
    answers: dict[int, object] = {}
    askers: dict[int, trio.lowlevel.Task] = {}

    async def handler(key: str, i: int) -> int:
        handled[i] = (ORIGIN.get(), trio.current_effective_deadline(), current_task() is askers[i])
        await trio.sleep(schedule[i].duration / 10)
        finished.add(i)
        if schedule[i].fails:
            raise KeyError(i)
        return i

    async def asker(keyed: Any, i: int, call: Ask) -> None:
        await trio.sleep(call.arrive / 10)
        ORIGIN.set(f"asker {i}")
        askers[i] = current_task()
        deadline = math.inf
        if call.cancel_after is not None:
            deadline = trio.current_time() + (call.cancel_after + 0.5) / 10
        with trio.CancelScope(deadline=deadline) as scope:
            try:
                answers[i] = await keyed.ask(call.key, i)
            except KeyError as exc:
                answers[i] = exc
        if scope.cancelled_caught:
            answers[i] = "cancelled"

    async def main() -> None:
        ORIGIN.set("registry")
        async with open_keyed(handler) as keyed, trio.open_nursery() as nursery:
            for i, call in enumerate(schedule):
                nursery.start_soon(asker, keyed, i, call)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    for i, call in enumerate(schedule):
        if i in handled:
            origin, deadline, in_asker = handled[i]
            assert origin == "registry"  # never an asker's value
            assert (deadline, in_asker) == (math.inf, False)
            assert i in finished  # an asker's cancellation never cut the handler short
        if answers[i] == "cancelled":
            continue
        assert i in handled
        answer = answers[i]
        if call.fails:
            assert isinstance(answer, KeyError)
            assert answer.args == (i,)
        else:
            assert answer == i


async def test_tell_nowait_queues_without_a_schedule_point_while_there_is_room(
    autojump_clock: Any,
) -> None:
    """Like `tell`, handled in order in the key's task (in the registry's context), but with
    no checkpoint; with the mailbox full it queues nothing and says so."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="registry")
    seen: list[tuple[int, str, bool]] = []
    caller = current_task()

    async def handler(key: str, message: int) -> None:
        await trio.sleep(1)
        seen.append((message, var.get(), current_task() is caller))

    async with open_keyed(handler, mailbox_size=2) as keyed:
        var.set("caller")
        with trio.testing.assert_no_checkpoints():
            assert keyed.tell_nowait("k", 0)  # idle key: its task is started
            assert keyed.tell_nowait("k", 1)
            assert not keyed.tell_nowait("k", 2)  # full (its task has not started): not queued
        await keyed.tell("k", 3)  # waits for room, then queued behind the others
    assert seen == [(0, "registry", False), (1, "registry", False), (3, "registry", False)]
    with pytest.raises(ComponentClosed):
        keyed.tell_nowait("k", 5)


async def test_a_spare_key_task_serves_another_key_as_a_new_task_would(
    autojump_clock: Any,
) -> None:
    """DESIGN rule 6: a key task whose turn is over waits as a spare and takes over the next
    key that needs a task; that turn cannot be told from one in a new task: the registry's
    context (nothing the last handler set), the same deadline, and the handler's exception
    reported the same way. A new task starts when no spare waits (two keys busy at once)."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="default")
    var.set("opened")
    tasks: list[trio.lowlevel.Task] = []
    seen: list[tuple[str, bool, str, float]] = []
    errors: list[tuple[str, str]] = []

    async def handler(key: str, message: str) -> None:
        task = current_task()
        seen.append((key, task in tasks, var.get(), trio.current_effective_deadline()))
        tasks.append(task)
        var.set(f"set by {key}")  # never reset: must not reach another turn
        if message == "slow":
            await trio.sleep(1)
        if message == "raise":
            raise ValueError(key)

    def on_error(key: str, message: str, exc: BaseException) -> None:
        errors.append((key, repr(exc)))

    async with open_keyed(handler, on_error=on_error) as keyed:
        var.set("caller")
        await keyed.tell("a", "raise")  # a new task (no spare yet), raising
        await trio.sleep(1)
        await keyed.tell("b", "raise")  # a's task, as a spare, raising too
        await trio.sleep(1)
        await keyed.tell("c", "slow")  # the spare again, busy for a second...
        await keyed.tell("d", "slow")  # ...so d needs a new task
        await trio.sleep(2)
        assert len(keyed._spares) == 2  # both wait now
    assert [(key, reused) for key, reused, _, _ in seen] == [
        ("a", False),
        ("b", True),
        ("c", True),
        ("d", False),
    ]
    assert {(value, deadline) for _, _, value, deadline in seen} == {("opened", math.inf)}
    assert errors == [("a", "ValueError('a')"), ("b", "ValueError('b')")]
    assert keyed._spares == []  # they ended when the registry closed


async def test_spare_key_tasks_are_bounded_and_end_when_cancelled(autojump_clock: Any) -> None:
    """At most _SPARE_TASKS key tasks wait as spares; the rest end with their turn. A
    registry cancelled from outside ends its spares too."""
    from actors import _keyed

    async def handler(key: str, message: int) -> None:
        await trio.sleep(1)

    with trio.CancelScope() as scope:
        async with open_keyed(handler) as keyed:
            for i in range(_keyed._SPARE_TASKS + 5):
                await keyed.tell(f"k{i}", i)
            await trio.sleep(2)
            assert len(keyed._spares) == _keyed._SPARE_TASKS
            scope.cancel()
    assert scope.cancelled_caught
    assert keyed._spares == []
