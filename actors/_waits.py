"""The wait-for graph: which task waits on which turn, so a cycle fails instead of hanging.

Every turn (a lane, a keyed actor's key) records the task that holds it (``owner``). A task
that is about to wait on a turn registers it here; before it waits, `check_wait` follows the
chain owner -> the turn that owner waits on -> its owner ... If the chain comes back to the
waiting task, waiting would never end: `WouldDeadlock` is raised instead. A lane job running
its own lane, A -> B -> A across keys, a `run_multi` holding a key that one of its waits
needs: all the same check, across every Lanes and keyed registry of the process.
"""

from __future__ import annotations

from typing import Protocol

import trio

from ._errors import WouldDeadlock


class Turn(Protocol):
    """Anything a task can hold and others wait on."""

    @property
    def owner(self) -> trio.lowlevel.Task | None:
        """The task holding the turn now, or None."""


#: The turn each waiting task waits on (entries live only while the task waits).
waiting: dict[trio.lowlevel.Task, Turn] = {}


def check_wait(task: trio.lowlevel.Task, turn: Turn, kind: str, name: str) -> None:
    """Raise `WouldDeadlock` if ``task`` waiting on ``turn`` closes a wait-for cycle.

    ``kind`` and ``name`` say what the turn is in the message ("lane", "account:1").
    """
    owner = turn.owner
    steps = 0
    while owner is not None:
        if owner is task:
            raise WouldDeadlock(
                f"{kind} {name!r} is held by this very task (directly, by a run_multi, or "
                "through a chain of keys each waiting on the next); it would wait for itself "
                "forever. "
                "Call the function directly instead, or take every key you need at once with "
                "run_multi."
            )
        step = waiting.get(owner)
        steps += 1
        if step is None or steps > len(waiting):
            return
        owner = step.owner
