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

    A coroutine (``noop()`` passed for ``noop``) is refused with "you called it", and closed.
    A callable we cannot classify (say, an object with a sync ``__call__`` that returns a
    coroutine) passes here; the supervisor checks what it returns when it calls it.
    """
    if inspect.isawaitable(fn):
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        if inspect.iscoroutine(fn):
            fn.close()  # it will never run: spare the user a "never awaited" warning on top
        raise TypeError(
            f"{what} must be an async function, got the result of calling {name}(): "
            f"you called it; pass the function itself (``{name}``, not ``{name}()``), "
            "with its arguments given separately"
        )
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


def check_started_like_nursery_start(fn: object, args: tuple[object, ...], what: str) -> None:
    """Reject a function that cannot be called as ``fn(*args, task_status=...)``.

    Checked on the signature, up front, where Python can tell it (not for some builtins and
    C callables: those are caught when the function is called, see `explain_start_error`).
    """
    try:
        signature = inspect.signature(fn)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return
    name = getattr(fn, "__qualname__", None) or repr(fn)
    params = signature.parameters.values()
    takes_status = any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (
            p.name == "task_status"
            and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        )
        for p in params
    )
    if not takes_status:
        raise TypeError(_NO_TASK_STATUS.format(what=what, name=name))
    try:
        signature.bind(*args, task_status=None)
    except TypeError as exc:
        raise TypeError(
            f"{what} {name!r} cannot be called with the {len(args)} argument(s) given "
            f"and task_status: {exc}; pass exactly the arguments it takes"
        ) from None


_NO_TASK_STATUS = (
    "{what} {name!r} has no task_status parameter; a child is started like nursery.start: "
    "give it `*, task_status=trio.TASK_STATUS_IGNORED` and call task_status.started() "
    "once it is ready"
)


def explain_start_error(exc: TypeError, fn: object, what: str) -> TypeError | None:
    """For a TypeError raised by the call ``fn(..., task_status=...)`` itself: a clearer one."""
    if "task_status" not in str(exc):
        return None
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return TypeError(_NO_TASK_STATUS.format(what=what, name=name) + f" (Python said: {exc})")
