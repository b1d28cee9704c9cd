"""DESIGN rule 6: one way a piece of work runs, whether its key was idle or busy.

A Lanes job is its caller's work (the caller's context variables, deadline, cancel scopes and
exceptions); a keyed or spawned actor's handler is the actor's work (the actor's context,
never an asker's deadline or cancellation). Each test runs both paths: the key idle when the
call arrives, and the key busy so the call queues.
"""

from __future__ import annotations

import contextvars
import math
from typing import Any

import pytest
import trio
import trio.testing

import actors
import supervisors
from actors import ActorCrashed, ComponentClosed, WouldDeadlock, open_keyed, open_lanes

REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")

PATHS = pytest.mark.parametrize("busy", [False, True], ids=["idle", "queued"])


class Stop(BaseException):
    """A KeyboardInterrupt-like exception: not an Exception."""


async def _occupy(lanes: actors.Lanes, nursery: trio.Nursery, key: str, seconds: float) -> None:
    """Make ``key`` busy for ``seconds`` from now, so the next call on it queues."""
    nursery.start_soon(lanes.run, key, trio.sleep, seconds)
    await trio.testing.wait_all_tasks_blocked()


# ------------------------------------------------------------------------ Lanes: caller's work


@PATHS
async def test_a_job_sees_its_callers_context_and_its_writes_stay_with_that_caller(
    autojump_clock: Any, busy: bool
) -> None:
    seen: dict[str, str] = {}
    after: dict[str, str] = {}

    async def job(name: str) -> None:
        seen[name] = REQUEST.get()
        REQUEST.set(f"written by {name}")
        await trio.sleep(1)

    async def caller(name: str) -> None:
        REQUEST.set(name)
        await lanes.run("k", job, name)
        after[name] = REQUEST.get()

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        if busy:
            await _occupy(lanes, nursery, "k", 1)
        for name in ("first", "second", "third"):
            nursery.start_soon(caller, name)
            await trio.testing.wait_all_tasks_blocked()
    # each job read its own caller's value, never the previous job's write ...
    assert seen == {"first": "first", "second": "second", "third": "third"}
    # ... and what it wrote is its caller's, as after a direct `await job(name)`
    assert after == {n: f"written by {n}" for n in ("first", "second", "third")}


@PATHS
async def test_a_job_runs_under_its_callers_deadline_and_in_its_task(
    autojump_clock: Any, busy: bool
) -> None:
    seen: list[tuple[float, bool]] = []

    async def job() -> None:
        seen.append((trio.current_effective_deadline(), trio.lowlevel.current_task() is me))

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        if busy:
            await _occupy(lanes, nursery, "k", 1)
        me = trio.lowlevel.current_task()
        with trio.move_on_after(5):
            await lanes.run("k", job)
    assert seen == [(5.0, True)]


