"""Boundary checks shared by every component: clear errors for bad input, at once."""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any


def check_duration(value: object, what: str, *, allow_zero: bool = True) -> float:
    """Return ``value`` as a float if it is a finite, non-negative number of seconds."""
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
    return seconds


def check_positive_int(value: object, what: str, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return value


def _is_async_callable(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound __call__, if any
    return call is not None and inspect.iscoroutinefunction(call)


def check_async_fn(fn: object, what: str) -> None:
    """Reject what is not callable, and plain sync functions, where an async function is due.

    A callable we cannot classify (say, a sync wrapper returning a coroutine) passes here; the
    component checks its result is awaitable when it calls it.
    """
    if not callable(fn):
        raise TypeError(f"{what} must be an async function, got {type(fn).__name__}: {fn!r}")
    if _is_async_callable(fn):
        return
    plain: Any = fn
    while isinstance(plain, functools.partial):
        plain = plain.func
    if inspect.isfunction(plain) or inspect.ismethod(plain) or inspect.isbuiltin(plain):
        raise TypeError(
            f"{what} must be an async function (async def), got the sync function "
            f"{getattr(plain, '__qualname__', plain)!r}; pass the function itself and its "
            "arguments separately, e.g. run(key, fn, arg1, arg2)"
        )
