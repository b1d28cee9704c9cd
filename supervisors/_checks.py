"""Boundary checks: clear errors for bad input, raised at once."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Collection
from typing import Any


def check_seconds(
    value: object, what: str, *, allow_zero: bool = True, allow_inf: bool = True
) -> float:
    """Return ``value`` as a float if it is a non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{what} must be a number of seconds, got {type(value).__name__}: {value!r}"
        )
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{what} must be a number of seconds, got NaN")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be {bound} seconds, got {value!r}")
    if math.isinf(seconds) and not allow_inf:
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    return seconds


def check_count(value: object, what: str) -> int:
    """Return ``value`` if it is an ``int`` >= 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}: {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return value


def check_choice(value: object, what: str, choices: Collection[str]) -> str:
    """Return ``value`` if it is one of ``choices`` (strings)."""
    valid = ", ".join(repr(choice) for choice in choices)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be one of {valid}, got {type(value).__name__}: {value!r}")
    if value not in choices:
        raise ValueError(f"{what} must be one of {valid}, got {value!r}")
    return value


def check_async_fn(fn: object, what: str) -> None:
    """Reject what is not callable, and plain sync functions, where an async function is due.

    A callable we cannot classify (say, an object with a sync ``__call__`` that returns a
    coroutine) passes here; the supervisor checks what it returns when it calls it.
    """
    if not callable(fn):
        raise TypeError(f"{what} must be an async function, got {type(fn).__name__}: {fn!r}")
    plain: Any = fn
    while isinstance(plain, functools.partial):
        plain = plain.func
    if inspect.iscoroutinefunction(plain):
        return
    call = getattr(plain, "__call__", None)  # noqa: B004 - we want the bound __call__, if any
    if call is not None and inspect.iscoroutinefunction(call):
        return
    if inspect.isfunction(plain) or inspect.ismethod(plain) or inspect.isbuiltin(plain):
        raise TypeError(
            f"{what} must be an async function (async def), got the sync function "
            f"{getattr(plain, '__qualname__', plain)!r}; pass an `async def` function itself "
            "(not a call to it), with its arguments given separately"
        )
