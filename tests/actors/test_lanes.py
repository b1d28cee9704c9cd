from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

import actors
from actors import ComponentClosed, Key, LaneStats, open_lanes
from tests.helpers import task_count


async def test_same_key_runs_one_at_a_time_in_arrival_order(autojump_clock: Any) -> None:
    log: list[tuple[str, int, float]] = []

    async def job(i: int) -> int:
        log.append(("start", i, trio.current_time()))
        await trio.sleep(1)
        log.append(("end", i, trio.current_time()))
        return i * 10

    results: dict[int, int] = {}
    async with open_lanes() as lanes, trio.open_nursery() as nursery:

        async def call(i: int) -> None:
            results[i] = await lanes.run("k", job, i)

        for i in range(4):
            nursery.start_soon(call, i)
            await trio.sleep(0.1)  # arrival order 0, 1, 2, 3
    assert results == {0: 0, 1: 10, 2: 20, 3: 30}
    assert [(kind, i) for kind, i, _ in log] == [
        (kind, i) for i in range(4) for kind in ("start", "end")
    ]
    assert [t for kind, _, t in log if kind == "end"] == [1.0, 2.0, 3.0, 4.0]


async def test_different_keys_run_in_parallel(autojump_clock: Any) -> None:
    ends: list[float] = []

    async def job() -> None:
        await trio.sleep(1)
        ends.append(trio.current_time())

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(lanes.run, f"k{i}", job)
    assert ends == [1.0] * 10


async def test_exception_reaches_caller_unchanged_and_lane_goes_on(autojump_clock: Any) -> None:
    boom = KeyError("boom")

    async def fail() -> None:
        raise boom

    async def ok() -> str:
        return "ok"

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        # once inline (idle lane), once through the lane's task (busy lane)
        with pytest.raises(KeyError) as caught:
            await lanes.run("k", fail)
        assert caught.value is boom
        nursery.start_soon(lanes.run, "k", trio.sleep, 1)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(KeyError) as caught:
            await lanes.run("k", fail)
        assert caught.value is boom
        assert await lanes.run("k", ok) == "ok"


async def test_caller_cancelled_while_queued_never_runs_its_job(autojump_clock: Any) -> None:
    ran: list[str] = []

    async def job(name: str) -> None:
        ran.append(name)
        await trio.sleep(1)

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        nursery.start_soon(lanes.run, "k", job, "first")
        await trio.sleep(0.1)
        with trio.move_on_after(0.5) as scope:
            await lanes.run("k", job, "cancelled")
        assert scope.cancelled_caught
        assert lanes.stats().queued == 0  # a cancelled caller leaves the queue at once
        await lanes.run("k", job, "third")
        assert trio.current_time() == 2.0
    assert ran == ["first", "third"]
    assert lanes.stats().queued == 0


@pytest.mark.parametrize("busy", [False, True], ids=["inline", "queued"])
async def test_caller_cancelled_while_running_cancels_the_job(
    autojump_clock: Any, busy: bool
) -> None:
    events: list[str] = []

    async def slow() -> None:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            events.append("job cancelled")
            raise

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        if busy:
            nursery.start_soon(lanes.run, "k", trio.sleep, 1)
            await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(3):
            await lanes.run("k", slow)
        assert events == ["job cancelled"]
        assert trio.current_time() == 3.0
        await lanes.run("k", trio.sleep, 0)  # the lane goes on
        assert trio.current_time() == 3.0


async def test_run_multi_holds_every_key_taken_in_sorted_order(autojump_clock: Any) -> None:
    log: list[tuple[str, float]] = []

    async def job(name: str) -> str:
        log.append((name, trio.current_time()))
        await trio.sleep(1)
        return name

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        nursery.start_soon(lanes.run, "b", job, "b-first")
        await trio.testing.wait_all_tasks_blocked()
        # takes "a" at once, then queues on "b" until b-first is done
        nursery.start_soon(lanes.run_multi, ["b", "a", "b"], job, "multi")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(lanes.run, "a", job, "a-after")  # waits for multi, which holds "a"
        nursery.start_soon(lanes.run, "c", job, "c-free")
    assert sorted(log, key=lambda e: (e[1], e[0])) == [
        ("b-first", 0.0),
        ("c-free", 0.0),
        ("multi", 1.0),
        ("a-after", 2.0),
    ]
    assert lanes.stats().busy == 0


async def test_run_multi_duplicates_count_once_and_returns_result() -> None:
    async def job(x: int) -> int:
        return x + 1

    async with open_lanes() as lanes:
        assert await lanes.run_multi([Key("x"), "x", "x"], job, 1) == 2
        assert lanes.stats() == LaneStats(live=1, busy=0, queued=0, jobs_total=1, reaped_total=0)


