"""Supervised test children that crash, return or stop on demand, and record what they do."""

from __future__ import annotations

import functools
import math
from collections.abc import Coroutine
from typing import Any

import attrs
import trio

import supervisors


class Boom(Exception):
    """What test children raise when told to crash."""


@attrs.define(eq=False)
class _Order:
    kind: str = ""
    given: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class Crew:
    """Children for a supervisor; ``log`` holds ``(time, what, child id)`` entries.

    ``what`` is ``"start"`` when a run begins and ``"end"`` when it finishes (however it
    finishes: returned, raised or cancelled); ``"cancelled"`` is logged too when a run is
    cancelled and ``"graceful"`` when it returns after seeing `supervisors.shutting_down`.
    A child started without ``cleanup`` ignores that event, so a stop cancels it when its
    ``shutdown`` grace is over.
    """

    log: list[tuple[float, str, str]] = attrs.field(factory=list)
    orders: dict[str, _Order] = attrs.field(factory=dict)
    live: int = 0

    def note(self, what: str, cid: str) -> None:
        self.log.append((trio.current_time(), what, cid))

    def starts(self, cid: str) -> list[float]:
        return [t for t, what, c in self.log if c == cid and what == "start"]

    def kinds(self, *whats: str) -> list[tuple[str, str]]:
        return [(what, c) for _, what, c in self.log if what in whats]

    async def child(
        self,
        cid: str,
        *,
        cleanup: float | None = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Runs until told; with ``cleanup`` it returns that long after being asked to stop."""
        order = self.orders[cid] = _Order()
        self.note("start", cid)
        self.live += 1
        try:
            stopping = supervisors.shutting_down() if cleanup is not None else None
            task_status.started(cid)
            async with trio.open_nursery() as nursery:
                if stopping is not None:

                    async def graceful() -> None:
                        assert stopping is not None
                        assert cleanup is not None
                        await stopping.wait()
                        await trio.sleep(cleanup)
                        self.note("graceful", cid)
                        order.kind = "return"
                        order.given.set()

                    nursery.start_soon(graceful)
                await order.given.wait()
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            if _is_cancellation(exc):
                self.note("cancelled", cid)
            raise
        finally:
            self.live -= 1
            self.note("end", cid)
        if order.kind == "crash":
            raise Boom(cid)

    def crash(self, cid: str) -> None:
        self._give(cid, "crash")

    def finish(self, cid: str) -> None:
        self._give(cid, "return")

    def _give(self, cid: str, kind: str) -> None:
        order = self.orders[cid]
        assert not order.given.is_set(), f"{cid} was already told to {order.kind}"
        order.kind = kind
        order.given.set()


def trapping(crew: Crew) -> functools.partial[Coroutine[Any, Any, None]]:
    """A child that traps the stop (calls `supervisors.shutting_down`) but never returns.

    Stopping it costs its whole ``shutdown`` grace, then it is cancelled (logged as
    ``"cancelled"``): the child for tests about the grace itself.
    """
    return functools.partial(crew.child, cleanup=math.inf)


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


def infos(sup: supervisors.Supervisor) -> list[tuple[str, bool, int]]:
    """which_children() as plain tuples, for short asserts."""
    return [(c.id, c.running, c.restarts) for c in sup.which_children()]
