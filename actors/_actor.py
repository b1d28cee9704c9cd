"""Single actors: an object whose state only its own turn touches, one message at a time.

A spawned actor is one long-lived task: `Actor.on_start`, every `Actor.receive` and
`Actor.on_stop` run in it, in the context `spawn` was called in, one message at a time, in
arrival order (DESIGN rule 6: a handler is the actor's work). Its mailbox is bounded; senders
waiting for room get in in order. When the mailbox is empty the task parks; a sender puts its
message in and reschedules it, an asker parks on its `Reply` until the actor reschedules it
with the answer: two task switches a round trip, no channel, no Event.

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

from typing import Any, Generic, TypeVar

import trio

from ._checks import check_name, check_positive_int
from ._errors import ActorCrashed, ComponentClosed
from ._keyed import describe
from ._mailbox import Mailbox
from ._reply import Reply
from ._waits import check_wait, waiting

M = TypeVar("M")
R = TypeVar("R")

#: The actor yields to the scheduler after this many messages handled back to back.
_CHECKPOINT_EVERY = 16


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


class _Ask(Generic[M, R]):
    __slots__ = ("message", "reply")

    def __init__(self, message: M, reply: Reply[R]) -> None:
        self.message = message
        self.reply = reply


class _Tell(Generic[M]):
    __slots__ = ("message",)

    def __init__(self, message: M) -> None:
        self.message = message


class ActorRef(Generic[M, R]):
    """The address of a spawned actor. Only `spawn` makes one."""

    __slots__ = ("_box", "_done", "_stopping", "alive", "name")

    def __init__(self, name: str, box: Mailbox[_Ask[M, R] | _Tell[M]]) -> None:
        self._box = box
        self._stopping = False
        self._done = trio.Event()
        self.name = name
        #: False once the actor has ended, for whatever reason.
        self.alive = True

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r} {'alive' if self.alive else 'stopped'}>"

    def _mailbox(self) -> Mailbox[_Ask[M, R] | _Tell[M]]:
        if not self.alive or self._stopping:
            raise ComponentClosed(
                f"actor {self.name!r} has stopped; spawn a new one to send it messages"
            )
        return self._box

    async def tell(self, message: M) -> None:
        """Send ``message`` without waiting for it to be handled (waits while the mailbox is full).

        If `Actor.receive` raises for a told message, the actor crashes: the error propagates
        into the nursery (or supervisor) that spawned it, and messages still queued fail with
        `ActorCrashed`.
        """
        box = self._mailbox()
        await trio.lowlevel.checkpoint_if_cancelled()
        if len(box) >= box.size:
            check_wait(trio.lowlevel.current_task(), box, "actor", self.name)
        if not await box.put(_Tell(message)):
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def ask(self, message: M) -> R:
        """Send ``message`` and return the reply; `receive`'s exception is raised here instead.

        The actor keeps serving after such an exception. `receive` runs in the actor's task:
        cancelling the caller while the message waits drops it; while it runs, the caller
        stops waiting and `receive` runs to its end (its result is dropped). Asking an actor
        from its own `receive` raises `WouldDeadlock`.
        """
        box = self._mailbox()
        task = trio.lowlevel.current_task()
        owner = box.owner
        if owner is task or owner in waiting:
            check_wait(task, box, "actor", self.name)
        reply: Reply[R] = Reply()
        item = _Ask(message, reply)
        if not box.put_nowait(item):
            await trio.lowlevel.checkpoint_if_cancelled()
            await box.put(item)
        # A cancel point: cancelled already, the message is abandoned before it is handled.
        return await reply.wait(box)

    async def stop(self) -> None:
        """Let the actor finish the messages already sent, run `on_stop`, and wait for its end."""
        self._stopping = True
        self._box.wake()
        await self._done.wait()


async def _serve(actor: Actor[M, R], ref: ActorRef[M, R]) -> None:
    """Handle the mailbox until `ActorRef.stop`: the actor's own loop, in its own task."""
    box = ref._box
    items = box.items
    receive = actor.receive
    me = trio.lowlevel.current_task()
    handled = 0

    def abort(_: object) -> trio.lowlevel.Abort:
        box.parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    while True:
        while items:
            item = box.take()
            if item.__class__ is _Ask:
                assert isinstance(item, _Ask)
                reply = item.reply
                if reply.abandoned:
                    continue
                try:
                    value = await receive(item.message)
                except Exception as exc:
                    reply.fail(exc)
                except BaseException as exc:
                    if not isinstance(exc, trio.Cancelled):
                        reply.fail(_crashed(ref, exc))
                    raise
                else:
                    reply.succeed(value)
            else:
                assert isinstance(item, _Tell)
                await receive(item.message)
            handled += 1
            if handled >= _CHECKPOINT_EVERY:
                handled = 0
                await trio.lowlevel.checkpoint()
        if ref._stopping:
            return
        handled = 0
        box.parked = me  # a sender (or stop) reschedules us: park, inline for speed
        await trio.lowlevel.wait_task_rescheduled(abort)


def _crashed(ref: ActorRef[Any, Any], cause: BaseException) -> ActorCrashed:
    error = ActorCrashed(f"actor {ref.name!r} crashed before handling this ({describe(cause)})")
    error.__cause__ = cause
    return error


def _fail_queued(ref: ActorRef[Any, Any], error: BaseException | None) -> None:
    """The actor ended: answer every ask still queued, turn away every sender waiting."""
    box = ref._box

    def make() -> BaseException:
        if error is None:
            return ComponentClosed(f"actor {ref.name!r} stopped before handling this")
        return _crashed(ref, error)

    while box.items:
        item = box.items.popleft()
        if isinstance(item, _Ask):
            item.reply.fail(make())
    box.turn_away(make)


async def _run_actor(
    actor: Actor[M, R],
    ref: ActorRef[M, R],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    ref._box.owner = trio.lowlevel.current_task()
    try:
        await actor.on_start()
        task_status.started()
        try:
            await _serve(actor, ref)
        except trio.Cancelled:
            _fail_queued(ref, None)
            raise
        except BaseException as exc:  # it propagates to the spawner, who reports it
            _fail_queued(ref, exc)
            raise
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
    The actor's task runs in a copy of this call's context. The mailbox holds
    ``mailbox_size`` messages; senders wait when it is full.
    """
    if not isinstance(nursery, trio.Nursery):
        raise TypeError(
            f"spawn() needs a trio.Nursery first, got {type(nursery).__name__}: {nursery!r}; "
            "call it as `await actors.spawn(nursery, MyActor())` inside "
            "`async with trio.open_nursery() as nursery:`"
        )
    if not isinstance(actor, Actor):
        raise TypeError(
            f"spawn() needs an actors.Actor instance, got {type(actor).__name__}: {actor!r}; "
            "subclass actors.Actor and pass an instance, `spawn(nursery, Counter())`"
        )
    check_positive_int(mailbox_size, "mailbox_size")
    if name is not None:
        check_name(name)
    ref: ActorRef[M, R] = ActorRef(name or type(actor).__name__, Mailbox(mailbox_size))
    await nursery.start(_run_actor, actor, ref)
    return ref
