"""The supervisor: starts children, restarts them by strategy, gives up past an intensity."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, final

import trio

from ._backoff import RestartBackoff
from ._checks import (
    check_async_fn,
    check_choice,
    check_count,
    check_seconds,
    check_started_like_nursery_start,
    explain_start_error,
)
from ._child import _CURRENT_RUN, ChildInfo, _Child, _current_run, _Run, _StartedStatus, _State
from ._errors import RestartIntensityExceeded, SupervisorClosed
from ._events import SupervisorEvent, SupervisorEventKind
from ._tree import ChildState, ChildTree, SupervisorState, SupervisorTree
from ._unwrap import raise_unwrapped

logger = logging.getLogger("supervisors")

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
"""How a supervisor reacts when a child has to be restarted (see `open_supervisor`)."""

RestartType = Literal["permanent", "transient", "temporary"]
"""When a child is restarted after it exits (see `Supervisor.start_child`)."""

STRATEGIES: Final = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES: Final = ("permanent", "transient", "temporary")

_PRIVATE: Final = object()

_CHILD_STATES: Final[dict[_State, ChildState]] = {
    _State.STARTING: "starting",
    _State.RUNNING: "running",
    _State.PENDING: "pending",
    _State.STOPPED: "stopped",
}


def _check_child_id(child_id: object) -> str:
    if not isinstance(child_id, str):
        raise TypeError(f"child id must be a str, got {type(child_id).__name__}: {child_id!r}")
    if not child_id:
        raise ValueError("child id must be a non-empty str")
    return child_id


@final
class Supervisor:
    """A running supervisor; get one from ``async with supervisors.open_supervisor() as sup``.

    Its children are tasks of the supervisor's own nursery. Each child is started like
    ``nursery.start``, restarted according to its restart type and the supervisor's strategy,
    and stopped last started first. Errors raised by children never reach the code around the
    supervisor, except as `RestartIntensityExceeded` when restarting stops helping.
    """

    __slots__ = (
        "__weakref__",
        "_body_scope",
        "_by_id",
        "_changed",
        "_closed",
        "_closing",
        "_due",
        "_exits",
        "_fatal",
        "_live",
        "_lock",
        "_manager_scope",
        "_max_restarts",
        "_max_seconds",
        "_name",
        "_nursery",
        "_on_event",
        "_order",
        "_restart_times",
        "_shutdown_requested",
        "_stopped",
        "_strategy",
        "_unstopped",
        "_wake",
    )

    def __init__(
        self,
        token: object = None,
        *,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        name: str = "supervisor",
        on_event: Callable[[SupervisorEvent], object] | None = None,
    ) -> None:
        if token is not _PRIVATE:
            raise TypeError(
                "Supervisor has no public constructor; "
                "use `async with supervisors.open_supervisor(...) as sup:`"
            )
        self._strategy = strategy
        self._max_restarts = max_restarts
        self._max_seconds = max_seconds
        self._name = name
        self._on_event = on_event
        # Every structure below costs O(1) per child exit, crash or restart, so supervision
        # costs the same with 10 or 10,000 siblings.
        self._by_id: dict[str, _Child] = {}  # the children, in start order
        self._unstopped = 0  # children whose state is not STOPPED
        self._due: list[tuple[float, int, _Child]] = []  # heap of PENDING children by due time
        self._order = itertools.count()  # numbers entries of _due, and children in start order
        self._lock = trio.Lock()  # held by whoever starts or stops children
        self._exits: deque[_Run] = deque()  # runs that ended on their own, to handle
        self._wake = trio.Event()  # wakes the manager task
        self._changed = trio.Event()  # set (and replaced) whenever children change
        self._restart_times: deque[float] = deque()
        self._live = 0  # child tasks alive right now
        self._nursery: trio.Nursery | None = None
        self._body_scope = trio.CancelScope()
        # The manager task does the work shutdown() waits for, so, like the children, it is
        # shielded from the enclosing scope and ends only when the supervisor closes.
        self._manager_scope = trio.CancelScope(shield=True)
        self._closing: str | None = None  # why no new children are accepted
        self._closed = False  # the async with block has ended
        self._shutdown_requested = False
        self._stopped = trio.Event()  # every child has been stopped for good
        self._fatal: RestartIntensityExceeded | None = None

    def __repr__(self) -> str:
        return (
            f"<Supervisor {self._name!r} {self._strategy} "
            f"with {len(self._by_id)} children{' (closed)' if self._closed else ''}>"
        )

    @property
    def name(self) -> str:
        """The name it was opened with; used in messages, logs and events."""
        return self._name

    @property
    def strategy(self) -> str:
        """``"one_for_one"``, ``"one_for_all"`` or ``"rest_for_one"``."""
        return self._strategy

    @property
    def max_restarts(self) -> int:
        """The most restarts allowed within `max_seconds`."""
        return self._max_restarts

    @property
    def max_seconds(self) -> float:
        """The window, in seconds of the trio clock, that `max_restarts` applies to."""
        return self._max_seconds

    @property
    def closed(self) -> bool:
        """``True`` once the supervisor shuts down or its block has ended."""
        return self._closed or self._closing is not None

    # ----------------------------------------------------------------------------- public API

    def which_children(self) -> list[ChildInfo]:
        """The children, in start order: ``[ChildInfo(id, running, restarts), ...]``.

        Lists children waiting for a restart (``running=False``), children stopped by
        `terminate_child` and transient children that returned normally. Temporary children
        leave the list when they stop. Still readable after the block, for a post-mortem.
        """
        return [
            ChildInfo(id=child.id, running=self._is_running(child), restarts=child.restarts)
            for child in self._by_id.values()
        ]

    def tree(self) -> SupervisorTree:
        """The supervision tree below this supervisor, as nested frozen records.

        A `SupervisorTree` (name, strategy, state, children) whose `ChildTree` entries (id,
        state, running, restarts) hold the trees of the supervisors running in that child::

            root.tree().children[0].supervisors[0].name   # the supervisor inside child 0

        A snapshot: it does not change as the supervisors go on. Readable after the block.
        """
        state: SupervisorState = (
            "closed" if self._closed else "stopping" if self._closing is not None else "running"
        )
        return SupervisorTree(
            name=self._name,
            strategy=self._strategy,
            state=state,
            children=tuple(self._child_tree(child) for child in self._by_id.values()),
        )

    def _child_tree(self, child: _Child) -> ChildTree:
        run = child.run
        nested = () if run is None or run.done.is_set() else tuple(s.tree() for s in run.nested)
        return ChildTree(
            id=child.id,
            state=_CHILD_STATES[child.state],
            running=self._is_running(child),
            restarts=child.restarts,
            supervisors=nested,
        )

    async def start_child(
        self,
        child_id: str,
        fn: Callable[..., Awaitable[object]],
        /,
        *args: object,
        restart: RestartType = "permanent",
        shutdown: float = 5.0,
        backoff: RestartBackoff | None = None,
    ) -> Any:
        """Start ``fn(*args, task_status=...)`` as a child called ``child_id``.

        ``fn`` is started like ``nursery.start``: this returns the value it passes to
        ``task_status.started()``, and an exception it raises before that is raised here (the
        child is then not added). From ``started()`` on, the child belongs to the supervisor:

        - ``restart``: ``"permanent"`` children are restarted whenever they exit, even by
          returning; ``"transient"`` only after they raise; ``"temporary"`` never (they leave
          `which_children` when they stop).
        - ``shutdown``: its grace in seconds, for a child that traps the stop (it called
          `shutting_down`, or runs a supervisor): whenever it is stopped, its event is set
          and it may take that long to return before it is cancelled. A child that does not
          trap is cancelled at once. ``0`` cancels even a trapping child at once;
          ``math.inf`` waits for it as long as it takes (dangerous: a child that never
          returns then keeps its supervisor, and everything above, from stopping).
        - ``backoff``: a `RestartBackoff` spacing its restarts; ``None`` restarts at once.

        Raises `TypeError` at once if ``fn`` cannot be called as ``fn(*args,
        task_status=...)``, `ValueError` if ``child_id`` is taken, `SupervisorClosed` once the
        supervisor shuts down. Children are started one at a time; a child must not call this
        (or any method that starts or stops children) on its own supervisor before its
        ``started()``.
        """
        child_id = _check_child_id(child_id)
        check_async_fn(fn, "start_child() fn")
        check_started_like_nursery_start(fn, args, "start_child() fn")
        restart_type = check_choice(restart, "restart", RESTART_TYPES)
        grace = check_seconds(shutdown, "shutdown")
        if backoff is not None and not isinstance(backoff, RestartBackoff):
            raise TypeError(
                f"backoff must be a supervisors.RestartBackoff or None, "
                f"got {type(backoff).__name__}: {backoff!r}"
            )
        self._check_usable("start_child")
        async with self._lock:
            self._check_usable("start_child")
            if child_id in self._by_id:
                raise ValueError(
                    f"supervisor {self._name!r} already has a child {child_id!r}; "
                    "use another id, or delete_child() the old one first"
                )
            child = _Child(
                id=child_id,
                fn=fn,
                args=args,
                restart=restart_type,
                shutdown=grace,
                backoff=backoff,
            )
            self._add(child)
            try:
                return await self._start_run(child)
            except BaseException:
                self._remove(child)
                raise

    async def terminate_child(self, child_id: str) -> None:
        """Stop the child ``child_id`` and wait until it has stopped.

        A child that traps (see `shutting_down`) sees its event set and is cancelled once its
        ``shutdown`` grace is over if it has not returned by then; any other child is
        cancelled at once. It stays in `which_children`, not running, until
        `restart_child` or `delete_child` (a temporary child leaves at once). It is not
        restarted, whatever its restart type, and its stop does not count towards the restart
        intensity. Stopping an already stopped child does nothing. A child may terminate
        itself: it is cancelled at once.
        Raises `LookupError` for an unknown id.
        """
        child_id = _check_child_id(child_id)
        self._check_usable("terminate_child")
        async with self._lock:
            self._check_usable("terminate_child")
            await self._stop_child(self._get(child_id))

    async def restart_child(self, child_id: str) -> Any:
        """Start the child ``child_id`` again, now, and return its ``started()`` value.

        A running child is stopped first, as `terminate_child` stops it. Only this child is
        restarted, whatever the strategy, and its restart count goes up by one; the restart
        does not count towards the intensity. If it fails before ``started()``, the error is raised
        here and the child stays listed, not running. A child cannot restart itself (return or
        raise instead). Raises `LookupError` for an unknown id.
        """
        child_id = _check_child_id(child_id)
        self._check_usable("restart_child")
        async with self._lock:
            self._check_usable("restart_child")
            child = self._get(child_id)
            if child.run is not None and _current_run() is child.run:
                raise RuntimeError(
                    f"child {child_id!r} cannot restart itself; return or raise instead and "
                    "its supervisor restarts it according to its restart type"
                )
            self._set_state(child, _State.STOPPED)
            self._unschedule(child)
            if child.run is not None:
                await self._stop_run(child.run)
            child.restarts += 1
            return await self._start_run(child)

    async def delete_child(self, child_id: str) -> None:
        """Stop the child ``child_id`` if it runs, and forget it (its id can be used again).

        Raises `LookupError` for an unknown id.
        """
        child_id = _check_child_id(child_id)
        self._check_usable("delete_child")
        async with self._lock:
            self._check_usable("delete_child")
            child = self._get(child_id)
            self._remove(child)
            if child.run is not None:
                await self._stop_run(child.run)

    async def shutdown(self) -> None:
        """Stop every child, last started first, and accept no new ones.

        One at a time: a child that traps (it called `shutting_down`, or runs a supervisor)
        sees its event set and gets up to its ``shutdown`` seconds to return before it is
        cancelled; any other child is cancelled at once. Returns once all have stopped; the
        ``async with`` block can then end. Calling it again, or after the block, does nothing.
        It also works from a ``finally`` in the block (under a shield) while an exception or
        a cancellation of the enclosing scope leaves it: until the block is left, the
        supervisor goes on working.
        A child may call it: it is cancelled at once, and the supervisor goes on stopping the
        others.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._check_not_starting("shutdown")
        self._request_shutdown("it was shut down")
        run = _current_run()
        if run is not None and run.owner is self:
            # A child shutting its own supervisor down would only wait for itself: it stops now.
            run.stop_requested = True
            run.stop_event.set()
            run.scope.cancel()
        await self._stopped.wait()

    # ------------------------------------------------------------------------------ internals

    def _request_shutdown(self, why: str) -> None:
        """Have the manager task stop every child; `_stopped` is set once it has."""
        if not self._shutdown_requested:
            self._shutdown_requested = True
            if self._closing is None:
                self._closing = why
            self._wake.set()

    def _check_usable(self, what: str) -> None:
        if self._closed:
            raise SupervisorClosed(
                f"supervisor {self._name!r} is closed: {what}() was called after its "
                "`async with` block ended; open a new supervisor"
            )
        if self._closing is not None:
            raise SupervisorClosed(
                f"supervisor {self._name!r} is shutting down ({self._closing}); "
                f"{what}() is no longer possible"
            )
        self._check_not_starting(what)

    def _check_not_starting(self, what: str) -> None:
        run = _current_run()
        if run is not None and run.owner is self and not run.started:
            raise RuntimeError(
                f"{what}() was called by child {run.child.id!r} of supervisor {self._name!r} "
                "before it called task_status.started(); the supervisor waits for that call "
                "before it does anything else, so make this call after started()"
            )

    def _get(self, child_id: str) -> _Child:
        try:
            return self._by_id[child_id]
        except KeyError:
            ids = [repr(cid) for cid in itertools.islice(self._by_id, 10)]
            more = len(self._by_id) - len(ids)
            known = ", ".join(ids) + (f" and {more} more" if more > 0 else "") or "none"
            raise LookupError(
                f"supervisor {self._name!r} has no child {child_id!r} (its children: {known})"
            ) from None

    def _is_running(self, child: _Child) -> bool:
        run = child.run
        return child.state is _State.RUNNING and run is not None and not run.done.is_set()

    def _is_idle(self) -> bool:
        return (
            self._live == 0
            and (not self._exits or self._closing is not None)  # exits are stale once closing
            and self._unstopped == 0
        )

    def _bump(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _add(self, child: _Child) -> None:
        child.order = next(self._order)
        child.listed = True
        self._by_id[child.id] = child
        self._unstopped += child.state is not _State.STOPPED

    def _set_state(self, child: _Child, state: _State) -> None:
        if child.listed:
            self._unstopped += (state is not _State.STOPPED) - (child.state is not _State.STOPPED)
        child.state = state
        self._bump()

    def _remove(self, child: _Child) -> None:
        if child.listed:
            child.listed = False
            del self._by_id[child.id]
            self._unstopped -= child.state is not _State.STOPPED
            self._unschedule(child)
            self._bump()

    def _schedule(self, child: _Child, due: float) -> None:
        """Make ``child`` PENDING, to be restarted at ``due``."""
        self._set_state(child, _State.PENDING)
        child.due = due
        child.due_seq = next(self._order)
        heapq.heappush(self._due, (due, child.due_seq, child))

    def _unschedule(self, child: _Child) -> None:
        child.due = math.inf
        child.due_seq = -1  # its entry in _due, if any, is stale now

    def _next_due(self) -> float:
        """When the next PENDING child is due; drops the stale entries on top of the heap."""
        due = self._due
        while due:
            when, seq, child = due[0]
            if child.due_seq == seq and child.state is _State.PENDING and child.listed:
                return when
            heapq.heappop(due)
        return math.inf

    def _pop_due(self, now: float) -> _Child | None:
        """The PENDING child due first if it is due by ``now``, taken off the heap."""
        if self._next_due() > now:
            return None
        child = heapq.heappop(self._due)[2]
        child.due_seq = -1
        return child

    def _emit(
        self, kind: SupervisorEventKind, child: _Child, error: BaseException | None = None
    ) -> None:
        if self._on_event is None:
            return
        event = SupervisorEvent(
            kind=kind,
            supervisor=self._name,
            child_id=child.id,
            time=trio.current_time(),
            restarts=child.restarts,
            error=error,
        )
        try:
            self._on_event(event)
        except Exception:
            logger.exception("supervisor %r: on_event raised for %r", self._name, event)

    def _report(self, run: _Run, then: str) -> None:
        """Log an OTP-style crash report: one line saying what crashed and what happens next.

        The traceback is attached (``exc_info``) for handlers that want it.
        """
        error = run.error
        if error is None:
            return
        how = "crashed" if run.started else "failed to start again"
        logger.error(
            "supervisor %r: child %r %s with %r; %s",
            self._name,
            run.child.id,
            how,
            error,
            then,
            exc_info=error,
        )

    # -- one run of a child ------------------------------------------------------------------

    async def _start_run(self, child: _Child) -> Any:
        """Run the child's function again, like nursery.start; state STOPPED if that fails."""
        old = child.run
        if old is not None and not old.done.is_set():
            await self._stop_run(old)  # never two runs of one child at once
        if self._closing is not None:
            raise SupervisorClosed(
                f"supervisor {self._name!r} is shutting down ({self._closing}); "
                f"child {child.id!r} is not started again"
            )
        run = _Run(owner=self, child=child)
        child.run = run
        self._set_state(child, _State.STARTING)
        assert self._nursery is not None
        try:
            return await self._nursery.start(self._run_child, run)
        except BaseException as exc:
            if child.run is run:
                self._set_state(child, _State.STOPPED)
            if run.stop_requested and isinstance(exc, Exception):
                raise SupervisorClosed(
                    f"supervisor {self._name!r} was shut down while child {child.id!r} was starting"
                ) from exc
            raise

    def _on_started(self, run: _Run) -> None:
        run.started = True
        run.started_at = trio.current_time()
        if run.task is not None and run.task.parent_nursery is self._nursery:
            # From now on only the supervisor stops it, even if the scope around the
            # supervisor is cancelled already. (If the caller of start was cancelled
            # meanwhile, trio leaves the task under that caller: let the cancellation reach it.)
            run.scope.shield = True
        child = run.child
        if child.run is run and child.state is _State.STARTING:
            self._set_state(child, _State.RUNNING)
        kind = SupervisorEventKind.CHILD_RESTARTED if child.restarts else None
        self._emit(kind or SupervisorEventKind.CHILD_STARTED, child)

    async def _run_child(self, run: _Run, *, task_status: trio.TaskStatus[Any]) -> None:
        """The task of one run: calls the child's function and reports how it ended."""
        child = run.child
        _CURRENT_RUN.set(run)
        run.task = trio.lowlevel.current_task()
        status = _StartedStatus(run, task_status, self._on_started)
        self._live += 1
        error: Exception | None = None
        try:
            with run.scope:
                try:
                    coro = child.fn(*child.args, task_status=status)
                except TypeError as exc:
                    clearer = explain_start_error(exc, child.fn, "start_child() fn")
                    if clearer is None:
                        raise
                    raise clearer from exc
                if not isinstance(coro, Coroutine):
                    raise TypeError(
                        f"start_child() needs an async function (async def), but "
                        f"{getattr(child.fn, '__qualname__', child.fn)!r} returned "
                        f"{type(coro).__name__}: {coro!r}"
                    )
                status.armed = True
                await coro
                if not run.started:
                    raise RuntimeError(
                        f"child {child.id!r} returned without calling task_status.started(); "
                        "call it once its setup is done"
                    )
        except Exception as exc:
            if not run.started:
                raise  # nursery.start raises it at the caller of start_child / the restart
            error = exc
        finally:
            self._live -= 1
            run.done.set()
            self._bump()
        run.error = error
        self._on_exit(run)

    def _on_exit(self, run: _Run) -> None:
        child, error = run.child, run.error
        if run.stop_requested:
            if error is not None:
                logger.warning(
                    "supervisor %r: child %r raised while stopping: %r",
                    self._name,
                    child.id,
                    error,
                    exc_info=error,
                )
            self._emit(SupervisorEventKind.CHILD_STOPPED, child, error)
            return
        if error is not None:
            self._emit(SupervisorEventKind.CHILD_CRASHED, child, error)
        else:
            self._emit(SupervisorEventKind.CHILD_EXITED, child)
        if self._closing is not None:
            self._report(run, "not restarting it: the supervisor is stopping")
            return
        self._exits.append(run)  # the manager task reports it when it decides what to do
        self._wake.set()

    async def _stop_run(self, run: _Run) -> None:
        """Ask a run to stop and wait until its task has ended.

        OTP's ``trap_exit`` rule: a run that trapped (called `shutting_down`, or opened a
        supervisor) sees its event set and is cancelled once its ``shutdown`` grace has
        passed; any other run is cancelled at once, as are a run with ``shutdown=0`` and a run
        stopping itself (it cannot wait for itself). Stopping does not depend on this wait:
        the grace is the cancel scope's deadline, so the run ends even if the caller is
        cancelled while waiting.
        """
        run.stop_requested = True
        if run.done.is_set():
            return
        run.stop_event.set()
        itself = _current_run() is run
        if itself or not run.traps or run.child.shutdown == 0:
            run.scope.cancel()
        else:
            # min(): a second stop never extends the grace of the first.
            run.scope.deadline = min(run.scope.deadline, trio.current_time() + run.child.shutdown)
        if itself:
            await trio.lowlevel.checkpoint()
            return
        await run.done.wait()

    async def _stop_child(self, child: _Child) -> None:
        """Stop a child for good: STOPPED, or gone if temporary."""
        self._unschedule(child)
        if child.restart == "temporary":
            self._remove(child)
        else:
            self._set_state(child, _State.STOPPED)
        if child.run is not None:
            await self._stop_run(child.run)

    async def _stop_all(self) -> None:
        """Stop every child, last started first; loops until no run is left."""
        if self._closing is None:
            self._closing = "it is stopping"
        while self._exits:  # exits the manager had no time to handle: nothing restarts now
            self._report(self._exits.popleft(), "not restarting it: the supervisor is stopping")
        while True:
            targets = [
                child
                for child in reversed(self._by_id.values())
                if child.state is not _State.STOPPED
                or (child.run is not None and not child.run.done.is_set())
            ]
            if not targets:
                break
            for child in targets:
                await self._stop_child(child)
        self._stopped.set()

    # -- the manager task: handles exits and due restarts -----------------------------------

    def _has_work(self) -> bool:
        if self._shutdown_requested:
            return True
        if self._closing is not None:
            return False
        return bool(self._exits) or self._next_due() <= trio.current_time()

    async def _manage(self, parent_stop: trio.Event | None) -> None:
        """The manager task: handles exits and due restarts, and stops all on request.

        ``parent_stop`` is the `shutting_down` event of the supervised child this supervisor
        runs in, if any: once it is set, this supervisor shuts down (the stop goes down the tree).
        """
        with self._manager_scope:
            async with trio.open_nursery() as nursery:
                if parent_stop is not None:
                    nursery.start_soon(self._pass_stop_on, parent_stop)
                await self._serve()
                nursery.cancel_scope.cancel()

    async def _pass_stop_on(self, parent_stop: trio.Event) -> None:
        await parent_stop.wait()
        self._request_shutdown("the supervisor above it is stopping it")

    async def _serve(self) -> None:
        while True:
            if self._shutdown_requested:
                async with self._lock:
                    await self._stop_all()
                return
            if self._closing is None:
                async with self._lock:
                    await self._process()
                self._bump()
            if self._fatal is not None:
                return
            if self._has_work():
                continue
            self._wake = trio.Event()
            with trio.move_on_at(self._next_due()):
                await self._wake.wait()

    async def _process(self) -> None:
        """Handle every queued exit and due restart, an exit first; the lock is held."""
        while self._closing is None:
            if self._exits:
                await self._handle_exit(self._exits.popleft())
                continue
            child = self._pop_due(trio.current_time())
            if child is None:
                return
            await self._restart(child)

    async def _restart(self, child: _Child) -> None:
        self._unschedule(child)
        child.restarts += 1
        try:
            await self._start_run(child)
        except Exception as exc:
            run = child.run
            assert run is not None
            run.error = exc
            self._emit(SupervisorEventKind.CHILD_CRASHED, child, exc)
            self._exits.append(run)  # handled (and reported) like a crash

    def _group(self, child: _Child) -> list[_Child]:
        """The children restarted with ``child``, in start order (``child`` included).

        ``one_for_one`` costs O(1); ``rest_for_one`` as many steps as children started after
        ``child``; ``one_for_all`` one step per child (it restarts them all).
        """
        if self._strategy == "one_for_one":
            return [child]
        alive = (_State.RUNNING, _State.PENDING, _State.STARTING)
        if self._strategy == "one_for_all":
            candidates = list(self._by_id.values())
        else:
            later = reversed(self._by_id.values())
            candidates = list(itertools.takewhile(lambda other: other is not child, later))
            candidates.append(child)
            candidates.reverse()
        return [other for other in candidates if other is child or other.state in alive]

    async def _handle_exit(self, run: _Run) -> None:
        child, error = run.child, run.error
        if not child.listed or child.run is not run or run.stop_requested:
            self._report(run, "not restarting it: it was stopped or restarted meanwhile")
            return
        if child.restart == "temporary" or (child.restart == "transient" and error is None):
            self._report(run, "not restarting it: it is temporary")
            if child.restart == "temporary":
                self._remove(child)
            else:
                self._set_state(child, _State.STOPPED)
            return
        now = trio.current_time()
        times = self._restart_times
        times.append(now)
        while times[0] < now - self._max_seconds:
            times.popleft()
        if len(times) > self._max_restarts:
            await self._give_up(run, len(times), now - times[0])
            return
        delay = 0.0
        if child.backoff is not None:
            if run.started and now - run.started_at >= child.backoff.max:
                child.streak = 0  # a healthy run: start the sequence again
            child.streak += 1
            delay = child.backoff.delay(child.streak)
        group = self._group(child)
        when = f" in {delay:.3g} s" if delay else ""
        with_whom = f" with {len(group) - 1} of its siblings ({self._strategy})"
        self._report(run, f"restarting it{with_whom if len(group) > 1 else ''}{when}")
        for member in group:
            if member.restart != "temporary" or member is child:
                self._schedule(member, now + delay)
        for member in reversed(group):
            if member is child:
                continue
            if member.restart == "temporary":
                self._remove(member)
            if member.run is not None:
                await self._stop_run(member.run)

    async def _give_up(self, run: _Run, restarts: int, seconds: float) -> None:
        child, error = run.child, run.error
        how = f"crashed with {type(error).__name__}" if error is not None else "returned"
        limit = (
            f"restart {restarts} within {seconds:.3g} s, more than max_restarts="
            f"{self._max_restarts} within max_seconds={self._max_seconds:g}"
        )
        fatal = RestartIntensityExceeded(
            f"supervisor {self._name!r} gave up: child {child.id!r} {how}, which would be "
            f"{limit}; all its children were stopped",
            supervisor=self._name,
            child_id=child.id,
            restarts=restarts,
            seconds=seconds,
            max_restarts=self._max_restarts,
            max_seconds=self._max_seconds,
        )
        fatal.__cause__ = error
        fatal.__suppress_context__ = True
        self._fatal = fatal
        self._closing = "it gave up after too many restarts"
        then = f"giving up: that would be {limit}; stopping every child"
        if error is None:
            logger.error("supervisor %r: child %r returned; %s", self._name, child.id, then)
        self._report(run, then)
        self._emit(SupervisorEventKind.INTENSITY_EXCEEDED, child, fatal)
        self._set_state(child, _State.STOPPED)
        await self._stop_all()
        self._body_scope.cancel()

    async def _wait_until_idle(self) -> None:
        while not self._is_idle():
            await self._changed.wait()
        if self._closing is None:
            self._closing = "its block has ended"


@asynccontextmanager
async def open_supervisor(
    strategy: Strategy = "one_for_one",
    max_restarts: int = 3,
    max_seconds: float = 5.0,
    *,
    name: str = "supervisor",
    on_event: Callable[[SupervisorEvent], object] | None = None,
) -> AsyncIterator[Supervisor]:
    """Open a supervisor; its children live as long as its ``async with`` block.

    ::

        async with supervisors.open_supervisor("one_for_one", max_restarts=3) as sup:
            await sup.start_child("worker", worker, restart="permanent")
            ...

    When a child has to be restarted, ``strategy`` says which children restart with it:
    ``"one_for_one"`` only that child; ``"one_for_all"`` every running child (the others are
    stopped last started first, then all start again in start order); ``"rest_for_one"`` the
    child and the running children started after it. Temporary children stopped this way are
    not restarted; children stopped by `Supervisor.terminate_child` stay stopped.

    Intensity: if a restart would make more than ``max_restarts`` restarts within
    ``max_seconds`` (trio clock; a restart at exactly ``max_seconds`` ago still counts), the
    supervisor restarts nothing, stops every child last started first and raises
    `RestartIntensityExceeded` out of the block (the block's code is cancelled). Started
    as a child of another supervisor, that is a crash of that child: a supervision tree::

        async def team(*, task_status=trio.TASK_STATUS_IGNORED):
            async with supervisors.open_supervisor("one_for_all", 2, 1.0) as sup:
                await sup.start_child("db", db_worker)
                await sup.start_child("api", api_worker)
                task_status.started(sup)

        await root.start_child("team", team)   # restarted by root when `team` gives up

    Leaving the block waits for the children, as a nursery does: it ends once none is left
    running or waiting for a restart (a permanent child keeps it open until
    `Supervisor.shutdown`). An exception in the block, or a cancellation of the enclosing
    scope, stops every child last started first, under a shield, and is then re-raised.
    Errors of children never leave the block.

    How a child stops, whatever the cause, follows OTP's ``trap_exit``: a child that called
    `shutting_down` (it traps) sees its event set and gets up to its ``shutdown`` seconds
    (see `Supervisor.start_child`) to return before it is cancelled; any other child (a
    plain ``await trio.sleep_forever()``, a server loop) is cancelled at once. Children are
    stopped one at a time, last started first, so only children that trap cost their grace:
    ten thousand plain children stop in well under a second.

    Trees: a supervisor that is a child of another supervisor traps, and stops its subtree
    when asked to stop. Opened inside a supervised child (anywhere `shutting_down` works),
    it watches that event and, once it is set, shuts itself down as `Supervisor.shutdown`
    does: its children stop last started first, each by the rule above, and their children
    in turn.
    The parent's stop then ends as soon as the subtree has stopped and the child returns,
    not after the whole grace of the supervisor child. The block's own code is not
    cancelled: a block that goes on running keeps the child until its grace is over.

    ``on_event`` (optional) is called with a `SupervisorEvent` for every start, restart,
    exit, crash and stop; an ``on_event`` that raises is logged and ignored. Each crash is
    also logged on the ``"supervisors"`` logger as a one-line crash report at ERROR (the
    supervisor, the child, the error and what happens next; the traceback is attached as
    ``exc_info``). ``max_seconds`` must be finite and ``name`` a non-empty str.
    """
    strategy_name = check_choice(strategy, "strategy", STRATEGIES)
    max_restarts = check_count(max_restarts, "max_restarts")
    if isinstance(max_seconds, int | float) and math.isinf(max_seconds):
        raise ValueError(
            "max_seconds must be finite (as in OTP, the restart intensity needs a period): "
            "to allow more restarts, raise max_restarts or give a longer window, "
            "such as max_seconds=3600"
        )
    max_seconds = check_seconds(max_seconds, "max_seconds", allow_zero=False)
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a str naming the supervisor in logs and errors, "
            f"got {type(name).__name__}: {name!r}"
        )
    if not name:
        raise ValueError(
            "name must be a non-empty str: it names the supervisor in logs, errors and "
            "tree(); leave it out for the default 'supervisor'"
        )
    if on_event is not None and not callable(on_event):
        raise TypeError(f"on_event must be callable or None, got {type(on_event).__name__}")
    sup = Supervisor(
        _PRIVATE,
        strategy=strategy_name,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        name=name,
        on_event=on_event,
    )
    raised: BaseException | None = None
    parent: _Run | None = None
    try:
        async with trio.open_nursery() as nursery:
            sup._nursery = nursery
            parent = _current_run()  # set if this supervisor runs in a supervised child
            if parent is not None:
                parent.traps = True  # it stops its own children when asked: it gets its grace
                parent.nested.append(sup)
            nursery.start_soon(sup._manage, None if parent is None else parent.stop_event)
            with sup._body_scope:
                try:
                    yield sup
                    await sup._wait_until_idle()
                except BaseException as exc:
                    raised = exc
                    if sup._closing is None:
                        sup._closing = "its block was left by an exception or cancellation"
                    sup._manager_scope.cancel()
                    with trio.CancelScope(shield=True):
                        await sup._stop_all()
                    raise
            sup._manager_scope.cancel()  # only the (shielded) manager task is left
    except BaseExceptionGroup as group:
        raise_unwrapped(group, raised)
    finally:
        sup._closed = True
        sup._stopped.set()
        if parent is not None:
            parent.nested.remove(sup)
    if sup._fatal is not None:
        raise sup._fatal
