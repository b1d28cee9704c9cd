"""The error hierarchy of the `supervisors` package.

Every error subclasses `SupervisorError` and the builtin (or Trio) error it refines,
so ``except RuntimeError`` or ``except trio.ClosedResourceError`` keep working.
"""

from __future__ import annotations

import trio


class SupervisorError(Exception):
    """Base class of every error raised by `supervisors` itself (not by your children)."""


class SupervisorClosed(trio.ClosedResourceError, SupervisorError):
    """A supervisor was used after its ``async with`` block ended, or while it shuts down.

    Raised by `Supervisor.start_child`, `~Supervisor.terminate_child`,
    `~Supervisor.restart_child` and `~Supervisor.delete_child`. Open a new supervisor,
    or make the call inside the block and before `Supervisor.shutdown`.
    """


class RestartIntensityExceeded(SupervisorError, RuntimeError):
    """More than ``max_restarts`` restarts happened within ``max_seconds``.

    The supervisor stopped all of its children (last started first) and raises this out of
    its ``async with`` block. ``__cause__`` is the error of the child whose exit broke the
    limit (``None`` if that child returned normally). Under a parent supervisor this is an
    ordinary crash of the child that ran the supervisor, and the parent applies its own
    strategy: that is how failures escalate up a supervision tree.
    """

    def __init__(
        self,
        message: str,
        *,
        supervisor: str,
        child_id: str,
        restarts: int,
        seconds: float,
        max_restarts: int,
        max_seconds: float,
    ) -> None:
        super().__init__(message)
        #: The name of the supervisor that gave up.
        self.supervisor = supervisor
        #: The id of the child whose exit broke the limit.
        self.child_id = child_id
        #: How many restarts fell within the window, the refused one included.
        self.restarts = restarts
        #: The time between the oldest of those restarts and the refused one (trio clock).
        self.seconds = seconds
        #: The limit the supervisor was opened with.
        self.max_restarts = max_restarts
        #: The window the supervisor was opened with.
        self.max_seconds = max_seconds
