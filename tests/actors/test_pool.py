from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import ComponentClosed, Pool, Retry, RetryPolicy, open_pool
from tests.helpers import Gauge


async def sleep_and_return(seconds: float, value: Any = None) -> Any:
    await trio.sleep(seconds)
    return value


# ------------------------------------------------------------------ limit and slots


async def test_never_more_than_limit_and_block_waits_for_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gauge = Gauge()
    t0 = trio.current_time()

    async def task(i: int) -> int:
        with gauge:
            await trio.sleep(1)
        return i

    async with open_pool(limit=5) as pool:
        for i in range(20):
            await pool.submit(task, i)
    assert trio.current_time() - t0 == 4.0
    assert gauge.most == 5
    assert sorted(pool.outputs) == list(range(20))
    assert pool.errors == []
    assert pool.stats().succeeded_total == 20


async def test_submit_waits_for_a_free_slot(autojump_clock: trio.testing.MockClock) -> None:
    t0 = trio.current_time()
    returned: list[float] = []
    running: list[int] = []
    async with open_pool(limit=2) as pool:
        for _ in range(5):
            await pool.submit(sleep_and_return, 10)
            returned.append(trio.current_time() - t0)
            running.append(pool.stats().running)
    assert returned == [0, 0, 10, 10, 20]
    assert running == [1, 2, 1, 2, 1]


async def test_outputs_in_completion_order(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pool(limit=4) as pool:
        for seconds, name in [(3, "c"), (1, "a"), (4, "d"), (2, "b")]:
            await pool.submit(sleep_and_return, seconds, name)
    assert pool.outputs == ["a", "b", "c", "d"]


async def test_failure_without_retry_is_recorded_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    boom = ValueError("boom")
    attempts = 0

    async def fails() -> None:
        nonlocal attempts
        attempts += 1
        raise boom

    async with open_pool(limit=2) as pool:
        await pool.submit(fails)
        await pool.submit(sleep_and_return, 1, "fine")
    assert attempts == 1
    assert pool.errors == [boom]
    assert pool.errors[0] is boom
    assert pool.outputs == ["fine"]


# ------------------------------------------------------------------ retries


def attempt_recorder(fail_times: int | None = None) -> tuple[list[float], Callable[[], Any]]:
    """A task failing ``fail_times`` times (always if None) and recording when it ran."""
    times: list[float] = []

    async def task() -> str:
        times.append(trio.current_time())
        if fail_times is None or len(times) <= fail_times:
            raise OSError(f"attempt {len(times)}")
        return f"ok after {len(times)}"

    return times, task


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 9) for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize(
    ("policy", "expected_gaps"),
    [
        (RetryPolicy.none(), [0.0, 0.0]),
        (RetryPolicy.none(max_attempts=1), []),
        (RetryPolicy.linear(max_attempts=4, initial_delay=0.5), [0.5, 1.0, 1.5]),
        (RetryPolicy.linear(max_attempts=4, initial_delay=0.5, max_delay=0.8), [0.5, 0.8, 0.8]),
        (RetryPolicy.exponential(), [0.1, 0.2]),
        (
            RetryPolicy.exponential(max_attempts=6, initial_delay=0.1, factor=3.0, max_delay=2.0),
            [0.1, 0.3, 0.9, 2.0, 2.0],
        ),
    ],
)
async def test_each_policy_retries_with_its_exact_delays(
    autojump_clock: trio.testing.MockClock, policy: RetryPolicy, expected_gaps: list[float]
) -> None:
    times, task = attempt_recorder()
    async with open_pool(limit=1) as pool:
        await pool.submit(task, retry=policy)
    assert len(times) == policy.max_attempts
    assert gaps(times) == expected_gaps
    assert [str(e) for e in pool.errors] == [f"attempt {policy.max_attempts}"]
    assert pool.stats().retries_total == policy.max_attempts - 1


async def test_success_after_retries(autojump_clock: trio.testing.MockClock) -> None:
    times, task = attempt_recorder(fail_times=2)
    async with open_pool(limit=1) as pool:
        await pool.submit(task, retry=RetryPolicy.linear(max_attempts=5, initial_delay=1.0))
    assert gaps(times) == [1.0, 2.0]
    assert pool.outputs == ["ok after 3"]
    assert pool.errors == []


