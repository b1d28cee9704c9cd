"""Retry policies (how often and how long to wait) and `Retry`, the error a task raises to ask.

>>> policy = RetryPolicy.exponential(max_attempts=5, initial_delay=0.5)
>>> [policy.delay(n) for n in (1, 2, 3, 4)]
[0.5, 1.0, 2.0, 4.0]
"""

from __future__ import annotations

import math
import random
from typing import Literal

import attrs

from supervisors._backoff import jittered

from ._checks import check_duration, check_positive_int
from ._errors import ActorsError

RetryKind = Literal["none", "linear", "exponential"]


def _check_kind(instance: object, attribute: object, value: object) -> None:
    if value not in ("none", "linear", "exponential"):
        raise ValueError(f"kind must be 'none', 'linear' or 'exponential', got {value!r}")


def _check_factor(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"factor must be a number, got {type(value).__name__}: {value!r}")
    if not math.isfinite(value) or value < 1:
        raise ValueError(
            f"factor must be a finite number >= 1 (delays never shrink), got {value!r}"
        )
    return float(value)


def _check_max_delay(value: object) -> float:
    # Infinity is a fine cap ("no cap"); NaN and negatives are not.
    return check_duration(value, "max_delay")


def _check_max_attempts(value: object) -> int:
    return check_positive_int(value, "max_attempts")


def _check_initial_delay(value: object) -> float:
    seconds = check_duration(value, "initial_delay")
    if math.isinf(seconds):
        raise ValueError("initial_delay must be finite")
    return seconds


def _check_jitter(instance: object, attribute: object, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(
            f"jitter must be True or False, got {type(value).__name__}: {value!r} "
            "(True draws each wait between half of it and all of it)"
        )


def _check_rng(value: object) -> random.Random | None:
    if value is not None and not isinstance(value, random.Random):
        raise TypeError(f"rng must be a random.Random or None, got {type(value).__name__}")
    return value


@attrs.frozen
class RetryPolicy:
    """How many attempts a task gets and how long it waits before each retry.

    Use the constructors: `none`, `linear`, `exponential`. The wait before retry ``n``
    (``n = 1`` after the first attempt failed) is ``0`` for none, ``initial_delay * n`` for
    linear and ``initial_delay * factor ** (n - 1)`` for exponential, capped at ``max_delay``;
    with ``jitter`` it is drawn uniformly between half of that and all of it (from ``rng``,
    a `random.Random` you may inject for reproducible runs).
    """

    kind: RetryKind = attrs.field(default="exponential", validator=_check_kind)
    """Which formula gives the delays."""
    max_attempts: int = attrs.field(default=3, converter=_check_max_attempts)
    """Attempts in all, the first one included (1 means: never retry)."""
    initial_delay: float = attrs.field(default=0.1, converter=_check_initial_delay)
    """Seconds before the first retry (linear and exponential)."""
    factor: float = attrs.field(default=2.0, converter=_check_factor)
    """Growth per retry (exponential)."""
    max_delay: float = attrs.field(default=30.0, converter=_check_max_delay)
    """No wait is longer than this."""
    jitter: bool = attrs.field(default=False, validator=_check_jitter)
    """Draw each wait between half of it and all of it, so retries of many tasks spread out."""
    rng: random.Random | None = attrs.field(
        default=None, converter=_check_rng, eq=False, repr=False
    )
    """Where jitter comes from; `None` uses the `random` module."""

    @classmethod
    def none(cls, max_attempts: int = 3) -> RetryPolicy:
        """Retry at once, without waiting."""
        return cls("none", max_attempts, initial_delay=0.0)

    @classmethod
    def linear(
        cls,
        max_attempts: int = 3,
        initial_delay: float = 0.1,
        max_delay: float = 30.0,
        *,
        jitter: bool = False,
        rng: random.Random | None = None,
    ) -> RetryPolicy:
        """Wait ``initial_delay * n`` before retry ``n``, capped at ``max_delay``."""
        return cls(
            "linear",
            max_attempts,
            initial_delay=initial_delay,
            max_delay=max_delay,
            jitter=jitter,
            rng=rng,
        )

    @classmethod
    def exponential(
        cls,
        max_attempts: int = 3,
        initial_delay: float = 0.1,
        factor: float = 2.0,
        max_delay: float = 30.0,
        *,
        jitter: bool = False,
        rng: random.Random | None = None,
    ) -> RetryPolicy:
        """Wait ``initial_delay * factor ** (n - 1)`` before retry ``n``, capped at max_delay."""
        return cls(
            "exponential",
            max_attempts,
            initial_delay=initial_delay,
            factor=factor,
            max_delay=max_delay,
            jitter=jitter,
            rng=rng,
        )

    def base_delay(self, retry: int) -> float:
        """The wait before retry ``retry`` (1, 2, ...) without jitter."""
        if self.kind == "none" or self.initial_delay == 0:
            return 0.0  # also keeps 0 * inf (an overflowing factor ** n) from becoming max_delay
        if self.kind == "linear":
            delay = self.initial_delay * retry
        else:
            try:
                delay = self.initial_delay * self.factor ** (retry - 1)
            except OverflowError:
                delay = math.inf
        return min(delay, self.max_delay)

    def delay(self, retry: int) -> float:
        """The wait before retry ``retry`` (1, 2, ...), jitter included."""
        delay = self.base_delay(retry)
        if self.jitter:
            return jittered(delay, 0.5, self.rng)  # the supervisors' one jitter rule
        return delay


class Retry(ActorsError):
    """Raise ``Retry(exc)`` from a pool task to have it tried again.

    It retries under ``policy`` if given, else under the policy passed to ``submit`` (else
    ``RetryPolicy.exponential()``). Attempts count across policies. When the attempts run out
    the pool records ``exc`` itself, never this wrapper.

    A `Retry` of a `Retry` is flattened here: ``exception`` is the innermost non-`Retry`
    exception, and ``policy`` is the outer one's if given (it was raised last), else the
    nearest inner one's.

    >>> async def fetch(url):
    ...     try:
    ...         return await get(url)
    ...     except TimeoutError as exc:
    ...         raise Retry(exc, RetryPolicy.linear(max_attempts=4)) from exc
    """

    exception: Exception
    policy: RetryPolicy | None

    def __init__(self, exception: Exception, policy: RetryPolicy | None = None) -> None:
        if not isinstance(exception, Exception):
            raise TypeError(
                f"Retry() wraps the exception that failed the attempt, got {exception!r}"
            )
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise TypeError(f"policy must be a RetryPolicy or None, got {policy!r}")
        if isinstance(exception, Retry):  # already flat: its own exception is never a Retry
            policy = policy if policy is not None else exception.policy
            exception = exception.exception
        super().__init__(exception, policy)
        self.exception = exception
        """The exception that failed this attempt; what the pool records if it gives up."""
        self.policy = policy
        """The policy for the retries from here on, or `None` for the task's own."""

    def __str__(self) -> str:
        return f"retry after: {self.exception!r}"
