"""A one-shot reply slot: how an asking task gets its answer from the task that handled it.

An Event plus an outcome, cheaper than a reply channel (see PERF.md). The slot also carries the
handler's cancel scope, so a caller cancelled while its message runs cancels just that message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

R = TypeVar("R")

_QUEUED, _RUNNING, _DONE, _ABANDONED = range(4)


class Reply(Generic[R]):
    """Where a handled message's result (or exception) waits for the caller."""

    __slots__ = ("_event", "_outcome", "_scope", "_state")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._outcome: outcome.Outcome[R] | None = None
        self._scope: trio.CancelScope | None = None
        self._state = _QUEUED

    @property
    def abandoned(self) -> bool:
        """The caller gave up (was cancelled) before the answer came: skip or drop it."""
        return self._state == _ABANDONED

    async def run(self, fn: Callable[..., Awaitable[R]], *args: Any) -> None:
        """Run ``fn(*args)`` on the handling side and deliver its result to the caller.

        ``Exception`` from ``fn`` goes to the caller; cancellation from the caller (who cancels
        ``self._scope``) ends just this call; cancellation of the handling task propagates.
        """
        self._state = _RUNNING
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                value = await fn(*args)
            except trio.Cancelled:
                raise
            except Exception as exc:
                self._outcome = outcome.Error(exc)
            else:
                self._outcome = outcome.Value(value)
        self._scope = None
        if self._state == _RUNNING:
            self._state = _DONE
        # Wakes the caller: with its answer, or out of its wait for the cancelled call to end.
        self._event.set()

    def succeed(self, value: R) -> None:
        """Answer with ``value`` without running anything here (the work ran elsewhere)."""
        if self._state in (_QUEUED, _RUNNING):
            self._outcome = outcome.Value(value)
            self._state = _DONE
        self._event.set()

    def fail(self, exc: BaseException) -> None:
        """Answer with ``exc`` without running anything (the handling side is going away)."""
        if self._state in (_QUEUED, _RUNNING):
            self._outcome = outcome.Error(exc)
            self._state = _DONE
        self._event.set()

    async def wait(self) -> R:
        """Wait for the answer and return it, or raise the handler's exception unchanged.

        Cancelled while the call runs: cancel it and wait until it has ended, so no work of
        the caller outlives the caller.
        """
        try:
            await self._event.wait()
        except BaseException:
            running, self._state = self._state == _RUNNING, _ABANDONED
            if running and self._scope is not None:
                self._scope.cancel()
                with trio.CancelScope(shield=True):
                    await self._event.wait()
            raise
        assert self._outcome is not None
        return self._outcome.unwrap()
