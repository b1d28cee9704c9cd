"""Jobs made of a plain async function and a schedule: `Cron` and `Every`.

>>> sched.add(Cron("*/5 * * * *", sync_inventory))          # at :00, :05, :10, ... UTC
>>> sched.add(Every(3600, rotate_logs, id="rotate-logs"))    # first tick, then hourly

Both answer `is_due(now)` for the `Scheduler` and remember what they said, so a job fires
once per cron time (or per period) whatever the scheduler's interval.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from croniter import CroniterError, croniter

from ._checks import check_async_fn
from ._keys import check_key

_JUST_BEFORE = timedelta(microseconds=1)
_PROBE_START = datetime(2000, 1, 1, tzinfo=UTC)  # a leap year: Feb 29 is found within a year


@functools.lru_cache(maxsize=4096)
def _next_fire(expression: str, tz: tzinfo, every_hour: bool, after: datetime) -> datetime:
    """The first cron time strictly after ``after`` (UTC), as a UTC instant.

    Read in ``tz`` with its daylight saving: a time in the skipped hour fires once, when the
    clocks jump (croniter gives the jump's instant); a time in the repeated hour fires at its
    first pass only, unless the hour field is ``*``: then each of the two real hours has its
    own. Cached, so ten thousand jobs of one expression cost one computation per tick.
    """
    times = croniter(expression, after.astimezone(tz))
    while True:
        local: datetime = times.get_next(datetime)
        if local.fold and not every_hour and local.utcoffset() != local.replace(fold=0).utcoffset():
            continue  # the second pass of a repeated hour: this wall time fired already
        instant = local.astimezone(UTC)
        if instant > after:
            return instant


def _check_now(now: object) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise TypeError(f"is_due(now) needs an aware datetime, got {now!r}")
    return now


class _FunctionJob:
    """An async function with its arguments, named by ``id``."""

    __slots__ = ("_args", "_fn", "id")

    def __init__(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], id: str | None
    ) -> None:
        check_async_fn(fn, "fn")
        if id is None:
            id = getattr(fn, "__qualname__", None)
            if not isinstance(id, str):
                raise TypeError(f"give {type(self).__name__}(..., id='...') a name for {fn!r}")
        self.id: str = check_key(id, "job id")
        self._fn = fn
        self._args = args

    async def run(self) -> Any:
        """Run the function once and return its value."""
        return await self._fn(*self._args)


class Cron(_FunctionJob):
    """A job due at the times a cron expression names.

    ``Cron("*/5 * * * *", fn, *args, id="report")``: five fields (minute hour day month
    weekday) or an ``@hourly``-style alias, parsed by croniter; an invalid expression raises
    `ValueError` here. Times are read in ``tz`` (default: the zone of ``now``, UTC for the
    Scheduler's clock). ``id`` defaults to the function's qualified name.

    It is due when its next cron time has come: on a scheduler ticking each minute at :00
    that is exactly the matching minutes. A cron time that falls between two ticks runs once,
    at the later tick; cron times before the first `is_due` call are not caught up.

    In a zone with daylight saving each cron time fires once: ``30 1 * * *`` once on the
    night the clocks go back (at the first 01:30), ``0 * * * *`` once in each real hour (both
    01:00s), and a time in the skipped hour (``30 2 * * *`` in spring) when the clocks jump.
    """

    __slots__ = ("_every_hour", "_next", "expression", "tz")

    def __init__(
        self,
        expression: str,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        id: str | None = None,
        tz: tzinfo | None = None,
    ) -> None:
        if not isinstance(expression, str):
            raise TypeError(f"a cron expression is a str like '*/5 * * * *', got {expression!r}")
        fields = len(expression.split())
        if not (expression.startswith("@") or fields == 5) or not croniter.is_valid(expression):
            raise ValueError(
                f"invalid cron expression {expression!r}: use five fields "
                "'minute hour day month weekday', e.g. '*/5 * * * *', or an alias like '@hourly'"
            )
        if tz is not None and not isinstance(tz, tzinfo):
            raise TypeError(f"tz must be a datetime.tzinfo or None, got {tz!r}")
        try:  # a valid expression may still never match (Feb 31): find out now, not per tick
            probe = croniter(expression, _PROBE_START)
            probe.get_next(datetime)
        except CroniterError as exc:
            raise ValueError(
                f"cron expression {expression!r} never fires ({exc}): "
                "check that its day and month can meet, e.g. '0 0 28 2 *' rather than '0 0 31 2 *'"
            ) from None
        super().__init__(fn, args, id)
        self.expression = expression
        self.tz = tz
        hours = probe.expanded[1]
        self._every_hour = hours == ["*"] or len(set(hours)) == 24
        self._next: datetime | None = None  # a UTC instant: compared by instant, never by wall

    def is_due(self, now: datetime) -> bool:
        """True if a cron time has come since the last time it said yes (or was first asked).

        In a zone with daylight saving each cron time fires once: see `_next_fire`.
        """
        now = _check_now(now)
        zone = self.tz if self.tz is not None else now.tzinfo
        assert zone is not None
        if now.tzinfo is not UTC:
            now = now.astimezone(UTC)
        nxt = self._next
        if nxt is None:
            nxt = self._next = _next_fire(
                self.expression, zone, self._every_hour, now - _JUST_BEFORE
            )
        if now < nxt:
            return False
        self._next = _next_fire(self.expression, zone, self._every_hour, now)
        return True

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, id={self.id!r})"


class Every(_FunctionJob):
    """A job due the first time it is asked, then whenever ``period`` has passed since.

    ``Every(300, fn, *args, id="poll")`` or ``Every(timedelta(minutes=5), fn)``. On a
    scheduler ticking each minute, a 300 s period runs on every fifth tick.
    """

    __slots__ = ("_last", "period")

    def __init__(
        self,
        period: float | timedelta,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        id: str | None = None,
    ) -> None:
        if isinstance(period, timedelta):
            seconds = period.total_seconds()
        elif isinstance(period, int | float) and not isinstance(period, bool):
            seconds = float(period)
        else:
            raise TypeError(f"period must be seconds or a timedelta, got {period!r}")
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"period must be a finite duration > 0, got {period!r}")
        super().__init__(fn, args, id)
        self.period = timedelta(seconds=seconds)
        self._last: datetime | None = None

    def is_due(self, now: datetime) -> bool:
        """True the first time, then once ``period`` has passed since it last said yes."""
        now = _check_now(now)
        if self._last is not None and now - self._last < self.period:
            return False
        self._last = now
        return True

    def __repr__(self) -> str:
        return f"Every({self.period.total_seconds()!r}, id={self.id!r})"