@PATHS
async def test_shutting_down_inside_a_job_is_the_callers(autojump_clock: Any, busy: bool) -> None:
    mine: dict[str, bool] = {}

    async def job() -> trio.Event:
        return supervisors.shutting_down()

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        if busy:
            await _occupy(lanes, nursery, "k", 1)

        async def child(name: str, *, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            own = supervisors.shutting_down()
            mine[name] = await lanes.run("k", job) is own

        async with supervisors.open_supervisor() as sup:
            for name in ("a", "b"):
                await sup.start_child(name, child, name, restart="temporary")
            await trio.sleep(2)
    assert mine == {"a": True, "b": True}


@PATHS
async def test_a_base_exception_reaches_its_caller_only_and_the_lane_goes_on(
    autojump_clock: Any, busy: bool
) -> None:
    stop = Stop("interrupt")
    results: dict[str, object] = {}

    async def fail() -> None:
        await trio.sleep(1)
        raise stop

    async def ok() -> str:
        await trio.sleep(1)
        return "ok"

    async def caller(name: str, fn: Any) -> None:
        try:
            results[name] = await lanes.run("k", fn)
        except BaseException as exc:  # we record whatever reached this caller
            results[name] = exc

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        if busy:
            await _occupy(lanes, nursery, "k", 1)
        for name, fn in (("before", ok), ("failing", fail), ("after", ok)):
            nursery.start_soon(caller, name, fn)
            await trio.testing.wait_all_tasks_blocked()
    assert results == {"before": "ok", "failing": stop, "after": "ok"}
    assert results["failing"] is stop


@PATHS
async def test_a_shielded_commit_returns_its_result_to_a_cancelled_caller(
    autojump_clock: Any, busy: bool
) -> None:
    async def commit() -> str:
        with trio.CancelScope(shield=True):
            await trio.sleep(2)
        return "committed"

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        if busy:
            await _occupy(lanes, nursery, "k", 1)
        result = None
        with trio.move_on_after(1.5):  # passes while the commit runs, on both paths
            result = await lanes.run("k", commit)
        assert result == "committed"
        assert trio.current_time() == (3.0 if busy else 2.0)


async def test_a_to_b_to_a_across_keys_raises_instead_of_hanging(autojump_clock: Any) -> None:
    """T1 holds a and waits for b; T2 holds b (busy) and asks for a: a cycle, refused."""
    outcomes: dict[str, object] = {}

    async def inner() -> str:
        return "inner"

    async def hold_b_then_want_a() -> str:
        await trio.sleep(1)  # meanwhile T1 queues on b
        try:
            return await lanes.run("a", inner)
        except WouldDeadlock as exc:
            outcomes["T2"] = exc
            return "refused"

    async def hold_a_then_want_b() -> str:
        return await lanes.run("b", inner)

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        with trio.fail_after(10):
            nursery.start_soon(lanes.run, "b", hold_b_then_want_a)
            await trio.testing.wait_all_tasks_blocked()
            outcomes["T1"] = await lanes.run("a", hold_a_then_want_b)
    assert isinstance(outcomes["T2"], WouldDeadlock)
    assert "would wait for itself" in str(outcomes["T2"])
    assert outcomes["T1"] == "inner"
    assert trio.current_time() == 1.0


async def test_a_wait_through_a_run_multi_hold_is_refused(autojump_clock: Any) -> None:
    """T1's run_multi holds a and waits for b; T2 holds b and asks for a: refused in T2."""
    refused: list[WouldDeadlock] = []

    async def want_a() -> None:
        await trio.sleep(1)
        try:
            await lanes.run("a", trio.sleep, 0)
        except WouldDeadlock as exc:
            refused.append(exc)

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        nursery.start_soon(lanes.run, "b", want_a)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(10):
            await lanes.run_multi(["a", "b"], trio.sleep, 0)
        assert trio.current_time() == 1.0
    assert len(refused) == 1
    assert lanes.stats().busy == 0


@PATHS
async def test_after_the_block_is_cancelled_no_job_runs_on(autojump_clock: Any, busy: bool) -> None:
    events: list[tuple[str, float]] = []

    async def job(name: str) -> None:
        events.append((f"{name} starts", trio.current_time()))
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            events.append((f"{name} cancelled", trio.current_time()))
            raise

    async def caller(name: str) -> None:
        try:
            await lanes.run("k", job, name)
        except ComponentClosed as exc:
            events.append((f"{name}: {exc}", trio.current_time()))

    async with trio.open_nursery() as outside:  # the callers live outside the Lanes block
        with trio.move_on_after(1):
            async with open_lanes() as lanes:
                if busy:
                    outside.start_soon(caller, "first")
                    await trio.testing.wait_all_tasks_blocked()
                outside.start_soon(caller, "mine")
                await trio.sleep_forever()
    expected = [
        ("first starts" if busy else "mine starts", 0.0),
        ("first cancelled" if busy else "mine cancelled", 1.0),
        (
            ("first" if busy else "mine") + ": lanes shut down while this job ran, so it was "
            "cancelled",
            1.0,
        ),
    ]
    if busy:
        expected.append(("mine: lanes shut down before this job ran", 1.0))
    assert sorted(events, key=lambda e: (e[1], e[0])) == sorted(
        expected, key=lambda e: (e[1], e[0])
    )
    assert trio.current_time() == 1.0


# ------------------------------------------------------------------------ actors: actor's work


@PATHS
async def test_a_keyed_handler_runs_in_the_registrys_context_not_the_askers(
    autojump_clock: Any, busy: bool
) -> None:
    seen: list[tuple[str, float, bool]] = []

    async def handler(key: str, message: float) -> None:
        seen.append(
            (REQUEST.get(), trio.current_effective_deadline(), trio.lowlevel.current_task() is me)
        )
        REQUEST.set("written by the handler")
        await trio.sleep(message)

    REQUEST.set("registry")
    async with open_keyed(handler) as keyed:
        REQUEST.set("asker")
        me = trio.lowlevel.current_task()
        if busy:
            await keyed.tell("k", 1)
        with trio.move_on_after(5):
            await keyed.ask("k", 0)
            await keyed.ask("k", 0)
        assert REQUEST.get() == "asker"  # the handler's write is the actor's, not ours
    assert {s[0] for s in seen} <= {"registry", "written by the handler"}  # never "asker"
    assert seen[0][0] == "registry"
    assert all(deadline == math.inf and not in_asker for _, deadline, in_asker in seen)


@PATHS
async def test_an_asker_cancelled_while_its_message_runs_stops_waiting_the_handler_finishes(
    autojump_clock: Any, busy: bool
) -> None:
    done: list[tuple[str, float]] = []

    async def handler(key: str, message: str) -> str:
        await trio.sleep(2)
        done.append((message, trio.current_time()))
        return message

    async with open_keyed(handler) as keyed:
        if busy:
            await keyed.tell("k", "before")
        with trio.move_on_after(3 if busy else 1) as scope:
            await keyed.ask("k", "mine")
        assert scope.cancelled_caught
        assert trio.current_time() == (3.0 if busy else 1.0)  # stopped waiting at once
    assert done == ([("before", 2.0)] if busy else []) + [("mine", 4.0 if busy else 2.0)]


@PATHS
async def test_a_handlers_base_exception_is_handled_the_same_on_both_paths(
    autojump_clock: Any, busy: bool
) -> None:
    stop = Stop("interrupt")
    caught: list[BaseException] = []

    async def handler(key: str, message: str) -> None:
        await trio.sleep(1)
        if message == "stop":
            raise stop

    with pytest.RaisesGroup(Stop):
        async with open_keyed(handler) as keyed:
            if busy:
                await keyed.tell("k", "before")
            try:
                await keyed.ask("k", "stop")
            except ActorCrashed as exc:
                caught.append(exc)
    assert len(caught) == 1
    assert caught[0].__cause__ is stop
    assert keyed.stats().restarts_total == 0  # not our machinery: no restart


async def test_a_spawned_actor_runs_in_its_own_task_and_the_spawners_context(
    autojump_clock: Any,
) -> None:
    seen: list[tuple[str, float, bool]] = []

    class Probe(actors.Actor[float, None]):
        async def receive(self, message: float) -> None:
            seen.append(
                (
                    REQUEST.get(),
                    trio.current_effective_deadline(),
                    trio.lowlevel.current_task() is me,
                )
            )
            await trio.sleep(message)

    REQUEST.set("spawner")
    async with trio.open_nursery() as nursery:
        ref = await actors.spawn(nursery, Probe())
        REQUEST.set("asker")
        me = trio.lowlevel.current_task()
        with trio.move_on_after(5):
            await ref.ask(0)  # idle actor
            await ref.tell(1)
            await ref.ask(0)  # busy actor: queued
        await ref.stop()
    assert seen == [("spawner", math.inf, False)] * 3


async def test_keyed_handlers_asking_each_other_in_a_cycle_raise_instead_of_hanging(
    autojump_clock: Any,
) -> None:
    async def handler(key: str, message: str) -> str:
        if message == "nap":
            await trio.sleep(1)
            return "rested"
        if message == "start":
            return await keyed.ask("b", "then a")
        if message == "then a":
            await trio.sleep(1)
            try:
                return await keyed.ask("a", "again")
            except WouldDeadlock:
                return "refused"
        return "unreachable"

    async with open_keyed(handler) as keyed:
        await keyed.tell("b", "nap")  # b is busy: "then a" queues behind the nap
        with trio.fail_after(10):
            assert await keyed.ask("a", "start") == "refused"
        assert trio.current_time() == 2.0


async def test_an_actor_asking_itself_raises_would_deadlock() -> None:
    class Selfish(actors.Actor[str, str]):
        async def receive(self, message: str) -> str:
            if message == "again":
                return "never"
            return await ref.ask("again")

    async with trio.open_nursery() as nursery:
        ref: actors.ActorRef[str, str] = await actors.spawn(nursery, Selfish())
        with trio.fail_after(1), pytest.raises(WouldDeadlock):
            await ref.ask("go")
        await ref.stop()
