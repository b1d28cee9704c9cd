from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from actors import ActorsError, Retry, RetryPolicy


def test_defaults_match_the_contract() -> None:
    policy = RetryPolicy.exponential()
    assert (policy.max_attempts, policy.initial_delay, policy.factor) == (3, 0.1, 2.0)
    assert (policy.max_delay, policy.jitter) == (30.0, False)
    assert RetryPolicy() == policy
    linear = RetryPolicy.linear()
    assert (linear.kind, linear.max_attempts, linear.initial_delay) == ("linear", 3, 0.1)
    assert RetryPolicy.none().max_attempts == 3


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        (RetryPolicy.none(max_attempts=5), [0.0, 0.0, 0.0, 0.0]),
        (RetryPolicy.linear(initial_delay=0.5), [0.5, 1.0, 1.5, 2.0]),
        (RetryPolicy.linear(initial_delay=0.5, max_delay=1.2), [0.5, 1.0, 1.2, 1.2]),
        (RetryPolicy.exponential(initial_delay=0.25), [0.25, 0.5, 1.0, 2.0]),
        (RetryPolicy.exponential(initial_delay=1.0, factor=3.0), [1.0, 3.0, 9.0, 27.0]),
        (RetryPolicy.exponential(initial_delay=1.0, max_delay=5.0), [1.0, 2.0, 4.0, 5.0]),
    ],
)
def test_delay_formulas(policy: RetryPolicy, delays: list[float]) -> None:
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == delays


def test_huge_retry_numbers_are_capped_not_overflowing() -> None:
    policy = RetryPolicy.exponential(max_attempts=10_000, max_delay=7.0)
    assert policy.delay(5_000) == 7.0
    assert RetryPolicy.exponential(max_delay=math.inf).delay(5_000) == math.inf


def test_zero_initial_delay_stays_zero_even_when_the_factor_overflows() -> None:
    policy = RetryPolicy.exponential(
        max_attempts=1000, initial_delay=0.0, factor=10.0, max_delay=10.0
    )
    assert policy.delay(500) == 0.0  # 10.0 ** 499 overflows; 0 * anything is still 0
    assert policy.delay(1) == 0.0
    assert RetryPolicy.linear(initial_delay=0.0, max_delay=math.inf).delay(10**6) == 0.0


def test_jitter_draws_between_half_and_all_reproducibly() -> None:
    policy = RetryPolicy.exponential(
        initial_delay=1.0, max_delay=8.0, jitter=True, rng=random.Random(3)
    )
    draws = [policy.delay(n) for n in range(1, 6) for _ in range(50)]
    for i, d in enumerate(draws):
        base = min(2.0 ** (i // 50), 8.0)
        assert base / 2 <= d <= base
    assert len(set(draws)) == len(draws)  # they really vary
    replay = random.Random(3)
    expected = [
        b * (1 - 0.5 * replay.random()) for b in (1.0, 2.0, 4.0, 8.0, 8.0) for _ in range(50)
    ]
    assert draws == expected
    # none() has nothing to jitter
    assert RetryPolicy("none", jitter=True).delay(3) == 0.0


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: RetryPolicy.exponential(max_attempts=0), ValueError),
        (lambda: RetryPolicy.linear(max_attempts=-1), ValueError),
        (lambda: RetryPolicy.none(max_attempts=True), TypeError),
        (lambda: RetryPolicy.none(max_attempts=2.5), TypeError),  # type: ignore[arg-type]
        (lambda: RetryPolicy.linear(initial_delay=-0.1), ValueError),
        (lambda: RetryPolicy.linear(initial_delay=math.nan), ValueError),
        (lambda: RetryPolicy.linear(initial_delay=math.inf), ValueError),
        (lambda: RetryPolicy.linear(initial_delay="1"), TypeError),  # type: ignore[arg-type]
        (lambda: RetryPolicy.exponential(max_delay=-1.0), ValueError),
        (lambda: RetryPolicy.exponential(max_delay=math.nan), ValueError),
        (lambda: RetryPolicy.exponential(factor=0.5), ValueError),
        (lambda: RetryPolicy.exponential(factor=math.nan), ValueError),
        (lambda: RetryPolicy.exponential(factor=math.inf), ValueError),
        (lambda: RetryPolicy("sometimes"), ValueError),  # type: ignore[arg-type]
        (lambda: RetryPolicy(jitter="yes"), TypeError),  # type: ignore[arg-type]
        (lambda: RetryPolicy(rng=42), TypeError),
    ],
)
def test_bad_policies_fail_at_once(make: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_retry_wraps_an_exception_and_an_optional_policy() -> None:
    cause = OSError("flaky")
    policy = RetryPolicy.linear(max_attempts=4)
    retry = Retry(cause, policy)
    assert isinstance(retry, ActorsError)
    assert retry.exception is cause
    assert retry.policy is policy
    assert "flaky" in str(retry)
    assert Retry(cause).policy is None
    with pytest.raises(TypeError):
        Retry("flaky")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Retry(cause, policy=3)  # type: ignore[arg-type]


def test_a_retry_of_a_retry_is_flattened() -> None:
    cause = OSError("flaky")
    inner_policy = RetryPolicy.linear(max_attempts=4)
    outer_policy = RetryPolicy.none(max_attempts=2)
    outer = Retry(Retry(cause, inner_policy), outer_policy)
    assert outer.exception is cause  # the innermost non-Retry exception
    assert outer.policy is outer_policy  # the one raised last wins
    inherited = Retry(Retry(Retry(cause, inner_policy)))
    assert inherited.exception is cause
    assert inherited.policy is inner_policy  # no outer policy: the nearest inner one
    assert Retry(Retry(cause)).policy is None
