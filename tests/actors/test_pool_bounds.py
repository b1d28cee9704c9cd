"""The Pool's bound on tasks waiting to retry, its wait, and clear messages."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import pytest
import trio
import trio.testing

from actors import ComponentClosed, RetryPolicy, open_pool
from supervisors._backoff import jittered

RETRY = RetryPolicy.linear(max_attempts=2, initial_delay=10.0)


def failing_once() -> Any:
    """A task function that fails its first attempt and then succeeds."""
    failed: set[int] = set()

    async def task(i: int) -> int:
        if i not in failed:
            failed.add(i)
            raise ConnectionError(f"flaky {i}")
        return i

    return task


async def test_tasks_waiting_to_retry_are_bounded_by_max_pending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 9: with limit=5 no more than 50 tasks are running or waiting to retry."""
    task = failing_once()
    most = 0
    async with open_pool(limit=5) as pool:
        assert pool.max_pending == 50
        for i in range(1_000):
            await pool.submit(task, i, retry=RETRY)
            stats = pool.stats()
            most = max(most, stats.pending)
            assert stats.retrying <= 50
    assert most == 50
    assert sorted(pool.outputs) == list(range(1_000))
    assert pool.errors == []
    # submit pushed back: 20 rounds of 50 tasks, each waiting 10 s to retry
    assert trio.current_time() == 200.0


async def test_memory_stays_bounded_however_many_tasks_fail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    task = failing_once()
    tracemalloc.start()
    try:
        async with open_pool(limit=5) as pool:
            for i in range(1_500):
                await pool.submit(task, i, retry=RETRY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(pool.outputs) == 1_500
    # 50 tasks alive at most; without the bound 1,500 wait at once (~8 MiB traced)
    assert peak < 2**20, f"traced peak {peak / 2**20:.1f} MiB"


async def test_wait_returns_when_everything_submitted_so_far_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    task = failing_once()
    async with open_pool(limit=2) as pool:
        await pool.wait()  # nothing to wait for: returns at once
        assert trio.current_time() == 0.0
        for i in range(4):
            await pool.submit(task, i, retry=RETRY)
        await pool.wait()
        assert trio.current_time() == 10.0
        assert sorted(pool.outputs) == [0, 1, 2, 3]
        await pool.submit(trio.sleep, 100)
        with trio.move_on_after(5):
            await pool.wait()  # a time limit ends the wait, not the task
        assert pool.stats().running == 1
    assert trio.current_time() == 110.0
    with pytest.raises(ComponentClosed):
        await pool.wait()


async def test_submit_none_is_refused_also_as_the_first_function() -> None:
    """Defect 9: the check was skipped before the first function."""
    async with open_pool() as pool:
        with pytest.raises(TypeError, match="async_fn must be an async function"):
            await pool.submit(None)  # type: ignore[arg-type]


async def test_bad_max_pending() -> None:
    with pytest.raises(ValueError, match="max_pending must be >= 5"):
        async with open_pool(limit=5, max_pending=4):
            pass


def test_jitter_is_the_supervisors_rule_with_fraction_one_half() -> None:
    policy = RetryPolicy.exponential(initial_delay=1.0, jitter=True, rng=random.Random(7))
    expected_rng = random.Random(7)
    for n in (1, 2, 3):
        expected = jittered(2.0 ** (n - 1), 0.5, expected_rng)
        assert policy.delay(n) == expected
        assert 2.0 ** (n - 2) <= expected <= 2.0 ** (n - 1)


def test_jitter_must_be_a_bool_with_a_plain_message() -> None:
    """Defect 10: not attrs's raw tuple."""
    with pytest.raises(TypeError) as info:
        RetryPolicy.exponential(jitter=1)  # type: ignore[arg-type]
    assert str(info.value) == (
        "jitter must be True or False, got int: 1 "
        "(True draws each wait between half of it and all of it)"
    )
