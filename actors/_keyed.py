"""Keyed virtual actors: one actor per key, spawned on first use, reaped when idle.

This is the one mechanism Lanes, the Batcher and the Bus coordinators stand on.

How a key lives (see PERF.md for the measurements behind it):

* **Idle**: the registry's dict maps the key to the Trio time it went idle, a bare float. No
  task, no channel, nothing for the garbage collector to walk.
* **Busy**: the dict maps the key to a `_Live` record: a mailbox (a deque of envelopes) and
  nothing else. Someone holds the key's *turn*: either the caller itself, or the key's task.
* A caller that `ask`\\ s an idle key takes the turn and runs the handler in its own task: no
  task is spawned and nobody is woken. Messages that arrive meanwhile queue in the mailbox.
  When the turn is released with mail waiting, the key's task is spawned and drains the mailbox
  in order, one message at a time, then ends, and the key is idle again.
* The reaper forgets keys idle longer than ``idle_timeout``. A send that races a reap simply
  finds no entry and starts a new one: nothing is lost, because the record it would lose is a
  float.

The registry supervises its key tasks the way an OTP ``simple_one_for_one`` supervisor does:
if a key task's own machinery fails (a bug in trio-lanes, not a handler's exception), the
message it was handling fails with `ActorCrashed`, the failure is logged and counted in
``restarts_total``, and a fresh task takes over the rest of that key's mailbox.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import attrs
import trio

from ._checks import check_duration, check_positive_int
from ._errors import ActorCrashed, ComponentClosed, WouldDeadlock
from ._keys import check_key
from ._nursery import open_component_nursery
from ._reply import Reply

M = TypeVar("M")
R = TypeVar("R")

log = logging.getLogger("actors.keyed")

#: A key task yields to the scheduler after this many messages handled back to back, so a
#: mailbox of handlers that never await cannot starve other tasks.
_CHECKPOINT_EVERY = 16


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

    __slots__ = ("abandoned", "granted", "live", "released", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.granted = trio.Event()
        self.released = trio.Event()
        self.abandoned = False
        self.task = task
        self.live: _Live | None = None  # the key it was granted on


class _Envelope(Generic[M, R]):
    __slots__ = ("message", "reply")

    def __init__(self, message: M, reply: Reply[R] | None) -> None:
        self.message = message
        self.reply = reply


class _Live:
    """A busy key: its mailbox, the task holding its turn, and room for waiting senders.

    ``owner`` is the task holding the turn right now, or None while the turn passes to the
    key's task; it is how a task asking a key it holds is caught (`WouldDeadlock`).
    """

    __slots__ = ("mailbox", "owner", "space")

    def __init__(self, owner: trio.lowlevel.Task | None) -> None:
        self.mailbox: deque[_Envelope[Any, Any] | _Hold] = deque()
        self.owner = owner
        self.space: trio.lowlevel.ParkingLot | None = None


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
        self._on_error = on_error
        self._keys: dict[str, float | _Live] = {}
        self._busy = 0
        self._queued = 0
        self._messages_total = 0
        self._reaped_total = 0
        self._restarts_total = 0
        self._closed = False
        self._handling: dict[str, _Live] = {}
        self._all_idle = trio.lowlevel.ParkingLot()
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
        here unchanged and the key goes on. Cancelled while queued: never handled. Cancelled
        while running: the handler is cancelled.
        """
        self._check_open()
        check_key(key)
        await trio.lowlevel.checkpoint_if_cancelled()
        entry = self._keys.get(key)
        task = trio.lowlevel.current_task()
        if entry is None or entry.__class__ is float:
            # Idle key: take its turn and run here, in the caller's task.
            live = self._take_turn(key, task)
            self._handling[key] = live
            try:
                result = await self._handler(key, message)
            finally:
                del self._handling[key]
                self._release(key, live)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return result
        self._check_not_holding(key, entry, task)
        reply: Reply[R] = Reply()
        await self._enqueue(key, _Envelope(message, reply))
        return await reply.wait()

    async def tell(self, key: str, message: M) -> None:
        """Queue ``message`` for ``key``'s actor and return; waits only while its mailbox is full.

        If the handler raises for a told message, ``on_error(key, message, exc)`` hears of it
        and the key goes on with its next message.
        """
        self._check_open()
        check_key(key)
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._enqueue(key, _Envelope(message, None))
        await trio.lowlevel.cancel_shielded_checkpoint()

    def take_pending(self, key: str, accept: Callable[[M], bool] | None = None) -> list[M]:
        """From inside ``key``'s handler: remove and return the told messages waiting now.

        Stops at the first asked message or hold, which keep their place, and at the first
        message ``accept`` (if given) refuses. This is how a handler gathers a batch.
        """
        live = self._handling.get(key)
        if live is None:
            raise RuntimeError(f"take_pending({key!r}) works only inside that key's handler")
        taken: list[M] = []
        mailbox = live.mailbox
        while mailbox:
            head = mailbox[0]
            if head.__class__ is not _Envelope or head.reply is not None:
                break
            if accept is not None and not accept(head.message):
                break
            mailbox.popleft()
            self._queued -= 1
            taken.append(head.message)
        if taken and live.space is not None:
            live.space.unpark_all()
        return taken

    async def _enqueue(self, key: str, item: _Envelope[M, R] | _Hold) -> None:
        while True:
            entry = self._keys.get(key)
            if entry is None or entry.__class__ is float:
                live = _Live(None)  # the key task takes the turn when it starts
                self._keys[key] = live
                self._busy += 1
                live.mailbox.append(item)
                self._queued += 1
                self._nursery.start_soon(self._run_key, key, live)
                return
            assert isinstance(entry, _Live)
            if len(entry.mailbox) < self._mailbox_size:
                entry.mailbox.append(item)
                self._queued += 1
                return
            if entry.space is None:
                entry.space = trio.lowlevel.ParkingLot()
            await entry.space.park()
            self._check_open()

    # ---------------------------------------------------------------- turns

    def _take_turn(self, key: str, task: trio.lowlevel.Task) -> _Live:
        """An idle key becomes busy, its turn held by ``task`` (no key task needed)."""
        live = _Live(task)
        self._keys[key] = live
        self._busy += 1
        self._messages_total += 1
        return live

    def _release(self, key: str, live: _Live) -> None:
        """The turn holder is done: hand the mailbox to the key's task, or go idle."""
        live.owner = None
        if not live.mailbox:
            self._go_idle(key, live)
            return
        try:
            self._nursery.start_soon(self._run_key, key, live)
        except RuntimeError:  # the registry is gone (cancelled) while a caller held the turn
            self._fail_all(live, None, self._shutdown_error())
            self._go_idle(key, live)

    def _go_idle(self, key: str, live: _Live) -> None:
        self._busy -= 1
        if self._keys.get(key) is live:
            self._keys[key] = trio.current_time()
        if not self._busy:
            self._all_idle.unpark_all()

    async def _wait_all_idle(self) -> None:
        while self._busy:
            await self._all_idle.park()

    async def _run_key(self, key: str, live: _Live) -> None:
        """The key's task: handle its mailbox in order, one message at a time, then end."""
        mailbox = live.mailbox
        handled = 0
        item: _Envelope[M, R] | _Hold | None = None
        me = live.owner = trio.lowlevel.current_task()
        self._handling[key] = live
        try:
            while mailbox:
                item = mailbox.popleft()
                self._queued -= 1
                if live.space is not None:
                    live.space.unpark()
                if item.__class__ is _Hold:
                    assert isinstance(item, _Hold)
                    if item.abandoned:
                        continue
                    self._messages_total += 1
                    live.owner = item.task
                    item.live = live
                    item.granted.set()
                    await item.released.wait()
                    live.owner = me
                    handled = 0
                    continue
                assert isinstance(item, _Envelope)
                reply = item.reply
                if reply is None:
                    self._messages_total += 1
                    try:
                        await self._handler(key, item.message)
                    except trio.Cancelled:
                        raise
                    except Exception as exc:
                        self._report(key, item.message, exc)
                else:
                    if reply.abandoned:
                        continue
                    self._messages_total += 1
                    await reply.run(self._handler, key, item.message)
                item = None
                handled += 1
                if handled >= _CHECKPOINT_EVERY:
                    handled = 0
                    await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            self._fail_all(live, item, self._shutdown_error())
            raise
        except BaseException as exc:
            # Our own machinery broke. Fail what was in hand, log it, restart for the rest.
            self._restarts_total += 1
            log.error(
                "%s: the actor for key %r crashed; restarting it", self._name, key, exc_info=exc
            )
            self._fail_one(item, ActorCrashed(f"the actor for key {key!r} crashed: {exc!r}"), exc)
            if not isinstance(exc, Exception):
                self._fail_all(live, None, ActorCrashed(f"the actor for key {key!r} crashed"))
                raise
            self._handling.pop(key, None)
            self._release(key, live)
            return
        self._handling.pop(key, None)
        self._go_idle(key, live)

    def _shutdown_error(self) -> BaseException:
        if self.crashed_by is not None:
            error: BaseException = ActorCrashed(f"{self._name} crashed before handling this")
            error.__cause__ = self.crashed_by
            return error
        return ComponentClosed(f"{self._name} shut down before handling this")

    def _report(self, key: str, message: M, exc: Exception) -> None:
        if self._on_error is None:
            log.error("%s: handler failed for key %r", self._name, key, exc_info=exc)
            return
        try:
            self._on_error(key, message, exc)
        except Exception:
            log.exception("%s: on_error failed for key %r", self._name, key)

    def _fail_one(
        self,
        item: _Envelope[M, R] | _Hold | None,
        error: BaseException,
        cause: BaseException | None = None,
    ) -> None:
        if cause is not None:
            error.__cause__ = cause
        if isinstance(item, _Envelope) and item.reply is not None:
            item.reply.fail(error)
        elif isinstance(item, _Hold):
            item.abandoned = True

    def _fail_all(
        self, live: _Live, item: _Envelope[M, R] | _Hold | None, error: BaseException
    ) -> None:
        self._fail_one(item, error)
        while live.mailbox:
            self._fail_one(live.mailbox.popleft(), error)
            self._queued -= 1
        if live.space is not None:
            live.space.unpark_all()

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[list[str]]:
        """Hold the turns of several keys at once, for a job that needs all of them.

        Keys are taken in sorted order (duplicates once), so overlapping holds cannot deadlock.
        Yields the sorted keys. Do not `ask` a held key from inside the block: it would wait for
        the block itself.
        """
        self._check_open()
        wanted = sorted({check_key(key) for key in keys})
        if not wanted:
            raise ValueError("hold() needs at least one key")
        taken: list[tuple[str, _Live | _Hold]] = []
        try:
            for key in wanted:
                taken.append((key, await self._acquire(key)))
            yield wanted
        finally:
            for key, token in reversed(taken):
                if isinstance(token, _Hold):
                    assert token.live is not None
                    token.live.owner = None  # the key's task takes the turn back
                    token.released.set()
                else:
                    self._release(key, token)

    async def _acquire(self, key: str) -> _Live | _Hold:
        await trio.lowlevel.checkpoint_if_cancelled()
        entry = self._keys.get(key)
        task = trio.lowlevel.current_task()
        if entry is None or entry.__class__ is float:
            live = self._take_turn(key, task)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return live
        self._check_not_holding(key, entry, task)
        hold = _Hold(task)
        await self._enqueue(key, hold)
        try:
            await hold.granted.wait()
        except BaseException:
            if hold.granted.is_set():
                assert hold.live is not None
                hold.live.owner = None
                hold.released.set()
            else:
                hold.abandoned = True
            raise
        if hold.abandoned:  # the key's task crashed before granting it
            raise ActorCrashed(f"the actor for key {key!r} crashed while you waited for it")
        return hold

    def _check_not_holding(self, key: str, entry: object, task: trio.lowlevel.Task) -> None:
        if isinstance(entry, _Live) and entry.owner is task:
            raise WouldDeadlock(
                f"{self._name}: key {key!r} was asked from the task that holds its turn (a job "
                "of that key, or a run_multi holding it); it would wait for itself forever. "
                "Call the function directly instead."
            )

    # ---------------------------------------------------------------- housekeeping

    def stats(self) -> KeyedStats:
        """A snapshot of how many keys are live, busy and queued, and what happened so far."""
        return KeyedStats(
            live=len(self._keys),
            busy=self._busy,
            queued=self._queued,
            messages_total=self._messages_total,
            reaped_total=self._reaped_total,
            restarts_total=self._restarts_total,
        )

    async def reap_idle(self) -> int:
        """Forget the keys idle longer than ``idle_timeout`` now; return how many."""
        self._check_open()
        await trio.lowlevel.checkpoint()
        deadline = trio.current_time() - self._idle_timeout
        keys = self._keys
        stale = [k for k, v in keys.items() if v.__class__ is float and v < deadline]
        for key in stale:
            del keys[key]
        self._reaped_total += len(stale)
        if stale and len(stale) >= len(keys):
            # Dicts never shrink on delete: rebuild so reaped keys give their memory back.
            self._keys = dict(keys)
        return len(stale)

    async def _reaper(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Reap idle keys every half ``idle_timeout``: a key goes 1 to 1.5 timeouts after use."""
        task_status.started()
        while True:
            await trio.sleep(self._idle_timeout / 2)
            await self.reap_idle()


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
    if not callable(handler):
        raise TypeError(f"handler must be an async function, got {handler!r}")
    idle_timeout = check_duration(idle_timeout, "idle_timeout", allow_zero=False)
    check_positive_int(mailbox_size, "mailbox_size")
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
            reaper.cancel()
    finally:
        if keyed is not None:
            keyed._closed = True
