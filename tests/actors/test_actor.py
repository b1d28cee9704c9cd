from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import Actor, ActorCrashed, ActorRef, ComponentClosed, spawn
from tests.helpers import task_count


class Counter(Actor[int, int]):
    def __init__(self) -> None:
        self.total = 0
        self.events: list[str] = []

    async def on_start(self) -> None:
        self.events.append("start")

    async def receive(self, message: int) -> int:
        if message < 0:
            raise ValueError(f"negative: {message}")
        self.total += message
        return self.total

    async def on_stop(self) -> None:
        self.events.append("stop")


async def test_tell_then_ask_in_order() -> None:
    counter = Counter()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, counter, name="counter")
        assert counter.events == ["start"]
        for i in range(5):
            await ref.tell(i)
        assert await ref.ask(100) == 110
        await ref.stop()
    assert counter.events == ["start", "stop"]
    assert not ref.alive
    assert "counter" in repr(ref)


async def test_ask_reraises_the_exception_and_the_actor_goes_on() -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Counter())
        with pytest.raises(ValueError, match="negative: -1"):
            await ref.ask(-1)
        assert await ref.ask(2) == 2
        await ref.stop()


async def test_told_message_that_raises_crashes_the_actor_into_its_nursery() -> None:
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="negative")):
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, Counter())
            await ref.tell(-5)
            await trio.sleep_forever()
    assert not ref.alive
    with pytest.raises(ComponentClosed, match="has stopped"):
        await ref.tell(1)


async def test_asks_queued_behind_a_crash_are_answered_not_left_hanging(
    autojump_clock: Any,
) -> None:
    class Crashing(Actor[str, str]):
        async def receive(self, message: str) -> str:
            if message == "crash":
                await trio.sleep(1)
                raise ValueError("crashed")
            return message

    results: list[object] = []

    async def asker(ref: ActorRef[str, str]) -> None:
        try:
            results.append(await ref.ask("hello"))
        except ActorCrashed as exc:
            results.append(exc)

    async with trio.open_nursery() as askers:
        with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="crashed")):
            async with trio.open_nursery() as nursery:
                ref = await spawn(nursery, Crashing())
                await ref.tell("crash")
                for _ in range(3):
                    askers.start_soon(asker, ref)
    assert len(results) == 3
    assert all(isinstance(r, ActorCrashed) for r in results)
    assert trio.current_time() == 1.0


async def test_failing_on_start_raises_at_spawn() -> None:
    class Broken(Actor[int, int]):
        async def on_start(self) -> None:
            raise OSError("no database")

    before = task_count()
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match="no database"):
            await spawn(nursery, Broken())
    assert task_count() == before


async def test_full_mailbox_makes_the_sender_wait(autojump_clock: Any) -> None:
    class Slow(Actor[int, None]):
        async def receive(self, message: int) -> None:
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Slow(), mailbox_size=2)
        for i in range(4):
            await ref.tell(i)  # one running, two queued, then the fourth waits a turn
        assert trio.current_time() == 1.0
        await ref.stop()
        assert trio.current_time() == 4.0


async def test_cancelled_ask_while_queued_is_dropped_while_running_runs_to_its_end(
    autojump_clock: Any,
) -> None:
    """A handler is the actor's work: the asker's cancellation only stops the asker waiting."""
    handled: list[str] = []

    class Recorder(Actor[str, str]):
        async def receive(self, message: str) -> str:
            try:
                await trio.sleep(2)
            except trio.Cancelled:
                handled.append(f"{message} cancelled")
                raise
            handled.append(message)
            return message

    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Recorder())
        with trio.move_on_after(1):
            await ref.ask("running")
        assert trio.current_time() == 1.0  # the asker stopped waiting at once
        nursery.start_soon(ref.ask, "first")
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1):
            await ref.ask("queued")
        assert await ref.ask("last") == "last"
        assert trio.current_time() == 6.0  # running ends at 2, first at 4, last at 6
        await ref.stop()
    assert handled == ["running", "first", "last"]


async def test_spawn_rejects_bad_input() -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(TypeError, match=r"actors\.Actor instance"):
            await spawn(nursery, object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="mailbox_size"):
            await spawn(nursery, Counter(), mailbox_size=0)


async def test_actor_without_receive_says_what_to_do() -> None:
    async with trio.open_nursery() as nursery:
        ref: ActorRef[int, int] = await spawn(nursery, Actor())
        with pytest.raises(NotImplementedError, match="must override receive"):
            await ref.ask(1)
        await ref.stop()
