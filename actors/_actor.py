"""Single actors: a task that owns a bounded mailbox and handles one message at a time.

>>> class Counter(Actor[int, int]):
...     def __init__(self) -> None:
...         self.total = 0
...     async def receive(self, message: int) -> int:
...         self.total += message
...         return self.total
>>> # async with trio.open_nursery() as nursery:
>>> #     ref = await spawn(nursery, Counter())
>>> #     await ref.tell(5); assert await ref.ask(1) == 6
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Generic, TypeVar

import attrs
import trio

from ._checks import check_positive_int
from ._errors import ActorCrashed, ComponentClosed
from ._reply import Reply

M = TypeVar("M")
R = TypeVar("R")

log = logging.getLogger("actors")


class Actor(Generic[M, R]):
    """Subclass and override `receive`; `on_start` and `on_stop` are optional hooks.

    The actor's state is plain attributes: only its own task touches them, one message at a
    time, so it needs no lock.
    """

    async def on_start(self) -> None:
        """Runs in the actor's task before `spawn` returns; raising makes `spawn` raise."""

    async def receive(self, message: M) -> R:
        """Handle one message. For `ask` the return value is the reply."""
        raise NotImplementedError(f"{type(self).__name__} must override receive()")

    async def on_stop(self) -> None:
        """Runs in the actor's task when it stops after `ActorRef.stop` (not when cancelled)."""


@attrs.define(slots=True, eq=False)
class _Envelope(Generic[M, R]):
    message: M
    reply: Reply[R] | None


class _Stop:
    """The sentinel `stop()` sends: handled after everything queued before it."""


_STOP = _Stop()


class ActorRef(Generic[M, R]):
    """The address of a spawned actor. Only `spawn` makes one."""

    __slots__ = ("_done", "_send", "alive", "name")

    def __init__(self, send: trio.MemorySendChannel[Any], name: str) -> None:
        self._send = send
        self._done = trio.Event()
        self.name = name
        #: False once the actor's task has ended, for whatever reason.
        self.alive = True

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r} {'alive' if self.alive else 'stopped'}>"

    def _closed(self) -> ComponentClosed:
        return ComponentClosed(
            f"actor {self.name!r} has stopped; spawn a new one to send it messages"
        )

    async def _put(self, item: object) -> None:
        try:
            await self._send.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._closed() from None

    async def tell(self, message: M) -> None:
        """Send ``message`` without waiting for it to be handled (waits while the mailbox is full).

        If `Actor.receive` raises for a told message, the actor crashes: the error propagates
        into the nursery (or supervisor) that spawned it.
        """
        await self._put(_Envelope(message, None))

    async def ask(self, message: M) -> R:
        """Send ``message`` and return the reply; `receive`'s exception is raised here instead.

        The actor keeps serving after such an exception. Cancelling the caller while the message
        waits drops it; while it runs, cancels just that handling.
        """
        reply: Reply[R] = Reply()
        await self._put(_Envelope(message, reply))
        return await reply.wait()

    async def stop(self) -> None:
        """Let the actor finish the messages already sent, run `on_stop`, and wait for its end."""
        if self.alive:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._send.send(_STOP)
        await self._done.wait()


async def _run_actor(
    actor: Actor[M, R],
    receive: trio.MemoryReceiveChannel[Any],
    ref: ActorRef[M, R],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await actor.on_start()
        task_status.started()
        async for item in receive:
            if item is _STOP:
                await actor.on_stop()
                return
            envelope: _Envelope[M, R] = item
            if envelope.reply is None:
                await actor.receive(envelope.message)
            elif not envelope.reply.abandoned:
                await envelope.reply.run(actor.receive, envelope.message)
    finally:
        ref.alive = False
        _fail_queued(receive, ref)
        receive.close()
        ref._done.set()


def _fail_queued(receive: trio.MemoryReceiveChannel[Any], ref: ActorRef[Any, Any]) -> None:
    """Answer every ask still queued, so no caller waits forever on a dead actor."""
    ref._send.close()
    while True:
        try:
            item = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
        if isinstance(item, _Envelope) and item.reply is not None:
            item.reply.fail(ActorCrashed(f"actor {ref.name!r} ended before handling this message"))


async def spawn(
    nursery: trio.Nursery,
    actor: Actor[M, R],
    *,
    mailbox_size: int = 64,
    name: str | None = None,
) -> ActorRef[M, R]:
    """Start ``actor`` as a task of ``nursery`` and return its `ActorRef`.

    Runs `Actor.on_start` first (through ``nursery.start``), so a failing start raises here.
    The mailbox holds ``mailbox_size`` messages; senders wait when it is full.
    """
    if not isinstance(actor, Actor):
        raise TypeError(f"spawn() needs an actors.Actor instance, got {type(actor).__name__}")
    check_positive_int(mailbox_size, "mailbox_size")
    send, receive = trio.open_memory_channel[Any](mailbox_size)
    ref: ActorRef[M, R] = ActorRef(send, name or type(actor).__name__)
    try:
        await nursery.start(_run_actor, actor, receive, ref)
    except BaseException:
        send.close()
        raise
    return ref
