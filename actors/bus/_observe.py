"""Observers, kept off the hot path: sync ones are called inline, async ones from a buffer.

A sync observer runs where the event happens, before the bus goes on (keep it quick). An
async observer never delays a job or a dispatch: its events wait in a bounded buffer that one
task per observer drains in order; when the buffer is full the event is dropped for that
observer and counted (`Bus.stats` ``events_dropped``), so a slow observer costs events, never
throughput. Leaving the bus's block delivers what is buffered first. An observer that raises
is logged and ignored.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from ._events import Event, EventKind
from ._model import QueuedJob

log = logging.getLogger("actors.bus")

#: Events buffered per async observer before new ones are dropped.
BUFFER = 10_000


def _is_async(observer: Callable[..., object]) -> bool:
    call = getattr(observer, "__call__", None)  # noqa: B004 - callable instances
    return inspect.iscoroutinefunction(observer) or inspect.iscoroutinefunction(call)


class Emitter:
    """Builds `Event`s and hands them to the observers."""

    def __init__(
        self,
        observers: Sequence[Callable[[Event], object]],
        ids: Callable[[], str],
        clock: Callable[[], Any],
    ) -> None:
        self.active = bool(observers)
        self._sync = [o for o in observers if not _is_async(o)]
        self._async = [o for o in observers if _is_async(o)]
        self._ids = ids
        self._clock = clock
        self._sends: list[trio.MemorySendChannel[Event]] = []
        self.dropped = 0
        self._draining = 0
        self._drained = trio.lowlevel.ParkingLot()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain each async observer's buffer until `close`; then deliver what is left."""
        async with trio.open_nursery() as nursery:
            for observer in self._async:
                send, receive = trio.open_memory_channel[Event](BUFFER)
                self._sends.append(send)
                nursery.start_soon(self._drain, observer, receive)
            task_status.started()
            await trio.sleep_forever()

    async def aclose(self) -> None:
        """No more events: wait until the async observers have had what is buffered."""
        for send in self._sends:
            send.close()
        while self._draining:
            await self._drained.park()
        await trio.lowlevel.checkpoint()

    async def _drain(
        self, observer: Callable[[Event], object], receive: trio.MemoryReceiveChannel[Event]
    ) -> None:
        self._draining += 1
        try:
            await self._drain_all(observer, receive)
        finally:
            self._draining -= 1
            self._drained.unpark_all()

    @staticmethod
    async def _drain_all(
        observer: Callable[[Event], object], receive: trio.MemoryReceiveChannel[Event]
    ) -> None:
        async with receive:
            async for event in receive:
                try:
                    result = observer(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("bus observer %r raised on %s; ignored", observer, event.kind)

    def emit(self, kind: EventKind, **fields: Any) -> None:
        """Tell every observer (never waits)."""
        event = Event(kind, self._ids(), time=self._clock(), **fields)
        for observer in self._sync:
            try:
                result = observer(event)
                if inspect.isawaitable(result):  # an async callable we did not recognise
                    _close(result)
            except Exception:
                log.exception("bus observer %r raised on %s; ignored", observer, kind)
        for send in self._sends:
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
            except trio.ClosedResourceError:
                pass

    def job(
        self,
        kind: EventKind,
        job: QueuedJob,
        *,
        duration: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.emit(
            kind,
            dispatch_id=job.dispatch_id,
            job_id=job.job_id,
            chain_id=job.chain_id,
            batch_id=job.batch_id,
            attempt=job.attempt,
            job_type=job.job_type,
            queue=job.queue,
            duration=duration,
            error=error,
        )


def _close(awaitable: Awaitable[object]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
    log.error("a bus observer returned an awaitable; make it an `async def` to have it awaited")
