"""An actor's mailbox: a bounded FIFO of messages, and FIFO entry for senders waiting for room.

When the mailbox is full a sender parks in its own task, in a queue of its own. Each message
taken out frees a place that goes straight to the first waiting sender: its message is put in
on its behalf and it is rescheduled, so no later sender can overtake it (DESIGN: senders
waiting for room get in in the order they arrived).

The mailbox also records who holds the actor's turn (``owner``, for the wait-for check) and,
for a resident actor, the task parked waiting for mail (``parked``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

from ._waits import waiting

T = TypeVar("T")

_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED


class _Sender:
    """A sender waiting for room: its task (None once cancelled) and its message."""

    __slots__ = ("item", "task")

    def __init__(self, task: trio.lowlevel.Task, item: Any) -> None:
        self.task: trio.lowlevel.Task | None = task
        self.item = item


class Mailbox(Generic[T]):
    """Messages in arrival order, at most ``size`` of them; senders beyond wait in order."""

    __slots__ = ("items", "owner", "parked", "senders", "size")

    def __init__(self, size: int, owner: trio.lowlevel.Task | None = None) -> None:
        self.items: deque[T] = deque()
        self.size = size
        self.owner = owner
        self.parked: trio.lowlevel.Task | None = None
        self.senders: deque[_Sender] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def put_nowait(self, item: T) -> bool:
        """Put ``item`` in if there is room and nobody waits before it; wake a parked reader."""
        items = self.items
        if len(items) >= self.size or self.senders:
            return False
        items.append(item)
        reader = self.parked
        if reader is not None:  # `wake`, inline: this is every message's path
            self.parked = None
            trio.lowlevel.reschedule(reader)
        return True

    async def put(self, item: T) -> bool:
        """Put ``item`` in, waiting in line for room; True if it had to wait (a checkpoint)."""
        if self.put_nowait(item):
            return False
        task = trio.lowlevel.current_task()
        sender = _Sender(task, item)
        if self.senders is None:
            self.senders = deque()
        self.senders.append(sender)

        def abort(_: object) -> trio.lowlevel.Abort:
            sender.task = None
            waiting.pop(task, None)
            return _SUCCEEDED

        waiting[task] = self
        await trio.lowlevel.wait_task_rescheduled(abort)
        return True

    def take(self) -> T:
        """Take the oldest message; its place goes to the first sender waiting for room."""
        item = self.items.popleft()
        if self.senders:
            self._admit()
        return item

    def _admit(self) -> None:
        senders = self.senders
        assert senders is not None
        while senders and len(self.items) < self.size:
            sender = senders.popleft()
            task = sender.task
            if task is None:
                continue  # cancelled while it waited
            self.items.append(sender.item)
            waiting.pop(task, None)
            trio.lowlevel.reschedule(task)

    def admit(self) -> None:
        """Let waiting senders in after messages were taken out by other means."""
        if self.senders:
            self._admit()

    def turn_away(self, error: Callable[[], BaseException]) -> list[Any]:
        """The mailbox is going away: fail every waiting sender with an ``error()`` of its own.

        Returns their messages, so the owner can answer them (an ask's reply) as well.
        """
        items: list[Any] = []
        senders = self.senders
        while senders:
            sender = senders.popleft()
            task = sender.task
            if task is None:
                continue
            items.append(sender.item)
            waiting.pop(task, None)
            trio.lowlevel.reschedule(task, outcome.Error(error()))
        return items

    def wake(self) -> None:
        """Wake the parked reader, if any (to look at something other than mail)."""
        reader = self.parked
        if reader is not None:
            self.parked = None
            trio.lowlevel.reschedule(reader)