async def test_run_multi_exception_releases_every_key() -> None:
    async def fail() -> None:
        raise RuntimeError("nope")

    async with open_lanes() as lanes:
        with pytest.raises(RuntimeError, match="nope"):
            await lanes.run_multi(["a", "b"], fail)
        with trio.fail_after(1):
            await lanes.run_multi(["b", "a"], trio.sleep, 0)
        assert lanes.stats().busy == 0


async def test_run_multi_cancelled_while_waiting_takes_nothing(autojump_clock: Any) -> None:
    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        nursery.start_soon(lanes.run, "b", trio.sleep, 5)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1):
            await lanes.run_multi(["a", "b"], trio.sleep, 100)
        # "a" was taken then given back; "b" was never granted
        assert trio.current_time() == 1.0
        await lanes.run("a", trio.sleep, 0)
        assert trio.current_time() == 1.0
        await lanes.run("b", trio.sleep, 0)
        assert trio.current_time() == 5.0


async def test_idle_lanes_are_reaped_in_the_background(autojump_clock: Any) -> None:
    async with open_lanes(idle_timeout=10) as lanes:
        await lanes.run("a", trio.sleep, 0)
        await lanes.run("b", trio.sleep, 6)  # b goes idle at t=6
        assert lanes.stats().live == 2
        # the reaper looks every idle_timeout / 2 = 5 s
        await trio.sleep_until(10.5)
        assert lanes.stats().live == 2  # a has been idle exactly 10 s at t=10: not more
        await trio.sleep_until(15.5)
        assert lanes.stats().live == 1  # a reaped at t=15, b (idle 9 s) still there
        await trio.sleep_until(20.5)
        assert lanes.stats() == LaneStats(live=0, busy=0, queued=0, jobs_total=2, reaped_total=2)


async def test_reap_idle_reaps_now_and_returns_count(autojump_clock: Any) -> None:
    async with open_lanes(idle_timeout=100) as lanes:
        for i in range(5):
            await lanes.run(f"k{i}", trio.sleep, 0)
        await trio.sleep(50)
        await lanes.run("k0", trio.sleep, 0)
        assert await lanes.reap_idle() == 0
        await trio.sleep(51)
        assert await lanes.reap_idle() == 4
        assert lanes.stats().live == 1


async def test_job_racing_a_reap_is_never_lost(autojump_clock: Any) -> None:
    ran: list[int] = []

    async def job(i: int) -> None:
        ran.append(i)

    async with open_lanes(idle_timeout=1) as lanes, trio.open_nursery() as nursery:
        await lanes.run("k", job, 0)
        await trio.sleep(5)
        # start a reap and, in the same scheduling batch (in Trio's random order), send to the
        # lane being reaped
        nursery.start_soon(lanes.reap_idle)
        nursery.start_soon(lanes.run, "k", job, 1)
        nursery.start_soon(lanes.run, "k", job, 2)
        await trio.testing.wait_all_tasks_blocked()
        await lanes.reap_idle()
        await lanes.run("k", job, 3)
    assert sorted(ran) == [0, 1, 2, 3]
    assert ran[0] == 0
    assert ran[-1] == 3


