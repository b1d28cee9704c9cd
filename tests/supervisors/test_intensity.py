"""Restart intensity, backoff and supervision trees, with exact times on the autojump clock."""

from __future__ import annotations

import functools
import itertools
import random
from typing import Any

import pytest
import trio

import supervisors
from supervisors import (
    RestartBackoff,
    RestartIntensityExceeded,
    Supervisor,
    SupervisorEvent,
    SupervisorEventKind,
    open_supervisor,
)
from tests.helpers import task_count
from tests.supervisors.helpers import Boom, Crew, infos, trapping


def crashing(
    starts: list[float], after: float = 0.0, *, returns: bool = False
) -> Any:  # the child function
    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(after)
        if not returns:
            raise Boom(f"run {len(starts)}")

    return child


async def test_intensity_exceeded_at_the_exact_time(autojump_clock: Any) -> None:
    starts: list[float] = []
    crew = Crew()
    reached_end_of_block = False
    sups: list[Supervisor] = []

    async def run() -> None:
        nonlocal reached_end_of_block
        async with open_supervisor(max_restarts=3, max_seconds=5.0, name="svc") as sup:
            sups.append(sup)
            await sup.start_child("first", crew.child, "first", shutdown=0)
            await sup.start_child("crashy", crashing(starts, after=1.0))
            await sup.start_child("last", crew.child, "last", shutdown=0)
            await trio.sleep(100)
            reached_end_of_block = True  # pragma: no cover

    with pytest.raises(RestartIntensityExceeded) as info:
        await run()
    assert trio.current_time() == 4.0
    assert starts == [0.0, 1.0, 2.0, 3.0]  # the crash at t=4 would be the 4th restart in 5 s
    assert not reached_end_of_block
    exc = info.value
    assert isinstance(exc.__cause__, Boom)
    assert str(exc.__cause__) == "run 4"
    assert (exc.supervisor, exc.child_id, exc.restarts, exc.seconds) == ("svc", "crashy", 4, 3.0)
    assert (exc.max_restarts, exc.max_seconds) == (3, 5.0)
    assert "child 'crashy' crashed with Boom" in str(exc)
    assert "restart 4 within 3 s" in str(exc)
    assert "max_restarts=3 within max_seconds=5" in str(exc)
    assert crew.log == [  # the others are stopped last started first, at once (shutdown=0)
        (0.0, "start", "first"),
        (0.0, "start", "last"),
        (4.0, "cancelled", "last"),
        (4.0, "end", "last"),
        (4.0, "cancelled", "first"),
        (4.0, "end", "first"),
    ]
    assert infos(sups[0]) == [("first", False, 0), ("crashy", False, 3), ("last", False, 0)]


async def test_old_restarts_leave_the_window(autojump_clock: Any) -> None:
    starts: list[float] = []
    async with open_supervisor(max_restarts=2, max_seconds=3.0) as sup:
        await sup.start_child("c", crashing(starts, after=2.0))
        await trio.sleep(20.5)  # restarts at 2, 4, 6 ...: never more than 2 within 3 s
        assert infos(sup) == [("c", True, 10)]
        await sup.shutdown()
    assert starts == [float(t) for t in range(0, 21, 2)]


async def test_a_restart_exactly_max_seconds_ago_still_counts(autojump_clock: Any) -> None:
    starts: list[float] = []

    async def run() -> None:
        async with open_supervisor(max_restarts=2, max_seconds=3.0) as sup:
            await sup.start_child("c", crashing(starts, after=1.5))
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded) as info:
        await run()
    # Restarts at 1.5 and 3.0; the one at 4.5 makes 3 within [1.5, 4.5].
    assert starts == [0.0, 1.5, 3.0]
    assert trio.current_time() == 4.5
    assert info.value.restarts == 3


async def test_max_restarts_zero_gives_up_at_the_first_restart(autojump_clock: Any) -> None:
    async def run() -> None:
        async with open_supervisor(max_restarts=0) as sup:
            await sup.start_child("c", crashing([], after=1.0), restart="transient")
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded):
        await run()
    assert trio.current_time() == 1.0


async def test_permanent_child_that_keeps_returning_also_exceeds(autojump_clock: Any) -> None:
    async def run() -> None:
        async with open_supervisor(max_restarts=1, max_seconds=10) as sup:
            await sup.start_child("r", crashing([], after=1.0, returns=True))
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded) as info:
        await run()
    assert trio.current_time() == 2.0
    assert info.value.__cause__ is None
    assert "child 'r' returned" in str(info.value)


