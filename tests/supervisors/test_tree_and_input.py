"""sup.tree(), bad input refused at the call, and the crash reports on the logger."""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any

import attrs
import pytest
import trio

import supervisors
from supervisors import ChildTree, Supervisor, SupervisorTree, open_supervisor
from supervisors._backoff import jittered
from supervisors._checks import check_async_fn
from tests.supervisors.helpers import Boom, Crew, infos, trapping


async def plain(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


async def team(crew: Crew, *, task_status: trio.TaskStatus[Supervisor]) -> None:
    async with open_supervisor("rest_for_one", name="team") as sup:
        await sup.start_child("db", crew.child, "db")
        await sup.start_child("api", plain)
        task_status.started(sup)


# ------------------------------------------------------------------------------------ tree()


async def test_tree_gives_the_whole_supervision_tree_as_frozen_records(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor(name="root") as root:
        await root.start_child("team", team, crew)
        await root.start_child("solo", crew.child, "solo")
        crew.crash("solo")
        await trio.sleep(0.1)
        tree = root.tree()
        assert tree == SupervisorTree(
            name="root",
            strategy="one_for_one",
            state="running",
            children=(
                ChildTree(
                    id="team",
                    state="running",
                    running=True,
                    restarts=0,
                    supervisors=(
                        SupervisorTree(
                            name="team",
                            strategy="rest_for_one",
                            state="running",
                            children=(
                                ChildTree(id="db", state="running", running=True, restarts=0),
                                ChildTree(id="api", state="running", running=True, restarts=0),
                            ),
                        ),
                    ),
                ),
                ChildTree(id="solo", state="running", running=True, restarts=1),
            ),
        )
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            tree.name = "x"  # type: ignore[misc]
        await root.terminate_child("solo")
        assert root.tree().children[1] == ChildTree(
            id="solo", state="stopped", running=False, restarts=1
        )
        await root.shutdown()
        assert root.tree().state == "stopping"
    after = root.tree()
    assert after.state == "closed"
    assert [c.supervisors for c in after.children] == [(), ()]  # the team is gone with its run


async def test_tree_shows_a_child_waiting_for_its_restart_as_pending(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    backoff = supervisors.RestartBackoff(min=1.0, jitter=0)
    async with open_supervisor() as sup:
        await sup.start_child("w", crew.child, "w", backoff=backoff)
        crew.crash("w")
        await trio.sleep(0.5)
        pending = ChildTree(id="w", state="pending", running=False, restarts=0)
        assert sup.tree().children == (pending,)
        await sup.shutdown()


# ------------------------------------------------------------------------------- bad input


async def test_open_supervisor_refuses_an_empty_or_non_str_name() -> None:
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        async with open_supervisor(name=""):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="name must be a str"):
        async with open_supervisor(name=5):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_open_supervisor_refuses_an_infinite_period() -> None:
    with pytest.raises(ValueError, match=r"max_seconds must be finite.*raise max_restarts"):
        async with open_supervisor(max_seconds=math.inf):
            pass  # pragma: no cover


async def test_a_child_without_task_status_is_refused_at_start_child() -> None:
    async def no_status() -> None:
        await trio.sleep_forever()  # pragma: no cover

    async with open_supervisor() as sup:
        with pytest.raises(TypeError, match=r"has no task_status parameter.*TASK_STATUS_IGNORED"):
            await sup.start_child("w", no_status)
        assert sup.which_children() == []


async def test_a_child_given_the_wrong_arguments_is_refused_at_start_child() -> None:
    async def takes_one(x: int, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()  # pragma: no cover

    async with open_supervisor() as sup:
        with pytest.raises(TypeError, match="cannot be called with the 2 argument"):
            await sup.start_child("w", takes_one, 1, 2)
        with pytest.raises(TypeError, match="cannot be called with the 0 argument"):
            await sup.start_child("w", takes_one)


async def test_a_task_status_error_only_seen_at_the_call_is_explained() -> None:
    class Opaque:
        """A callable whose signature Python cannot read, forwarding to a function."""

        @property
        def __signature__(self) -> Any:
            raise ValueError("no signature")

        def __call__(self, **kwargs: Any) -> Any:
            async def inner() -> None:
                pass  # pragma: no cover

            return inner(**kwargs)

    async with open_supervisor() as sup:
        with pytest.raises(TypeError, match="has no task_status parameter") as info:
            await sup.start_child("w", Opaque())
        assert "Python said" in str(info.value)


async def test_a_called_function_is_refused_with_you_called_it() -> None:
    async def noop(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()  # pragma: no cover

    async with open_supervisor() as sup:
        coro = noop(task_status=trio.TASK_STATUS_IGNORED)
        with pytest.raises(TypeError, match=r"you called it; pass the function itself \(``"):
            await sup.start_child("w", coro)  # type: ignore[arg-type]
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # no "never awaited" warning


def test_check_async_fn_says_you_called_it() -> None:
    async def job() -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match=r"job\(\): you called it") as info:
        check_async_fn(job(), "lanes.run() fn")
    assert str(info.value).startswith("lanes.run() fn must be an async function")


# -------------------------------------------------------------------------------- jitter


def test_jittered_draws_between_the_fraction_below_and_the_delay() -> None:
    import random

    rng = random.Random(7)
    draws = [jittered(2.0, 0.5, rng) for _ in range(1000)]
    assert all(1.0 <= d <= 2.0 for d in draws)
    assert min(draws) < 1.1
    assert max(draws) > 1.9
    assert jittered(2.0, 0.0, rng) == 2.0
    fixed = random.Random(3)
    assert jittered(4.0, 0.25, fixed) == 4.0 * (1 - 0.25 * random.Random(3).random())


# ------------------------------------------------------------------------------- logging


def test_the_supervisors_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("supervisors").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "supervisors"]


async def test_crash_reports_are_one_line_each_saying_what_happens_next(
    caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    crew = Crew()
    backoff = supervisors.RestartBackoff(min=0.5, jitter=0)
    async with open_supervisor("rest_for_one", max_restarts=2, name="shop") as sup:
        await sup.start_child("a", crew.child, "a", backoff=backoff)
        await sup.start_child("b", crew.child, "b")
        await sup.start_child("t", crew.child, "t", restart="temporary")
        crew.crash("t")
        await trio.sleep(0.1)
        crew.crash("a")
        await trio.sleep(1)
        crew.crash("b")
        await trio.sleep(0.1)
        await sup.shutdown()
    assert reports(caplog) == [
        "supervisor 'shop': child 't' crashed with Boom('t'); not restarting it: it is temporary",
        "supervisor 'shop': child 'a' crashed with Boom('a'); "
        "restarting it with 1 of its siblings (rest_for_one) in 0.5 s",
        "supervisor 'shop': child 'b' crashed with Boom('b'); restarting it",
    ]
    records = [r for r in caplog.records if r.name == "supervisors"]
    assert all(r.levelno == logging.ERROR for r in records)
    assert all(isinstance(r.exc_info and r.exc_info[1], Boom) for r in records)
    assert all("\n" not in r.getMessage() for r in records)


async def test_the_crash_that_gives_up_is_reported_once_with_what_happens_next(
    caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    crew = Crew()

    async def run() -> None:
        async with open_supervisor(max_restarts=0, name="db") as sup:
            await sup.start_child("a", crew.child, "a")
            crew.crash("a")
            await trio.sleep_forever()

    with pytest.raises(supervisors.RestartIntensityExceeded):
        await run()
    assert reports(caplog) == [
        "supervisor 'db': child 'a' crashed with Boom('a'); giving up: that would be restart 1 "
        "within 0 s, more than max_restarts=0 within max_seconds=5; stopping every child"
    ]


async def test_a_crash_while_the_supervisor_stops_is_reported_as_not_restarted(
    caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    crew = Crew()
    async with open_supervisor(name="s") as sup:
        await sup.start_child("a", crew.child, "a")
        await sup.start_child("b", trapping(crew), "b", shutdown=2.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.shutdown)  # b first: its grace runs until t=2
            await trio.sleep(1)
            crew.crash("a")
    assert reports(caplog) == [
        "supervisor 's': child 'a' crashed with Boom('a'); "
        "not restarting it: the supervisor is stopping"
    ]
    assert infos(sup) == [("a", False, 0), ("b", False, 0)]
