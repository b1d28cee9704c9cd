"""OTP-style supervisors for Trio: start long-lived tasks, restart them when they fail.

::

    async with supervisors.open_supervisor("one_for_one", max_restarts=3, max_seconds=5.0) as sup:
        await sup.start_child("worker", worker, restart="permanent")
        sup.which_children()   # [ChildInfo(id='worker', running=True, restarts=0)]

Every stop of a child (``shutdown()``, the end of the block after an exception or
cancellation, ``terminate_child``, a strategy restart of its siblings, the intensity
exceeded) sets its `shutting_down` event and gives it up to its ``shutdown`` seconds
(default 5; ``0`` cancels at once) to return on its own before cancelling it. A
supervisor running in a child of another supervisor passes that stop down its subtree.

See `open_supervisor` for strategies, the restart intensity and how the block ends, and
`Supervisor.start_child` for restart types and the ``shutdown`` grace.
"""

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

__all__ = [
    "ChildInfo",
    "RestartBackoff",
    "RestartIntensityExceeded",
    "RestartType",
    "Strategy",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorError",
    "SupervisorEvent",
    "SupervisorEventKind",
    "open_supervisor",
    "shutting_down",
]
