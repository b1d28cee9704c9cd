"""OTP-style supervisors for Trio: start long-lived tasks, restart them when they fail.

::

    async with supervisors.open_supervisor("one_for_one", max_restarts=3, max_seconds=5.0) as sup:
        await sup.start_child("worker", worker, restart="permanent")
        sup.which_children()   # [ChildInfo(id='worker', running=True, restarts=0)]

Stopping a child (``shutdown()``, the end of the block after an exception or cancellation,
``terminate_child``, a strategy restart of its siblings, the intensity exceeded) follows
OTP's ``trap_exit``: a child that called `shutting_down` sees that event set and gets its
``shutdown`` grace (default 5 s) to return on its own before it is cancelled; any other
child is cancelled at once. A supervisor running in a child of another supervisor traps,
and passes the stop down its subtree by the same rule. ``sup.tree()`` gives the whole tree
as frozen records. Crash reports go to the ``supervisors`` logger (it has a NullHandler:
configure logging to see them).

See `open_supervisor` for strategies, the restart intensity and how the block ends, and
`Supervisor.start_child` for restart types and the ``shutdown`` grace.
"""

import logging as _logging

from ._backoff import RestartBackoff as RestartBackoff
from ._child import ChildInfo as ChildInfo
from ._child import shutting_down as shutting_down
from ._errors import RestartIntensityExceeded as RestartIntensityExceeded
from ._errors import SupervisorClosed as SupervisorClosed
from ._errors import SupervisorError as SupervisorError
from ._events import SupervisorEvent as SupervisorEvent
from ._events import SupervisorEventKind as SupervisorEventKind
from ._supervisor import RestartType as RestartType
from ._supervisor import Strategy as Strategy
from ._supervisor import Supervisor as Supervisor
from ._supervisor import open_supervisor as open_supervisor
from ._tree import ChildState as ChildState
from ._tree import ChildTree as ChildTree
from ._tree import SupervisorState as SupervisorState
from ._tree import SupervisorTree as SupervisorTree

_logging.getLogger("supervisors").addHandler(_logging.NullHandler())

__all__ = [
    "ChildInfo",
    "ChildState",
    "ChildTree",
    "RestartBackoff",
    "RestartIntensityExceeded",
    "RestartType",
    "Strategy",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorError",
    "SupervisorEvent",
    "SupervisorEventKind",
    "SupervisorState",
    "SupervisorTree",
    "open_supervisor",
    "shutting_down",
]
