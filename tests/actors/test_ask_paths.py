"""`ActorRef.ask`'s ways in, compared (DESIGN rule 6: a fast path no user can tell apart).

An ask finds the actor parked on an empty mailbox (it wakes it), or awake in the one yield the
actor takes after answering (no wake-up), or the mailbox full (the asker waits for room, then
on its reply). Each way gives the same answers, exceptions, context, deadline and
cancellation. Which of the first two happens depends on the scheduler's order, so the tests
ask many times and check that both occurred.
"""

from __future__ import annotations

import contextvars
import math
from typing import Any

import pytest
import trio
import trio.testing

import actors
from actors import ActorCrashed, ComponentClosed

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


class Stop(BaseException):
    """A KeyboardInterrupt-like exception: not an Exception."""


class Probe(actors.Actor[int, int]):
    """Doubles a message, refuses a negative one; records what each handler run saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, float, bool]] = []
        self.task: trio.lowlevel.Task | None = None

    async def on_start(self) -> None:
        self.task = trio.lowlevel.current_task()

    async def receive(self, message: int) -> int:
        self.seen.append(
            (
                message,
                REQUEST.get(),
                trio.current_effective_deadline(),
                trio.lowlevel.current_task() is self.task,
            )
        )
        if message == 1_000:
            raise Stop("interrupt")
        if message < 0:
            raise ValueError(f"negative: {message}")
        return 2 * message


def _awake(ref: actors.ActorRef[Any, Any]) -> bool:
    """True while the actor's task is runnable rather than parked on its empty mailbox."""
    return ref._box.parked is None


async def test_every_way_in_gives_the_same_answers_errors_and_context() -> None:
    probe = Probe()
    REQUEST.set("spawner")
    ways: list[bool] = []
    async with trio.open_nursery() as nursery:
        ref = await actors.spawn(nursery, probe)
        REQUEST.set("asker")
        with trio.move_on_after(1_000):  # the asker's deadline, never the handler's
            for i in range(1, 200):
                if i % 10 == 0:
                    await trio.testing.wait_all_tasks_blocked()  # surely parked
                ways.append(_awake(ref))
                if i % 7 == 0:
                    with pytest.raises(ValueError, match=f"negative: -{i}"):
                        await ref.ask(-i)
                else:
                    assert await ref.ask(i) == 2 * i
        await ref.stop()
    assert set(ways) == {True, False}
    assert len(probe.seen) == 199
    assert {(who, deadline, own) for _, who, deadline, own in probe.seen} == {
        ("spawner", math.inf, True)
    }


async def test_an_ask_that_waited_for_room_is_answered_the_same(autojump_clock: Any) -> None:
    class Slow(Probe):
        async def receive(self, message: int) -> int:
            await trio.sleep(1)
            return await super().receive(message)

    probe = Slow()
    REQUEST.set("spawner")
    async with trio.open_nursery() as nursery:
        ref = await actors.spawn(nursery, probe, mailbox_size=1)
        REQUEST.set("asker")
        await ref.tell(1)  # running
        await ref.tell(2)  # queued: the mailbox is full
        assert len(ref._box) == 1
        with trio.move_on_after(1_000):
            assert await ref.ask(3) == 6  # waited for room, then for the answer
            assert trio.current_time() == 3.0
            await ref.tell(4)
            await ref.tell(5)
            with pytest.raises(ValueError, match="negative: -6"):
                await ref.ask(-6)
        with trio.CancelScope() as scope:  # cancelled while waiting for room: never sent
            await ref.tell(7)
            await ref.tell(8)
            scope.cancel()
            await ref.ask(9)
        await ref.stop()
    assert [m for m, *_ in probe.seen] == [1, 2, 3, 4, 5, -6, 7, 8]
    assert {(who, deadline, own) for _, who, deadline, own in probe.seen} == {
        ("spawner", math.inf, True)
    }


async def test_an_ask_cancelled_before_it_is_handled_is_dropped_on_every_way_in() -> None:
    probe = Probe()
    ways: set[bool] = set()
    async with trio.open_nursery() as nursery:
        ref = await actors.spawn(nursery, probe)
        for i in range(1, 100):
            assert await ref.ask(i) == 2 * i
            if i % 10 == 0:
                await trio.testing.wait_all_tasks_blocked()
            ways.add(_awake(ref))
            with trio.CancelScope() as scope:
                scope.cancel()
                await ref.ask(-i)  # put in, then the asker stops waiting at once
            assert scope.cancelled_caught
        await ref.stop()
    assert ways == {True, False}
    assert [m for m, *_ in probe.seen] == list(range(1, 100))  # no -i ever handled


async def test_a_handlers_base_exception_fails_the_asker_on_every_way_in() -> None:
    ways: set[bool] = set()
    for round_ in range(40):
        probe = Probe()
        stop_after = round_ % 3  # answers before the fatal one
        with pytest.RaisesGroup(Stop):
            async with trio.open_nursery() as nursery:
                ref = await actors.spawn(nursery, probe)
                for i in range(stop_after):
                    assert await ref.ask(i) == 2 * i
                if round_ % 5 == 0:
                    await trio.testing.wait_all_tasks_blocked()
                ways.add(_awake(ref))
                with pytest.raises(ActorCrashed) as crashed:
                    await ref.ask(1_000)
                assert isinstance(crashed.value.__cause__, Stop)
        assert not ref.alive
    assert ways == {True, False}


async def test_cancelling_the_actor_right_after_an_answer_ends_it_before_new_mail() -> None:
    """The actor's yield after answering is a cancel point for new mail, as parking is."""
    ways: set[bool] = set()
    for round_ in range(40):
        probe = Probe()
        scope = trio.CancelScope()

        async def host(task_status: trio.TaskStatus[actors.ActorRef[int, int]]) -> None:
            with scope:  # noqa: B023 (this round's scope)
                async with trio.open_nursery() as inner:
                    task_status.started(await actors.spawn(inner, probe))  # noqa: B023
                    await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            ref = await nursery.start(host)
            if round_ % 5 == 0:
                await trio.testing.wait_all_tasks_blocked()
            assert await ref.ask(1) == 2
            ways.add(_awake(ref))
            scope.cancel()
            with pytest.raises(ComponentClosed, match="stopped before handling this"):
                await ref.ask(2)
        assert [m for m, *_ in probe.seen] == [1]
    assert ways == {True, False}


async def test_stop_right_after_an_answer_finishes_the_mail_and_runs_on_stop() -> None:
    ways: set[bool] = set()
    for round_ in range(40):
        stopped: list[int] = []

        class Stopper(Probe):
            async def on_stop(self) -> None:
                stopped.append(len(self.seen))  # noqa: B023

        async with trio.open_nursery() as nursery:
            ref = await actors.spawn(nursery, Stopper())
            if round_ % 5 == 0:
                await trio.testing.wait_all_tasks_blocked()
            assert await ref.ask(1) == 2
            ways.add(_awake(ref))
            await ref.tell(2)
            await ref.stop()
            assert not ref.alive
            with pytest.raises(ComponentClosed):
                await ref.ask(3)
        assert stopped == [2]
    assert ways == {True, False}
