"""Keyed virtual actors: one actor per key, spawned on first use, reaped when idle.

This is the mechanism the Batcher and the Bus coordinators stand on (Lanes, whose jobs are
their callers' work, have their own turns, see `_lanes`).

How a key lives:

* **Idle**: the registry's dict maps the key to the Trio time it went idle, a bare float. No
  task, no mailbox, nothing for the garbage collector to walk.
* **Busy**: the dict maps the key to its `Mailbox`, and the key's task drains it in order, one
  message at a time, and the key is idle again. The task then waits as a *spare* (at most
  `_SPARE_TASKS` of them): the next key that needs a task takes a spare over instead of
  starting one (no new task per turn for a key that is busy now and then, such as a chain's
  coordinator, one message per step). Each turn starts in a fresh copy of the registry's
  context, exactly as a new task would; spares end when the registry closes.
* A handler is the actor's work (DESIGN rule 6): it always runs in the key's task, started in
  a copy of the context the registry was opened in, never in an asker's task. So it sees the
  registry's context variables (``supervisors.shutting_down()`` is the registry's), never an
  asker's deadline, and an asker cancelled meanwhile just stops waiting: the handler runs to
  its end and its result is dropped. Only the registry's own shutdown cancels a handler.
* The reaper forgets keys idle longer than ``idle_timeout``. A send that races a reap simply
  finds no entry and starts a new one: nothing is lost, because the record it would lose is a
  float.

The registry supervises its key tasks the way an OTP ``simple_one_for_one`` supervisor does:
if a key task's own machinery fails (a bug in trio-lanes, not a handler's exception), the
message it was handling fails with `ActorCrashed`, the failure is logged and counted in
``restarts_total``, and a fresh task takes over the rest of that key's mailbox. A handler that
raises a ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``)
is not restarted: the asker and the messages queued get `ActorCrashed`, and the exception
leaves the registry's block, as it would leave any Trio task.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import attrs
import outcome
import trio

from ._checks import check_async_fn, check_idle_timeout, check_name, check_positive_int
from ._errors import ActorCrashed, ComponentClosed
from ._idle import reap_forever, reap_stale
from ._keys import check_key
from ._mailbox import Mailbox
from ._nursery import open_component_nursery
from ._reply import Reply
from ._waits import check_wait, waiting

M = TypeVar("M")
R = TypeVar("R")

log = logging.getLogger("actors.keyed")

#: A key task yields to the scheduler after this many messages handled back to back, so a
#: mailbox of handlers that never await cannot starve other tasks.
_CHECKPOINT_EVERY = 16

#: At most this many key tasks wait, their turn over, for a key that needs a task.
_SPARE_TASKS = 256


@attrs.frozen
class KeyedStats:
    """A snapshot of a `KeyedActors` registry."""

    live: int
    """Keys the registry knows: busy ones and idle ones not reaped yet."""
    busy: int
    """Keys whose turn is held right now (a message running or a multi-key hold)."""
    queued: int
    """Messages waiting in mailboxes (including any whose caller has given up meanwhile)."""
    messages_total: int
    """Messages handled (or holds granted) since the registry opened."""
    reaped_total: int
    """Idle keys forgotten since the registry opened."""
    restarts_total: int
    """Key tasks restarted after their own machinery failed."""


class _Hold:
    """A multi-key hold waiting in a mailbox: the key task grants its turn and waits."""

    __slots__ = ("abandoned", "box", "granted", "released", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.granted = trio.Event()
        self.released = trio.Event()
        self.abandoned = False
        self.task = task
        self.box: Mailbox[Any] | None = None  # the key it was granted on


class _Envelope(Generic[M, R]):
    __slots__ = ("message", "reply")

    def __init__(self, message: M, reply: Reply[R] | None) -> None:
        self.message = message
        self.reply = reply


_Item = _Envelope[Any, Any] | _Hold
_Box = Mailbox[_Item]


def describe(exc: BaseException) -> str:
    """One line for a log record: the exception's type and message (the traceback rides along
    as ``exc_info``, for handlers that print it)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class KeyedActors(Generic[M, R]):
    """A registry of keyed actors sharing one handler. Made by `open_keyed`."""

    def __init__(
        self,
        handler: Callable[[str, M], Awaitable[R]],
        nursery: trio.Nursery,
        *,
        idle_timeout: float,
        mailbox_size: int,
        name: str,
        on_error: Callable[[str, M, BaseException], None] | None,
    ) -> None:
        self._handler = handler
        self._nursery = nursery
        self._idle_timeout = idle_timeout
        self._mailbox_size = mailbox_size
        self._name = name
        self._kind = f"{name}: key"  # how WouldDeadlock names one of our keys
        self._on_error = on_error
        self._keys: dict[str, float | _Box] = {}
        self._busy = 0
        self._messages_total = 0
        self._reaped_total = 0
        self._restarts_total = 0
        self._closed = False
        self._handling: dict[str, _Box] = {}
        #: Key tasks whose turn is over, waiting for a key that needs a task (see `_spare`).
        self._spares: list[trio.lowlevel.Task] = []
        #: Set when the registry closes: a turn that ends then ends its task.
        self._retiring = False
        self._all_idle = trio.lowlevel.ParkingLot()
        #: Key tasks start in a copy of this: the context the registry was opened in.
        self._context = contextvars.copy_context()
        #: Set by an owner that shuts the registry down because something crashed.
        self.crashed_by: BaseException | None = None

    # ---------------------------------------------------------------- sending

    def _check_open(self) -> None:
        if self._closed:
            raise ComponentClosed(
                f"{self._name} are closed: use them inside their `async with` block"
            )

    async def ask(self, key: str, message: M) -> R:
        """Have ``key``'s actor handle ``message`` and return the handler's result.

        One message at a time per key, in arrival order; the handler's exception is raised
        here unchanged and the key goes on. The handler runs in the key's task, not here:
        cancelled while queued, the message is never handled; cancelled while it runs, this
        call stops waiting and the handler runs to its end (its result is dropped).
        """
        self._check_open()
        check_key(key)
        await trio.lowlevel.checkpoint_if_cancelled()
        entry = self._keys.get(key)
        if entry is not None and entry.__class__ is not float:
            assert isinstance(entry, Mailbox)
            check_wait(trio.lowlevel.current_task(), entry, self._kind, key)
        reply: Reply[R] = Reply()
        box, _ = await self._enqueue(key, _Envelope(message, reply))
        return await reply.wait(box)

    async def tell(self, key: str, message: M) -> None:
        """Queue ``message`` for ``key``'s actor and return; waits only while its mailbox is full.

        If the handler raises for a told message, ``on_error(key, message, exc)`` hears of it
        and the key goes on with its next message. Senders waiting for room get in in the
        order they arrived.
        """
        self._check_open()
        check_key(key)
        await trio.lowlevel.checkpoint_if_cancelled()
        envelope: _Envelope[M, R] = _Envelope(message, None)
        entry = self._keys.get(key)
        if entry is None or entry.__class__ is float:
            self._enqueue_new(key, envelope)
        else:
            assert isinstance(entry, Mailbox)
            if not entry.put_nowait(envelope):
                if len(entry.items) >= entry.size:
                    check_wait(trio.lowlevel.current_task(), entry, self._kind, key)
                await entry.put(envelope)  # waited in line for room: a schedule point
                return
        await trio.lowlevel.cancel_shielded_checkpoint()  # put in at once: still one

    def tell_nowait(self, key: str, message: M) -> bool:
        """`tell` without a scheduling point: queue ``message`` if its mailbox has room now
        (and no sender waits before it) and return True; else queue nothing and return False.

        For a caller that is about to wait anyway (on the answer it will get some other way),
        so the tell's own checkpoint would only cost a task switch.
        """
        self._check_open()
        check_key(key)
        entry = self._keys.get(key)
        if entry is None or entry.__class__ is float:
            self._enqueue_new(key, _Envelope(message, None))
            return True
        assert isinstance(entry, Mailbox)
        return entry.put_nowait(_Envelope(message, None))

    def is_idle(self, key: str) -> bool:
        """True if ``key`` has no message queued or running and no hold on it now."""
        entry = self._keys.get(key)
        return entry is None or entry.__class__ is float

    def take_pending(self, key: str, accept: Callable[[M], bool] | None = None) -> list[M]:
        """From inside ``key``'s handler: remove and return the told messages waiting now.

        Stops at the first asked message or hold, which keep their place, and at the first
        message ``accept`` (if given) refuses. This is how a handler gathers a batch: at most
        a mailbox's worth; senders that waited for room get in afterwards, in order.
        """
        box = self._handling.get(key)
        if box is None:
            raise RuntimeError(f"take_pending({key!r}) works only inside that key's handler")
        taken: list[M] = []
        items = box.items
        while items:
            head = items[0]
            if not isinstance(head, _Envelope) or head.reply is not None:
                break
            if accept is not None and not accept(head.message):
                break
            items.popleft()
            taken.append(head.message)
        # Senders waiting for room get in after the batch is taken: it takes what had room.
        box.admit()
        return taken

    async def _enqueue(self, key: str, item: _Item) -> tuple[_Box, bool]:
        """Put ``item`` in ``key``'s mailbox; return the mailbox and whether we waited for room."""
        entry = self._keys.get(key)
        if entry is None or entry.__class__ is float:
            return self._enqueue_new(key, item), False
        assert isinstance(entry, Mailbox)
        return entry, await entry.put(item)

    def _enqueue_new(self, key: str, item: _Item) -> _Box:
        """An idle (or unknown) key gets a mailbox holding ``item``, and its task."""
        box: _Box = Mailbox(self._mailbox_size)
        self._keys[key] = box
        self._busy += 1
        box.items.append(item)
        self._spawn(key, box)
        return box

    # ---------------------------------------------------------------- turns

    def _spawn(self, key: str, box: _Box) -> None:
        """Start the key's task, in the registry's context (never the sender's): a spare key
        task takes it over, else a new task starts."""
        spares = self._spares
        if spares:
            trio.lowlevel.reschedule(spares.pop(), outcome.Value((key, box)))
            return
        try:
            self._context.run(self._nursery.start_soon, self._run_key, key, box)
        except RuntimeError:  # the registry is gone (cancelled) while the key was busy
            self._fail_all(box, None, self._shutdown_error)
            self._go_idle(key, box)

    def _take_turn(self, key: str, task: trio.lowlevel.Task) -> _Box:
        """An idle key becomes busy, its turn held by ``task`` (no key task needed)."""
        box: _Box = Mailbox(self._mailbox_size, task)
        self._keys[key] = box
        self._busy += 1
        self._messages_total += 1
        return box

    def _release(self, key: str, box: _Box) -> None:
        """The hold is over: hand the mailbox to the key's task, or go idle."""
        box.owner = None
        if box.items:
            self._spawn(key, box)
        else:
            self._go_idle(key, box)

    def _go_idle(self, key: str, box: _Box) -> None:
        self._busy -= 1
        if self._keys.get(key) is box:
            self._keys[key] = trio.current_time()
        if not self._busy:
            self._all_idle.unpark_all()

    async def _wait_all_idle(self) -> None:
        while self._busy:
            await self._all_idle.park()

    async def _run_key(self, key: str, box: _Box) -> None:
        """The key's task: handle its mailbox in order, one message at a time; then wait as a
        spare for another key that needs a task, or end."""
        task = trio.lowlevel.current_task()
        while await self._turn(key, box):
            work = await self._spare(task)
            if work is None:
                return
            key, box = work

    async def _spare(self, task: trio.lowlevel.Task) -> tuple[str, _Box] | None:
        """Wait, turn over, for a key that needs a task (`_spawn` hands it over); None: end
        now (enough spares, or the registry closes)."""
        spares = self._spares
        if self._retiring or len(spares) >= _SPARE_TASKS:
            return None
        # A fresh copy of the registry's context, as a new task would start in: nothing a
        # handler set carries over to another key's turn. Set before the wait, so the next
        # turn runs in it.
        task.context = self._context.copy()
        spares.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            spares.remove(task)  # cancelled: only the registry's shutdown does that
            return trio.lowlevel.Abort.SUCCEEDED

        work: tuple[str, _Box] | None = await trio.lowlevel.wait_task_rescheduled(abort)
        return work

    def _retire(self) -> None:
        """The registry closes: spares end, and so will every task whose turn ends."""
        self._retiring = True
        spares, self._spares = self._spares, []
        for task in spares:
            trio.lowlevel.reschedule(task, outcome.Value(None))

    async def _turn(self, key: str, box: _Box) -> bool:
        """Handle ``key``'s mailbox in order, one message at a time, until it is empty; False
        if our machinery failed (a fresh task then took over the rest)."""
        items = box.items
        handled = 0
        item: _Item | None = None
        me = box.owner = trio.lowlevel.current_task()
        self._handling[key] = box
        try:
            while items:
                item = box.take()
                if item.__class__ is _Hold:
                    assert isinstance(item, _Hold)
                    if item.abandoned:
                        continue
                    self._messages_total += 1
                    box.owner = item.task
                    item.box = box
                    item.granted.set()
                    await item.released.wait()
                    box.owner = me
                    handled = 0
                    continue
                assert isinstance(item, _Envelope)
                reply = item.reply
                if reply is None:
                    self._messages_total += 1
                    try:
                        await self._handler(key, item.message)
                    except Exception as exc:
                        self._report(key, item.message, exc)
                elif reply.abandoned:
                    continue
                else:
                    self._messages_total += 1
                    await reply.run(self._handler, key, item.message)
                item = None
                handled += 1
                if handled >= _CHECKPOINT_EVERY:
                    handled = 0
                    await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            self._fail_all(box, item, self._shutdown_error)
            raise
        except Exception as exc:
            # Our own machinery broke. Fail what was in hand, log it, restart for the rest.
            self._restarts_total += 1
            log.error(
                "%s: the actor for key %r crashed (%s); restarting it",
                self._name,
                key,
                describe(exc),
                exc_info=exc,
            )
            self._fail_one(item, ActorCrashed(f"the actor for key {key!r} crashed: {exc!r}"), exc)
            self._handling.pop(key, None)
            self._release(key, box)
            return False
        except BaseException as exc:
            # A handler raised KeyboardInterrupt, SystemExit...: not ours to swallow or restart.
            # It propagates out of the registry's block, which is where it is reported.
            why = describe(exc)
            self._fail_all(
                box,
                item,
                lambda: ActorCrashed(f"the actor for key {key!r} stopped on {why}"),
                exc,
            )
            raise
        self._handling.pop(key, None)
        self._go_idle(key, box)
        return True

    def _shutdown_error(self) -> BaseException:
        if self.crashed_by is not None:
            error: BaseException = ActorCrashed(f"{self._name} crashed before handling this")
            error.__cause__ = self.crashed_by
            return error
        return ComponentClosed(f"{self._name} shut down before handling this")

    def _report(self, key: str, message: M, exc: Exception) -> None:
        if self._on_error is None:
            log.error(
                "%s: handler failed for key %r: %s", self._name, key, describe(exc), exc_info=exc
            )
            return
        try:
            self._on_error(key, message, exc)
        except Exception as error:
            log.error(
                "%s: on_error failed for key %r: %s",
                self._name,
                key,
                describe(error),
                exc_info=error,
            )

    def _fail_one(
        self, item: _Item | None, error: BaseException, cause: BaseException | None = None
    ) -> None:
        if cause is not None:
            error.__cause__ = cause
        if isinstance(item, _Envelope) and item.reply is not None:
            item.reply.fail(error)
        elif isinstance(item, _Hold):
            item.abandoned = True

    def _fail_all(
        self,
        box: _Box,
        item: _Item | None,
        error: Callable[[], BaseException],
        cause: BaseException | None = None,
    ) -> None:
        """Fail the message in hand, every queued one and every sender waiting for room."""
        self._fail_one(item, error(), cause)
        while box.items:
            self._fail_one(box.items.popleft(), error(), cause)
        box.turn_away(error)

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[list[str]]:
        """Hold the turns of several keys at once, for a job that needs all of them.

        Keys are taken in sorted order (duplicates once), so overlapping holds cannot deadlock.
        Yields the sorted keys. Asking a held key from inside the block raises `WouldDeadlock`.
        """
        self._check_open()
        wanted = sorted({check_key(key) for key in keys})
        if not wanted:
            raise ValueError("hold() needs at least one key")
        taken: list[tuple[str, _Box | _Hold]] = []
        try:
            for key in wanted:
                taken.append((key, await self._acquire(key)))
            yield wanted
        finally:
            for key, token in reversed(taken):
                if isinstance(token, _Hold):
                    assert token.box is not None
                    token.box.owner = None  # the key's task takes the turn back
                    token.released.set()
                else:
                    self._release(key, token)

    async def _acquire(self, key: str) -> _Box | _Hold:
        await trio.lowlevel.checkpoint_if_cancelled()
        entry = self._keys.get(key)
        task = trio.lowlevel.current_task()
        if entry is None or entry.__class__ is float:
            box = self._take_turn(key, task)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return box
        assert isinstance(entry, Mailbox)
        check_wait(task, entry, self._kind, key)
        hold = _Hold(task)
        box, _ = await self._enqueue(key, hold)
        waiting[task] = box
        try:
            await hold.granted.wait()
        except BaseException:
            if hold.granted.is_set():
                assert hold.box is not None
                hold.box.owner = None
                hold.released.set()
            else:
                hold.abandoned = True
            raise
        finally:
            waiting.pop(task, None)
        if hold.abandoned:  # the key's task crashed before granting it
            raise ActorCrashed(f"the actor for key {key!r} crashed while you waited for it")
        return hold

    # ---------------------------------------------------------------- housekeeping

    def stats(self) -> KeyedStats:
        """A snapshot of how many keys are live, busy and queued, and what happened so far."""
        return KeyedStats(
            live=len(self._keys),
            busy=self._busy,
            queued=sum(len(v) for v in self._keys.values() if isinstance(v, Mailbox)),
            messages_total=self._messages_total,
            reaped_total=self._reaped_total,
            restarts_total=self._restarts_total,
        )

    async def reap_idle(self) -> int:
        """Forget the keys idle longer than ``idle_timeout`` now; return how many."""
        self._check_open()
        await trio.lowlevel.checkpoint()
        self._keys, reaped = reap_stale(self._keys, trio.current_time() - self._idle_timeout)
        self._reaped_total += reaped
        return reaped

    async def _reaper(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await reap_forever(self._idle_timeout, self.reap_idle)


@asynccontextmanager
async def open_keyed(
    handler: Callable[[str, M], Awaitable[R]],
    *,
    idle_timeout: float = 600.0,
    mailbox_size: int = 1024,
    name: str = "keyed actors",
    on_error: Callable[[str, M, BaseException], None] | None = None,
) -> AsyncIterator[KeyedActors[M, R]]:
    """Open a registry of keyed actors that all handle their messages with ``handler``.

    ``handler(key, message)`` runs one message at a time per key. Leaving the block lets the
    queued messages finish, then stops the registry; using it afterwards raises
    `ComponentClosed`.
    """
    check_async_fn(handler, "handler")
    idle_timeout = check_idle_timeout(idle_timeout)
    check_positive_int(mailbox_size, "mailbox_size")
    check_name(name)
    if on_error is not None and not callable(on_error):
        raise TypeError(
            f"on_error must be a function (key, message, exc) -> None, or None; got "
            f"{type(on_error).__name__}: {on_error!r}"
        )
    keyed: KeyedActors[M, R] | None = None
    try:
        async with open_component_nursery() as nursery:
            keyed = KeyedActors(
                handler,
                nursery,
                idle_timeout=idle_timeout,
                mailbox_size=mailbox_size,
                name=name,
                on_error=on_error,
            )
            reaper = trio.CancelScope()

            async def reap_forever(
                *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
            ) -> None:
                assert keyed is not None
                with reaper:
                    await keyed._reaper(task_status=task_status)

            await nursery.start(reap_forever)
            try:
                yield keyed
            except BaseException:
                reaper.cancel()
                raise
            # Graceful: running and queued messages finish (and may send more); then we close.
            await keyed._wait_all_idle()
            keyed._retire()
            reaper.cancel()
    finally:
        if keyed is not None:
            keyed._closed = True
