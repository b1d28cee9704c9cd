"""Stopping children: order, grace, cancellation of the enclosing scope, no task left behind."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import trio

import supervisors
from supervisors import (
    RestartIntensityExceeded,
    Strategy,
    Supervisor,
    SupervisorEvent,
    SupervisorEventKind,
    open_supervisor,
)
from tests.helpers import task_count
from tests.supervisors.helpers import Boom, Crew, infos, trapping


async def test_shutdown_cancels_plain_children_at_once_last_started_first(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        for cid in "abcd":
            await sup.start_child(cid, crew.child, cid)  # never calls shutting_down()
        await trio.sleep(1)
        await sup.shutdown()
        assert trio.current_time() == 1.0  # no grace for a child that does not trap
        assert crew.log[4:] == [
            (1.0, "cancelled", "d"),
            (1.0, "end", "d"),
            (1.0, "cancelled", "c"),
            (1.0, "end", "c"),
            (1.0, "cancelled", "b"),
            (1.0, "end", "b"),
            (1.0, "cancelled", "a"),
            (1.0, "end", "a"),
        ]
        assert infos(sup) == [(c, False, 0) for c in "abcd"]
    assert trio.current_time() == 1.0


async def test_shutdown_stops_trapping_children_last_started_first_each_after_its_grace(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        for cid in "abcd":
            await sup.start_child(cid, trapping(crew), cid)  # traps, never returns; grace 5 s
        await trio.sleep(1)
        await sup.shutdown()
        assert trio.current_time() == 21.0  # one at a time, each cancelled after its 5 s
        assert crew.log[4:] == [
            (6.0, "cancelled", "d"),
            (6.0, "end", "d"),
            (11.0, "cancelled", "c"),
            (11.0, "end", "c"),
            (16.0, "cancelled", "b"),
            (16.0, "end", "b"),
            (21.0, "cancelled", "a"),
            (21.0, "end", "a"),
        ]


async def test_a_plain_sleep_forever_child_is_cancelled_at_once_whatever_its_grace(
    autojump_clock: Any,
) -> None:
    async def plain(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async with open_supervisor() as sup:
        await sup.start_child("plain", plain, shutdown=3.0)
        await sup.start_child("forever", plain, shutdown=math.inf)
        await trio.sleep(1)
        assert infos(sup) == [("plain", True, 0), ("forever", True, 0)]
        await sup.shutdown()
        assert trio.current_time() == 1.0


async def test_a_trapping_child_ignoring_the_event_is_cancelled_when_its_grace_is_over(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        await sup.start_child("slow", trapping(crew), "slow", shutdown=3.0)
        await trio.sleep(1)
        await sup.shutdown()
        assert trio.current_time() == 4.0
    assert crew.log == [(0.0, "start", "slow"), (4.0, "cancelled", "slow"), (4.0, "end", "slow")]


async def test_trapping_children_get_their_grace_and_watching_the_event_ends_it_early(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    quick = functools.partial(crew.child, cleanup=0.5)
    slow = functools.partial(crew.child, cleanup=10.0)
    watcher = functools.partial(crew.child, cleanup=0.0)
    async with open_supervisor() as sup:
        await sup.start_child("quick", quick, "quick", shutdown=2.0)  # returns within its grace
        await sup.start_child("slow", slow, "slow", shutdown=2.0)  # cancelled at its grace
        await sup.start_child("plain", crew.child, "plain", shutdown=2.0)  # does not trap
        await sup.start_child("zero", slow, "zero", shutdown=0)  # watches, but no grace
        await sup.start_child("watcher", watcher, "watcher", shutdown=2.0)  # returns at once
        await sup.shutdown()
        assert crew.log[5:] == [
            (0.0, "graceful", "watcher"),
            (0.0, "end", "watcher"),
            (0.0, "cancelled", "zero"),
            (0.0, "end", "zero"),
            (0.0, "cancelled", "plain"),
            (0.0, "end", "plain"),
            (2.0, "cancelled", "slow"),
            (2.0, "end", "slow"),
            (2.5, "graceful", "quick"),
            (2.5, "end", "quick"),
        ]


async def test_a_child_that_returns_on_its_own_within_its_grace_is_not_cancelled(
    autojump_clock: Any,
) -> None:
    ends: list[tuple[float, str]] = []

    async def finisher(*, task_status: trio.TaskStatus[None]) -> None:
        supervisors.shutting_down()  # it traps: a stop gives it its grace
        task_status.started()
        try:
            await trio.sleep(3)  # its work ends at t=3, whether asked to stop or not
        except trio.Cancelled:  # pragma: no cover - fails the test below
            ends.append((trio.current_time(), "cancelled"))
            raise
        ends.append((trio.current_time(), "returned"))

    events: list[SupervisorEvent] = []
    async with open_supervisor(on_event=events.append) as sup:
        await sup.start_child("f", finisher, shutdown=5.0)
        await trio.sleep(2)
        await sup.shutdown()
        assert trio.current_time() == 3.0  # t+1, not t+5
    assert ends == [(3.0, "returned")]
    assert [(e.kind, e.time) for e in events] == [
        (SupervisorEventKind.CHILD_STARTED, 0.0),
        (SupervisorEventKind.CHILD_STOPPED, 3.0),  # a stop, not an exit to restart
    ]
    assert infos(sup) == [("f", False, 0)]


async def test_shutdown_zero_cancels_at_once_yet_sets_the_event(autojump_clock: Any) -> None:
    seen: list[tuple[str, float, bool]] = []

    async def brute(cid: str, *, task_status: trio.TaskStatus[None]) -> None:
        stopping = supervisors.shutting_down()
        task_status.started()
        try:
            await trio.sleep(100)  # would need 100 s to wrap up: no time is given
        except trio.Cancelled:
            seen.append((cid, trio.current_time(), stopping.is_set()))
            raise

    crew = Crew()
    async with open_supervisor() as sup:
        await sup.start_child("a", brute, "a", shutdown=0)
        await sup.start_child(
            "slow", functools.partial(crew.child, cleanup=10.0), "slow", shutdown=0
        )
        await sup.start_child("b", brute, "b", shutdown=0)
        await trio.sleep(1)
        await sup.shutdown()
        assert trio.current_time() == 1.0
    assert seen == [("b", 1.0, True), ("a", 1.0, True)]
    assert crew.log == [(0.0, "start", "slow"), (1.0, "cancelled", "slow"), (1.0, "end", "slow")]


async def test_an_infinite_grace_waits_for_the_child(autojump_clock: Any) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        await sup.start_child(
            "w", functools.partial(crew.child, cleanup=100.0), "w", shutdown=math.inf
        )
        await sup.shutdown()
    assert trio.current_time() == 100.0
    assert crew.kinds("graceful", "cancelled") == [("graceful", "w")]


async def test_a_child_that_delays_its_cancellation_is_waited_for(autojump_clock: Any) -> None:
    ends: list[tuple[str, float]] = []

    async def stubborn(cid: str, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(3)
            ends.append((cid, trio.current_time()))

    async with open_supervisor() as sup:
        await sup.start_child("a", stubborn, "a", shutdown=2.0)
        await sup.start_child("b", stubborn, "b", shutdown=1.0)
        await sup.shutdown()
    # One at a time, last started first: b cancelled at once, done at 3; then a, done at 6.
    assert ends == [("b", 3.0), ("a", 6.0)]


async def test_cancelling_the_enclosing_scope_stops_children_in_order_with_their_rule(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    before = task_count()
    with trio.move_on_after(2) as scope:
        async with open_supervisor() as sup:
            await sup.start_child("a", crew.child, "a", shutdown=3.0)
            await sup.start_child("b", functools.partial(crew.child, cleanup=1.0), "b")
            await sup.start_child("c", crew.child, "c", shutdown=4.0)
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() == 3.0  # b's grace ran under a shield
    assert crew.log[3:] == [
        (2.0, "cancelled", "c"),  # does not trap: cancelled at once
        (2.0, "end", "c"),
        (3.0, "graceful", "b"),  # traps: returns after its second of cleanup
        (3.0, "end", "b"),
        (3.0, "cancelled", "a"),  # does not trap: cancelled at once
        (3.0, "end", "a"),
    ]
    assert sup.closed
    assert task_count() == before
    assert crew.live == 0


async def test_an_exception_in_the_block_stops_children_and_is_raised_as_itself(
    autojump_clock: Any,
) -> None:
    crew = Crew()

    async def run() -> None:
        async with open_supervisor() as sup:
            await sup.start_child("a", crew.child, "a", shutdown=2.0)
            await sup.start_child("b", functools.partial(crew.child, cleanup=1.0), "b")
            raise KeyError("oops")

    with pytest.raises(KeyError, match="oops") as info:
        await run()
    assert type(info.value) is KeyError  # not wrapped in an ExceptionGroup
    assert crew.log[2:] == [
        (1.0, "graceful", "b"),
        (1.0, "end", "b"),
        (1.0, "cancelled", "a"),
        (1.0, "end", "a"),
    ]
    assert trio.current_time() == 1.0
    assert crew.live == 0


async def test_no_task_is_left_after_the_block(autojump_clock: Any) -> None:
    crew = Crew()
    before = task_count()
    async with open_supervisor("one_for_all") as sup:
        for cid in "abc":
            await sup.start_child(cid, crew.child, cid)
        crew.crash("b")
        await trio.sleep(1)
        assert task_count() > before
        await sup.shutdown()
    assert task_count() == before
    assert crew.live == 0

    async def run() -> None:
        async with open_supervisor(max_restarts=0) as sup:
            for cid in "abc":
                await sup.start_child(cid, crew.child, cid)
            crew.crash("a")
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded):
        await run()
    assert task_count() == before
    assert crew.live == 0


async def test_terminate_gives_the_grace_even_if_its_caller_is_cancelled(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        await sup.start_child("w", functools.partial(crew.child, cleanup=10.0), "w", shutdown=3)
        with trio.move_on_after(1):
            await sup.terminate_child("w")
        assert infos(sup) == [("w", False, 0)]  # asked to stop: no longer counted as running
        assert crew.live == 1
        await trio.sleep(5)
        assert crew.log[-2:] == [(3.0, "cancelled", "w"), (3.0, "end", "w")]
        await sup.restart_child("w")
        assert infos(sup) == [("w", True, 1)]
        await sup.shutdown()


async def test_what_a_child_raises_while_stopping_is_reported_not_restarted(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def messy(*, task_status: trio.TaskStatus[None]) -> None:
        stopping = supervisors.shutting_down()
        task_status.started()
        await stopping.wait()
        raise Boom("while stopping")

    events: list[SupervisorEvent] = []
    async with open_supervisor(max_restarts=0, on_event=events.append) as sup:
        await sup.start_child("m", messy)
        await sup.terminate_child("m")
        assert infos(sup) == [("m", False, 0)]
    assert [(e.kind, e.child_id) for e in events] == [
        (SupervisorEventKind.CHILD_STARTED, "m"),
        (SupervisorEventKind.CHILD_STOPPED, "m"),
    ]
    assert isinstance(events[1].error, Boom)
    assert "child 'm' raised while stopping" in caplog.text


async def test_shutdown_from_several_tasks_returns_once_all_stopped(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    returned: list[float] = []
    async with open_supervisor() as sup:
        await sup.start_child("w", functools.partial(crew.child, cleanup=2.0), "w")

        async def stop() -> None:
            await sup.shutdown()
            returned.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(stop)
    assert returned == [2.0, 2.0, 2.0]


async def test_a_graceful_child_sees_its_own_event_in_its_subtasks(
    autojump_clock: Any,
) -> None:
    seen: list[float] = []

    async def parent(*, task_status: trio.TaskStatus[None]) -> None:
        async def helper() -> None:
            await supervisors.shutting_down().wait()
            seen.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(helper)
            task_status.started()

    async with open_supervisor() as sup:
        await sup.start_child("p", parent, shutdown=5)
        await trio.sleep(1)
        await sup.shutdown()  # the helper sees the event: the child ends at once
    assert seen == [1.0]
    assert trio.current_time() == 1.0


async def test_a_child_shutting_down_its_supervisor_stops_at_once(autojump_clock: Any) -> None:
    crew = Crew()
    boss_cancelled: list[tuple[float, bool]] = []

    async def boss(sup: Supervisor, *, task_status: trio.TaskStatus[None]) -> None:
        stopping = supervisors.shutting_down()
        task_status.started()
        await trio.sleep(1)
        try:
            await sup.shutdown()
        except trio.Cancelled:  # it does not wait for its own grace of 10 s
            boss_cancelled.append((trio.current_time(), stopping.is_set()))
            raise

    async with open_supervisor() as sup:
        await sup.start_child("a", functools.partial(crew.child, cleanup=2.0), "a")
        await sup.start_child("boss", boss, sup, shutdown=10)
        await sup.start_child("b", crew.child, "b", shutdown=3)
    assert boss_cancelled == [(1.0, True)]
    assert trio.current_time() == 3.0  # b at once (it does not trap), then a's 2 s of cleanup
    assert crew.log[2:] == [
        (1.0, "cancelled", "b"),
        (1.0, "end", "b"),
        (3.0, "graceful", "a"),
        (3.0, "end", "a"),
    ]


async def test_terminate_restart_and_delete_give_the_grace(autojump_clock: Any) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        await sup.start_child("plain", trapping(crew), "plain", shutdown=3.0)
        await sup.start_child("tidy", functools.partial(crew.child, cleanup=0.5), "tidy")
        await trio.sleep(1)
        await sup.terminate_child("plain")  # traps, never returns: cancelled after 3 s
        assert trio.current_time() == 4.0
        await sup.terminate_child("tidy")  # watches it: returns after its half second
        assert trio.current_time() == 4.5
        assert infos(sup) == [("plain", False, 0), ("tidy", False, 0)]
        await sup.restart_child("plain")
        await sup.restart_child("plain")  # running: stopped first, with its grace
        assert trio.current_time() == 7.5
        assert infos(sup) == [("plain", True, 2), ("tidy", False, 0)]
        await sup.delete_child("plain")
        assert trio.current_time() == 10.5
        assert infos(sup) == [("tidy", False, 0)]
    assert crew.log == [
        (0.0, "start", "plain"),
        (0.0, "start", "tidy"),
        (4.0, "cancelled", "plain"),
        (4.0, "end", "plain"),
        (4.5, "graceful", "tidy"),
        (4.5, "end", "tidy"),
        (4.5, "start", "plain"),
        (7.5, "cancelled", "plain"),
        (7.5, "end", "plain"),
        (7.5, "start", "plain"),
        (10.5, "cancelled", "plain"),
        (10.5, "end", "plain"),
    ]


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_a_strategy_restart_waits_for_each_siblings_grace(
    strategy: Strategy, autojump_clock: Any
) -> None:
    crew = Crew()
    async with open_supervisor(strategy) as sup:
        await sup.start_child("a", trapping(crew), "a", shutdown=2.0)
        await sup.start_child("b", crew.child, "b", shutdown=0)
        await sup.start_child("c", trapping(crew), "c", shutdown=3.0)
        await sup.start_child("d", functools.partial(crew.child, cleanup=1.0), "d")
        await trio.sleep(1)
        crew.crash("b")
        await trio.sleep(2)
        a_running = strategy == "rest_for_one"  # under one_for_all a waits for its stop too
        assert infos(sup) == [
            ("a", a_running, 0),
            ("b", False, 0),
            ("c", False, 0),
            ("d", False, 0),
        ]
        await trio.sleep(10)
        restarted = "abcd" if strategy == "one_for_all" else "bcd"
        assert infos(sup) == [(c, True, int(c in restarted)) for c in "abcd"]
        await sup.shutdown()
    # The siblings stop last started first, one at a time: d returns 1 s after it is asked,
    # c is cancelled after its 3 s, a (one_for_all) after its 2 s; then the group restarts.
    stops = [
        (1.0, "end", "b"),
        (2.0, "graceful", "d"),
        (2.0, "end", "d"),
        (5.0, "cancelled", "c"),
        (5.0, "end", "c"),
    ]
    if strategy == "one_for_all":
        stops += [(7.0, "cancelled", "a"), (7.0, "end", "a")]
    again = stops[-1][0]
    assert crew.log[4 : 4 + len(stops) + len(restarted)] == stops + [
        (again, "start", c) for c in restarted
    ]


@pytest.mark.parametrize("how", ["cancel", "raise"])
async def test_shutdown_from_a_finally_while_the_block_is_being_left(
    how: str, autojump_clock: Any
) -> None:
    # The enclosing scope is cancelled (or the body raises) and the body's finally calls
    # shutdown() under a shield: it stops the children as usual and returns, then the block
    # re-raises. (The supervisor's manager task, which does the stopping, used to be
    # cancelled with the enclosing scope, and shutdown() then waited for it forever.)
    crew = Crew()
    before = task_count()
    returned: list[float] = []

    async def run() -> None:
        with trio.move_on_after(1 if how == "cancel" else 100) as scope:
            async with open_supervisor() as sup:
                await sup.start_child("a", trapping(crew), "a", shutdown=2.0)
                await sup.start_child("b", functools.partial(crew.child, cleanup=0.5), "b")
                await sup.start_child("z", crew.child, "z", shutdown=0)
                try:
                    if how == "raise":
                        await trio.sleep(1)
                        raise KeyError("oops")
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True), trio.fail_after(60):  # not a hang
                        await sup.shutdown()
                    returned.append(trio.current_time())
                    assert infos(sup) == [("a", False, 0), ("b", False, 0), ("z", False, 0)]
        assert scope.cancelled_caught is (how == "cancel")

    if how == "raise":
        with pytest.raises(KeyError, match="oops") as info:
            await run()
        assert type(info.value) is KeyError
    else:
        await run()
    assert returned == [3.5]
    assert trio.current_time() == 3.5
    assert crew.log[3:] == [
        (1.0, "cancelled", "z"),
        (1.0, "end", "z"),
        (1.5, "graceful", "b"),
        (1.5, "end", "b"),
        (3.5, "cancelled", "a"),
        (3.5, "end", "a"),
    ]
    assert task_count() == before
    assert crew.live == 0


async def test_the_example_of_the_hang_finishes(autojump_clock: Any) -> None:
    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    with trio.move_on_after(1) as scope:
        async with open_supervisor() as sup:
            await sup.start_child("c", child, shutdown=0)
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(60):  # not a hang
                    await sup.shutdown()
    assert scope.cancelled_caught
    assert trio.current_time() == 1.0


async def test_a_supervisor_supervises_until_its_block_is_left_even_once_cancelled(
    autojump_clock: Any,
) -> None:
    # The enclosing scope is cancelled at 1 but the block goes on under a shield: a child
    # that crashes then is restarted as usual, and the new run still gets its grace.
    crew = Crew()
    with trio.move_on_after(1) as scope:
        async with open_supervisor() as sup:
            await sup.start_child("a", functools.partial(crew.child, cleanup=1.0), "a")
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(60):  # not a hang
                    crew.crash("a")
                    await trio.sleep(1)
                    assert infos(sup) == [("a", True, 1)]
                    await sup.shutdown()
    assert scope.cancelled_caught
    assert trio.current_time() == 3.0
    assert crew.log == [
        (0.0, "start", "a"),
        (1.0, "end", "a"),
        (1.0, "start", "a"),
        (3.0, "graceful", "a"),  # asked at 2, returned after its second of cleanup
        (3.0, "end", "a"),
    ]
    assert crew.live == 0
