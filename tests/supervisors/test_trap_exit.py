"""OTP's trap_exit rule for stopping: only children that trap pay their grace; O(1) exits."""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import pytest
import trio

import supervisors
from supervisors import RestartIntensityExceeded, Strategy, Supervisor, open_supervisor
from tests.helpers import task_count
from tests.supervisors.helpers import Crew, infos, trapping


async def plain(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """A child written as Trio code is: it never looks at shutting_down()."""
    task_status.started()
    await trio.sleep_forever()


async def crash_after(
    seconds: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    task_status.started()
    await trio.sleep(seconds)
    raise ConnectionError("down")


async def test_a_hundred_plain_children_under_move_on_after_stop_at_once(
    autojump_clock: Any,
) -> None:
    before = task_count()
    with trio.move_on_after(1) as scope:
        async with open_supervisor() as sup:
            for n in range(100):
                await sup.start_child(f"c{n}", plain)
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() == 1.0  # was 501 s: 5 s of grace for each child
    assert task_count() == before


async def test_giving_up_takes_no_grace_for_plain_children(autojump_clock: Any) -> None:
    async def run() -> None:
        async with open_supervisor(max_restarts=2, max_seconds=10) as sup:
            await sup.start_child("p1", plain)
            await sup.start_child("p2", plain)
            await sup.start_child("crashy", crash_after, 0.1)
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded):
        await run()
    assert trio.current_time() == pytest.approx(0.3)  # the third crash; no grace after it


async def test_terminate_child_cancels_a_plain_child_at_once(autojump_clock: Any) -> None:
    async with open_supervisor() as sup:
        await sup.start_child("p", plain, shutdown=30)
        await sup.terminate_child("p")
        assert trio.current_time() == 0.0
        await sup.restart_child("p")
        await sup.delete_child("p")
        assert trio.current_time() == 0.0


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_a_strategy_restart_cancels_plain_siblings_at_once_last_started_first(
    strategy: Strategy, autojump_clock: Any
) -> None:
    crew = Crew()
    async with open_supervisor(strategy) as sup:
        for cid in "abcd":
            await sup.start_child(cid, crew.child, cid, shutdown=10)
        crew.crash("b")
        await trio.sleep(0.5)
        assert [c for _, what, c in crew.log if what == "cancelled"] == (
            ["d", "c", "a"] if strategy == "one_for_all" else ["d", "c"]
        )
        restarted = "abcd" if strategy == "one_for_all" else "bcd"
        assert crew.starts("d") == [0.0, 0.0]  # restarted at once: nobody waited for a grace
        assert infos(sup) == [(c, True, int(c in restarted)) for c in "abcd"]
        await sup.shutdown()
    assert trio.current_time() == 0.5


async def test_a_stop_of_mixed_children_goes_last_started_first_and_waits_only_for_trappers(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    tidy = functools.partial(crew.child, cleanup=1.0)
    async with open_supervisor() as sup:
        await sup.start_child("p1", crew.child, "p1")
        await sup.start_child("t1", tidy, "t1")
        await sup.start_child("p2", crew.child, "p2")
        await sup.start_child("slow", trapping(crew), "slow", shutdown=2.0)
        await sup.start_child("p3", crew.child, "p3")
        await sup.shutdown()
    assert [entry for entry in crew.log if entry[1] != "end"][5:] == [
        (0.0, "cancelled", "p3"),
        (2.0, "cancelled", "slow"),
        (2.0, "cancelled", "p2"),
        (3.0, "graceful", "t1"),
        (3.0, "cancelled", "p1"),
    ]


async def test_shutdown_zero_stops_even_a_trapping_child_at_once(autojump_clock: Any) -> None:
    crew = Crew()
    async with open_supervisor() as sup:
        await sup.start_child("slow", trapping(crew), "slow", shutdown=0)
        await sup.shutdown()
    assert trio.current_time() == 0.0
    assert crew.kinds("cancelled") == [("cancelled", "slow")]


async def level(
    depth: int,
    crew: Crew,
    *,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A supervisor with a plain child and, below it, the next level (the last one crashes)."""
    async with open_supervisor(max_restarts=0, name=f"level{depth}") as sup:
        await sup.start_child(f"plain{depth}", crew.child, f"plain{depth}")
        if depth > 1:
            await sup.start_child(f"level{depth - 1}", level, depth - 1, crew)
        else:
            await sup.start_child("bottom", crash_after, 1.0)
        task_status.started(sup)


async def test_escalation_through_five_levels_takes_no_time_beyond_the_crash(
    autojump_clock: Any,
) -> None:
    crew = Crew()

    async def run() -> None:
        async with open_supervisor(max_restarts=0, name="root") as root:
            await root.start_child("level5", level, 5, crew)
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded) as info:
        await run()
    assert trio.current_time() == 1.0  # was 25 s: 5 s of grace for each level's plain child
    assert info.value.supervisor == "root"
    escalated = info.value.__cause__
    names = []
    while isinstance(escalated, RestartIntensityExceeded):
        names.append(escalated.supervisor)
        escalated = escalated.__cause__
    assert names == ["level5", "level4", "level3", "level2", "level1"]
    assert isinstance(escalated, ConnectionError)
    assert crew.kinds("cancelled") == [("cancelled", f"plain{n}") for n in range(1, 6)]


async def test_a_stop_through_five_levels_of_plain_children_takes_no_time(
    autojump_clock: Any,
) -> None:
    async def tier(
        depth: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with open_supervisor(name=f"tier{depth}") as sup:
            await sup.start_child("plain", plain)
            if depth > 1:
                await sup.start_child("below", tier, depth - 1)
            task_status.started()

    async with open_supervisor() as root:
        await root.start_child("top", tier, 5)
        await trio.sleep(1)
        await root.shutdown()
    assert trio.current_time() == 1.0


async def test_a_thousand_plain_children_stop_at_once(autojump_clock: Any) -> None:
    before = task_count()
    async with open_supervisor() as sup:
        for n in range(1000):
            await sup.start_child(f"c{n}", plain)
        await sup.shutdown()
    assert trio.current_time() == 0.0
    assert task_count() == before


def count_supervisor_lines(lines: list[int]) -> Callable[[FrameType, str, Any], Any]:
    """A trace function counting the lines run in the supervisor module (one per item)."""
    module = sys.modules[Supervisor.__module__].__file__

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            lines[0] += 1
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == module else None

    return tracer


async def work_per_restart(siblings: int) -> int:
    """Lines of the supervisor run for five crash-and-restart cycles beside ``siblings``."""
    lines = [0]
    async with open_supervisor(max_restarts=1000, max_seconds=0.5) as sup:
        for n in range(siblings):
            await sup.start_child(f"s{n}", plain)
        await sup.start_child("crashy", crash_after, 1.0)
        await trio.sleep(0.5)
        previous = sys.gettrace()
        sys.settrace(count_supervisor_lines(lines))
        try:
            await trio.sleep(5)  # crashes (and restarts) at 1.0, 2.0, ..., 5.0
        finally:
            sys.settrace(previous)
        assert infos(sup)[-1] == ("crashy", True, 5)
        await sup.shutdown()
    return lines[0]


async def test_a_crash_and_restart_does_the_same_work_beside_10_or_500_siblings(
    autojump_clock: Any,
) -> None:
    # Counting, not timing: the old code scanned every child on every exit (_next_due,
    # _process), so the lines it ran grew with the number of siblings.
    few = await work_per_restart(10)
    many = await work_per_restart(500)
    assert few > 0
    assert many == few


async def run_and_count(
    start: Callable[[Supervisor], Awaitable[None]], act: Callable[[Supervisor], Awaitable[None]]
) -> int:
    lines = [0]
    async with open_supervisor() as sup:
        await start(sup)
        previous = sys.gettrace()
        sys.settrace(count_supervisor_lines(lines))
        try:
            await act(sup)
        finally:
            sys.settrace(previous)
        await sup.shutdown()
    return lines[0]


@pytest.mark.parametrize("exit_kind", ["transient_return", "temporary_crash"])
async def test_an_exit_does_the_same_work_beside_10_or_500_siblings(
    exit_kind: str, autojump_clock: Any
) -> None:
    async def returns(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await trio.sleep(1)

    restart: supervisors.RestartType = "transient"
    fn: Any = returns
    if exit_kind == "temporary_crash":
        restart, fn = "temporary", functools.partial(crash_after, 1.0)

    def starter(siblings: int) -> Callable[[Supervisor], Awaitable[None]]:
        async def start(sup: Supervisor) -> None:
            for n in range(siblings):
                await sup.start_child(f"s{n}", plain)
            for n in range(5):
                await sup.start_child(f"x{n}", fn, restart=restart)

        return start

    async def act(sup: Supervisor) -> None:
        await trio.sleep(2)

    assert await run_and_count(starter(10), act) == await run_and_count(starter(500), act)
