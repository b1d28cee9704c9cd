"""The supervision tree as values: what `Supervisor.tree` returns."""

from __future__ import annotations

from typing import Literal

import attrs

SupervisorState = Literal["running", "stopping", "closed"]
"""``"running"``; ``"stopping"`` once it shuts down or gives up; ``"closed"`` after its block."""

ChildState = Literal["starting", "running", "pending", "stopped"]
"""``"pending"``: waiting to be restarted; ``"stopped"``: terminated, or a transient child
that returned normally, or asked to stop and not yet gone."""


@attrs.frozen
class ChildTree:
    """One child in a `SupervisorTree`."""

    #: The id it was started with.
    id: str
    #: Where it stands (see `ChildState`).
    state: ChildState
    #: ``True`` while it has started and has not exited or been asked to stop.
    running: bool
    #: How many times it was started again, whatever the cause.
    restarts: int
    #: The trees of the supervisors opened in its current run (usually none, or one).
    supervisors: tuple[SupervisorTree, ...] = ()


@attrs.frozen
class SupervisorTree:
    """A snapshot of a supervisor and, recursively, of the supervisors below it."""

    #: The name it was opened with.
    name: str
    #: ``"one_for_one"``, ``"one_for_all"`` or ``"rest_for_one"``.
    strategy: str
    #: Where it stands (see `SupervisorState`).
    state: SupervisorState
    #: Its children, in start order.
    children: tuple[ChildTree, ...]
