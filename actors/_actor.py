"""Single actors: an object whose state only its own turn touches, one message at a time.

A spawned actor is one long-lived task: `Actor.on_start`, every `Actor.receive` and
`Actor.on_stop` run in it, in the context `spawn` was called in, one message at a time, in
arrival order (DESIGN rule 6: a handler is the actor's work). Its mailbox is bounded; senders
waiting for room get in in order. When the mailbox is empty the task parks; a sender puts its
message in and reschedules it, an asker parks on its `Reply` until the actor reschedules it
with the answer: no channel, no Event. After answering, the actor yields once before it
parks, so an asker that asks again at once finds it awake: half the time (the scheduler's
order is random) the next round trip fits in one scheduler pass instead of two.

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
from trio.lowlevel import cancel_shielded_checkpoint, wait_task_rescheduled

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
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED


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


class _Ask(Reply[R], Generic[M, R]):
    """An asked message: the message and, being a `Reply`, the slot its answer goes to."""

    __slots__ = ("message",)

    message: M


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
        if not self.alive or self._stopping:
            self._mailbox()  # raises ComponentClosed
        box = self._box
        task = trio.lowlevel.current_task()
        owner = box.owner
        if owner is task or owner in waiting:
            check_wait(task, box, "actor", self.name)
        ask: _Ask[M, R] = _Ask()
        ask.message = message
        if box.put_nowait(ask):
            # Not yielded since: no answer yet. A cancel point: cancelled already, the
            # message is abandoned before it is handled.
            return await ask.park(task, box)
        await trio.lowlevel.checkpoint_if_cancelled()
        await box.put(ask)
        return await ask.wait(box)

    async def stop(self) -> None:
        """Let the actor finish the messages already sent, run `on_stop`, and wait for its end."""
        self._stopping = True
        self._box.wake()
        await self._done.wait()


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
            item.fail(make())
    box.turn_away(make)


async def _run_actor(
    actor: Actor[M, R],
    ref: ActorRef[M, R],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The actor's task: `Actor.on_start`, its mailbox until `ActorRef.stop`, `Actor.on_stop`.

    The mailbox loop is written out here rather than in a function of its own: the task
    resumes through every coroutine it awaits, twice a round trip.
    """
    box = ref._box
    me = box.owner = trio.lowlevel.current_task()
    items = box.items
    receive = actor.receive
    handled = 0
    answered = False

    def abort(_: object) -> trio.lowlevel.Abort:
        box.parked = None
        return _SUCCEEDED

    try:
        await actor.on_start()
        task_status.started()
        try:
            while True:
                while items:
                    item = items.popleft()
                    if box.senders:
                        box.admit()  # the freed place goes to the first sender waiting
                    if isinstance(item, _Ask):
                        if item.abandoned:
                            continue
                        answered = True
                        try:
                            value = await receive(item.message)
                        except Exception as exc:
                            item.fail(exc)
                        except BaseException as exc:
                            if not isinstance(exc, trio.Cancelled):
                                item.fail(_crashed(ref, exc))
                            raise
                        else:
                            item.succeed(value)
                    else:
                        await receive(item.message)
                    handled += 1
                    if handled >= _CHECKPOINT_EVERY:
                        handled = 0
                        await trio.lowlevel.checkpoint()
                if ref._stopping:
                    break
                handled = 0
                if answered:
                    # The askers answered just now run in the scheduler's next pass, and
                    # this task with them: one that asks again there finds it awake (no
                    # wake-up), and when the pass runs the asker first, the whole round
                    # trip fits in it. Cancelled meanwhile, the actor ends before touching
                    # new mail, exactly as it would have parked.
                    answered = False
                    await cancel_shielded_checkpoint()
                    if items:
                        await trio.lowlevel.checkpoint_if_cancelled()
                    continue
                box.parked = me  # a sender (or stop) reschedules us
                await wait_task_rescheduled(abort)
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
