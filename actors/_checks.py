"""Boundary checks shared by every component: clear errors for bad input, at once.

The number and function checks are those of `supervisors` (the layer below `actors`; its
`check_async_fn` says "you called it" for ``noop()`` passed as ``noop``), under the names the
components use, plus what only `actors` needs.
"""

from __future__ import annotations

from supervisors._checks import check_async_fn as check_async_fn
from supervisors._checks import check_seconds as check_duration

__all__ = [
    "MIN_IDLE_TIMEOUT",
    "check_async_fn",
    "check_duration",
    "check_idle_timeout",
    "check_name",
    "check_positive_int",
]

#: The shortest ``idle_timeout`` accepted: the reaper looks every half timeout, and below a
#: millisecond it would do little but spin.
MIN_IDLE_TIMEOUT = 0.001


def check_positive_int(value: object, what: str, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return value


def check_idle_timeout(value: object, what: str = "idle_timeout") -> float:
    """Return ``value`` as seconds if it is at least `MIN_IDLE_TIMEOUT` (``math.inf`` allowed)."""
    seconds = check_duration(value, what, allow_zero=False)
    if seconds < MIN_IDLE_TIMEOUT:
        raise ValueError(
            f"{what} must be >= {MIN_IDLE_TIMEOUT} seconds (a shorter one makes the reaper "
            f"spin), got {value!r}; use math.inf to never reap"
        )
    return seconds


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a non-empty ``str`` (names show up in errors and logs)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise ValueError(f"{what} must not be empty: give it a name that tells it apart in logs")
    return value
