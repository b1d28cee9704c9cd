"""Strategies, restart types, which_children and terminate/restart/delete_child."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from supervisors import (
    RestartType,
    Supervisor,
    SupervisorEvent,
    SupervisorEventKind,
    open_supervisor,
)
from tests.supervisors.helpers import Boom, Crew, infos

settle = trio.testing.wait_all_tasks_blocked


async def start_abc(sup: Supervisor, crew: Crew, restart: RestartType = "permanent") -> None:
    """Start a, b and c; with ``shutdown=0`` every stop cancels them at once."""
    for cid in "abc":
        await sup.start_child(cid, crew.child, cid, restart=restart, shutdown=0)


async def test_one_for_one_restarts_only_the_crashed_child(autojump_clock: Any) -> None:
    crew = Crew()
    async with open_supervisor("one_for_one") as sup:
        await start_abc(sup, crew)
        crew.crash("b")
        await settle()
        assert crew.kinds("start", "end") == [
            ("start", "a"),
            ("start", "b"),
            ("start", "c"),
            ("end", "b"),
            ("start", "b"),
        ]
        assert infos(sup) == [("a", True, 0), ("b", True, 1), ("c", True, 0)]
        await sup.shutdown()


async def test_one_for_all_stops_the_others_last_first_then_restarts_all_in_order(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor("one_for_all") as sup:
        await start_abc(sup, crew)
        crew.crash("b")
        await settle()
        assert crew.kinds("start", "end")[3:] == [
            ("end", "b"),
            ("end", "c"),
            ("end", "a"),
            ("start", "a"),
            ("start", "b"),
            ("start", "c"),
        ]
        assert infos(sup) == [("a", True, 1), ("b", True, 1), ("c", True, 1)]
        await sup.shutdown()


async def test_rest_for_one_restarts_the_child_and_those_started_after_it(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor("rest_for_one") as sup:
        await start_abc(sup, crew)
        crew.crash("b")
        await settle()
        assert crew.kinds("start", "end")[3:] == [
            ("end", "b"),
            ("end", "c"),
            ("start", "b"),
            ("start", "c"),
        ]
        assert infos(sup) == [("a", True, 0), ("b", True, 1), ("c", True, 1)]
        crew.crash("c")  # the last one: nobody after it
        await settle()
        assert infos(sup) == [("a", True, 0), ("b", True, 1), ("c", True, 2)]
        await sup.shutdown()


@pytest.mark.parametrize(
    ("restart", "how", "after"),
    [
        ("permanent", "crash", [("w", True, 1)]),
        ("permanent", "finish", [("w", True, 1)]),
        ("transient", "crash", [("w", True, 1)]),
        ("transient", "finish", [("w", False, 0)]),
        ("temporary", "crash", []),
        ("temporary", "finish", []),
    ],
)
async def test_restart_types(
    restart: RestartType, how: str, after: list[tuple[str, bool, int]], autojump_clock: Any
) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        await sup.start_child("w", crew.child, "w", restart=restart)
        assert infos(sup) == [("w", True, 0)]
        getattr(crew, how)("w")
        await settle()
        assert infos(sup) == after
        assert len(crew.starts("w")) == 1 + (after[0][2] if after else 0)
        await sup.shutdown()


async def test_temporary_and_stopped_children_are_not_restarted_with_their_group(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor("one_for_all") as sup:
        await sup.start_child("tmp", crew.child, "tmp", restart="temporary", shutdown=0)
        await sup.start_child("off", crew.child, "off", shutdown=0)
        await sup.start_child("done", crew.child, "done", restart="transient", shutdown=0)
        await sup.start_child("a", crew.child, "a", shutdown=0)
        await sup.start_child("b", crew.child, "b", shutdown=0)
        await sup.terminate_child("off")
        crew.finish("done")
        await settle()
        crew.crash("b")
        await settle()
        assert infos(sup) == [
            ("off", False, 0),
            ("done", False, 0),
            ("a", True, 1),
            ("b", True, 1),
        ]
        assert crew.starts("tmp") == crew.starts("off") == crew.starts("done") == [0.0]
        await sup.shutdown()


async def test_errors_of_children_never_reach_the_block(autojump_clock: Any) -> None:
    crew = Crew()
    async with open_supervisor(max_restarts=100) as sup:
        for cid in ("t", "p"):
            await sup.start_child(cid, crew.child, cid, restart="transient")
        for _ in range(5):
            crew.crash("t")
            await trio.sleep(1)
        crew.crash("p")
        await trio.sleep(1)
        assert infos(sup) == [("t", True, 5), ("p", True, 1)]
        await sup.shutdown()


async def test_block_ends_when_transient_and_temporary_children_are_done(
    autojump_clock: Any,
) -> None:
    async def job(seconds: float, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await trio.sleep(seconds)

    async with open_supervisor() as sup:
        await sup.start_child("one", job, 1, restart="transient")
        await sup.start_child("two", job, 2, restart="temporary")
    assert trio.current_time() == 2.0
    assert infos(sup) == [("one", False, 0)]


async def test_permanent_children_keep_the_block_open_until_shutdown(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with trio.open_nursery() as nursery:
        async with open_supervisor() as sup:
            await sup.start_child("w", crew.child, "w")

            async def later() -> None:
                await trio.sleep(3)
                await sup.shutdown()

            nursery.start_soon(later)
        assert trio.current_time() == 3.0  # shutdown() at 3: w does not trap, no grace
        assert crew.kinds("start", "cancelled", "end") == [
            ("start", "w"),
            ("cancelled", "w"),
            ("end", "w"),
        ]


async def test_terminate_restart_and_delete_child(autojump_clock: Any) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        await start_abc(sup, crew)
        await sup.terminate_child("b")
        await settle()
        assert infos(sup) == [("a", True, 0), ("b", False, 0), ("c", True, 0)]
        assert crew.kinds("cancelled") == [("cancelled", "b")]
        await sup.terminate_child("b")  # already stopped: nothing happens
        assert await sup.restart_child("b") == "b"
        assert infos(sup) == [("a", True, 0), ("b", True, 1), ("c", True, 0)]
        assert await sup.restart_child("c") == "c"  # a running child is stopped first
        assert crew.kinds("start", "end")[3:] == [
            ("end", "b"),
            ("start", "b"),
            ("end", "c"),
            ("start", "c"),
        ]
        await sup.delete_child("a")  # a running child is stopped, then forgotten
        assert infos(sup) == [("b", True, 1), ("c", True, 1)]
        await sup.start_child("a", crew.child, "a")  # the id is free again; listed last
        assert infos(sup) == [("b", True, 1), ("c", True, 1), ("a", True, 0)]
        await sup.terminate_child("b")
        await sup.delete_child("b")
        assert [c.id for c in sup.which_children()] == ["c", "a"]
        await sup.shutdown()
    assert crew.live == 0


async def test_terminated_child_is_not_restarted_and_does_not_count(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor(max_restarts=0) as sup:
        await sup.start_child("w", crew.child, "w")
        for _ in range(3):
            await sup.terminate_child("w")
            await sup.restart_child("w")
        assert infos(sup) == [("w", True, 3)]
        await sup.shutdown()


async def test_terminate_temporary_child_forgets_it(autojump_clock: Any) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        await sup.start_child("t", crew.child, "t", restart="temporary")
        await sup.terminate_child("t")
        assert sup.which_children() == []


async def test_restart_child_failure_is_raised_and_leaves_the_child_stopped(
    autojump_clock: Any,
) -> None:
    attempts: list[int] = []

    async def flaky(*, task_status: trio.TaskStatus[None]) -> None:
        attempts.append(len(attempts))
        if len(attempts) == 2:
            raise Boom("second start fails")
        task_status.started()
        await trio.sleep_forever()

    async with open_supervisor() as sup:
        await sup.start_child("f", flaky)
        with pytest.raises(Boom, match="second start fails"):
            await sup.restart_child("f")
        assert infos(sup) == [("f", False, 1)]
        await sup.restart_child("f")
        assert infos(sup) == [("f", True, 2)]
        await sup.shutdown()


async def test_restart_child_restarts_a_child_waiting_for_its_backoff(
    autojump_clock: Any,
) -> None:
    from supervisors import RestartBackoff

    crew = Crew()
    async with open_supervisor() as sup:
        backoff = RestartBackoff(min=10.0, max=10.0, jitter=0)
        await sup.start_child("w", crew.child, "w", backoff=backoff)
        crew.crash("w")
        await trio.sleep(1)
        assert infos(sup) == [("w", False, 0)]  # waiting for its restart at t=10
        await sup.restart_child("w")
        assert infos(sup) == [("w", True, 1)]
        await trio.sleep(20)
        assert crew.starts("w") == [0.0, 1.0]  # the pending restart was dropped
        await sup.shutdown()


async def test_children_may_stop_themselves_and_their_supervisor(autojump_clock: Any) -> None:
    crew = Crew()
    cancelled: list[tuple[str, float]] = []

    async def quitter(sup: Supervisor, how: str, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await trio.sleep(1)
        start = trio.current_time()
        try:
            if how == "terminate":
                await sup.terminate_child("quit")
            elif how == "delete":
                await sup.delete_child("quit")
            else:
                await sup.shutdown()
        except trio.Cancelled:  # at once: it cannot wait out its own grace
            cancelled.append((how, trio.current_time() - start))
            raise
        raise AssertionError("not reached: the child was cancelled")  # pragma: no cover

    for how in ("terminate", "delete"):
        async with open_supervisor() as sup:
            await sup.start_child("a", crew.child, "a", shutdown=0)
            await sup.start_child("quit", quitter, sup, how, shutdown=10)
            await trio.sleep(2)
            expected = [("a", True, 0)] + ([("quit", False, 0)] if how == "terminate" else [])
            assert infos(sup) == expected
            await sup.shutdown()

    crew = Crew()
    async with open_supervisor() as sup:
        await sup.start_child("a", crew.child, "a", shutdown=0)
        await sup.start_child("quit", quitter, sup, "shutdown", shutdown=10)
        await sup.start_child("c", crew.child, "c", shutdown=0)
    # The block ended because the child shut the supervisor down: c first, then a.
    assert crew.kinds("end") == [("end", "c"), ("end", "a")]
    assert cancelled == [("terminate", 0.0), ("delete", 0.0), ("shutdown", 0.0)]
    assert trio.current_time() == 5.0  # 2 s per loop above, then the quitter at 4 + 1
    assert infos(sup) == [("a", False, 0), ("quit", False, 0), ("c", False, 0)]


async def test_a_child_cannot_restart_itself(autojump_clock: Any) -> None:
    errors: list[BaseException] = []

    async def selfish(sup: Supervisor, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await sup.restart_child("me")
        except RuntimeError as exc:
            errors.append(exc)
        await trio.sleep_forever()

    async with open_supervisor() as sup:
        await sup.start_child("me", selfish, sup)
        await settle()
        await sup.shutdown()
    assert "cannot restart itself" in str(errors[0])


async def test_on_event_reports_the_life_of_children(autojump_clock: Any) -> None:
    events: list[SupervisorEvent] = []
    crew = Crew()
    async with open_supervisor("one_for_all", name="team", on_event=events.append) as sup:
        await sup.start_child("a", crew.child, "a", shutdown=0)
        await sup.start_child("b", crew.child, "b", restart="transient", shutdown=0)
        await trio.sleep(1)
        crew.crash("b")
        await trio.sleep(1)
        crew.finish("b")
        await trio.sleep(1)
        await sup.shutdown()
    K = SupervisorEventKind
    assert [(e.kind, e.child_id, e.time, e.restarts) for e in events] == [
        (K.CHILD_STARTED, "a", 0.0, 0),
        (K.CHILD_STARTED, "b", 0.0, 0),
        (K.CHILD_CRASHED, "b", 1.0, 0),
        (K.CHILD_STOPPED, "a", 1.0, 0),
        (K.CHILD_RESTARTED, "a", 1.0, 1),
        (K.CHILD_RESTARTED, "b", 1.0, 1),
        (K.CHILD_EXITED, "b", 2.0, 1),
        (K.CHILD_STOPPED, "a", 3.0, 1),
    ]
    assert isinstance(events[2].error, Boom)
    assert {e.supervisor for e in events} == {"team"}
    assert all(e.error is None for i, e in enumerate(events) if i != 2)


async def test_an_on_event_that_raises_is_ignored(
    caplog: pytest.LogCaptureFixture, autojump_clock: Any
) -> None:
    def bad(event: SupervisorEvent) -> None:
        raise ValueError("observer bug")

    crew = Crew()
    async with open_supervisor(on_event=bad) as sup:
        await sup.start_child("a", crew.child, "a")
        crew.crash("a")
        await settle()
        assert infos(sup) == [("a", True, 1)]
        await sup.shutdown()
    assert "on_event raised" in caplog.text


async def test_crashes_are_logged(caplog: pytest.LogCaptureFixture, autojump_clock: Any) -> None:
    crew = Crew()
    async with open_supervisor(name="logs") as sup:
        await sup.start_child("a", crew.child, "a")
        crew.crash("a")
        await settle()
        await sup.shutdown()
    assert [r.getMessage() for r in caplog.records] == [
        "supervisor 'logs': child 'a' crashed with Boom('a'); restarting it"
    ]
    assert caplog.records[0].exc_info is not None
    assert caplog.records[0].name == "supervisors"
