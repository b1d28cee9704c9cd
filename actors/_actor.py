"""Single actors: an object whose state only its own turn touches, one message at a time.

A spawned actor is a keyed actor with one key (see `_keyed`): its mailbox is bounded, its
messages are handled in order, and an `ask` to an idle actor runs in the caller's task.

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

import math
from typing import Generic, TypeVar

import trio

from ._checks import check_positive_int
from ._errors import ActorCrashed, ComponentClosed
from ._keyed import KeyedActors, open_keyed

M = TypeVar("M")
R = TypeVar("R")


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


class ActorRef(Generic[M, R]):
    """The address of a spawned actor. Only `spawn` makes one."""

    __slots__ = ("_done", "_keyed", "_stopping", "alive", "name")

    def __init__(self, name: str) -> None:
        self._keyed: KeyedActors[M, R] | None = None
        self._stopping = trio.Event()
        self._done = trio.Event()
        self.name = name
        #: False once the actor has ended, for whatever reason.
        self.alive = True

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r} {'alive' if self.alive else 'stopped'}>"

    def _mailbox(self) -> KeyedActors[M, R]:
        if self._keyed is None or not self.alive or self._stopping.is_set():
            raise ComponentClosed(
                f"actor {self.name!r} has stopped; spawn a new one to send it messages"
            )
        return self._keyed

    async def tell(self, message: M) -> None:
        """Send ``message`` without waiting for it to be handled (waits while the mailbox is full).

        If `Actor.receive` raises for a told message, the actor crashes: the error propagates
        into the nursery (or supervisor) that spawned it, and messages still queued fail with
        `ActorCrashed`.
        """
        await self._mailbox().tell(_SELF, message)

    async def ask(self, message: M) -> R:
        """Send ``message`` and return the reply; `receive`'s exception is raised here instead.

        The actor keeps serving after such an exception. Cancelling the caller while the message
        waits drops it; while it runs, cancels just that handling. When the actor is idle,
        `receive` runs right away in the caller's task (no task switch), still one message at a
        time.
        """
        return await self._mailbox().ask(_SELF, message)

    async def stop(self) -> None:
        """Let the actor finish the messages already sent, run `on_stop`, and wait for its end."""
        self._stopping.set()
        await self._done.wait()


#: The one key of a single actor's mailbox.
_SELF = "self"


async def _run_actor(
    actor: Actor[M, R],
    ref: ActorRef[M, R],
    mailbox_size: int,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    crashed: list[BaseException] = []
    wait_for_stop = trio.CancelScope()

    async def handle(key: str, message: M) -> R:
        if crashed:
            raise ActorCrashed(f"actor {ref.name!r} crashed before handling this") from crashed[0]
        return await actor.receive(message)

    def on_error(key: str, message: M, exc: BaseException) -> None:
        if not crashed:
            crashed.append(exc)
            wait_for_stop.cancel()

    try:
        async with open_keyed(
            handle,
            idle_timeout=math.inf,
            mailbox_size=mailbox_size,
            name=f"actor {ref.name!r}",
            on_error=on_error,
        ) as keyed:
            ref._keyed = keyed
            await actor.on_start()
            task_status.started()
            with wait_for_stop:
                await ref._stopping.wait()
            if crashed:
                keyed.crashed_by = crashed[0]
                raise crashed[0]
        await actor.on_stop()
    finally:
        ref.alive = False
        ref._done.set()


async def spawn(
    nursery: trio.Nursery,
    actor: Actor[M, R],
    *,
    mailbox_size: int = 64,
    name: str | None = None,
) -> ActorRef[M, R]:
    """Start ``actor`` under ``nursery`` and return its `ActorRef`.

    Runs `Actor.on_start` first (through ``nursery.start``), so a failing start raises here.
    The mailbox holds ``mailbox_size`` messages; senders wait when it is full.
    """
    if not isinstance(actor, Actor):
        raise TypeError(f"spawn() needs an actors.Actor instance, got {type(actor).__name__}")
    check_positive_int(mailbox_size, "mailbox_size")
    ref: ActorRef[M, R] = ActorRef(name or type(actor).__name__)
    await nursery.start(_run_actor, actor, ref, mailbox_size)
    return ref
