"""What a supervisor reports to its ``on_event`` observer."""

from __future__ import annotations

import enum

import attrs


class SupervisorEventKind(enum.StrEnum):
    """The kinds of `SupervisorEvent`."""

    #: A child called ``task_status.started()`` for the first time.
    CHILD_STARTED = "child_started"
    #: A child was started again (``restarts`` is its new count).
    CHILD_RESTARTED = "child_restarted"
    #: A child returned on its own (not asked to stop).
    CHILD_EXITED = "child_exited"
    #: A child raised on its own (``error`` holds the exception), or failed to restart.
    CHILD_CRASHED = "child_crashed"
    #: A child finished after the supervisor asked it to stop (``error`` is set if it raised).
    CHILD_STOPPED = "child_stopped"
    #: The restart intensity was exceeded; the supervisor stops and raises.
    INTENSITY_EXCEEDED = "intensity_exceeded"


@attrs.frozen
class SupervisorEvent:
    """One thing that happened to a supervisor's child, as passed to ``on_event``."""

    #: What happened.
    kind: SupervisorEventKind
    #: The name of the supervisor.
    supervisor: str
    #: The id of the child it happened to.
    child_id: str
    #: When, on the trio clock.
    time: float
    #: The child's restart count at that moment.
    restarts: int
    #: The exception, for ``child_crashed``, ``child_stopped`` (if it raised) and
    #: ``intensity_exceeded`` (the `RestartIntensityExceeded`).
    error: BaseException | None = None
