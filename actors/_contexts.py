"""Run a coroutine in a `contextvars.Context` of our choosing, inside the current task.

A Trio task has one context; `Context.run` only takes a sync callable. A worker task that
serves many jobs one after another would otherwise let each job's context variable writes
leak into the next (DESIGN rule 6: every job sees the same context, whichever worker and
whichever turn serves it). `in_context` steps the coroutine inside the given context, the
way a task runner does: each resumption (a value, or an exception such as `Cancelled`) is
passed in under ``context.run``, and what the coroutine yields goes up to Trio unchanged, so
cancellation, deadlines and exceptions are the current task's own.

Where it can, a task switches context the other way, by giving itself a new
``Task.context`` before a scheduling point: Trio resumes a task in its ``Task.context`` at
every step, so what runs after that point runs in the new one, for free. The keyed core's
spare tasks do it while parked (`actors._keyed`); the bus's memory-broker workers do it
before the take that precedes each job, and step only what must not run in the job's context
(a chain's or batch's job, one with observers, or the handling of a failed attempt) through
`in_context` (`actors.bus._worker`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Generator
from types import CoroutineType
from typing import Any, TypeVar

T = TypeVar("T")


_STEPPED: Any = object()


class _InContext(Generator[Any, Any, Any]):
    """The rest of an `in_context` coroutine after its first step yielded ``first`` (a
    generator, so Trio can send and throw into it): ``first`` goes up to Trio, and every
    resumption is passed in under ``context.run``."""

    __slots__ = ("_close", "_context", "_first", "_send", "_throw")

    def __init__(
        self, context: contextvars.Context, coro: Generator[Any, Any, Any], first: Any
    ) -> None:
        self._context = context
        self._first = first
        self._send = coro.send
        self._throw = coro.throw
        self._close = coro.close

    def __iter__(self) -> _InContext:
        return self

    def __await__(self) -> _InContext:
        return self

    def __next__(self) -> Any:
        # ``await`` starts an iterator with ``next``, whose step has run already; a later
        # ``next`` (a resumption with None) is a step.
        first = self._first
        if first is not _STEPPED:
            self._first = _STEPPED
            return first
        return self._context.run(self._send, None)

    def send(self, value: Any) -> Any:
        return self._context.run(self._send, value)

    def throw(self, *args: Any) -> Any:
        return self._context.run(self._throw, *args)

    def close(self) -> None:
        self._context.run(self._close)


async def in_context(context: contextvars.Context, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` (a coroutine) with ``context`` as its context variables.

    The first step runs right here, under ``context.run``: a coroutine that returns (or
    raises) without yielding, like most handlers of quick jobs, costs that one call. One that
    yields goes on through `_InContext`, each step under ``context.run`` as the first.

    The context must not be entered anywhere else at the same time (`Context.run` refuses
    that with a RuntimeError); give each job a fresh ``base.copy()``.
    """
    # A coroutine steps itself (send, throw, close); any other awaitable through __await__.
    coro: Any = awaitable if type(awaitable) is CoroutineType else awaitable.__await__()
    try:
        first = context.run(coro.send, None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    result = await _InContext(context, coro, first)
    return result
