"""The core's boundaries: bad input refused at the call, FIFO entry under backpressure, logging."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
import trio
import trio.testing

import actors
from actors import open_keyed, open_lanes


async def noop() -> None:
    pass


def sync_handler(key: str, message: object) -> None:
    pass


async def handler(key: str, message: object) -> None:
    pass


class Echo(actors.Actor[int, int]):
    async def receive(self, message: int) -> int:
        return message


# ------------------------------------------------------------------------ bad input


async def test_lanes_run_refuses_none_even_as_the_first_function() -> None:
    async with open_lanes() as lanes:
        with pytest.raises(TypeError, match="async_fn must be an async function"):
            await lanes.run("k", None)  # type: ignore[arg-type]
        assert lanes.stats().jobs_total == 0


async def test_a_called_function_is_refused_saying_you_called_it() -> None:
    async with open_lanes() as lanes:
        with pytest.raises(TypeError, match=r"you called it; pass the function itself \(``noop``"):
            await lanes.run("k", noop())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="you called it"):
            await lanes.run_multi(["a"], noop())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="you called it"):
        async with open_keyed(handler("k", 1)):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"handler": sync_handler}, TypeError, "handler must be an async function"),
        ({"on_error": 5}, TypeError, "on_error must be a function"),
        ({"name": 5}, TypeError, "name must be a str"),
        ({"name": ""}, ValueError, "name must not be empty"),
        ({"idle_timeout": 1e-6}, ValueError, r"idle_timeout must be >= 0\.001 seconds"),
        ({"idle_timeout": 0}, ValueError, "idle_timeout"),
    ],
)
async def test_open_keyed_refuses_bad_input(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    fn = kwargs.pop("handler", handler)
    with pytest.raises(error, match=match):
        async with open_keyed(fn, **kwargs):
            pass


@pytest.mark.parametrize("timeout", [1e-6, 0.0009])
async def test_a_tiny_idle_timeout_is_refused_with_the_minimum(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"must be >= 0\.001 seconds \(a shorter one makes"):
        async with open_lanes(idle_timeout=timeout):
            pass


async def test_the_smallest_idle_timeout_and_infinity_are_accepted(autojump_clock: Any) -> None:
    async with open_lanes(idle_timeout=0.001) as lanes:
        await lanes.run("k", noop)
        await trio.sleep(0.01)
        assert lanes.stats().live == 0
    async with open_lanes(idle_timeout=math.inf) as lanes:
        await lanes.run("k", noop)
        await trio.sleep(86_400)
        assert lanes.stats().live == 1


async def test_spawn_refuses_bad_input() -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(TypeError, match=r"spawn\(\) needs a trio\.Nursery first"):
            await actors.spawn(None, Echo())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"actors\.Actor instance"):
            await actors.spawn(nursery, Echo)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="name must be a str"):
            await actors.spawn(nursery, Echo(), name=5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="name must not be empty"):
            await actors.spawn(nursery, Echo(), name="")


# ------------------------------------------------------------------------ FIFO entry


async def test_senders_waiting_for_room_get_in_in_arrival_order(autojump_clock: Any) -> None:
    """A handler that takes its whole mailbox at once frees every place at once."""
    handled: list[int] = []

    async def batch(key: str, first: int) -> None:
        await trio.sleep(1)
        handled.extend([first, *keyed.take_pending(key)])

    async with open_keyed(batch, mailbox_size=2) as keyed, trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(keyed.tell, "k", i)
            await trio.testing.wait_all_tasks_blocked()  # arrival order 0, 1, 2, ...
    assert handled == list(range(20))


async def test_actor_senders_waiting_for_room_get_in_in_arrival_order(
    autojump_clock: Any,
) -> None:
    handled: list[int] = []

    class Slow(actors.Actor[int, None]):
        async def receive(self, message: int) -> None:
            await trio.sleep(1)
            handled.append(message)

    async with trio.open_nursery() as nursery:
        ref = await actors.spawn(nursery, Slow(), mailbox_size=1)
        async with trio.open_nursery() as senders:
            for i in range(10):
                senders.start_soon(ref.tell, i)
                await trio.testing.wait_all_tasks_blocked()
        await ref.stop()
    assert handled == list(range(10))


async def test_a_sender_cancelled_while_waiting_for_room_leaves_the_line(
    autojump_clock: Any,
) -> None:
    handled: list[str] = []

    async def slow(key: str, message: str) -> None:
        await trio.sleep(1)
        handled.append(message)

    async with open_keyed(slow, mailbox_size=1) as keyed, trio.open_nursery() as nursery:
        await keyed.tell("k", "running")
        await keyed.tell("k", "queued")
        with trio.move_on_after(0.5):
            await keyed.tell("k", "gave up")
        nursery.start_soon(keyed.tell, "k", "last")
    assert handled == ["running", "queued", "last"]


# ------------------------------------------------------------------------ logging


def test_the_actors_logger_has_a_null_handler() -> None:
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("actors").handlers)


async def test_a_failed_told_message_is_logged_as_one_line_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(key: str, message: int) -> None:
        raise ValueError("bad\nmessage")

    async with open_keyed(failing, name="widgets") as keyed:
        await keyed.tell("k", 1)
    [record] = caplog.records
    assert record.getMessage() == "widgets: handler failed for key 'k': ValueError: bad"
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