async def test_stats_counts_busy_and_queued(autojump_clock: Any) -> None:
    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(lanes.run, "k", trio.sleep, 1)
        nursery.start_soon(lanes.run, "j", trio.sleep, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert lanes.stats() == LaneStats(live=2, busy=2, queued=2, jobs_total=2, reaped_total=0)
    assert lanes.stats() == LaneStats(live=2, busy=0, queued=0, jobs_total=4, reaped_total=0)


async def test_leaving_the_block_lets_queued_jobs_finish_and_leaves_no_task(
    autojump_clock: Any,
) -> None:
    before = task_count()
    done: list[int] = []

    async def job(i: int) -> None:
        await trio.sleep(1)
        done.append(i)

    async with trio.open_nursery() as outer, open_lanes(idle_timeout=5) as lanes:
        for i in range(3):
            outer.start_soon(lanes.run, "k", job, i)
            await trio.testing.wait_all_tasks_blocked()
    assert done == [0, 1, 2]
    assert task_count() == before


async def test_cancelling_the_enclosing_scope_stops_at_once(autojump_clock: Any) -> None:
    before = task_count()
    with trio.move_on_after(1.5):
        async with open_lanes() as lanes, trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(lanes.run, "k", trio.sleep, 1)
    assert trio.current_time() == 1.5
    assert task_count() == before


async def test_closed_lanes_raise_closed_resource_error() -> None:
    async with open_lanes() as lanes:
        pass
    with pytest.raises(trio.ClosedResourceError, match="lanes are closed"):
        await lanes.run("k", trio.sleep, 0)
    with pytest.raises(ComponentClosed):
        await lanes.run_multi(["a"], trio.sleep, 0)
    with pytest.raises(ComponentClosed):
        await lanes.reap_idle()


async def test_run_checkpoints_even_on_the_fast_path() -> None:
    async def noop() -> None:
        pass

    async with open_lanes() as lanes:
        with trio.testing.assert_checkpoints():
            await lanes.run("k", noop)
        with trio.testing.assert_checkpoints():
            await lanes.run_multi(["a", "b"], noop)


def _sync_job() -> int:
    return 1


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((1, trio.sleep, 0), TypeError, "key must be a str"),
        ((None, trio.sleep, 0), TypeError, "key must be a str"),
        (("", trio.sleep, 0), ValueError, "key must not be empty"),
        (("k", _sync_job), TypeError, "async function"),
        (("k", "not callable"), TypeError, "async function"),
        (("k", lambda: 1), TypeError, "async function"),
    ],
)
async def test_bad_run_input_fails_at_once(
    args: tuple[Any, ...], error: type[Exception], match: str
) -> None:
    async with open_lanes() as lanes:
        with pytest.raises(error, match=match):
            await lanes.run(*args)
        assert lanes.stats().jobs_total == 0


async def test_bad_run_multi_input_fails_at_once() -> None:
    async with open_lanes() as lanes:
        with pytest.raises(ValueError, match="at least one key"):
            await lanes.run_multi([], trio.sleep, 0)
        with pytest.raises(TypeError, match="list of keys"):
            await lanes.run_multi("ab", trio.sleep, 0)
        with pytest.raises(ValueError, match="empty"):
            await lanes.run_multi(["a", ""], trio.sleep, 0)
        with pytest.raises(TypeError, match="async function"):
            await lanes.run_multi(["a"], _sync_job)  # type: ignore[arg-type]
        assert lanes.stats().busy == 0


@pytest.mark.parametrize("timeout", [-1, 0, math.nan, "10", None])
async def test_bad_idle_timeout_fails_at_once(timeout: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="idle_timeout"):
        async with open_lanes(idle_timeout=timeout):
            pass


async def test_an_error_in_the_block_leaves_as_itself_not_in_a_group() -> None:
    async def body() -> None:
        async with open_lanes() as lanes:
            await lanes.run("k", trio.sleep, 0)
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await body()


@pytest.mark.parametrize("queued", [False, True], ids=["inline", "queued"])
async def test_running_a_held_lane_from_inside_its_job_fails_instead_of_deadlocking(
    queued: bool,
) -> None:
    async def inner() -> str:
        return "inner"

    async def outer() -> str:
        return await lanes.run("k", inner)

    async def outer_multi() -> str:
        return await lanes.run_multi(["j", "k"], inner)

    async with open_lanes() as lanes, trio.open_nursery() as nursery:
        if queued:  # the jobs run in the lane's own task
            nursery.start_soon(lanes.run, "k", trio.sleep, 0)
            await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(actors.WouldDeadlock, match="would wait for itself"):
            await lanes.run("k", outer)
        with pytest.raises(actors.WouldDeadlock):
            await lanes.run("k", outer_multi)
        with pytest.raises(actors.WouldDeadlock):
            await lanes.run_multi(["k", "x"], outer)
        assert await lanes.run("k", inner) == "inner"
        assert lanes.stats().busy <= 1


async def test_the_same_task_may_use_a_lane_again_right_after_handing_it_on() -> None:
    """Releasing a turn with mail waiting hands it to the lane's task: the caller holds nothing."""
    async with open_lanes() as lanes, trio.open_nursery() as nursery:

        async def job() -> None:
            # while we run inline, another task queues on the lane
            nursery.start_soon(lanes.run, "k", trio.sleep, 0)
            await trio.testing.wait_all_tasks_blocked()

        await lanes.run("k", job)
        await lanes.run("k", trio.sleep, 0)  # the lane's task has not started yet
        await lanes.run_multi(["k"], job)
        await lanes.run_multi(["k", "j"], trio.sleep, 0)


async def test_tell_then_ask_the_same_key_from_one_task() -> None:
    async def handler(key: str, message: int) -> int:
        return message

    async with actors.open_keyed(handler) as keyed:
        await keyed.tell("k", 1)
        assert await keyed.ask("k", 2) == 2
