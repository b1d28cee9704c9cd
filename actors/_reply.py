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
from trio.lowlevel import reschedule, wait_task_rescheduled

from ._waits import Turn, waiting

R = TypeVar("R")

_PENDING, _ANSWERED, _DELIVERED, _ABANDONED = range(4)
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
_FAILED = trio.lowlevel.Abort.FAILED


def _refuse(_: object) -> trio.lowlevel.Abort:
    return _FAILED


class Reply(Generic[R]):
    """Where an answer (a value or an exception) waits for the one task that wants it."""

    __slots__ = ("_outcome", "_state", "_task", "abandoned")

    def __init__(self) -> None:
        self._state = _PENDING
        self._outcome: outcome.Outcome[R] | None = None
        self._task: trio.lowlevel.Task | None = None
        #: The waiter gave up (was cancelled) before the answer came: skip the work or drop
        #: it. Read it, never set it (a plain attribute: it is read once per message).
        self.abandoned = False

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
            reschedule(task, result)

    def succeed(self, value: R) -> None:
        """Answer with ``value`` (a no-op if answered already or abandoned)."""
        if self._state != _PENDING:
            return
        task = self._task
        if task is None:
            self._outcome = outcome.Value(value)
            self._state = _ANSWERED
        else:  # `_answer`, written out: this is every ask's path
            self._task = None
            self._state = _DELIVERED
            waiting.pop(task, None)
            reschedule(task, outcome.Value(value))

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
        return await self.park(trio.lowlevel.current_task(), turn)

    def park(self, task: trio.lowlevel.Task, turn: Turn | None = None) -> Awaitable[R]:
        """What `wait` awaits once the slot is known to be unanswered: ``task`` (the current
        one) parks until the answer comes.

        For a caller that knows no answer can have come yet (it has not yielded since the
        slot was handed over): ``return await reply.park(task, turn)`` skips `wait`'s check
        and its coroutine, the same wait otherwise.
        """
        self._task = task
        if turn is not None:
            waiting[task] = turn
        return wait_task_rescheduled(self._abandon)  # noqa: ASYNC105 (the caller awaits it)

    def _abandon(self, _: object) -> trio.lowlevel.Abort:
        """The waiter was cancelled before the answer: stop waiting, drop the answer."""
        task = self._task
        if task is not None:
            self._task = None
            waiting.pop(task, None)
        self._state = _ABANDONED
        self.abandoned = True
        return _SUCCEEDED

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