async def test_jitter_waits_are_within_bounds_and_reproducible(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times, task = attempt_recorder()
    policy = RetryPolicy.exponential(
        max_attempts=7, initial_delay=1.0, max_delay=16.0, jitter=True, rng=random.Random(11)
    )
    async with open_pool(limit=1) as pool:
        await pool.submit(task, retry=policy)
    replay = random.Random(11)
    bases = [1.0, 2.0, 4.0, 8.0, 16.0, 16.0]
    observed = gaps(times)
    for wait, base in zip(observed, bases, strict=True):
        assert base / 2 <= wait <= base
    assert observed == [round(b * (1 - 0.5 * replay.random()), 9) for b in bases]


async def test_a_task_waiting_to_retry_holds_no_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    flaky_times, flaky = attempt_recorder(fail_times=1)
    other_started: list[float] = []

    async def other() -> None:
        other_started.append(trio.current_time() - t0)
        await trio.sleep(5)

    async with open_pool(limit=1) as pool:
        await pool.submit(flaky, retry=RetryPolicy.linear(max_attempts=2, initial_delay=10.0))
        await pool.submit(other)
        await trio.sleep(1)
        stats = pool.stats()
        assert (stats.running, stats.retrying) == (1, 1)
    assert other_started == [0.0]  # did not wait for the flaky task's retry
    assert [t - t0 for t in flaky_times] == [0.0, 10.0]
    assert pool.outputs == [None, "ok after 2"]


async def test_retry_raised_by_the_task_uses_its_policy_and_records_the_original(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []
    cause = ConnectionError("down")

    async def task() -> None:
        times.append(trio.current_time())
        raise Retry(cause, RetryPolicy.linear(max_attempts=4, initial_delay=1.0))

    async with open_pool(limit=1) as pool:
        await pool.submit(task)  # no submit policy: Retry's own applies
    assert gaps(times) == [1.0, 2.0, 3.0]
    assert pool.errors == [cause]
    assert pool.errors[0] is cause


async def test_retry_without_any_policy_uses_the_default(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    async def task() -> None:
        times.append(trio.current_time())
        raise Retry(KeyError("k"))

    async with open_pool(limit=1) as pool:
        await pool.submit(task)
    assert gaps(times) == [0.1, 0.2]
    assert [type(e) for e in pool.errors] == [KeyError]


async def test_attempts_count_across_retry_and_submit_policies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    async def task() -> None:
        times.append(trio.current_time())
        if len(times) == 1:
            raise Retry(OSError("first"), RetryPolicy.linear(max_attempts=2, initial_delay=1.0))
        raise OSError(f"plain {len(times)}")

    submit_policy = RetryPolicy.exponential(max_attempts=5, initial_delay=0.1)
    async with open_pool(limit=1) as pool:
        await pool.submit(task, retry=submit_policy)
    # retry 1 under Retry's linear policy (1.0), retries 2..4 under the submit policy
    assert gaps(times) == [1.0, 0.2, 0.4, 0.8]
    assert [str(e) for e in pool.errors] == ["plain 5"]


async def test_nested_retry_records_the_innermost_error_under_the_outer_policy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []
    cause = ValueError("inner")

    async def task() -> None:
        times.append(trio.current_time())
        inner = Retry(cause, RetryPolicy.linear(max_attempts=5, initial_delay=1.0))
        raise Retry(inner, RetryPolicy.none(max_attempts=2))

    async with open_pool(limit=1) as pool:
        await pool.submit(task)
    assert gaps(times) == [0.0]  # the outer policy (raised last) decides
    assert pool.errors == [cause]
    assert pool.errors[0] is cause


async def test_retry_policy_with_fewer_attempts_than_used_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    async def task() -> None:
        times.append(trio.current_time())
        if len(times) < 3:
            raise OSError("plain")
        raise Retry(OSError("wrapped"), RetryPolicy.none(max_attempts=2))

    async with open_pool(limit=1) as pool:
        await pool.submit(task, retry=RetryPolicy.none(max_attempts=10))
    assert len(times) == 3
    assert [str(e) for e in pool.errors] == ["wrapped"]


# ------------------------------------------------------------------ map


async def test_map_yields_in_input_order_under_the_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gauge = Gauge()

    async def task(seconds: int) -> int:
        with gauge:
            await trio.sleep(seconds)
        return seconds * 10

    items = [5, 1, 4, 2, 3, 1, 1, 6]
    async with open_pool(limit=3) as pool:
        got = [value async for value in pool.map(task, items)]
    assert got == [s * 10 for s in items]
    assert gauge.most == 3
    assert pool.outputs == []  # map results go to the iterator only
    assert pool.stats().submitted_total == len(items)


async def test_map_yields_a_ready_result_without_waiting_for_a_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gauge = Gauge()

    async def task(seconds: int) -> int:
        with gauge:
            await trio.sleep(seconds)
        return seconds

    t0 = trio.current_time()
    got: list[tuple[int, float]] = []
    async with open_pool(limit=2) as pool:
        async for value in pool.map(task, [1, 1, 50, 50, 50]):
            got.append((value, trio.current_time() - t0))
    # the 2nd result is ready at 1: it is not held back while the 3rd item waits for a slot
    assert got == [(1, 1.0), (1, 1.0), (50, 51.0), (50, 51.0), (50, 101.0)]
    assert gauge.most == 2


async def test_map_raises_at_the_failed_items_place(autojump_clock: trio.testing.MockClock) -> None:
    async def task(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i

    got: list[int] = []
    async with open_pool(limit=2) as pool:
        results = pool.map(task, [1, 2, 3, 4])

        async def read_all() -> None:
            async for value in results:
                got.append(value)

        with pytest.raises(ValueError, match="three"):
            await read_all()
        assert [v async for v in results] == []  # the iteration has ended
    assert got == [1, 2]
    assert pool.errors == []


async def test_map_retries_and_handles_empty_input(autojump_clock: trio.testing.MockClock) -> None:
    seen: dict[int, int] = {}

    async def flaky(i: int) -> int:
        seen[i] = seen.get(i, 0) + 1
        if seen[i] < 2:
            raise OSError("once")
        return i

    async with open_pool(limit=2) as pool:
        assert [v async for v in pool.map(flaky, range(4), retry=RetryPolicy.none())] == [
            0,
            1,
            2,
            3,
        ]
        assert [v async for v in pool.map(flaky, [])] == []
    assert seen == {0: 2, 1: 2, 2: 2, 3: 2}


async def test_map_runs_at_most_two_limits_ahead_of_the_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[int] = []

    async def task(i: int) -> int:
        started.append(i)
        return i

    async with open_pool(limit=2) as pool:
        results = pool.map(task, range(100))
        assert await results.__anext__() == 0
        # result 0 is yielded as soon as it is ready, so how far ahead it got depends on
        # which tasks ran first; never beyond the window of 2 * limit = 4 items
        ahead = pool.stats().submitted_total
        assert 3 <= ahead <= 4
        await trio.sleep(100)  # a slow reader: nothing more starts meanwhile
        assert pool.stats().submitted_total == ahead
        # (tasks started at the same instant begin in any order: compare the sets)
        assert sorted(started) == list(range(ahead))
        assert await results.__anext__() == 1
        await trio.sleep(1)
        assert sorted(started) == [0, 1, 2, 3, 4]  # the window refilled from free slots


async def test_map_propagates_an_error_from_the_input_iterator(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def items() -> Any:
        yield 1
        raise LookupError("bad input")

    async def task(i: int) -> int:
        return i

    async with open_pool(limit=2) as pool:
        with pytest.raises(LookupError):
            [v async for v in pool.map(task, items())]
        await trio.sleep(1)
        assert pool.stats().running == 0  # the slot taken for the missing item was given back


# ------------------------------------------------------------------ lifecycle


async def test_tasks_may_submit_while_the_pool_drains(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def parent(pool: Pool) -> str:
        await pool.submit(sleep_and_return, 1, "child")
        return "parent"

    async with open_pool(limit=2) as pool:
        await pool.submit(parent, pool)
    assert sorted(pool.outputs) == ["child", "parent"]


async def test_closed_pool_refuses_work(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pool() as pool:
        pass
    with pytest.raises(ComponentClosed, match="pool"):
        await pool.submit(sleep_and_return, 1)
    with pytest.raises(trio.ClosedResourceError):
        pool.map(sleep_and_return, [1])


async def test_body_exception_is_not_wrapped(autojump_clock: trio.testing.MockClock) -> None:
    async def body() -> None:
        async with open_pool() as pool:
            await pool.submit(sleep_and_return, 1)
            raise KeyError("mine")

    with pytest.raises(KeyError):
        await body()


async def test_cancelling_the_enclosing_scope_stops_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    with trio.move_on_after(3):
        async with open_pool(limit=2) as pool:
            await pool.submit(sleep_and_return, 100, "never")
            await pool.submit(sleep_and_return, 1, "soon")
    assert trio.current_time() - t0 == 3
    assert pool.outputs == ["soon"]


async def test_submit_checkpoints(autojump_clock: trio.testing.MockClock) -> None:
    async def noop() -> None:
        pass

    async with open_pool() as pool:
        with trio.testing.assert_checkpoints():
            await pool.submit(noop)


async def test_map_checkpoints_on_every_step(autojump_clock: trio.testing.MockClock) -> None:
    async def task(i: int) -> int:
        return i

    async with open_pool(limit=2) as pool:
        results = pool.map(task, range(6))
        for i in range(6):
            with trio.testing.assert_checkpoints():
                assert await results.__anext__() == i
        for _ in range(2):
            with trio.testing.assert_checkpoints(), pytest.raises(StopAsyncIteration):
                await results.__anext__()


def sync_fn(i: int) -> int:
    return i


@pytest.mark.parametrize(
    ("limit", "error"), [(0, ValueError), (-3, ValueError), (True, TypeError), (2.5, TypeError)]
)
async def test_bad_limit(limit: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="limit"):
        async with open_pool(limit=limit):
            pass  # pragma: no cover


async def test_bad_arguments_fail_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with open_pool() as pool:
        with pytest.raises(TypeError, match="async"):
            await pool.submit(sync_fn, 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="RetryPolicy"):
            await pool.submit(sleep_and_return, 1, retry=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="async"):
            pool.map(sync_fn, [1])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="iterable"):
            pool.map(sleep_and_return, "abc")  # type: ignore[arg-type]
        assert pool.stats().submitted_total == 0


# ------------------------------------------------------------------ invariants


@settings(deadline=None, max_examples=40)
@given(
    limit=st.integers(min_value=1, max_value=6),
    tasks=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5),  # duration of each attempt
            st.integers(min_value=0, max_value=4),  # attempts that fail before success
            st.booleans(),  # raise Retry(...) instead of the plain error
        ),
        max_size=25,
    ),
    max_attempts=st.integers(min_value=1, max_value=4),
)
def test_limit_holds_and_every_task_ends_exactly_once(
    limit: int, tasks: list[tuple[int, int, bool]], max_attempts: int
) -> None:
    gauge = Gauge()
    attempts: dict[int, int] = {}
    policy = RetryPolicy.linear(max_attempts=max_attempts, initial_delay=0.5)

    async def task(i: int, duration: int, failures: int, wrap: bool) -> int:
        attempts[i] = attempts.get(i, 0) + 1
        with gauge:
            await trio.sleep(duration)
        if attempts[i] <= failures:
            exc = RuntimeError(i)
            raise Retry(exc) if wrap else exc
        return i

    async def main() -> Pool:
        async with open_pool(limit=limit) as pool:
            for i, (duration, failures, wrap) in enumerate(tasks):
                await pool.submit(task, i, duration, failures, wrap, retry=policy)
        return pool

    pool = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert gauge.most <= limit
    done = list(pool.outputs) + [e.args[0] for e in pool.errors]
    assert sorted(done) == list(range(len(tasks)))
    assert all(isinstance(e, RuntimeError) for e in pool.errors)  # never the Retry wrapper
    for i, (_, failures, _) in enumerate(tasks):
        assert attempts[i] == min(failures + 1, max_attempts)
        assert (i in pool.outputs) == (failures < max_attempts)