async def test_one_crash_is_one_restart_for_the_intensity_under_one_for_all(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor("one_for_all", max_restarts=2, max_seconds=100) as sup:
        for cid in "abcd":
            await sup.start_child(cid, crew.child, cid, shutdown=0)
        crew.crash("a")
        await trio.sleep(1)
        crew.crash("d")
        await trio.sleep(1)
        assert infos(sup) == [(cid, True, 2) for cid in "abcd"]  # 8 child restarts, 2 events
        await sup.shutdown()


async def test_restart_that_fails_before_started_counts_and_is_retried(autojump_clock: Any) -> None:
    runs: list[float] = []

    async def fails_on_restart(*, task_status: trio.TaskStatus[None]) -> None:
        runs.append(trio.current_time())
        if 1 < len(runs) < 4:
            raise Boom("cannot start")
        task_status.started()
        await trio.sleep(1)
        raise Boom("crash")

    events: list[SupervisorEvent] = []
    async with open_supervisor(max_restarts=5, max_seconds=100, on_event=events.append) as sup:
        backoff = RestartBackoff(min=0.5, jitter=0)
        await sup.start_child("f", fails_on_restart, backoff=backoff)
        await trio.sleep(5)
        assert infos(sup) == [("f", True, 3)]
        await sup.shutdown()
    # crashes at 1; its restarts, 0.5, 1 and 2 s apart, fail at 1.5 and 2.5, then one starts
    assert runs == [0.0, 1.5, 2.5, 4.5]
    kinds = [(e.kind, e.time) for e in events]
    assert kinds[:4] == [
        (SupervisorEventKind.CHILD_STARTED, 0.0),
        (SupervisorEventKind.CHILD_CRASHED, 1.0),
        (SupervisorEventKind.CHILD_CRASHED, 1.5),
        (SupervisorEventKind.CHILD_CRASHED, 2.5),
    ]
    assert str(events[2].error) == "cannot start"


async def test_backoff_spaces_restarts_exponentially_up_to_max(autojump_clock: Any) -> None:
    starts: list[float] = []
    async with open_supervisor(max_restarts=100, max_seconds=100) as sup:
        backoff = RestartBackoff(min=0.125, max=1.0, jitter=0)
        await sup.start_child("c", crashing(starts), backoff=backoff)
        await trio.sleep(3)
        await sup.shutdown()
    # waits 0.125, 0.25, 0.5, then capped at 1.0
    assert starts == [0.0, 0.125, 0.375, 0.875, 1.875, 2.875]


async def test_a_healthy_run_resets_the_backoff(autojump_clock: Any) -> None:
    starts: list[float] = []
    durations = iter([0.0, 0.0, 2.0, 0.0, 0.0])

    async def child(*, task_status: trio.TaskStatus[None]) -> None:
        starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(next(durations, 100.0))
        raise Boom

    async with open_supervisor(max_restarts=100, max_seconds=100) as sup:
        await sup.start_child("c", child, backoff=RestartBackoff(min=0.25, max=2.0, jitter=0))
        await trio.sleep(10)
        await sup.shutdown()
    # waits 0.25, 0.5; the run from 0.75 lasts 2 s (>= max: healthy), so 0.25, 0.5, 1 again
    assert starts == [0.0, 0.25, 0.75, 3.0, 3.5, 4.5]


async def test_backoff_jitter_draws_from_the_given_rng(autojump_clock: Any) -> None:
    starts: list[float] = []
    async with open_supervisor(max_restarts=100, max_seconds=100) as sup:
        backoff = RestartBackoff(min=1.0, max=8.0, jitter=0.5, rng=random.Random(7))
        await sup.start_child("c", crashing(starts), backoff=backoff)
        await trio.sleep(20)
        await sup.shutdown()
    expected_rng = random.Random(7)
    expected = [0.0]
    for n in range(1, len(starts)):
        base = min(8.0, 2.0 ** (n - 1))
        expected.append(expected[-1] + base * (1 - 0.5 * expected_rng.random()))
    assert starts == pytest.approx(expected, rel=1e-12)  # the mock clock may round an ulp
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for n, gap in enumerate(gaps, start=1):
        base = min(8.0, 2.0 ** (n - 1))
        assert base / 2 - 1e-9 <= gap <= base + 1e-9


async def test_siblings_wait_for_the_crashed_childs_backoff(autojump_clock: Any) -> None:
    crew = Crew()
    async with open_supervisor("rest_for_one") as sup:
        backoff = RestartBackoff(min=2.0, jitter=0)
        await sup.start_child("a", crew.child, "a", shutdown=0)
        await sup.start_child("b", crew.child, "b", shutdown=0, backoff=backoff)
        await sup.start_child("c", crew.child, "c", shutdown=0)
        await trio.sleep(1)
        crew.crash("b")
        await trio.sleep(1)
        assert infos(sup) == [("a", True, 0), ("b", False, 0), ("c", False, 0)]
        await trio.sleep(2)
        assert infos(sup) == [("a", True, 0), ("b", True, 1), ("c", True, 1)]
        await sup.shutdown()
    assert crew.starts("b") == crew.starts("c") == [0.0, 3.0]


async def team(
    crew: Crew, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
) -> None:
    """A child supervisor: the documented way to build a tree."""
    async with open_supervisor("one_for_one", max_restarts=1, max_seconds=10, name="team") as sup:
        await sup.start_child("worker", crew.child, "worker")
        task_status.started(sup)


async def test_a_child_supervisor_that_gives_up_is_restarted_by_its_parent(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    events: list[SupervisorEvent] = []
    async with open_supervisor("one_for_one", name="root", on_event=events.append) as root:
        await root.start_child("bystander", crew.child, "bystander")
        first: Supervisor = await root.start_child("team", team, crew)
        assert infos(first) == [("worker", True, 0)]
        await trio.sleep(1)
        crew.crash("worker")
        await trio.sleep(1)
        assert infos(first) == [("worker", True, 1)]  # the team restarted its worker
        crew.crash("worker")  # the team's second restart within 10 s: it gives up
        await trio.sleep(1)
        assert first.closed
        assert infos(root) == [("bystander", True, 0), ("team", True, 1)]
        assert crew.starts("worker") == [0.0, 1.0, 2.0]  # a new team, a new worker
        assert crew.starts("bystander") == [0.0]
        await root.shutdown()
    crashed = [e for e in events if e.kind is SupervisorEventKind.CHILD_CRASHED]
    assert [(e.child_id, e.time) for e in crashed] == [("team", 2.0)]
    assert isinstance(crashed[0].error, RestartIntensityExceeded)
    assert crashed[0].error.supervisor == "team"
    assert crew.live == 0


async def test_a_tree_escalates_to_the_top(autojump_clock: Any) -> None:
    crew = Crew()

    async def run() -> None:
        async with open_supervisor(max_restarts=1, max_seconds=10, name="root") as root:
            await root.start_child("team", team, crew)
            for _ in range(4):  # team gives up at every second crash; root at the 2nd give-up
                await trio.sleep(1)
                crew.crash("worker")
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded) as info:
        await run()
    assert trio.current_time() == 4.0
    assert info.value.supervisor == "root"
    assert isinstance(info.value.__cause__, RestartIntensityExceeded)
    assert info.value.__cause__.supervisor == "team"
    assert crew.live == 0


async def test_giving_up_gives_only_trapping_children_their_grace(autojump_clock: Any) -> None:
    crew = Crew()

    async def run() -> None:
        async with open_supervisor(max_restarts=0) as sup:
            await sup.start_child("plain", crew.child, "plain", shutdown=2.0)
            await sup.start_child("slow", trapping(crew), "slow", shutdown=2.0)
            await sup.start_child("tidy", functools.partial(crew.child, cleanup=1.0), "tidy")
            await sup.start_child("crashy", crashing([], after=1.0), shutdown=0)
            await trio.sleep_forever()

    with pytest.raises(RestartIntensityExceeded):
        await run()
    # gave up at 1, then 1 s for tidy, 2 s for slow (it traps) and none for plain (it does not)
    assert trio.current_time() == 4.0
    assert crew.log[3:] == [
        (2.0, "graceful", "tidy"),
        (2.0, "end", "tidy"),
        (4.0, "cancelled", "slow"),
        (4.0, "end", "slow"),
        (4.0, "cancelled", "plain"),
        (4.0, "end", "plain"),
    ]


@pytest.mark.parametrize("body", ["ends", "forwards", "keeps_running"])
async def test_stopping_a_child_supervisor_stops_its_children_gracefully(
    body: str, autojump_clock: Any
) -> None:
    crew = Crew()

    async def graceful_team(*, task_status: trio.TaskStatus[None]) -> None:
        async with open_supervisor(name="team") as sup:
            slow_child = functools.partial(crew.child, cleanup=1.0)
            await sup.start_child("x", slow_child, "x", shutdown=5.0)
            await sup.start_child("y", slow_child, "y", shutdown=5.0)
            task_status.started()
            if body == "forwards":  # passes its stop on by hand too: no harm done
                await supervisors.shutting_down().wait()
                await sup.shutdown()
            elif body == "keeps_running":  # the block's own code is not cancelled
                await trio.sleep_forever()

    async with open_supervisor(name="root") as root:
        await root.start_child("team", graceful_team, shutdown=4.0)
        await trio.sleep(1)
        await root.terminate_child("team")
        # The team passes the stop on at once: it stops y then x, each given its second of
        # cleanup, and ends, unless its block's code still runs: then it is cancelled after
        # its own 4 s grace.
        assert trio.current_time() == (5.0 if body == "keeps_running" else 3.0)
        assert crew.log[2:] == [
            (2.0, "graceful", "y"),
            (2.0, "end", "y"),
            (3.0, "graceful", "x"),
            (3.0, "end", "x"),
        ]


async def subtree(
    crew: Crew,
    name: str,
    children: list[tuple[str, Any, float]],
    *,
    task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A child supervisor with ``(id, fn, shutdown)`` children whose block ends at once."""
    async with open_supervisor(name=name) as sup:
        for cid, fn, grace in children:
            await sup.start_child(cid, fn, cid, shutdown=grace)
        task_status.started(sup)


@pytest.mark.parametrize("where", ["in_the_child", "in_a_task_of_the_child"])
async def test_a_child_supervisor_stops_its_subtree_when_asked_to_stop(
    where: str, autojump_clock: Any
) -> None:
    crew = Crew()
    events: list[SupervisorEvent] = []
    before = task_count()

    async def team(*, task_status: trio.TaskStatus[Supervisor]) -> None:
        grow = functools.partial(subtree, crew, "team", [("worker", trapping(crew), 2.0)])
        if where == "in_the_child":
            await grow(task_status=task_status)
            return
        async with trio.open_nursery() as nursery:  # shutting_down() works there too
            task_status.started(await nursery.start(grow))

    async with open_supervisor(name="root", on_event=events.append) as root:
        await root.start_child("team", team, shutdown=10.0)
        await root.shutdown()
        # The worker traps but never returns: cancelled after its 2 s, then the team is done;
        # without passing the stop on, the team would be cancelled after its 10 s.
        assert trio.current_time() == 2.0
    assert crew.log == [
        (0.0, "start", "worker"),
        (2.0, "cancelled", "worker"),
        (2.0, "end", "worker"),
    ]
    assert [(e.kind, e.child_id, e.time) for e in events] == [
        (SupervisorEventKind.CHILD_STARTED, "team", 0.0),
        (SupervisorEventKind.CHILD_STOPPED, "team", 2.0),
    ]
    assert events[1].error is None
    assert task_count() == before


async def test_a_stop_goes_down_a_deep_tree_last_started_first(autojump_clock: Any) -> None:
    crew = Crew()
    tidy = functools.partial(crew.child, cleanup=1.0)

    async def mid(*, task_status: trio.TaskStatus[None]) -> None:
        async with open_supervisor(name="mid") as sup:
            leaf_children = [("x", tidy, 5.0), ("y", crew.child, 2.0)]
            await sup.start_child("leaf", subtree, crew, "leaf", leaf_children, shutdown=10.0)
            await sup.start_child("m", crew.child, "m", shutdown=1.0)
            task_status.started()

    async with open_supervisor(name="root") as root:
        await root.start_child("a", crew.child, "a", shutdown=3.0)
        await root.start_child("mid", mid, shutdown=10.0)
        await trio.sleep(1)
        await root.shutdown()
        assert trio.current_time() == 2.0
    # Only x traps, so only x's cleanup costs time; the plain ones are cancelled at once.
    assert crew.log[4:] == [
        (1.0, "cancelled", "m"),  # mid stops its children last started first: m,
        (1.0, "end", "m"),
        (1.0, "cancelled", "y"),  # then leaf, which stops y,
        (1.0, "end", "y"),
        (2.0, "graceful", "x"),  # and x, which returns after its second of cleanup;
        (2.0, "end", "x"),
        (2.0, "cancelled", "a"),  # only then does root stop a
        (2.0, "end", "a"),
    ]
    assert crew.live == 0


async def test_a_strategy_restart_of_a_child_supervisor_stops_its_subtree(
    autojump_clock: Any,
) -> None:
    crew = Crew()
    async with open_supervisor("one_for_all", name="root") as root:
        first: Supervisor = await root.start_child(
            "team", subtree, crew, "team", [("worker", trapping(crew), 2.0)], shutdown=10.0
        )
        await root.start_child("crashy", crashing([], after=1.0), shutdown=0)
        await trio.sleep(1.5)
        assert first.closed  # asked to stop by root: the team shuts down
        assert infos(root) == [("team", False, 0), ("crashy", False, 0)]
        await trio.sleep(2)
        assert crew.starts("worker") == [0.0, 3.0]  # the worker's 2 s, not the team's 10 s
        # (the worker traps; a plain one would be cancelled at once: see test_shutdown.py)
        assert infos(root) == [("team", True, 1), ("crashy", True, 1)]
        with pytest.raises(supervisors.SupervisorClosed):
            await first.start_child("late", crew.child, "late")
        await root.shutdown()
    assert crew.log[:3] == [
        (0.0, "start", "worker"),
        (3.0, "cancelled", "worker"),
        (3.0, "end", "worker"),
    ]
