"""Exponential spacing between the restarts of a child that keeps crashing."""

from __future__ import annotations

import math
import random

import attrs

from ._checks import check_seconds


def _check_min(instance: RestartBackoff, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(value, "RestartBackoff.min", allow_zero=False)


def _check_max(instance: RestartBackoff, attribute: attrs.Attribute[float], value: float) -> None:
    check_seconds(value, "RestartBackoff.max", allow_zero=False)
    if value < instance.min:
        raise ValueError(
            f"RestartBackoff.max must be >= min, got min={instance.min!r} and max={value!r}"
        )


def _check_jitter(
    instance: RestartBackoff, attribute: attrs.Attribute[float], value: float
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"RestartBackoff.jitter must be a fraction between 0 and 1, "
            f"got {type(value).__name__}: {value!r}"
        )
    if math.isnan(value) or not 0 <= value <= 1:
        raise ValueError(f"RestartBackoff.jitter must be between 0 and 1, got {value!r}")


def _check_rng(
    instance: RestartBackoff, attribute: attrs.Attribute[random.Random | None], value: object
) -> None:
    if value is not None and not isinstance(value, random.Random):
        raise TypeError(
            f"RestartBackoff.rng must be a random.Random or None, "
            f"got {type(value).__name__}: {value!r}"
        )


def jittered(delay: float, fraction: float, rng: random.Random | None = None) -> float:
    """A wait drawn uniformly between ``(1 - fraction) * delay`` and ``delay``: jitter.

    The one jitter rule of the project (`RestartBackoff`, and the retries of ``actors``): the
    wait never exceeds ``delay``, so a cap stays a cap, and waits of many tasks spread over
    the last ``fraction`` of it. ``fraction=0`` returns ``delay`` unchanged; ``rng`` is a
    `random.Random` (``None``: the `random` module) so tests can seed it.
    """
    if not fraction:
        return delay
    return delay * (1.0 - fraction * (rng or random).random())


@attrs.frozen
class RestartBackoff:
    """How long a supervisor waits before it restarts a child that keeps exiting.

    ``start_child(..., backoff=RestartBackoff(min=0.1, max=30.0, jitter=0.2))``: the first
    restart waits about ``min`` seconds, each further one twice as long as the one before,
    never longer than ``max``. A run that lasted at least ``max`` seconds counts as healthy
    and starts the sequence again at ``min``. Under ``one_for_all`` and ``rest_for_one`` the
    siblings restarted with the child wait with it.

    With ``jitter`` each wait is drawn uniformly between ``(1 - jitter)`` times and the full
    exponential value, so restarts of many children spread out and ``max`` stays a hard cap.
    ``jitter=0`` gives exact waits (``min``, ``2 * min``, ``4 * min`` ...).
    """

    #: The first wait, in seconds (> 0).
    min: float = attrs.field(default=0.1, validator=_check_min)
    #: The longest wait, in seconds (>= ``min``); also the run time that resets the sequence.
    max: float = attrs.field(default=30.0, validator=_check_max)
    #: The fraction of each wait drawn at random (0 to 1).
    jitter: float = attrs.field(default=0.2, validator=_check_jitter)
    #: Where the jitter comes from; ``None`` uses the `random` module. Pass a seeded
    #: `random.Random` for reproducible waits in tests.
    rng: random.Random | None = attrs.field(
        default=None, eq=False, repr=False, validator=_check_rng, kw_only=True
    )

    def delay(self, n: int) -> float:
        """The wait before the ``n``-th restart in a row (``n`` = 1, 2, ...)."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, got {type(n).__name__}: {n!r}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        # 2 ** 1100 overflows a float; past ~64 doublings every wait is capped anyway.
        return jittered(min(self.max, self.min * 2.0 ** min(n - 1, 64)), self.jitter, self.rng)
