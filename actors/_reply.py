"""A one-shot reply slot: how a waiting task gets its answer from the task that produced it.

The waiting task parks on the slot itself and the answering task reschedules it with the
outcome: no Event, no channel, one task switch (docs/performance.md has the figures). The same
slot serves an asked message, a batched operation, a group commit: whoever answers calls
`Reply.succeed` or `Reply.fail` (or `Reply.run`), whoever waits calls `Reply.wait`.

A waiter cancelled before the answer simply stops waiting (`Reply.abandoned` turns true); the
work producing the answer is not touched (it belongs to whoever does it) and its answer is
dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

from ._waits import Turn, waiting

R = TypeVar("R")

_PENDING, _ANSWERED, _DELIVERED, _ABANDONED = range(4)
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
_FAILED = trio.lowlevel.Abort.FAILED


def _refuse(_: object) -> trio.lowlevel.Abort:
    return _FAILED


class Reply(Generic[R]):
    """Where an answer (a value or an exception) waits for the one task that wants it."""

    __slots__ = ("_outcome", "_state", "_task")

    def __init__(self) -> None:
        self._state = _PENDING
        self._outcome: outcome.Outcome[R] | None = None
        self._task: trio.lowlevel.Task | None = None

    @property
    def abandoned(self) -> bool:
        """The waiter gave up (was cancelled) before the answer came: skip the work or drop it."""
        return self._state == _ABANDONED

    def _answer(self, result: outcome.Outcome[R]) -> None:
        if self._state != _PENDING:
            return  # answered already, or nobody waits any more
        task = self._task
        if task is None:
            self._outcome = result
            self._state = _ANSWERED
        else:
            self._task = None
            self._state = _DELIVERED
            waiting.pop(task, None)
            trio.lowlevel.reschedule(task, result)

    def succeed(self, value: R) -> None:
        """Answer with ``value`` (a no-op if answered already or abandoned)."""
        self._answer(outcome.Value(value))

    def fail(self, exc: BaseException) -> None:
        """Answer with ``exc``, raised from `wait` (a no-op if answered already or abandoned)."""
        self._answer(outcome.Error(exc))

    async def run(self, fn: Callable[..., Awaitable[R]], *args: Any) -> None:
        """Run ``await fn(*args)`` on the answering side and answer with its result.

        An ``Exception`` from ``fn`` is the answer. Anything else (`trio.Cancelled` of the
        answering task, a ``KeyboardInterrupt``) propagates to the caller of `run`, which
        decides what the waiter hears.
        """
        try:
            value = await fn(*args)
        except Exception as exc:
            self._answer(outcome.Error(exc))
        else:
            self._answer(outcome.Value(value))

    async def wait(self, turn: Turn | None = None) -> R:
        """Wait for the answer and return it, or raise the exception it carries.

        Always a checkpoint. Cancelled before the answer: stop waiting at once (the slot is
        abandoned). ``turn``: what the answer waits on, recorded for the wait-for check that
        raises `WouldDeadlock`.
        """
        result = self._outcome
        if result is not None:
            # Answered before we waited: still a checkpoint, cancellable like Event.wait.
            self._outcome = None
            await trio.lowlevel.checkpoint()
            self._state = _DELIVERED
            return result.unwrap()
        task = self._task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._task = None
            self._state = _ABANDONED
            waiting.pop(task, None)
            return _SUCCEEDED

        if turn is not None:
            waiting[task] = turn
        value: R = await trio.lowlevel.wait_task_rescheduled(abort)
        return value

    async def wait_shielded(self) -> R:
        """`wait` that cancellation cannot interrupt, as inside ``CancelScope(shield=True)``
        (without one): a cancel arriving meanwhile is raised at the caller's next checkpoint.

        Always a schedule point, never a cancellation point.
        """
        result = self._outcome
        if result is not None:
            self._outcome = None
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._state = _DELIVERED
            return result.unwrap()
        self._task = trio.lowlevel.current_task()
        value: R = await trio.lowlevel.wait_task_rescheduled(_refuse)
        return value
