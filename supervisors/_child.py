"""A supervisor's children: their public snapshot, their spec and the state of each run."""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._backoff import RestartBackoff

if TYPE_CHECKING:
    from ._supervisor import Supervisor


@attrs.frozen
class ChildInfo:
    """One child of a supervisor, as listed by `Supervisor.which_children`."""

    #: The id it was started with.
    id: str
    #: ``True`` while the child has started and has not exited or been asked to stop.
    running: bool
    #: How many times it was started again, whatever the cause: its own exit, a sibling's
    #: crash under ``one_for_all``/``rest_for_one``, or `Supervisor.restart_child`.
    restarts: int


class _State(enum.Enum):
    STARTING = "starting"  # its run is before task_status.started()
    RUNNING = "running"  # its run has started
    PENDING = "pending"  # waiting to be restarted (at `_Child.due`)
    STOPPED = "stopped"  # terminated, or a transient child that returned normally


@attrs.define(eq=False)
class _Child:
    """A child spec plus where it stands; owned by its supervisor."""

    id: str
    fn: Callable[..., Awaitable[object]]
    args: tuple[object, ...]
    restart: str
    shutdown: float
    backoff: RestartBackoff | None
    state: _State = _State.STARTING
    run: _Run | None = None
    restarts: int = 0
    streak: int = 0  # automatic restarts in a row without a healthy run (for backoff)
    due: float = math.inf  # when a PENDING child is restarted
    due_seq: int = -1  # which entry of the supervisor's due heap is current (-1: none)
    order: int = 0  # its place in start order (grows with every start_child)
    listed: bool = False  # in its supervisor's children


@attrs.define(eq=False)
class _Run:
    """One execution of a child's function, from its call to its return."""

    owner: Supervisor
    child: _Child
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)
    stop_event: trio.Event = attrs.field(factory=trio.Event)
    task: trio.lowlevel.Task | None = None  # the task running it
    started: bool = False
    started_at: float = 0.0
    stop_requested: bool = False
    traps: bool = False  # it called shutting_down() (or opened a supervisor): it gets a grace
    error: Exception | None = None
    nested: list[Supervisor] = attrs.field(factory=list)  # supervisors opened in this run


_CURRENT_RUN: ContextVar[_Run] = ContextVar("supervisors._current_run")


def _current_run() -> _Run | None:
    return _CURRENT_RUN.get(None)


def shutting_down() -> trio.Event:
    """The event a supervisor sets when it asks the calling child to stop.

    Call it from a child started by `Supervisor.start_child` (or from a task that child
    spawned). Calling it is how a child traps the stop, as ``trap_exit`` does in OTP: from
    then on, every stop of that run (``shutdown()``, the end of the block after an exception
    or cancellation, ``terminate_child``, ``restart_child``, ``delete_child``, a sibling's
    restart under ``one_for_all``/``rest_for_one``, the intensity exceeded) sets this event
    and gives the child up to its ``shutdown`` seconds to return on its own before cancelling
    it (``shutdown=0``: at once). A child that never calls it is cancelled at once when it is
    stopped, as Trio code expects. A supervisor opened in the child traps for it and stops
    its own children by the same rule (see `open_supervisor`)::

        async def worker(jobs, *, task_status=trio.TASK_STATUS_IGNORED):
            stopping = supervisors.shutting_down()
            task_status.started()
            while not stopping.is_set():
                await handle(await jobs.receive())   # finish the job in hand, then return

    Raises `RuntimeError` outside a supervised child.
    """
    run = _CURRENT_RUN.get(None)
    if run is None:
        raise RuntimeError(
            "supervisors.shutting_down() must be called from a child started by "
            "Supervisor.start_child (or from a task that child spawned)"
        )
    run.traps = True
    return run.stop_event


class _StartedStatus(trio.TaskStatus[Any]):
    """Wraps nursery.start's task status: marks the run started and shields it from then on."""

    def __init__(
        self, run: _Run, inner: trio.TaskStatus[Any], on_started: Callable[[_Run], None]
    ) -> None:
        self._run = run
        self._inner = inner
        self._on_started = on_started
        self.armed = False  # True once the function has returned a coroutine

    def started(self, value: Any = None) -> None:
        if not self.armed:
            raise TypeError(
                "start_child() needs an async function (async def), but the function called "
                "task_status.started() before returning a coroutine"
            )
        if self._run.started:
            raise RuntimeError("called 'started' twice on the same task status")
        self._inner.started(value)
        self._on_started(self._run)

    def __repr__(self) -> str:
        return f"<supervised task status of child {self._run.child.id!r}>"
