"""Boundary checks shared by every component: clear errors for bad input, at once.

The number and function checks are those of `supervisors` (the layer below `actors`), under
the names the components use.
"""

from __future__ import annotations

from supervisors._checks import check_async_fn as check_async_fn
from supervisors._checks import check_seconds as check_duration

__all__ = ["check_async_fn", "check_duration", "check_positive_int"]


def check_positive_int(value: object, what: str, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return value
