"""Wall-clock time that advances with Trio's clock, so tests on MockClock see minutes pass."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import trio


def trio_clock(start: datetime | None = None) -> Callable[[], datetime]:
    """Return a UTC clock: ``start`` (default: the wall clock now) plus Trio time elapsed since.

    Call it inside ``trio.run``. Components take such a callable as ``clock=`` and use it for
    timestamps (``created_at``, ``is_due(now)``); with ``MockClock(autojump_threshold=0)`` the
    returned clock jumps exactly as far as Trio's clock does.
    """
    if start is None:
        start = datetime.now(UTC)
    elif start.tzinfo is None:
        raise ValueError(
            "trio_clock(start=...) needs an aware datetime, e.g. datetime(..., tzinfo=UTC)"
        )
    # The bus stamps every chain step and batch outcome with this: the run's clock bound
    # once (`trio.current_time`, one call less) and a positional timedelta (the same value
    # as ``timedelta(seconds=...)``) make a call about half as dear.
    current_time = trio.lowlevel.current_clock().current_time
    origin = current_time()

    def now() -> datetime:
        return start + timedelta(0, current_time() - origin)

    def at(reading: float) -> datetime:
        return start + timedelta(0, reading - origin)

    setattr(now, _READING, (current_time, at))
    return now


_READING = "_trio_clock_reading"


def clock_reading(
    clock: Callable[[], datetime],
) -> tuple[Callable[[], float], Callable[[float], datetime]] | None:
    """For a clock made by `trio_clock`: its Trio time source, and the datetime the clock
    gives at a reading of it (``clock() == at(time())``, at any later moment), so a caller
    that stamps often can keep the reading and make the datetime only if it is read. None
    for any other clock."""
    found: tuple[Callable[[], float], Callable[[float], datetime]] | None = getattr(
        clock, _READING, None
    )
    return found
